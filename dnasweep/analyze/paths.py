"""Path extraction: which sequence of module sets each token visited, as a dense path id.

A path is, per step, the *set* of modules a token was sent to (slot order and unused -1 slots
do not matter: top-2 routing to {A0, T1} is the same computation whichever slot holds which),
for all steps in order.

Shape legend: N tokens, S steps, K slots, M modules, P distinct paths.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PathKey = tuple[tuple[int, ...], ...]  # per step, the sorted module ids chosen


def canonical_slots(paths_NSK: np.ndarray) -> np.ndarray:
    """Per (token, step): the sorted distinct module ids, padded with -1 at the end."""
    p = np.asarray(paths_NSK)
    if p.ndim != 3:
        raise ValueError(f"paths_NSK must be [N, S, K], got shape {p.shape}")
    big = np.iinfo(np.int64).max
    # -1 sorts last as a huge sentinel, so duplicates become adjacent and padding stays at the end.
    x = np.where(p < 0, big, p.astype(np.int64))
    x = np.sort(x, axis=2)
    dup = np.zeros_like(x, dtype=bool)
    dup[..., 1:] = x[..., 1:] == x[..., :-1]
    x = np.sort(np.where(dup, big, x), axis=2)
    return np.where(x == big, -1, x)


def path_ids(paths_NSK: np.ndarray) -> tuple[np.ndarray, list[PathKey]]:
    """Dense path id per token and the path keys, ids ordered by descending frequency.

    Id 0 is the most common path (ties broken by key order, so the result is deterministic),
    hence `ids_N + 1` is each token's empirical frequency rank.
    """
    canon = canonical_slots(paths_NSK)
    N, S, K = canon.shape
    if N == 0:
        return np.zeros(0, dtype=np.int64), []
    rows_PX, inv_N, counts_P = np.unique(canon.reshape(N, S * K), axis=0, return_inverse=True,
                                         return_counts=True)
    order_P = np.argsort(-counts_P, kind="stable")  # stable: equal counts keep np.unique's key order
    new_id = np.empty_like(order_P)
    new_id[order_P] = np.arange(len(order_P))
    ids_N = new_id[inv_N.reshape(-1)]
    keys = [tuple(tuple(int(m) for m in step if m >= 0) for step in rows_PX[i].reshape(S, K)) for i in order_P]
    return ids_N.astype(np.int64), keys


def path_label(key: PathKey, module_names: Sequence[str]) -> str:
    """Readable path, e.g. "T0+A1 > I0 > M2"; a step with no module reads "-"."""
    return " > ".join("+".join(module_names[m] for m in step) if step else "-" for step in key)


def rank_frequency(ids_N: np.ndarray) -> np.ndarray:
    """Token count of every distinct path, largest first (counts_P[r-1] = frequency of rank r)."""
    ids = np.asarray(ids_N)
    if ids.ndim != 1:
        raise ValueError(f"ids_N must be 1-D, got shape {ids.shape}")
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    _, counts_P = np.unique(ids, return_counts=True)
    return np.sort(counts_P)[::-1]
