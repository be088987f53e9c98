"""The report's figures, each rendered to PNG bytes (the report writes them to disk and embeds them).

matplotlib is imported lazily and only through `matplotlib.figure.Figure`, never pyplot: no GUI
backend, no global figure registry to leak, and Figure.savefig renders PNG with Agg.

Shape legend: N tokens, S steps, M modules, P distinct paths, G groups, C attribute classes,
H x W image pixels, Q patches per image.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from dnasweep.analyze.fits import PowerLawFit

DPI = 90  # keeps the self-contained HTML around a few hundred kB
MAX_BARS = 40  # class bar charts show at most this many classes (the most frequent)


def _figure(w: float = 6.0, h: float = 4.0, grid: tuple[int, int] | None = None):
    """(figure, its axes): one axes, or a 2-D array of them for `grid` (rows, cols)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    return fig, fig.subplots(*grid, squeeze=False) if grid else fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # Software=None drops matplotlib's tEXt chunk, which carries a URL: the report stays link-free.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _num(x: float, fmt: str = ".2f") -> str:
    """A number for a title or label; 'n/a' where it is undefined (never 'nan')."""
    return format(x, fmt) if np.isfinite(x) else "n/a"


def rank_frequency(counts_P: np.ndarray, fit: PowerLawFit, init_counts_P: np.ndarray | None = None,
                   init_fit: PowerLawFit | None = None) -> bytes:
    """Log-log token count vs path rank, fitted power law over its range, init model as baseline.
    counts_P: the counted half's tokens per path in the ranking half's order (fits.cross_counts), the
    data the fit saw; paths the counted half never took have no point on a log axis."""
    fig, ax = _figure()
    for counts, f, name, color in ((counts_P, fit, "trained", "C0"), (init_counts_P, init_fit, "init", "C7")):
        if counts is None or len(counts) == 0:
            continue
        r = np.arange(1, len(counts) + 1)
        seen = counts > 0
        ax.loglog(r[seen], counts[seen], ".", ms=3, color=color, alpha=0.6, label=f"{name} ({len(counts)} paths)")
        if f is not None and f.ok:
            rr = np.geomspace(f.xmin_rank, f.xmax_rank, 50)
            ax.loglog(rr, f.expected_counts(rr), "-" if name == "trained" else "--", color="C3" if name == "trained"
                      else "k", lw=1.5, label=f"{name} fit: α = {_num(f.alpha)} ± {_num(f.alpha_se)}")
    ax.set(xlabel="path rank (in the ranking half)", ylabel="tokens on path (in the counted half)",
           title="Path rank-frequency (split-half)")
    ax.legend(fontsize=8)
    return _png(fig)


def load_heatmap(load_SM: np.ndarray, module_names: Sequence[str]) -> bytes:
    """Share of tokens using each module at each step."""
    S, M = load_SM.shape
    fig, ax = _figure(max(4.0, 0.45 * M + 2), max(2.5, 0.4 * S + 1.5))
    im = ax.imshow(load_SM, aspect="auto", cmap="viridis", vmin=0)
    ax.set_xticks(range(M), module_names, rotation=90 if M > 12 else 0, fontsize=8)
    ax.set_yticks(range(S), [f"step {s}" for s in range(S)], fontsize=8)
    if S * M <= 120:
        for s in range(S):
            for m in range(M):
                ax.text(m, s, f"{load_SM[s, m]:.2f}", ha="center", va="center", fontsize=7,
                        color="w" if load_SM[s, m] < 0.6 * max(load_SM.max(), 1e-12) else "k")
    fig.colorbar(im, ax=ax, label="share of tokens")
    ax.set_title("Module load per step")
    return _png(fig)


def identity_per_step(slot_share_S: np.ndarray, skip_share_S: np.ndarray) -> bytes:
    """Identity share of routed slots and share of tokens skipping the step entirely."""
    S = len(slot_share_S)
    fig, ax = _figure(max(4.0, 0.5 * S + 2), 3.2)
    x = np.arange(S)
    ax.bar(x - 0.2, slot_share_S, 0.4, label="identity share of slots")
    ax.bar(x + 0.2, skip_share_S, 0.4, label="tokens skipping the step")
    ax.set_xticks(x, [str(s) for s in x])
    ax.set(xlabel="step", ylim=(0, 1), title="Identity (skip) routing per step")
    ax.legend(fontsize=8)
    return _png(fig)


def transitions(trans_MM: np.ndarray, module_names: Sequence[str]) -> bytes:
    """Step-to-step module transitions: P(b at step s+1 | a at step s) (usage.transition_matrix)."""
    M = len(module_names)
    fig, ax = _figure(max(4.0, 0.4 * M + 2), max(3.5, 0.4 * M + 1.5))
    im = ax.imshow(trans_MM, cmap="magma", vmin=0, vmax=max(float(trans_MM.max()), 1e-12))
    ax.set_xticks(range(M), module_names, rotation=90 if M > 12 else 0, fontsize=8)
    ax.set_yticks(range(M), module_names, fontsize=8)
    ax.set(xlabel="module at step s+1", ylabel="module at step s", title="Step-to-step transitions")
    fig.colorbar(im, ax=ax, label="P(next | current)")
    return _png(fig)


