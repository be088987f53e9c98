"""Module usage and compute allocation: where tokens go and what they cost.

Module usage: per-step load, identity (skip) shares, module reuse across steps and the
step-to-step transition matrix. Compute allocation: how FLOPs per token spread, and how they
track token attributes, positions and per-group loss.

Shape legend: N tokens, S steps, K slots, M modules, G groups, C attribute classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from dnasweep.analyze.paths import PathKey, canonical_slots, path_ids


def identity_mask(module_names: Sequence[str]) -> np.ndarray:
    """[M] True for identity (skip) modules: by convention their names start with "I"."""
    return np.array([n.startswith("I") for n in module_names], dtype=bool)


def identity_slots(paths_NSK: np.ndarray, module_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """([N, S, K] used slots, [N, S, K] slots sent to an identity module)."""
    p = np.asarray(paths_NSK)
    used = p >= 0
    return used, used & identity_mask(module_names)[np.where(used, p, 0)]


def nonidentity_paths(paths_NSK: np.ndarray, module_names: Sequence[str]) -> list[PathKey]:
    """Distinct non-identity paths, most frequent first: each token's path with its identity
    modules dropped (a step where it computed nothing reads as empty); tokens that skipped every
    step take no such path. What `router/distinct_paths` counts in evaluation."""
    _, is_id = identity_slots(paths_NSK, module_names)
    _, keys = path_ids(np.where(is_id, -1, paths_NSK))
    return [k for k in keys if any(k)]


def load_heatmap(paths_NSK: np.ndarray, n_modules: int) -> np.ndarray:
    """[S, M] share of tokens that use module m at step s (a module in two slots counts once).

    Rows sum to the mean number of distinct modules per token at that step (1 for top-1)."""
    canon = canonical_slots(paths_NSK)
    N, S, K = canon.shape
    s_idx = np.broadcast_to(np.arange(S)[None, :, None], canon.shape)
    ok = canon >= 0
    load = np.bincount(s_idx[ok] * n_modules + canon[ok], minlength=S * n_modules).reshape(S, n_modules)
    return load / max(N, 1)


def identity_slot_share(paths_NSK: np.ndarray, module_names: Sequence[str]) -> np.ndarray:
    """[S] share of used slots at each step sent to identity modules (router/identity_fraction per step)."""
    used, is_id = identity_slots(paths_NSK, module_names)
    return is_id.sum(axis=(0, 2)) / np.maximum(used.sum(axis=(0, 2)), 1)


def skip_share(paths_NSK: np.ndarray, module_names: Sequence[str]) -> np.ndarray:
    """[S] share of tokens that compute nothing at a step: every used slot is an identity, or (expert
    choice, where modules pick tokens) no module picked the token at all. Either way the step leaves
    its state as it was."""
    used, is_id = identity_slots(paths_NSK, module_names)
    return np.mean(np.all(is_id | ~used, axis=2), axis=0)


def module_reuse(paths_NSK: np.ndarray, module_names: Sequence[str]) -> tuple[float, np.ndarray]:
    """Revisits of the same non-identity module at two or more steps.

    Returns (share of tokens that revisit some non-identity module, [M] per module: share of the
    tokens that visit m at all that visit it at >= 2 steps; NaN for identities and unused modules).
    """
    canon = canonical_slots(paths_NSK)
    N, S, K = canon.shape
    M = len(module_names)
    ident = identity_mask(module_names)
    tok = np.broadcast_to(np.arange(N)[:, None, None], canon.shape)
    ok = canon >= 0
    ok &= ~ident[np.where(ok, canon, 0)]
    # (token, module) pairs via np.unique: an [N, M] count table would not fit for 1e6 tokens x 64 modules.
    pairs, steps = np.unique(tok[ok].astype(np.int64) * M + canon[ok], return_counts=True)
    tok_p, mod_p = pairs // M, pairs % M
    reused = steps >= 2
    token_share = len(np.unique(tok_p[reused])) / max(N, 1)
    visitors = np.bincount(mod_p, minlength=M).astype(float)
    revisitors = np.bincount(mod_p[reused], minlength=M).astype(float)
    per_module = np.full(M, np.nan)
    has = visitors > 0
    per_module[has] = revisitors[has] / visitors[has]
    return float(token_share), per_module


def transition_matrix(paths_NSK: np.ndarray, n_modules: int) -> np.ndarray:
    """[M, M] P(module b at step s+1 | module a at step s), pooled over consecutive steps: of the
    tokens a served at a step with a step after it, the share that b serves next. With several
    modules per step (top-K, threshold) a row sums to the mean size of the next step's set; shares of
    pairs (rows summing to 1) read a module that always follows as 1/K. Rows of modules never
    followed by another step stay 0."""
    canon = canonical_slots(paths_NSK)
    M = n_modules
    a = canon[:, :-1, :, None]  # [N, S-1, K, 1]
    b = canon[:, 1:, None, :]  # [N, S-1, 1, K]
    ok = (a >= 0) & (b >= 0)
    codes = (np.where(ok, a, 0) * M + np.where(ok, b, 0))[ok]
    t = np.bincount(codes, minlength=M * M).reshape(M, M).astype(float)
    served = canon[:, :-1][canon[:, :-1] >= 0]  # (token, step, a): once each, the set being distinct
    rows = np.bincount(served, minlength=M).astype(float)[:, None]
    return np.divide(t, rows, out=np.zeros_like(t), where=rows > 0)


def flops_summary(flops_N: np.ndarray) -> dict[str, float]:
    """Mean, std, 5/25/50/75/95 % quantiles, coefficient of variation and p95/p5 of FLOPs per token."""
    f = np.asarray(flops_N, dtype=float)
    if f.size == 0:
        raise ValueError("flops_N must not be empty")
    q = np.quantile(f, [0.05, 0.25, 0.5, 0.75, 0.95])
    mean, std = float(f.mean()), float(f.std())
    out = {"mean": mean, "std": std, "q05": q[0], "q25": q[1], "q50": q[2], "q75": q[3], "q95": q[4],
           "cv": std / mean if mean > 0 else math.nan,
           # p95/p5 is "how many times more the expensive tokens cost"; undefined when p5 spends nothing.
           "p95_over_p5": q[4] / q[0] if q[0] > 0 else math.nan}
    return {k: float(v) for k, v in out.items()}


def mean_by(values_N: np.ndarray, keys_N: np.ndarray, n_keys: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean value per key [K], token count per key [K]); NaN mean where a key has no token."""
    v = np.asarray(values_N, dtype=float)
    k = np.asarray(keys_N)
    if v.shape != k.shape or v.ndim != 1:
        raise ValueError(f"values_N and keys_N must be 1-D of the same shape, got {v.shape} and {k.shape}")
    if k.size and k.min() < 0:
        raise ValueError(f"keys_N must be >= 0, got minimum {int(k.min())}")
    n = int(n_keys if n_keys is not None else (k.max() + 1 if k.size else 0))
    cnt = np.bincount(k, minlength=n)[:n]
    tot = np.bincount(k, weights=v, minlength=n)[:n]
    mean = np.full(n, np.nan)
    mean[cnt > 0] = tot[cnt > 0] / cnt[cnt > 0]
    return mean, cnt


