"""`build_report`: every analysis of one routed model, written to a folder and returned as numbers.

Outputs in out_dir: report.html (self-contained: figures embedded as base64 PNG, no external
URL), each figure as PNG, summary.json (the returned dict; NaN -> null), paths.csv (top
paths) and usage.csv (per-step module load). The CLI logs these as MLflow artifacts.

Shape legend: N tokens, S steps, K slots, M modules, G groups, P distinct paths,
C attribute classes, Q patches per image.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

import numpy as np

from dnasweep import metrics
from dnasweep.analyze import figures, usage
from dnasweep.analyze.fits import PowerLawFit, counted_counts, fit_rank_frequency
from dnasweep.analyze.html import render_html, summary_paragraph
from dnasweep.analyze.info import mi_test
from dnasweep.analyze.paths import path_ids, path_label
from dnasweep.analyze.routed import Routed

TASKS = ("lm", "vision")
TOP_PATHS = 50  # rows of paths.csv (the HTML shows the first 20)
N_EXAMPLES = 3  # example contexts per path
N_PERM = 200


def json_safe(x: Any) -> Any:
    """Plain-JSON copy of x: numpy scalars/arrays to Python, NaN and +-inf to None."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _examples(ids_N: np.ndarray, pid: int, context_N: list[str] | None) -> list[str]:
    """Up to N_EXAMPLES contexts of tokens on path pid, spread over the data (not N neighbours)."""
    if context_N is None:
        return []
    idx = np.flatnonzero(ids_N == pid)
    pick = idx[np.unique(np.linspace(0, len(idx) - 1, min(N_EXAMPLES, len(idx))).astype(int))]
    return [context_N[i] for i in pick]


def _paths_table(routed: Routed, ids_N: np.ndarray, keys: list, counts_P: np.ndarray) -> list[dict]:
    n = routed.n_tokens
    return [{"rank": r + 1, "label": path_label(keys[r], routed.module_names), "count": int(counts_P[r]),
             "share": float(counts_P[r] / n), "examples": _examples(ids_N, r, routed.context_N)}
            for r in range(min(TOP_PATHS, len(keys)))]


def _patch_flops(routed: Routed, patch_grid: tuple[int, int]) -> np.ndarray:
    """[G, Q] mean FLOPs of each image's patches; positions outside the grid (e.g. a class token) ignored."""
    q = patch_grid[0] * patch_grid[1]
    inside = routed.position_N < q
    keys = routed.group_N[inside].astype(np.int64) * q + routed.position_N[inside]
    mean, _ = usage.mean_by(routed.flops_N[inside], keys, routed.n_groups * q)
    return mean.reshape(routed.n_groups, q)


def _check_vision(routed: Routed, images_GHW: np.ndarray | None, patch_grid: tuple[int, int] | None) -> None:
    if (images_GHW is None) != (patch_grid is None):
        raise ValueError("images_GHW and patch_grid go together: give both or neither, got "
                         f"images_GHW={'set' if images_GHW is not None else None}, patch_grid={patch_grid}")
    if images_GHW is None:
        return
    if images_GHW.ndim not in (3, 4) or images_GHW.shape[0] != routed.n_groups:
        raise ValueError(f"images_GHW must be [G, H, W] (or [G, H, W, 3]) with G = {routed.n_groups} groups, "
                         f"got shape {images_GHW.shape}")
    if len(patch_grid) != 2 or min(patch_grid) < 1:
        raise ValueError(f"patch_grid must be (rows, cols) >= 1, got {patch_grid}")


def _attribute(routed: Routed, unit: str) -> dict:
    """Whether the tokens' attribute varies: with a single class (an LM corpus without byte classes
    gets attr_names ["token"]) there is nothing for a path to carry information about, and an MI of
    0 bits with p = 1 would read as a measurement."""
    seen = np.unique(routed.attr_N)
    reason = None
    if seen.size < 2:
        reason = (f"every {unit} is in the same attribute class ({routed.attr_names[int(seen[0])]!r}), so there "
                  f"is no attribute for its path to carry information about")
    return {"names": list(routed.attr_names), "n_classes_seen": int(seen.size), "measured": reason is None,
            "reason": reason}


def _mi(routed: Routed, x_N: np.ndarray, seed: int):
    """mi_test of x against the attribute with whole groups permuted (an image's patches share its
    label and route alike: a token-level shuffle made every independent dataset significant).
    Tokens are put in (group, position) order first, which MI ignores, so permuted groups exchange
    their labels position by position."""
    order = np.lexsort((routed.position_N, routed.group_N))
    return mi_test(x_N[order], routed.attr_N[order], n_perm=N_PERM, seed=seed, groups=routed.group_N[order])


def _init_fit(init_ids_N: np.ndarray, init: Routed, fit: PowerLawFit) -> PowerLawFit:
    """The init model's fit at the trained fit's min_count, so the two alphas cover comparable
    tails; only where that leaves no fit (and the trained one had its own) the smaller min_count
    it can support, which the page then states for each row."""
    if fit.ok:
        f = fit_rank_frequency(init_ids_N, min_count=fit.min_count, groups_N=init.group_N)
        if f.ok:
            return f
    return fit_rank_frequency(init_ids_N, groups_N=init.group_N)


