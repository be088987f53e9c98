"""Power-law fit of the path rank-frequency law, f(r) ∝ r^-alpha (r = 1 for the most common path).

Method (chosen after checking the alternatives on Zipf samples with known alpha):

* The fitted variable is each *token's path rank*: a token on the r-th most frequent path
  contributes the value r. If path frequencies follow f(r) ∝ r^-alpha, these values are draws
  from p(r) ∝ r^-alpha, so the fitted exponent IS alpha (no conversion). xmin and xmax are ranks.
* The other common route, fitting the distribution of path *counts* (p(c) ∝ c^-(1+1/alpha)),
  sees only a few hundred paths in its tail and missed alpha = 1.2 / 1.5 by up to 0.1 on
  100k-token samples; the token-rank fit uses every token and is within ~0.02.
* alpha near 1 (the DNA paper's value) is not normalisable on [xmin, inf), so the fit needs an
  upper cut-off: xmax = the last rank whose path has >= `min_count` tokens. Below ~30 tokens
  Poisson noise reorders the paths (more low-frequency paths fluctuate up than down), which
  flattens the empirical tail; min_count=10 biased alpha down by ~0.02, 30 removes it.
* powerlaw's discrete power law normalises with the Hurwitz zeta function, which only exists
  for alpha > 1, so it cannot report alpha <= 1. We therefore fit powerlaw's *continuous*
  power law on [xmin - 1/2, xmax + 1/2] to the ranks dequantised with uniform jitter in
  (-1/2, 1/2); this is the discrete law binned to unit cells, and the jitter makes the KS
  distance (used to pick xmin, Clauset et al. 2009) free of the atoms integers would create.
* Likelihood ratios vs lognormal and exponential: powerlaw 2.0's *continuous* lognormal and
  exponential ignore xmax in their normalisation, so they are fitted in powerlaw's discrete
  mode (which normalises over [xmin, xmax]) on the integer ranks, and the power law is scored
  on the same integer ranks with its unit-cell masses (cdf(r + 1/2) - cdf(r - 1/2)).

Shape legend: N tokens, P distinct paths, T tokens in the fitted rank range.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

MIN_PATHS = 10  # below this many ranks (one decade) a slope is not meaningful
N_XMIN = 12  # log-spaced xmin candidates; scanning every rank costs ~0.1 s each for no gain
MAX_TOKENS = 300_000  # tail tokens kept for the fit (a seeded subsample beyond this; se stays tiny)


@dataclass
class PowerLawFit:
    """Result of `fit_rank_frequency`; NaN fields and a `reason` when no fit was possible."""

    alpha: float  # frequency of the r-th most common path ∝ r^-alpha
    alpha_se: float  # asymptotic (Fisher) standard error at the chosen xmin/xmax
    xmin_rank: float  # first rank of the fitted range (a rank, not a count)
    xmax_rank: float  # last rank of the fitted range: last path with >= min_count tokens
    ks_d: float  # Kolmogorov-Smirnov distance of the fit over [xmin_rank, xmax_rank]
    n_tail_tokens: int  # tokens whose path rank lies in the fitted range
    n_tail_paths: int  # distinct paths (ranks) in the fitted range
    n_tokens: int  # all tokens
    n_paths: int  # all distinct paths
    r_lognormal: float  # normalised log-likelihood ratio (Vuong z), > 0 favours the power law
    p_lognormal: float  # significance of its sign
    r_exponential: float
    p_exponential: float
    min_count: int
    reason: str | None = None  # why the fit is missing, None when it exists

    @property
    def ok(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict:
        return asdict(self)

    def expected_counts(self, ranks: np.ndarray) -> np.ndarray:
        """Token counts the fit predicts at these ranks (the fitted line of a rank-frequency plot)."""
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


def _fisher_se(a: float, lo: float, hi: float, n: int) -> float:
    """1/sqrt(n Var(ln X)) for p(x) ∝ x^-a on [lo, hi]: the power law is an exponential family in
    ln x, so Var(ln X) is the per-sample Fisher information. powerlaw's own (alpha-1)/sqrt(n)
    assumes no xmax and reads 0 at alpha = 1."""
    u = np.linspace(math.log(lo), math.log(hi), 4001)
    w = np.exp((1.0 - a) * (u - u.max() if a < 1 else u - u.min()))  # shifted: no overflow
    w /= w.sum()
    var = float(np.sum(w * u**2) - np.sum(w * u) ** 2)
    return 1.0 / math.sqrt(n * var) if var > 0 and n > 0 else math.nan


def _empty(reason: str, n_tokens: int, n_paths: int, min_count: int) -> PowerLawFit:
    nan = math.nan
    return PowerLawFit(nan, nan, nan, nan, nan, 0, 0, n_tokens, n_paths, nan, nan, nan, nan, min_count, reason)


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
                                    parameter_ranges={"alpha": [0.05, 8.0]}, verbose=0)
        except ValueError:
            continue
        if np.isfinite(pl.alpha) and np.isfinite(pl.D) and not pl.noise_flag:
            return pl
    return None


MIN_COUNTS = (30, 10)  # tried in turn when min_count is not given: unbiased first, then a small sample


def fit_rank_frequency(ids_N: np.ndarray, min_count: int | None = None, seed: int = 0) -> PowerLawFit:
    """Fit f(r) ∝ r^-alpha to the path frequencies of these tokens (any int path labels).

    min_count None: the largest of MIN_COUNTS that leaves >= MIN_PATHS paths in range (a small
    held-out sample still gets a fit, flagged by the smaller min_count it reports).
    Returns NaNs and a `reason` instead of raising when the data cannot support a fit (too few
    distinct paths, or too few paths with >= min_count tokens to span a decade of ranks).
    """
    if min_count is None:
        _, counts = np.unique(np.asarray(ids_N), return_counts=True)
        min_count = next((m for m in MIN_COUNTS if np.sum(counts >= m) >= MIN_PATHS), MIN_COUNTS[0])
    ids = np.asarray(ids_N)
    if ids.ndim != 1:
        raise ValueError(f"ids_N must be 1-D, got shape {ids.shape}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    n_tokens = int(ids.size)
    if n_tokens == 0:
        return _empty("no tokens", 0, 0, min_count)
    _, inv_N, counts_P = np.unique(ids, return_inverse=True, return_counts=True)
    n_paths = len(counts_P)
    if n_paths < MIN_PATHS:
        return _empty(f"only {n_paths} distinct path(s); a rank-frequency slope needs >= {MIN_PATHS}",
                      n_tokens, n_paths, min_count)
    order = np.argsort(-counts_P, kind="stable")
    rank_P = np.empty(n_paths, dtype=np.int64)
    rank_P[order] = np.arange(1, n_paths + 1)
    rank_N = rank_P[inv_N.reshape(-1)]
    xmax = int(np.sum(counts_P >= min_count))
    if xmax < MIN_PATHS:
        return _empty(f"only {xmax} path(s) have >= {min_count} tokens; the fit needs >= {MIN_PATHS} "
                      f"(more held-out tokens, or a lower min_count at the price of a flatter, biased tail)",
                      n_tokens, n_paths, min_count)

    import powerlaw  # lazy: importing it costs ~1.5 s
    from powerlaw.statistics import loglikelihood_ratio

    rng = np.random.default_rng(seed)
    r_T = rank_N[rank_N <= xmax].astype(float)
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
        return _empty("powerlaw found no valid power-law fit for any xmin", n_tokens, n_paths, min_count)

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
    n_fit_full = int(np.sum((rank_N >= best_xmin) & (rank_N <= xmax)))
    return PowerLawFit(
        alpha=float(best.alpha),
        alpha_se=_fisher_se(float(best.alpha), best_xmin - 0.5, xmax + 0.5, int(rt.size)),
        xmin_rank=float(best_xmin), xmax_rank=float(xmax), ks_d=float(best.D),
        n_tail_tokens=n_fit_full, n_tail_paths=xmax - best_xmin + 1, n_tokens=n_tokens, n_paths=n_paths,
        r_lognormal=float(alts["lognormal"][0]), p_lognormal=float(alts["lognormal"][1]),
        r_exponential=float(alts["exponential"][0]), p_exponential=float(alts["exponential"][1]),
        min_count=min_count,
    )
