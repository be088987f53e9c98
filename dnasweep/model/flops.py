"""FLOP and parameter accounting from the config alone (no model is built).

Sweeps use these numbers to reject a trial before it starts (a parameter or FLOP budget), the
compute penalty uses the per-module costs, and `model.kind: dense` with `dense_match: nominal`
uses them to size the dense baseline to the DNA's nominal compute (`dense_match: measured`, the
default, runs the DNA once instead: dnasweep.model.calibrate). Measured FLOPs (what routing really
did) come from the forward pass; a test checks both against torch's FlopCounterMode.

Formulas (forward, per token, matmuls only; training costs about 3x):
  attention projections 8*D^2, attention scores + values 4*D*n (n = tokens of the sequence the
  module attends over), MLP 4*D*F, identity 0, router 2*D*M per step, LM head 2*D*V.
The causal triangle is not discounted (the design notes' convention, and the usual MFU one; a
causal kernel can skip about half of the scores). The rule is the same for DNA and dense, but a
dense block attends over the whole sequence and a routed module over its short rows, so the
quadratic share is larger in dense: discounted, the shipped LM ladder's rungs would count 7-12%
fewer FLOPs and the DNA ~3% fewer, and compute gains would read 4-10% lower.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dnasweep.model.config import ModelConfig
from dnasweep.model.registry import find_router


def mlp_hidden(cfg: ModelConfig) -> tuple[int, int]:
    """Hidden widths of (transformer-block MLPs, MLP-only modules)."""
    return int(cfg.pool.mlp_ratio * cfg.d_model), int(cfg.pool.mlp_only_ratio * cfg.d_model)


def module_costs(cfg: ModelConfig, context: float) -> list[float]:
    """Forward FLOPs per token of every pool module, in pool order [transformer | attention |
    mlp | identity], when each attention module sees `context` tokens of the sequence."""
    D, p = cfg.d_model, cfg.pool
    f_t, f_o = mlp_hidden(cfg)
    attn = 8.0 * D * D + 4.0 * D * context
    return ([attn + 4.0 * D * f_t] * p.n_transformer + [attn] * p.n_attention
            + [4.0 * D * f_o] * p.n_mlp + [0.0] * p.n_identity)


def block_cost(cfg: ModelConfig) -> float:
    """Forward FLOPs per token of one dense block over the full sequence."""
    D = cfg.d_model
    return 8.0 * D * D + 4.0 * D * cfg.tokens_per_example + 4.0 * D * mlp_hidden(cfg)[0]


def effective_k(cfg: ModelConfig) -> float:
    """Slots per token per step under the nominal (uniform) routing."""
    r = cfg.router
    spec = find_router(r.type)
    if spec is not None and spec.capacity:  # each module takes `capacity` tokens of each sequence
        return cfg.pool.size * cfg.expert_capacity / cfg.tokens_per_example
    if spec is not None and spec.all_modules:
        return float(cfg.pool.size)
    if spec is not None and spec.threshold:  # every probability is 1/M: all top_k slots reach the
        # threshold, or none does and only the one slot kept anyway computes
        return float(r.top_k) if 1.0 / cfg.pool.size >= r.threshold else 1.0
    return float(r.top_k)


def module_params(cfg: ModelConfig) -> list[int]:
    """Parameters of every pool module, in pool order."""
    D, p = cfg.d_model, cfg.pool
    f_t, f_o = mlp_hidden(cfg)
    attn, mlp_t, mlp_o = 4 * D * D + D, 2 * D * f_t + D, 2 * D * f_o + D
    return ([attn + mlp_t] * p.n_transformer + [attn] * p.n_attention + [mlp_o] * p.n_mlp
            + [0] * p.n_identity)


def dense_blocks(cfg: ModelConfig) -> int:
    """Blocks after the backbone of the dense baseline: `dense_layers`, or (at least 1) the count
    whose FLOPs come nearest the DNA's: by `dense_match`, what the DNA measures at initialisation
    (`dnasweep.model.calibrate`, the one place a model is built here), or its routing steps'
    nominal FLOPs at uniform routing."""
    if cfg.dense_layers > 0:
        return cfg.dense_layers
    # The dense model shares stem, backbone and readout with the DNA: blocks fill the rest.
    shared = _stem_readout(cfg)[2] + cfg.n_backbone * block_cost(cfg)
    if cfg.dense_match == "measured":
        from dnasweep.model.calibrate import measured_dna_flops

        dna = measured_dna_flops(cfg)
    else:  # the same count as `nominal`, routers included
        dna = nominal(dataclasses.replace(cfg, kind="dna")).flops_per_token
    return max(1, round((dna - shared) / block_cost(cfg)))


@dataclass(frozen=True)
class Nominal:
    """What a config costs before any routing is learnt (uniform routing assumed)."""

    params_total: int  # parameters of the built model
    params_active: float  # expected parameters touched per token
    flops_per_token: float  # expected forward FLOPs per token (or patch)


def _stem_readout(cfg: ModelConfig) -> tuple[int, int, float]:
    """(total params, active params per token, forward FLOPs per token) of stem + readout."""
    D = cfg.d_model
    L = cfg.tokens_per_example
    if cfg.task == "lm":
        stem_p, stem_active, stem_f = cfg.vocab_size * D, D, 0.0
        head_p, head_f = cfg.vocab_size * D, 2.0 * D * cfg.vocab_size
    else:
        pin = cfg.channels * cfg.patch_size**2
        n_patch = (cfg.image_size // cfg.patch_size) ** 2
        stem_p = pin * D + D + L * D + (D if cfg.pooling == "cls" else 0)
        stem_active, stem_f = stem_p, 2.0 * pin * D * n_patch / L
        head_p, head_f = cfg.n_classes * D, 2.0 * D * cfg.n_classes / L
    return stem_p + head_p + D, stem_active + head_p + D, stem_f + head_f


def nominal(cfg: ModelConfig) -> Nominal:
    """Parameters and FLOPs per token of `cfg`, computed from the config alone."""
    D = cfg.d_model
    f_t = mlp_hidden(cfg)[0]
    block_p = 4 * D * D + D + 2 * D * f_t + D
    base_p, base_active, base_f = _stem_readout(cfg)
    if cfg.kind == "dense":
        n = cfg.n_backbone + dense_blocks(cfg)
        total = base_p + n * block_p
        return Nominal(total, float(base_active + n * block_p), base_f + n * block_cost(cfg))
    M, S, k = cfg.pool.size, cfg.n_steps, effective_k(cfg)
    spec = find_router(cfg.router.type)
    learns = spec is None or spec.learns
    router_p = (1 if cfg.router.shared else S) * D * M if learns else 0
    mparams = module_params(cfg)
    total = base_p + cfg.n_backbone * block_p + router_p + sum(mparams)
    # A module is touched by a token if any of its S steps picked it: 1 - (1 - k/M)^S.
    p_visit = 1.0 - (1.0 - min(k, M) / M) ** S
    active = base_active + cfg.n_backbone * block_p + router_p + p_visit * sum(mparams)
    costs = module_costs(cfg, cfg.tokens_per_example * min(k, M) / M)
    flops = (base_f + cfg.n_backbone * block_cost(cfg) + S * k * sum(costs) / M
             + (2.0 * D * M * S if learns else 0.0))
    return Nominal(total, active, flops)