def _routing_analyses(routed: Routed, init: Routed | None, ids_N: np.ndarray, trans_MM: np.ndarray, task: str,
                      images_GHW: np.ndarray | None, patch_grid: tuple[int, int] | None,
                      attribute: dict) -> tuple[dict, dict[str, bytes]]:
    """What a routed, uncollapsed model gets besides module usage: the path rank-frequency law, the
    information paths carry and how compute spreads (summary parts), and their figures."""
    S = routed.n_steps
    position_unit = "position" if task == "lm" else "patch index"
    group_unit = "sequence" if task == "lm" else "image"
    # Paths and their rank-frequency law, ranked on half the groups and counted on the other (init
    # model fitted the same way: the paper's alpha ~ 1 at init).
    fit = fit_rank_frequency(ids_N, groups_N=routed.group_N)
    counted_P = counted_counts(ids_N, routed.group_N)
    init_counted_P = init_fit = mi_init = None
    if init is not None:
        init_ids_N, _ = path_ids(init.paths_NSK)
        init_counted_P = counted_counts(init_ids_N, init.group_N)
        init_fit = _init_fit(init_ids_N, init, fit)
        if attribute["measured"] and np.unique(init.attr_N).size > 1:
            mi_init = _mi(init, init_ids_N, seed=0)
    # Information: does the path (or the set of modules one step sends the token to) tell its class?
    # The set, not slot 0: expert choice and the soft mixture keep slots in module order, so slot 0
    # says only whether module 0 took the token.
    mi = None
    if attribute["measured"]:
        mi_path = _mi(routed, ids_N, seed=0)
        mi_steps = [_mi(routed, path_ids(routed.paths_NSK[:, s:s + 1])[0], seed=1 + s) for s in range(S)]
        mi = {"path_vs_attr": mi_path.to_dict(),
              "step_modules_vs_attr": [dict(step=s, **m.to_dict()) for s, m in enumerate(mi_steps)],
              "init_path_vs_attr": mi_init.to_dict() if mi_init is not None else None}
    # Compute allocation.
    flops = usage.flops_summary(routed.flops_N)  # as in the usage part, for the histogram's marks
    class_mean, class_count = usage.mean_by(routed.flops_N, routed.attr_N, len(routed.attr_names))
    pos_mean, pos_count = usage.mean_by(routed.flops_N, routed.position_N)
    gc = usage.group_compute(routed.flops_N, routed.group_N, routed.group_loss_G)
    part = {
        "power_law": fit.to_dict(), "power_law_init": init_fit.to_dict() if init_fit is not None else None,
        "mi": mi,
        "compute": {"flops": flops,
                    # by attribute class: left out (None, reason in summary["attribute"]) with a single class
                    "by_class": [{"class": routed.attr_names[c], "mean_flops": class_mean[c],
                                  "count": int(class_count[c])} for c in range(len(class_count))]
                    if attribute["measured"] else None,
                    "by_position": pos_mean.tolist(), "group": gc.to_dict(),
                    "group_loss_G": routed.group_loss_G.tolist(),
                    "val_index_G": None if routed.val_index_G is None else [int(v) for v in routed.val_index_G]},
    }
    pngs = {
        "rank_frequency": figures.rank_frequency(counted_P, fit, init_counted_P, init_fit),
        "transitions": figures.transitions(trans_MM, routed.module_names),
        "flops_hist": figures.flops_hist(routed.flops_N, flops),
        **({"flops_by_class": figures.flops_by_class(class_mean, class_count, routed.attr_names)}
           if attribute["measured"] else {}),
        "flops_by_position": figures.flops_by_position(pos_mean, pos_count, position_unit),
        "compute_vs_loss": figures.compute_vs_loss(gc.flops_G, routed.group_loss_G, gc.pearson_r, gc.spearman_r,
                                                   group_unit),
    }
    if images_GHW is not None and patch_grid is not None:
        patch_GQ = _patch_flops(routed, patch_grid)
        if np.isfinite(patch_GQ[gc.highest + gc.lowest]).any():
            pngs["compute_overlay"] = figures.compute_overlay(images_GHW, patch_GQ, patch_grid, gc.highest, gc.lowest,
                                                              gc.flops_G, routed.val_index_G)
    return part, pngs


