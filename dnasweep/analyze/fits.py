"""Power-law fit of the path rank-frequency law, f(r) ∝ r^-alpha (r = 1 for the most common path).

Method (chosen after checking the alternatives on Zipf samples with known alpha):

* Split-half ranks (Piantadosi 2014, "Zipf's word frequency law in natural language"): the tokens
  are split in two halves (alternate groups, i.e. sequences / images, when group ids are given;
  alternate tokens otherwise), the paths are *ranked* by their counts in one half and the
  frequencies are *counted* in the other. Ranking and counting the same sample makes any sample
  look Zipfian: sorting Poisson noise yields a falling curve even when every path is equally
  likely (uniform paths read as alpha 0.17 +- 0.014). With independent halves the ranking's noise
  cannot line up with the counts, so uniform paths fit alpha ~ 0 and Zipf(1) still fits ~1.
* The fitted variable is each counted token's path rank: a token on the r-th most frequent path
  (by the ranking half) contributes the value r. If path frequencies follow f(r) ∝ r^-alpha, these
  values are draws from p(r) ∝ r^-alpha, so the fitted exponent IS alpha (no conversion). xmin and
  xmax are ranks.
* The other common route, fitting the distribution of path *counts* (p(c) ∝ c^-(1+1/alpha)),
  sees only a few hundred paths in its tail and missed alpha = 1.2 / 1.5 by up to 0.1 on
  100k-token samples; the token-rank fit uses every token and is within ~0.02.
* alpha near 1 (the DNA paper's value) is not normalisable on [xmin, inf), so the fit needs an
  upper cut-off: xmax = the last rank whose path has >= `min_count` tokens *in the ranking half*.
  Below ~30 tokens Poisson noise reorders the paths, so the counted half's frequencies regress to
  the mean along the rank axis and flatten the tail; the cut keeps the ranks the ranking half can
  tell apart.
* powerlaw's discrete power law normalises with the Hurwitz zeta function, which only exists
  for alpha > 1, so it cannot report alpha <= 1. We therefore fit powerlaw's *continuous*
  power law on [xmin - 1/2, xmax + 1/2] (alpha may be <= 0: a flat or rising law, which only
  noise gives, is reported as such rather than clipped) to the ranks dequantised with uniform jitter in
  (-1/2, 1/2); this is the discrete law binned to unit cells, and the jitter makes the KS
  distance (used to pick xmin, Clauset et al. 2009) free of the atoms integers would create.
* Likelihood ratios vs lognormal and exponential: powerlaw 2.0's *continuous* lognormal and
  exponential ignore xmax in their normalisation, so they are fitted in powerlaw's discrete
  mode (which normalises over [xmin, xmax]) on the integer ranks, and the power law is scored
  on the same integer ranks with its unit-cell masses (cdf(r + 1/2) - cdf(r - 1/2)).

* Its standard error is a bootstrap over the halving's units (groups, or tokens when split by
  tokens): both halves are resampled, the paths re-ranked and xmax re-cut, alpha re-fitted at the
  chosen xmin. Tokens of one sequence route alike, so the Fisher error, which takes every token as
  independent, read 3x too small on sequences with shared paths (1.3x on independent tokens, where
  the ranking half's noise is what it leaves out).

Shape legend: N tokens, P distinct paths, T counted tokens in the fitted rank range.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

MIN_PATHS = 10  # below this many ranks (one decade) a slope is not meaningful
N_BOOT = 100  # bootstrap replicates of alpha's standard error (its own relative error ~ 1/sqrt(2 N_BOOT) = 7%)
N_XMIN = 12  # log-spaced xmin candidates; scanning every rank costs ~0.1 s each for no gain
MAX_TOKENS = 300_000  # tail tokens kept for the fit (a seeded subsample beyond this; se stays tiny)
# Below 0 is allowed: with split-half ranks a flat law scatters around 0 (a floor at 0.05 read it as a slope).
ALPHA_RANGE = [-3.0, 8.0]


@dataclass
class PowerLawFit:
    """Result of `fit_rank_frequency`; NaN fields and a `reason` when no fit was possible."""

    alpha: float  # frequency of the r-th most common path ∝ r^-alpha
    alpha_se: float  # standard error: bootstrap over groups (or tokens), both halves resampled, ranks redone
    xmin_rank: float  # first rank of the fitted range (a rank, not a count)
    xmax_rank: float  # last rank of the fitted range: last path with >= min_count tokens in the ranking half
    ks_d: float  # Kolmogorov-Smirnov distance of the fit over [xmin_rank, xmax_rank]
    n_tail_tokens: int  # counted-half tokens whose path rank lies in the fitted range
    n_tail_paths: int  # distinct paths (ranks) in the fitted range
    n_tokens: int  # all tokens
    n_paths: int  # all distinct paths
    r_lognormal: float  # normalised log-likelihood ratio (Vuong z), > 0 favours the power law
    p_lognormal: float  # significance of its sign
    r_exponential: float
    p_exponential: float
    min_count: int  # tokens a path needs in the ranking half to be in the fitted range
    split: str = "groups"  # how the tokens were halved: "groups" (alternate groups) or "tokens" (alternate tokens)
    n_rank_tokens: int = 0  # tokens of the ranking half
    n_count_tokens: int = 0  # tokens of the counted half (the fit's sample)
    reason: str | None = None  # why the fit is missing, None when it exists

    @property
    def ok(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict:
        return asdict(self)

    def expected_counts(self, ranks: np.ndarray) -> np.ndarray:
        """Counted-half token counts the fit predicts at these ranks (the line of a rank-frequency plot)."""
        r = np.asarray(ranks, dtype=float)
        if not self.ok:
            return np.full(r.shape, np.nan)
        lo, hi = self.xmin_rank - 0.5, self.xmax_rank + 0.5
        return self.n_tail_tokens * r ** -self.alpha / _power_integral(self.alpha, lo, hi)


def _power_integral(a: float, lo: float, hi: float) -> float:
    """∫_lo^hi x^-a dx, continuous through a = 1 (where the general formula is 0/0)."""
    b = 1.0 - a
    if abs(b) < 1e-9:
        return math.log(hi / lo)
    return (hi**b - lo**b) / b


def _mean_log(a: float, lo: float, hi: float) -> float:
    """E[ln X] for p(x) ∝ x^-a on [lo, hi] (ln X is a truncated exponential with rate 1 - a)."""
    lo_ln, width = math.log(lo), math.log(hi / lo)
    bw = (1.0 - a) * width
    if abs(bw) < 1e-6:
        return lo_ln + width / 2 + bw * width / 12
    return lo_ln + width / -math.expm1(-bw) - width / bw


def _alpha_from_mean_log(mean_ln: float, lo: float, hi: float) -> float:
    """The maximum-likelihood alpha of a power law on [lo, hi] with this mean of ln x: the law is an
    exponential family in ln x, so the MLE matches E[ln X] (decreasing in alpha: bisection)."""
    a, b = ALPHA_RANGE
    for _ in range(60):
        mid = (a + b) / 2
        a, b = (mid, b) if _mean_log(mid, lo, hi) > mean_ln else (a, mid)
    return (a + b) / 2


def _bootstrap_se(inv_N: np.ndarray, rank_mask_N: np.ndarray, units_N: np.ndarray, min_count: int, xmin: int,
                  seed: int) -> float:
    """Standard error of alpha: N_BOOT Poisson-weighted resamples of the units (groups or tokens) of
    both halves; each re-ranks the paths on its ranking half, re-cuts xmax at `min_count` and re-fits
    alpha at `xmin` on its counted half (jittered ranks, as the fit). NaN if most resamples leave no range."""
    rng = np.random.default_rng([seed, 1])
    P, U = int(inv_N.max()) + 1, int(units_N.max()) + 1
    inv_r, u_r = inv_N[rank_mask_N], units_N[rank_mask_N]
    inv_c, u_c = inv_N[~rank_mask_N], units_N[~rank_mask_N]
    jitter_c = rng.uniform(-0.5, 0.5, size=inv_c.size)
    alphas = []
    for _ in range(N_BOOT):
        w_U = rng.poisson(1.0, size=U).astype(float)
        rank_c = np.bincount(inv_r, weights=w_U[u_r], minlength=P)
        rank_P = np.empty(P, dtype=np.int64)
        rank_P[np.lexsort((rng.permutation(P), -rank_c))] = np.arange(1, P + 1)
        xmax = int(np.sum(rank_c >= min_count))
        r_c = rank_P[inv_c]
        sel = (r_c >= xmin) & (r_c <= xmax)
        w = w_U[u_c[sel]]
        if xmax < max(MIN_PATHS, xmin + 1) or w.sum() < 2 * MIN_PATHS:
            continue
        mean_ln = float(np.sum(w * np.log(r_c[sel] + jitter_c[sel])) / w.sum())
        alphas.append(_alpha_from_mean_log(mean_ln, xmin - 0.5, xmax + 0.5))
    return float(np.std(alphas, ddof=1)) if len(alphas) >= N_BOOT // 2 else math.nan


def _empty(reason: str, n_tokens: int, n_paths: int, min_count: int, split: str = "groups", n_rank: int = 0,
           n_count: int = 0) -> PowerLawFit:
    nan = math.nan
    return PowerLawFit(nan, nan, nan, nan, nan, 0, 0, n_tokens, n_paths, nan, nan, nan, nan, min_count, split,
                       n_rank, n_count, reason)


@contextlib.contextmanager
def _quiet():
    """powerlaw prints progress and warns freely (overflow in trial parameters, near-bound fits)."""
    with (warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()),
          np.errstate(all="ignore")):
        warnings.simplefilter("ignore")
        yield


def _fit_power_law(powerlaw, x_T: np.ndarray, xmin: int, xmax: int):
    """powerlaw's continuous power law on the jittered ranks in [xmin - 1/2, xmax + 1/2], or None."""
    for a0 in (1.37, 0.83):  # second start only if the optimiser lands exactly on a = 1, which powerlaw rejects
        try:
            pl = powerlaw.Power_Law(data=x_T, xmin=xmin - 0.5, xmax=xmax + 0.5, discrete=False,
                                    force_numerical_fit=True, parameters={"alpha": a0},
                                    parameter_ranges={"alpha": ALPHA_RANGE}, verbose=0)
        except ValueError:
            continue
        if np.isfinite(pl.alpha) and np.isfinite(pl.D) and not pl.noise_flag:
            return pl
    return None


