"""The training objective: cross-entropy plus the weighted auxiliary terms a sweep varies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dnasweep.errors import Problem, field_problems, ge

if TYPE_CHECKING:  # torch loads in compute_loss: LossConfig is part of every config check, which needs no torch
    import torch

    from dnasweep.model.output import ModelOutput


@dataclass
class LossConfig:
    """Weights of the terms added to cross-entropy (all off by default, as in the paper).

    The compute term that `compute_weight` (λ) scales is the probability-weighted cost of one slot,
    relative to a dense block, averaged over tokens and routing steps (`DNAModel.forward`):

        compute = (1/S) Σ_s (1/T) Σ_t Σ_m p[s,t,m] · C_m / C_block

    p[s,t,m]: router probability (softmax of the logits) of module m for token t at step s; C_m:
    forward FLOPs per token of module m (identity 0; attention priced at the uniform-routing context
    L·min(k, M)/M of the L tokens per sequence); C_block: forward FLOPs per token of one dense block
    over the full sequence; S steps, T tokens, k slots per token per step (top_k; M for dense). It is
    at most max_m C_m / C_block (1 for the default pool); 0 for the hash router, which has no
    probabilities. If each of the k slots of a step drew module m with probability p[s,t,m], the pool
    would spend E[F] =
    k · Σ_s (1/T) Σ_t Σ_m p[s,t,m] · C_m FLOPs per token, so compute = E[F] / (k · S · C_block):
    expected pool FLOPs per token per slot-step, in dense blocks, not FLOPs per token ÷ C_block
    (that is k · S times larger). Top-k does not draw from p, so E[F] is a differentiable proxy; it
    equals the measured pool FLOPs/token for the dense router (k = M) at uniform probabilities.
    """

    compute_weight: float = field(default=0.0, metadata=ge(0))  # λ x compute (above): mean slot cost / block cost
    balance_weight: float = field(default=0.0, metadata=ge(0))  # Switch-style load-balancing loss (typical 1e-2)
    z_weight: float = field(default=0.0, metadata=ge(0))  # router z-loss (typical 1e-3)
    label_smoothing: float = field(default=0.0, metadata=ge(0, below=1))  # label smoothing (paper's ViT: 0.1)


def compute_loss(out: ModelOutput, targets: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, dict]:
    """(total loss to backpropagate, {"ce": ..., "aux": ...} as detached 0-dim tensors).

    targets: [B, T] next tokens (LM) or [B] labels (vision).
    """
    import torch
    import torch.nn.functional as F

    logits = out.logits
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                         label_smoothing=cfg.label_smoothing)
    aux = logits.new_zeros((), dtype=torch.float32)
    for name, w in (("compute", cfg.compute_weight), ("balance", cfg.balance_weight), ("z", cfg.z_weight)):
        if w and name in out.aux:
            aux = aux + w * out.aux[name]
    return ce + aux, {"ce": ce.detach(), "aux": aux.detach()}


def loss_problems(cfg: LossConfig, prefix: str = "loss") -> list[Problem]:
    """Every problem with `cfg` (negative weights, smoothing outside [0, 1))."""
    return field_problems(cfg, prefix)