def build_report(name: str, routed: Routed, init: Routed | None, out_dir: str, task: str,
                 images_GHW: np.ndarray | None = None, patch_grid: tuple[int, int] | None = None,
                 paths_vary: bool = True, compare: dict | None = None, identity_share: float | None = None) -> dict:
    """Analyse `routed` (with `init`, the same model at initialisation, as baseline), write the
    report files into out_dir and return the summary dict (identical to summary.json).

    A collapsed model (`dnasweep.metrics.is_collapsed`: identity takes nearly every slot, or at most
    one distinct non-identity path) gets the verdict, its module usage and top paths only: its
    path law, information and compute-allocation statistics would describe a routing that does not
    happen. `paths_vary` False: the router sends every token through every module (a soft mixture),
    so a single path is no collapse. `identity_share`, when given, is the identity share (the gate
    weight on the skip path, `RoutingStats.identity_fraction`) of a router whose slots hold identity
    at n_identity/M whatever it learnt: a soft mixture, or expert choice."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if init is not None and init.module_names != routed.module_names:
        raise ValueError(f"init must route through the same modules, got {init.module_names} vs {routed.module_names}")
    _check_vision(routed, images_GHW, patch_grid)
    os.makedirs(out_dir, exist_ok=True)
    unit = "token" if task == "lm" else "patch"
    names = routed.module_names
    M, S = routed.n_modules, routed.n_steps

    # The collapse verdict comes first: when the pool is bypassed, the statistics of paths, of the
    # information they carry and of how compute spreads describe a routing that does not happen.
    ids_N, keys = path_ids(routed.paths_NSK)
    counts_P = np.bincount(ids_N)
    used, is_id = usage.identity_slots(routed.paths_NSK, names)
    slot_identity = float(is_id[used].mean()) if used.any() else math.nan
    overall_identity = slot_identity if identity_share is None else identity_share
    real_paths = usage.nonidentity_paths(routed.paths_NSK, names)
    collapsed = metrics.is_collapsed(overall_identity if math.isfinite(overall_identity) else 0.0,
                                     len(real_paths), paths_vary)
    collapse = {"collapsed": collapsed, "identity_share": overall_identity, "distinct_paths": len(real_paths),
                "only_path": path_label(real_paths[0], names) if len(real_paths) == 1 else None,
                "paths_vary": paths_vary, "identity_threshold": metrics.COLLAPSE_IDENTITY_SHARE,
                "max_paths": metrics.COLLAPSE_MAX_PATHS}

    # Module usage.
    load_SM = usage.load_heatmap(routed.paths_NSK, M)
    slot_S = usage.identity_slot_share(routed.paths_NSK, names)
    skip_S = usage.skip_share(routed.paths_NSK, names)
    reuse_share, reuse_M = usage.module_reuse(routed.paths_NSK, names)
    trans_MM = usage.transition_matrix(routed.paths_NSK, M)
    flops = usage.flops_summary(routed.flops_N)

    summary: dict[str, Any] = {
        "name": name, "task": task, "unit": unit, "units": "tokens" if task == "lm" else "patches",
        "n_tokens": routed.n_tokens, "n_steps": S, "n_slots": int(routed.paths_NSK.shape[2]),
        "n_modules": M, "module_names": list(names), "n_paths": len(keys), "n_groups": routed.n_groups,
        "collapse": collapse, "attribute": _attribute(routed, unit), "power_law": None, "power_law_init": None,
        "mi": None,
        "usage": {"identity_share": overall_identity, "identity_from_gates": identity_share is not None,
                  "identity_slot_share": slot_identity, "identity_slot_share_S": slot_S.tolist(),
                  "skip_share_S": skip_S.tolist(), "reuse_token_share": reuse_share,
                  "reuse_per_module": dict(zip(names, reuse_M.tolist(), strict=True)),
                  "load_SM": load_SM.tolist(), "transition_MM": trans_MM.tolist()},
        "compute": {"flops": flops},
        "top_paths": _paths_table(routed, ids_N, keys, counts_P),
    }
    # Figures: written as PNG and embedded in the HTML from the same bytes.
    pngs = {"load_heatmap": figures.load_heatmap(load_SM, names),
            "identity_per_step": figures.identity_per_step(slot_S, skip_S)}
    if not collapsed:
        part, more = _routing_analyses(routed, init, ids_N, trans_MM, task, images_GHW, patch_grid,
                                       summary["attribute"])
        summary.update(part)
        pngs = {"rank_frequency": more.pop("rank_frequency"), **pngs, **more}
    summary["files"] = (["report.html", "summary.json", "paths.csv", "usage.csv"]
                        + [f"{k}.png" for k in pngs])
    summary["compare"] = compare or {}  # gains against a sweep's dense reference frontier, as the trial reported
    summary = json_safe(summary)
    summary["text"] = summary_paragraph(summary)

    for key, png in pngs.items():
        with open(os.path.join(out_dir, f"{key}.png"), "wb") as f:
            f.write(png)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, allow_nan=False)
    with open(os.path.join(out_dir, "paths.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "label", "count", "share", "examples"])
        for row in summary["top_paths"]:
            w.writerow([row["rank"], row["label"], row["count"], f"{row['share']:.6g}", " | ".join(row["examples"])])
    with open(os.path.join(out_dir, "usage.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", *names, "identity_slot_share", "skip_share"])
        for s in range(S):
            w.writerow([s, *(f"{v:.6g}" for v in load_SM[s]), f"{slot_S[s]:.6g}", f"{skip_S[s]:.6g}"])
    with open(os.path.join(out_dir, "report.html"), "w", encoding="utf-8") as f:
        f.write(render_html(summary, pngs))
    return summary