def flops_hist(flops_N: np.ndarray, summary: dict[str, float]) -> bytes:
    """Distribution of forward FLOPs per token, with mean and 5/95 % quantiles marked."""
    fig, ax = _figure(6.0, 3.5)
    ax.hist(flops_N, bins=min(60, max(10, len(np.unique(flops_N)))), color="C0", alpha=0.8)
    for key, style in (("mean", "-"), ("q05", ":"), ("q95", ":")):
        ax.axvline(summary[key], color="C3", ls=style, lw=1, label=key)
    ax.set(xlabel="forward FLOPs per token", ylabel="tokens", title=f"Compute per token (CV {_num(summary['cv'])})")
    ax.legend(fontsize=8)
    return _png(fig)


def flops_by_class(mean_C: np.ndarray, count_C: np.ndarray, attr_names: Sequence[str]) -> bytes:
    """Mean FLOPs per token of each attribute class (the MAX_BARS most frequent classes)."""
    has = np.flatnonzero(count_C > 0)
    keep = np.sort(has[np.argsort(-count_C[has], kind="stable")][:MAX_BARS])
    fig, ax = _figure(max(4.0, 0.3 * len(keep) + 2), 3.5)
    ax.bar(range(len(keep)), mean_C[keep], color="C2")
    ax.set_xticks(range(len(keep)), [attr_names[c] for c in keep], rotation=90, fontsize=7)
    more = f" ({MAX_BARS} most frequent of {len(has)})" if len(has) > MAX_BARS else ""
    ax.set(ylabel="mean FLOPs per token", title="Compute by class" + more)
    return _png(fig)


def flops_by_position(mean_X: np.ndarray, count_X: np.ndarray, unit: str) -> bytes:
    """Mean FLOPs per token at each sequence position / patch index."""
    fig, ax = _figure(6.0, 3.2)
    x = np.flatnonzero(count_X > 0)
    ax.plot(x, mean_X[x], "-", marker="." if len(x) < 80 else None, color="C4")
    ax.set(xlabel=unit, ylabel="mean FLOPs per token", title=f"Compute by {unit}")
    return _png(fig)


def compute_vs_loss(flops_G: np.ndarray, loss_G: np.ndarray, pearson_r: float, spearman_r: float, unit: str) -> bytes:
    """Mean compute of each group against its loss."""
    ok = np.isfinite(flops_G) & np.isfinite(loss_G)
    fig, ax = _figure(5.0, 4.0)
    ax.scatter(flops_G[ok], loss_G[ok], s=8, alpha=0.6, color="C1")
    ax.set(xlabel=f"mean FLOPs per token of the {unit}", ylabel=f"{unit} loss")
    ax.set_title(f"Compute vs loss (Pearson {_num(pearson_r)}, Spearman {_num(spearman_r)})"
                 if np.isfinite(pearson_r) and np.isfinite(spearman_r)
                 else "Compute vs loss (no correlation: compute or loss does not vary)")
    return _png(fig)


def compute_overlay(images_GHW: np.ndarray, patch_flops_GQ: np.ndarray, patch_grid: tuple[int, int],
                    highest: Sequence[int], lowest: Sequence[int], flops_G: np.ndarray,
                    val_index_G: np.ndarray | None = None) -> bytes:
    """Highest- and lowest-compute images with their per-patch compute overlaid (shared colour scale),
    each titled by its index in the val split (`val_index_G`) when known, else its place in the subset."""
    gh, gw = patch_grid
    rows = [("highest", list(highest)), ("lowest", list(lowest))]
    ncol = max(1, max(len(r[1]) for r in rows))
    fig, axes = _figure(2.0 * ncol + 1.0, 4.4, grid=(2, ncol))
    vals = patch_flops_GQ[[g for _, gs in rows for g in gs]]
    vmin, vmax = float(np.nanmin(vals)), float(np.nanmax(vals))
    im = None
    for row_axes, (title, groups) in zip(axes, rows, strict=True):
        for ax in row_axes:
            ax.set_axis_off()
        for ax, g in zip(row_axes, groups, strict=False):  # a row may have fewer images than columns
            img = images_GHW[g]
            H, W = img.shape[:2]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
            # Patches are row-major over the grid; extent stretches the grid over the whole image.
            im = ax.imshow(patch_flops_GQ[g].reshape(gh, gw), cmap="inferno", alpha=0.5, vmin=vmin, vmax=vmax,
                           extent=(-0.5, W - 0.5, H - 0.5, -0.5), interpolation="nearest")
            name = f"val image {val_index_G[g]}" if val_index_G is not None else f"image {g}"
            ax.set_title(f"{title}: {name} ({flops_G[g]:.3g})", fontsize=8)
    if im is not None:
        fig.colorbar(im, ax=axes, label="FLOPs per patch", shrink=0.8)
    return _png(fig)
