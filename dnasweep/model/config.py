"""Typed configuration of a DNA (or dense baseline) model.

Every field is something a sweep may vary; `problems()` checks a config and returns every
problem at once (torchtune style) so `build_model` can refuse it in one error.
Where the DNA paper (arXiv 2506.22389) leaves a choice open, the field says which default we
took and why.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from dnasweep.errors import Problem, field_problems, ge, gt
from dnasweep.model.registry import find_router, router_names


@dataclass
class PoolConfig:
    """The shared pool of modules every routing step chooses from."""

    n_transformer: int = field(default=4, metadata=ge(0))  # transformer blocks (attention + MLP)
    n_attention: int = field(default=2, metadata=ge(0))  # attention-only blocks
    n_mlp: int = field(default=2, metadata=ge(0))  # MLP-only blocks
    n_identity: int = field(default=2, metadata=ge(0))  # identity modules: zero compute (skip)
    mlp_ratio: float = field(default=4.0, metadata=gt(0))  # hidden width / d_model of the MLP in transformer blocks
    mlp_only_ratio: float = field(default=4.0, metadata=gt(0))  # hidden width / d_model of MLP-only modules

    @property
    def size(self) -> int:
        return self.n_transformer + self.n_attention + self.n_mlp + self.n_identity


@dataclass
class RouterConfig:
    """How each routing step picks modules for each token."""

    type: str = "topk"  # a registered router (model/registry.py); topk is the paper's (linear, softmax, hard top-k)
    top_k: int = field(default=2, metadata=ge(1))  # modules per token per step (threshold: the maximum; dense: ignored)
    shared: bool = False  # one router for all steps instead of one per step (paper: one per step)
    normalize_gates: bool = False  # renormalise the k selected gates to sum 1 (paper: raw softmax)
    threshold: float = field(default=0.2, metadata=gt(0, below=1))  # threshold router: keep p >= this
    noise: float = field(default=1.0, metadata=ge(0))  # noisy_topk: scale of the Gumbel noise added in training
    capacity_factor: float = field(default=1.0, metadata=gt(0))  # expert_choice: capacity x L*k/M


@dataclass
class BalanceConfig:
    """Selection biases updated outside the gradient (DeepSeek-V3 loss-free balancing).

    The gradient-based terms (compute penalty, Switch balance loss, z-loss) are weighted in
    `dnasweep.model.loss.LossConfig`; these are the mechanisms that live inside the model.

    Skip control (`identity_bias`): the identity share of a step's slots responds to the bias
    almost as a step function (token margins spread ~0.02 in score), while a compute penalty or
    plain drift moves the needed bias by ~0.5 within ~30 optimizer steps. The defaults were picked
    on that (tests/test_skip_control.py; 200-step tiny top-1 LMs with a compute penalty that
    collapse to 100% identity without control, and the lm.yaml base at top-1): ki = 0.1 holds the
    target (last-50-step mean within 0.01) and settles in ~50-90 steps (10-step mean within
    ±0.05), where the sign rule at u = 1e-2 takes ~120-170 and at the paper's 1e-4 never returns;
    a proportional term only added jitter on so steep a response (kp = 0.02-0.1 raised the
    per-step spread), hence kp = 0. ki = 0.3 oscillates.
    """

    identity_bias: bool = False  # the paper's skip mechanism: bias identity scores toward a skip ratio
    target_skip: float = field(default=0.3, metadata=ge(0, below=1))  # identity share target (paper: 0.3 LM)
    skip_control: Literal["pi", "sign"] = "pi"  # identity bias law: PI on each step's skip share, or the paper's sign
    skip_kp: float = field(default=0.0, metadata=ge(0))  # pi: bias per unit error of a step's identity share
    skip_ki: float = field(default=0.1, metadata=ge(0))  # pi: bias per unit error summed over optimizer steps
    identity_rate: float = field(default=1e-4, metadata=ge(0))  # sign: bias change per optimizer step (paper: 1e-4)
    loss_free: bool = False  # DeepSeek-V3 bias per module toward equal load (identity_bias on: of non-identity ones)
    loss_free_rate: float = field(default=1e-3, metadata=ge(0))  # sign-update rate of the loss-free balancing bias


@dataclass
class ModelConfig:
    """A DNA proto-architecture (kind: dna) or its dense baseline (kind: dense)."""

    kind: Literal["dna", "dense"] = "dna"  # dna: routed module pool; dense: GPT / ViT of plain blocks
    task: Literal["lm", "vision"] = "lm"  # lm: causal language model; vision: ViT classifier
    d_model: int = field(default=128, metadata=gt(0))  # width of the residual stream
    n_heads: int = field(default=4, metadata=gt(0))  # attention heads (d_model must divide by it)
    n_backbone: int = field(default=1, metadata=ge(0))  # dense blocks before routing (paper: 1)
    n_steps: int = field(default=4, metadata=ge(0))  # routing steps S after the backbone
    dense_layers: int = field(default=0, metadata=ge(0))  # dense: blocks after backbone; 0: match the DNA's FLOPs
    dense_match: Literal["measured", "nominal"] = "measured"  # dense_layers 0: the DNA's FLOPs at init, or nominal
    vocab_size: int = field(default=256, metadata=gt(0))  # LM: vocabulary (byte-level default)
    seq_len: int = field(default=256, metadata=gt(0))  # LM: maximum context length (RoPE table size)
    image_size: int = field(default=8, metadata=gt(0))  # vision: input height = width in pixels
    patch_size: int = field(default=2, metadata=gt(0))  # vision: square patch side in pixels
    channels: int = field(default=1, metadata=gt(0))  # vision: input channels
    n_classes: int = field(default=10, metadata=gt(0))  # vision: classes of the head
    pooling: Literal["mean", "cls"] = "mean"  # vision: mean of patches (paper) or a class token
    router_norm: bool = True  # layer-norm (no affine) the stream before each router (scale-free logits)
    init_std: float = field(default=0.02, metadata=gt(0))  # std of the normal weight init (GPT-2)
    pool: PoolConfig = field(default_factory=PoolConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)

    @property
    def tokens_per_example(self) -> int:
        """Sequence length the blocks see: LM context, or patches (+ class token) per image."""
        if self.task == "lm":
            return self.seq_len
        return (self.image_size // self.patch_size) ** 2 + (1 if self.pooling == "cls" else 0)

    @property
    def expert_capacity(self) -> int:
        """Tokens of each sequence a module takes under a capacity router (expert choice)."""
        L, r = self.tokens_per_example, self.router
        return min(L, max(1, math.ceil(r.capacity_factor * L * r.top_k / self.pool.size)))

    @property
    def slots_per_token(self) -> int:
        """Modules a token is sent to per step at most (K)."""
        spec = find_router(self.router.type)
        return self.pool.size if spec is not None and spec.all_modules else self.router.top_k


def problems(cfg: ModelConfig, prefix: str = "model") -> list[Problem]:
    """Every problem with `cfg`, as (dotted key, rule, fix); empty when valid."""
    k = lambda name: f"{prefix}.{name}"  # noqa: E731
    p = field_problems(cfg, prefix)
    if cfg.n_heads > 0 and cfg.d_model % cfg.n_heads:
        p.append(Problem(k("d_model"), f"d_model={cfg.d_model} is not divisible by n_heads={cfg.n_heads}",
                         "pick d_model a multiple of n_heads"))
    elif cfg.n_heads > 0 and (cfg.d_model // cfg.n_heads) % 2 and cfg.task == "lm":
        p.append(Problem(k("d_model"), f"head dim {cfg.d_model // cfg.n_heads} is odd; RoPE needs it even",
                         "pick d_model / n_heads even"))
    if cfg.task == "vision" and cfg.patch_size > 0 and cfg.image_size % cfg.patch_size:
        p.append(Problem(k("patch_size"), f"image_size={cfg.image_size} is not divisible by "
                         f"patch_size={cfg.patch_size}", "pick a patch size that divides the image size"))
    pool, r, bal = cfg.pool, cfg.router, cfg.balance
    # Each field's own rules hold whatever the kind: a dense model is sized from the pool's mlp_ratio
    # (and, matched nominally, from the pool and router), and a bad value there is bad input too.
    p += field_problems(pool, k("pool")) + field_problems(r, k("router")) + field_problems(bal, k("balance"))
    for name, ratio in (("mlp_ratio", pool.mlp_ratio), ("mlp_only_ratio", pool.mlp_only_ratio)):
        if ratio > 0 and cfg.d_model > 0 and int(ratio * cfg.d_model) < 1:
            p.append(Problem(k(f"pool.{name}"), f"{name}={ratio:g} x d_model={cfg.d_model} makes an MLP hidden "
                             f"width of {int(ratio * cfg.d_model)}", f"set {name} >= {1 / cfg.d_model:.3g}"))
    if cfg.kind != "dna":
        if cfg.dense_layers == 0 and cfg.dense_match == "measured":  # the DNA gets built and measured
            why = " (model.dense_match: measured sizes the dense model by running this config's DNA)"
            p += [dataclasses.replace(q, message=q.message + why)
                  for q in problems(dataclasses.replace(cfg, kind="dna"), prefix) if q not in p]
        return p

    if pool.size - pool.n_identity <= 0:
        p.append(Problem(f"{prefix}.pool", "the pool has no module that computes anything",
                         "add transformer, attention or MLP modules"))
    if cfg.n_steps == 0:
        p.append(Problem(k("n_steps"), "a DNA needs at least one routing step", "set n_steps >= 1"))
    spec = find_router(r.type)
    if spec is None:
        p.append(Problem(f"{prefix}.router.type", f"unknown router {r.type!r}",
                         f"use one of: {', '.join(router_names())}; or register your own in a module named "
                         "in DNASWEEP_PLUGINS"))
    elif not spec.causal and cfg.task == "lm":
        p.append(Problem(f"{prefix}.router.type", f"router {r.type!r} is not causal and cannot route a "
                         "language model (a token's path would depend on later tokens)",
                         f"use one of: {', '.join(router_names(causal=True))}"))
    all_modules = spec is not None and spec.all_modules
    biasable = spec is None or spec.biasable  # an unknown router is reported once, above
    if not all_modules and r.top_k > pool.size:  # (< 1: the field's own rule, above)
        p.append(Problem(f"{prefix}.router.top_k", f"top_k={r.top_k} must be in [1, pool size "
                         f"{pool.size}]", "lower top_k or grow the pool"))
    if bal.identity_bias:
        if pool.n_identity == 0:
            p.append(Problem(f"{prefix}.balance.identity_bias", "needs identity modules, the pool has none",
                             "set pool.n_identity >= 1 or turn identity_bias off"))
        if not biasable:
            p.append(Problem(f"{prefix}.balance.identity_bias", f"has no effect with router {r.type!r}",
                             f"use a top-k style router ({', '.join(router_names(biasable=True))})"))
    if bal.loss_free and not biasable:
        p.append(Problem(f"{prefix}.balance.loss_free", f"has no effect with router {r.type!r}",
                         f"use a top-k style router ({', '.join(router_names(biasable=True))})"))
    return p
