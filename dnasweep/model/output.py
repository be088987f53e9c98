"""What a forward pass returns: logits, the auxiliary loss terms and what routing did."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RoutingStats:
    """Measured by the forward pass itself (host numbers and small detached tensors)."""

    flops_per_token: float  # useful forward FLOPs per token/patch: what routing really sent
    flops_executed_per_token: float  # including packing padding: executed / useful = dispatch waste
    params_active: float  # mean parameters touched per token (a module reused counts once)
    params_total: int  # parameters of the model
    slots_SM: torch.Tensor | None = None  # [S, M] (token, module) slots per step and module
    identity_fraction: float = 0.0  # share of slots sent to identity modules
    entropy: float = 0.0  # mean entropy (nats) of the router distributions


@dataclass
class ModelOutput:
    """Output of `build_model(cfg)(x)`."""

    logits: torch.Tensor  # [B, T, V] (LM) or [B, n_classes] (vision)
    stats: RoutingStats
    # Unweighted auxiliary terms (0-dim, differentiable): "compute" (expected FLOPs / dense
    # equivalent), "balance" (Switch load-balancing), "z" (router z-loss). Empty for dense models.
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    paths: torch.Tensor | None = None  # [B, T, S, K] module ids per step (-1: unused slot)
