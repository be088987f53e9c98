"""Pareto fronts and hypervolume over objective vectors with min/max modes (numpy only)."""

from __future__ import annotations

import numpy as np


def _as_min(points: np.ndarray, modes: list[str]) -> np.ndarray:
    """Flip maximised objectives so that every column is minimised."""
    sign = np.array([1.0 if m == "min" else -1.0 for m in modes])
    return np.asarray(points, dtype=float) * sign


def pareto_mask(points, modes: list[str]) -> np.ndarray:
    """True for the non-dominated rows of `points` [N, K] (ties: both stay on the front)."""
    P = _as_min(points, modes)
    n = len(P)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated_by = np.all(P <= P[i], axis=1) & np.any(P < P[i], axis=1)
        keep[i] = not dominated_by.any()
    return keep


def hypervolume_2d(points, modes: list[str], reference) -> float:
    """Area dominated by `points` [N, 2] and bounded by `reference` (in the objectives' own units)."""
    P = _as_min(points, modes)
    ref = _as_min(reference, modes)
    P = P[np.all(P < ref, axis=1)]
    if len(P) == 0:
        return 0.0
    P = P[pareto_mask(P, ["min", "min"])]
    P = P[np.argsort(P[:, 0])]
    area, prev_y = 0.0, ref[1]
    for x, y in P:
        area += (ref[0] - x) * (prev_y - y)
        prev_y = y
    return float(area)


def hypervolume(points, modes: list[str], reference) -> float:
    """Hypervolume of `points` [N, K] bounded by `reference`; exact 2-D sweep above, Optuna's
    WFG algorithm for K > 2 (its helper is private API, hence imported only here)."""
    points = np.asarray(points, dtype=float).reshape(-1, len(modes))
    if len(modes) == 1:
        P, ref = _as_min(points, modes)[:, 0], _as_min(reference, modes)[0]
        return float(max(0.0, ref - P.min())) if len(P) else 0.0
    if len(modes) == 2:
        return hypervolume_2d(points, modes, reference)
    from optuna._hypervolume import compute_hypervolume

    P, ref = _as_min(points, modes), _as_min(reference, modes)
    P = P[np.all(P < ref, axis=1)]
    return float(compute_hypervolume(P, ref)) if len(P) else 0.0


def reference_point(points, modes: list[str], margin: float = 0.1) -> np.ndarray:
    """A reference point just beyond the worst value of every objective (nadir + `margin` of the
    range), so every observed point counts. Fixed once per sweep: hypervolumes of one sweep compare."""
    P = np.asarray(points, dtype=float).reshape(-1, len(modes))
    worst = np.array([P[:, j].max() if m == "min" else P[:, j].min() for j, m in enumerate(modes)])
    span = P.max(axis=0) - P.min(axis=0)
    span = np.where(span > 0, span, np.maximum(np.abs(worst), 1.0))
    return worst + _as_min(margin * span, modes)  # beyond the worst: up for a minimised objective, down for a max


def hypervolume_history(points, feasible, modes: list[str], reference) -> list[float]:
    """Hypervolume of the feasible points among the first i+1 (rows in completion order)."""
    P, ok = np.asarray(points, dtype=float).reshape(-1, len(modes)), np.asarray(feasible, dtype=bool)
    return [hypervolume(P[: i + 1][ok[: i + 1]], modes, reference) for i in range(len(P))]
