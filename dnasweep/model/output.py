"""What a forward pass returns: logits, the auxiliary loss terms and what routing did."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

Num = float | torch.Tensor  # a host number, or a 0-dim tensor the forward pass left on the device


def _num(v: Num) -> float:
    return v if isinstance(v, float | int) else float(v)


@dataclass
class RoutingStats:
    """Measured by the forward pass itself. The forward leaves data-dependent numbers as 0-dim
    tensors (`*_`, on the model's device: reading them inside the step would be a host sync and
    would break a compiled graph); the properties read them as floats, when asked, after the step."""

    flops_per_token_: Num  # useful forward FLOPs per token/patch: what routing really sent
    flops_executed_per_token_: Num  # including capacity padding: executed / useful = dispatch waste
    params_active_: Num  # mean parameters touched per token (a module reused counts once)
    params_total: int  # parameters of the model
    slots_SM: torch.Tensor | None = None  # [S, M] (token, module) slots per step and module
    identity_fraction_: Num = 0.0  # share of slots sent to identity (soft mixture, expert choice: of gate weight)
    entropy_: Num = 0.0  # mean entropy (nats) of the router distributions
    dropped_fraction_: Num = 0.0  # share of computing slots dropped by capacity (static shapes only)
    capacity_need_S3: torch.Tensor | None = None  # [S, 3] the pool.Caps each step needed to drop nothing

    flops_per_token = property(lambda self: _num(self.flops_per_token_))
    flops_executed_per_token = property(lambda self: _num(self.flops_executed_per_token_))
    params_active = property(lambda self: _num(self.params_active_))
    identity_fraction = property(lambda self: _num(self.identity_fraction_))
    entropy = property(lambda self: _num(self.entropy_))
    dropped_fraction = property(lambda self: _num(self.dropped_fraction_))


def combine(stats: list[RoutingStats]) -> RoutingStats:
    """One optimizer step's routing over its equal-sized micro-batches (grad_accum): slot counts
    summed, per-token figures and shares averaged, each step's capacity need at its largest;
    params_total the last one's."""
    if len(stats) == 1:
        return stats[0]
    last, n = stats[-1], len(stats)

    def mean(name: str) -> Num:
        return sum(getattr(s, name) for s in stats) / n

    return replace(last, slots_SM=None if last.slots_SM is None else sum(s.slots_SM for s in stats),
                   flops_per_token_=mean("flops_per_token_"),
                   flops_executed_per_token_=mean("flops_executed_per_token_"),
                   params_active_=mean("params_active_"), entropy_=mean("entropy_"),
                   identity_fraction_=mean("identity_fraction_"), dropped_fraction_=mean("dropped_fraction_"),
                   capacity_need_S3=None if last.capacity_need_S3 is None else
                   torch.stack([s.capacity_need_S3 for s in stats]).amax(0))


@dataclass
class ModelOutput:
    """Output of `build_model(cfg)(x)`."""

    logits: torch.Tensor  # [B, T, V] (LM) or [B, n_classes] (vision)
    stats: RoutingStats
    # Unweighted auxiliary terms (0-dim, differentiable): "compute" (expected FLOPs / dense
    # equivalent), "balance" (Switch load-balancing), "z" (router z-loss). Empty for dense models.
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    paths: torch.Tensor | None = None  # [B, T, S, K] module ids per step (-1: unused slot)
