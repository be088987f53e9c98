"""What a DNA config measures, for `model.kind: dense` with `dense_match: measured`.

"Measured" FLOPs per token are the DNA's own accounting (`RoutingStats.flops_per_token`: routed
slot counts, each attention module priced by the tokens it really got) of one forward pass:

- the DNA of the same config (`kind: dna`), initialised from a fixed seed (CALIB_SEED), in eval
  mode, on a fixed calibration batch: CALIB_SEQS sequences of seq_len uniformly random token ids
  (LM), or CALIB_IMAGES standard-normal images (vision; the data pipeline normalises images);
- with `balance.identity_bias` on, the identity bias of each routing step is first solved on that
  batch (bisection, step by step) so that identity modules take `target_skip` of the step's slots:
  the share the skip controller holds in training. Without it the bias stays 0, as at step 0.

Limits: this is routing at initialisation, not after training. What a trained DNA spends can be
far from it: without a skip control small LMs drift toward identity (the LM base of
search_spaces/lm.yaml measures 2.71 M FLOPs/token here and 1.5-1.6 M after 600 steps), so the
dense model is then sized above the trained DNA. With the controller on, the identity share is
held (that base at target_skip 0.3: 2.23 M here, 2.11 M after 600 steps, half a block apart),
but which computing modules the tokens pick (a transformer block costs more than an attention-
or MLP-only one) and how evenly (attention cost grows with a module's token count) still move.
Random tokens are not text. To match a trained DNA exactly, read its `compute/flops_per_token`
and set `dense_layers` by hand.

Nothing here touches the global RNG; results are cached per config.
"""

from __future__ import annotations

import dataclasses

import torch

from dnasweep.model.config import ModelConfig

CALIB_SEED = 0  # weights and batch of the calibration DNA
CALIB_SEQS = 8  # LM: sequences of seq_len tokens in the calibration batch
CALIB_IMAGES = 32  # vision: images in the calibration batch
BISECT_ITERS = 24  # identity-bias bisection on [-BIAS_LIMIT, BIAS_LIMIT]: resolution ~1e-7


def measured_dna_flops(cfg: ModelConfig) -> float:
    """Forward FLOPs per token (or patch) the DNA of `cfg` measures at initialisation (see the
    module docstring for what that means and its limits). `cfg.kind` is ignored."""
    dna = dataclasses.replace(cfg, kind="dna", dense_layers=0, dense_match="measured")
    key = repr(dna)
    if key not in _CACHE:
        _CACHE[key] = _measure(dna)
    return _CACHE[key]


_CACHE: dict[str, float] = {}  # repr of the DNA config -> its measured FLOPs per token


def _measure(cfg: ModelConfig) -> float:
    from dnasweep.model.dna import DNAModel

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(CALIB_SEED)
        model = DNAModel(cfg).eval()
        g = torch.Generator().manual_seed(CALIB_SEED)
        if cfg.task == "lm":
            x = torch.randint(0, cfg.vocab_size, (CALIB_SEQS, cfg.seq_len), generator=g)
        else:
            x = torch.randn(CALIB_IMAGES, cfg.channels, cfg.image_size, cfg.image_size, generator=g)
        if cfg.balance.identity_bias and cfg.pool.n_identity:
            solve_identity_bias(model, x, cfg.balance.target_skip)
        return float(model(x).stats.flops_per_token)


def identity_share(route, is_identity_M: torch.Tensor) -> float:
    """Share of one step's used slots that went to identity modules."""
    used_TK = torch.ones_like(route.idx_TK, dtype=torch.bool) if route.active_TK is None else route.active_TK
    return float((is_identity_M[route.idx_TK] & used_TK).sum() / used_TK.sum().clamp_min(1))


@torch.no_grad()
def solve_identity_bias(model, x: torch.Tensor, target: float) -> None:
    """Set each step's identity bias so that identity modules take `target` of the step's slots on
    batch `x` (as closely as whole slots allow), steps in order: a step's routing depends on the
    stream that the earlier, already solved, steps produced."""
    from dnasweep.model.routers import BIAS_LIMIT

    routing = model.routing
    h_BLD, keys_BL = model.stem(x)
    for blk in model.backbone:
        h_BLD = blk(h_BLD)
    for s in range(model.cfg.n_steps):
        lo, hi = -BIAS_LIMIT, BIAS_LIMIT
        for _ in range(BISECT_ITERS):  # the share never falls as the identity bias rises
            routing.identity_bias_S[s] = (lo + hi) / 2
            if identity_share(routing(h_BLD, s, keys_BL), routing.is_identity_M) < target:
                lo = (lo + hi) / 2
            else:
                hi = (lo + hi) / 2
        routing.identity_bias_S[s] = hi
        h_BLD, _ = model.pool(h_BLD, routing(h_BLD, s, keys_BL))