@dataclass
class GroupCompute:
    """Per-group (document / image) compute against per-group loss."""

    flops_G: np.ndarray  # mean FLOPs per token of each group (NaN for groups with no token)
    pearson_r: float
    pearson_p: float
    spearman_r: float
    spearman_p: float
    n_groups: int  # groups with tokens and a finite loss (the ones correlated)
    highest: list[int]  # group ids of the highest mean compute, most expensive first
    lowest: list[int]  # group ids of the lowest mean compute, cheapest first

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flops_G"] = self.flops_G.tolist()
        return d


def group_compute(flops_N: np.ndarray, group_N: np.ndarray, group_loss_G: np.ndarray, k: int = 3) -> GroupCompute:
    """Mean compute per group, its correlation with group loss, and the k extreme groups each way."""
    loss = np.asarray(group_loss_G, dtype=float)
    flops_G, _ = mean_by(flops_N, group_N, len(loss))
    ok = np.isfinite(flops_G) & np.isfinite(loss)
    nan = math.nan
    pr = pp = sr = sp = nan
    # Correlation needs spread on both sides; a constant column would make scipy warn and return NaN anyway.
    if ok.sum() >= 3 and np.ptp(flops_G[ok]) > 0 and np.ptp(loss[ok]) > 0:
        from scipy import stats  # lazy: scipy.stats is slow to import

        pr, pp = (float(v) for v in stats.pearsonr(flops_G[ok], loss[ok]))
        sr, sp = (float(v) for v in stats.spearmanr(flops_G[ok], loss[ok]))
    has = np.flatnonzero(np.isfinite(flops_G))
    order = has[np.argsort(flops_G[has], kind="stable")]
    k = min(k, len(order))
    return GroupCompute(flops_G=flops_G, pearson_r=pr, pearson_p=pp, spearman_r=sr, spearman_p=sp,
                        n_groups=int(ok.sum()), highest=[int(g) for g in order[::-1][:k]],
                        lowest=[int(g) for g in order[:k]])