MIN_COUNTS = (30, 10)  # tried in turn when min_count is not given: unbiased first, then a small sample


def unit_codes(n: int, groups_N: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """(unit of each token, "groups" or "tokens"): its group's code 0..G-1 (by sorted group id) when at
    least two groups are given, else the token's own index. Units are what the halves split and the
    standard error resamples: tokens of one sequence / image route alike, so they move together."""
    if groups_N is not None:
        g = np.asarray(groups_N)
        if g.shape != (n,):
            raise ValueError(f"groups_N must have one id per token ({n},), got shape {g.shape}")
        _, code = np.unique(g, return_inverse=True)
        code = code.reshape(-1)
        if n and code.max() >= 1:
            return code, "groups"
    return np.arange(n), "tokens"


def split_half(n: int, groups_N: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """(mask of the ranking half, how it was split): alternate units (`unit_codes`), so the halves are
    independent. Deterministic: the same tokens give the same halves."""
    code, split = unit_codes(n, groups_N)
    return code % 2 == 0, split


def cross_counts(ids_N: np.ndarray, rank_mask_N: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                                       np.ndarray]:
    """(ranking-half counts, counted-half counts, counted tokens' ranks): paths in the ranking half's
    order of frequency (rank 1 first). Ties in the ranking half are broken at random (seeded): by path
    label they would follow whatever order the labels came in (path ids are ranked on *all* tokens)."""
    _, inv_N, counts_P = np.unique(ids_N, return_inverse=True, return_counts=True)
    inv_N = inv_N.reshape(-1)
    P = len(counts_P)
    rank_c = np.bincount(inv_N[rank_mask_N], minlength=P)
    count_c = np.bincount(inv_N[~rank_mask_N], minlength=P)
    order = np.lexsort((np.random.default_rng(seed).permutation(P), -rank_c))
    rank_P = np.empty(P, dtype=np.int64)
    rank_P[order] = np.arange(1, P + 1)
    return rank_c[order], count_c[order], rank_P[inv_N[~rank_mask_N]]


def counted_counts(ids_N: np.ndarray, groups_N: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """The counted half's tokens per path, in the ranking half's order: what `fit_rank_frequency`
    (with the same groups and seed) fits, for its figure."""
    return cross_counts(ids_N, split_half(len(ids_N), groups_N)[0], seed)[1]


def fit_rank_frequency(ids_N: np.ndarray, min_count: int | None = None, seed: int = 0,
                       groups_N: np.ndarray | None = None) -> PowerLawFit:
    """Fit f(r) ∝ r^-alpha to the path frequencies of these tokens (any int path labels), with the
    paths ranked on one half of the tokens and counted on the other (`split_half`, by `groups_N`
    when given; see the module doc).

    min_count None: the largest of MIN_COUNTS that leaves >= MIN_PATHS paths in range (a small
    held-out sample still gets a fit, flagged by the smaller min_count it reports). min_count counts
    tokens of the ranking half.
    Returns NaNs and a `reason` instead of raising when the data cannot support a fit (too few
    distinct paths, or too few paths with >= min_count tokens to span a decade of ranks).
    """
    ids = np.asarray(ids_N)
    if ids.ndim != 1:
        raise ValueError(f"ids_N must be 1-D, got shape {ids.shape}")
    n_tokens = int(ids.size)
    units, split = unit_codes(n_tokens, groups_N)
    rank_mask = units % 2 == 0  # split_half
    if n_tokens == 0:
        return _empty("no tokens", 0, 0, min_count or MIN_COUNTS[0], split)
    rank_c, count_c, rank_T = cross_counts(ids, rank_mask, seed)
    n_rank, n_count = int(rank_mask.sum()), int(n_tokens - rank_mask.sum())
    if min_count is None:
        min_count = next((m for m in MIN_COUNTS if np.sum(rank_c >= m) >= MIN_PATHS), MIN_COUNTS[0])
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    n_paths = len(rank_c)
    empty = lambda why: _empty(why, n_tokens, n_paths, min_count, split, n_rank, n_count)  # noqa: E731
    if n_paths < MIN_PATHS:
        return empty(f"only {n_paths} distinct path(s); a rank-frequency slope needs >= {MIN_PATHS}")
    xmax = int(np.sum(rank_c >= min_count))  # ranks 1..xmax: the ranking half's order puts them first
    if xmax < MIN_PATHS:
        return empty(f"only {xmax} path(s) have >= {min_count} tokens in the ranking half; the fit needs >= "
                     f"{MIN_PATHS} (more held-out tokens, or a lower min_count at the price of a flatter, biased tail)")

    import powerlaw  # lazy: importing it costs ~1.5 s
    from powerlaw.statistics import loglikelihood_ratio

    rng = np.random.default_rng(seed)
    r_T = rank_T[rank_T <= xmax].astype(float)
    if r_T.size < 2 * MIN_PATHS:
        return empty(f"only {r_T.size} token(s) of the counted half fall in the fitted ranks")
    if r_T.size > MAX_TOKENS:
        r_T = rng.choice(r_T, size=MAX_TOKENS, replace=False)
    x_T = r_T + rng.uniform(-0.5, 0.5, size=r_T.size)
    # xmin <= xmax/10 keeps at least one decade of ranks in every candidate fit.
    cands = np.unique(np.round(np.logspace(0, math.log10(xmax / 10), N_XMIN)).astype(int))
    best, best_xmin = None, 0
    with _quiet():
        for xmin in cands:
            pl = _fit_power_law(powerlaw, x_T, int(xmin), xmax)
            if pl is not None and (best is None or pl.D < best.D):
                best, best_xmin = pl, int(xmin)
    if best is None:
        return empty("powerlaw found no valid power-law fit for any xmin")

    tail = (r_T >= best_xmin)
    rt = r_T[tail]
    with _quiet():
        # Unit-cell masses of the fitted continuous law: the same integer data the alternatives see.
        ll_pl = np.log(np.maximum(best.cdf(rt + 0.5) - best.cdf(rt - 0.5), 1e-300))
        alts = {}
        for name, cls in (("lognormal", powerlaw.Lognormal), ("exponential", powerlaw.Exponential)):
            try:
                d = cls(data=rt, xmin=best_xmin, xmax=xmax, discrete=True, verbose=0)
                alts[name] = loglikelihood_ratio(ll_pl, np.log(np.maximum(d.pdf(rt), 1e-300)),
                                                 normalized_ratio=True)
            except (ValueError, FloatingPointError, ZeroDivisionError):
                alts[name] = (math.nan, math.nan)
    n_fit_full = int(np.sum((rank_T >= best_xmin) & (rank_T <= xmax)))
    return PowerLawFit(
        alpha=float(best.alpha),
        alpha_se=_bootstrap_se(np.unique(ids, return_inverse=True)[1].reshape(-1), rank_mask, units, min_count,
                               best_xmin, seed),
        xmin_rank=float(best_xmin), xmax_rank=float(xmax), ks_d=float(best.D),
        n_tail_tokens=n_fit_full, n_tail_paths=xmax - best_xmin + 1, n_tokens=n_tokens, n_paths=n_paths,
        r_lognormal=float(alts["lognormal"][0]), p_lognormal=float(alts["lognormal"][1]),
        r_exponential=float(alts["exponential"][0]), p_exponential=float(alts["exponential"][1]),
        min_count=min_count, split=split, n_rank_tokens=n_rank, n_count_tokens=n_count,
    )
