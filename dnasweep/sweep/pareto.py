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
    ref = _as_min(np.asarray(reference, dtype=float)[None], modes)[0]
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
