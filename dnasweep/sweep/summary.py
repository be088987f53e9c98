"""The end of a sweep: every trial's directory on the driver, the MLflow parent run closed with the
front, the trial table, plots and hypervolume, reports on the front's trials, and what to open."""

from __future__ import annotations

import os
import time

from dnasweep import metrics as M
from dnasweep.space import SearchSpace
from dnasweep.sweep.study import SweepResult, counts, front_trial_dirs, result_of, trial_rows


def finish_sweep(study, space: SearchSpace, store, tracker, uri: str, log, analyze: bool | None,
                 elapsed_s: float) -> SweepResult:
    from dnasweep.sweep.tracking_uri import redact

    sweep_dir = store.sweep_dir
    for t in study.get_trials(deepcopy=False):  # trials that ended under an earlier head (resume from a store)
        if t.user_attrs.get("ray_trial_id"):
            store.fetch(t.user_attrs["ray_trial_id"])
            if t.state.name == "PRUNED":  # final now that every trial has stopped: its optimizer state can go
                store.pruned_ended(t.user_attrs["ray_trial_id"])
    front = result_of(study, space, sweep_dir).front
    try:  # a tracking failure is reported, never raised: the sweep's results are safe on disk
        close_parent(tracker, front, trial_rows(study, space))
    except Exception as e:
        tracker.record_failure("finish", e)
    c = counts(study)
    lost = f", {c['abandoned']} abandoned" if c["abandoned"] else ""
    pruned = f", {c['pruned']} pruned" if c["pruned"] else ""
    log(f"sweep {study.study_name}: {c['complete']} complete{pruned}, {c['failed']} failed{lost}, {elapsed_s:.0f} s; "
        f"results in {sweep_dir}")
    log(f"look at it: dnasweep ui {sweep_dir}  (MLflow UI and optuna-dashboard; or open {sweep_dir}/pareto.html; "
        f"the store: {redact(uri)})")
    if (space.analyze.front if analyze is None else analyze) and front:
        _analyze_front(sweep_dir, front, uri, space, log)
    store.mirror()
    if store.uri:
        log(f"sweep kept in {store.uri}")
    if tracker.errors:
        log(f"warning: {len(tracker.errors)} MLflow tracking calls failed; first: {tracker.errors[0]}")
    return result_of(study, space, sweep_dir, tracking_errors=tracker.errors)


def _analyze_front(sweep_dir: str, front: list[dict], uri: str, space: SearchSpace, log) -> None:
    """Reports for the front's trials; a failing analysis is reported and never fails the sweep."""
    from dnasweep.sweep.analysis import analyze_in_sweep

    dirs = front_trial_dirs(sweep_dir, front)
    log(f"analysing the {len(dirs)} Pareto-front trials (analyze.front: false to skip)")
    try:
        analyze_in_sweep(sweep_dir, dirs, log=log, uri=uri, max_examples=space.analyze.examples)
    except Exception as e:
        log(f"warning: analysis failed ({type(e).__name__}: {e}); rerun it with: dnasweep analyze {sweep_dir}")


def close_parent(t, front: list[dict], rows: list[dict]) -> None:
    """Close the parent run with the sweep's summary: Pareto front table (CSV), every complete
    trial (CSV), Pareto plots (PNG, HTML), and the hypervolume and front size after each complete trial
    (`rows`: complete trials in completion order; pruned and failed ones add no point, so step i of
    the sweep/* metrics is the i-th complete trial). The files are written first: a store down at the
    end of the sweep does not keep them from the user."""
    import numpy as np
    from mlflow.entities import Metric

    from dnasweep.sweep import plots
    from dnasweep.sweep.pareto import hypervolume_history, pareto_mask, reference_point

    objs, modes = [o.metric for o in t.space.objectives], [o.mode for o in t.space.objectives]
    paths = [_write_csv(os.path.join(t.sweep_dir, "pareto_front.csv"), front),
             _write_csv(os.path.join(t.sweep_dir, "trials.csv"), [
                 {"trial": r["number"], **dict(zip(objs, r["values"], strict=True)), "feasible": r["feasible"],
                  "pareto": r["front"], **r["params"], "ray_trial_id": r["ray_trial_id"]}
                 for r in sorted(rows, key=lambda r: r["number"])])]
    history: list[float] = []
    ok = [r["values"] for r in rows if r["feasible"]]
    if ok:
        ref = reference_point(ok, modes)
        raw = hypervolume_history([r["values"] for r in rows], [r["feasible"] for r in rows], modes, ref)
        # normalised to the box between the best value of each objective and the reference point
        box = float(np.prod(np.abs(ref - np.array([min(v) if m == "min" else max(v) for m, v in
                                                    zip(modes, zip(*ok, strict=True), strict=True)]))))
        history = [h / box if box > 0 else 0.0 for h in raw]
        seen = lambda i: [r["values"] for r in rows[: i + 1] if r["feasible"]]  # noqa: E731
        front_sizes = [int(pareto_mask(seen(i), modes).sum()) if seen(i) else 0 for i in range(len(rows))]
    reference = list(t.rungs.values())
    paths += plots.write_all(rows, t.space, history, t.sweep_dir, reference)
    if reference:
        paths.append(os.path.join(t.sweep_dir, "reference.csv"))
    paths += [p for p in (os.path.join(t.sweep_dir, "space.json"), t.space.source) if os.path.isfile(p)]

    t.drain(wait_s=120.0)
    for r in rows:  # the front table names trials by Optuna number: so does MLflow
        if r["ray_trial_id"] in t.runs:
            rid = t.runs[r["ray_trial_id"]]
            t.client.set_tag(rid, "dnasweep.optuna_trial", str(r["number"]))
            t.client.set_tag(rid, "dnasweep.front", str(r["front"]).lower())
    if ok:
        ts = int(time.time() * 1000)
        # a finished sweep resumed (to write a tracking backlog) closes its parent again: the same
        # history is there already, and MLflow would keep a second copy of every point
        if len(t.client.get_metric_history(t.parent_id, M.SWEEP_FRONT_SIZE)) != len(rows):
            t.client.log_batch(t.parent_id, metrics=[Metric(k, v, ts, i + 1) for k, vs in (
                (M.SWEEP_HYPERVOLUME, history), (M.SWEEP_HYPERVOLUME_RAW, raw), (M.SWEEP_FRONT_SIZE, front_sizes))
                for i, v in enumerate(vs)])
        t.log_params(t.parent_id, {f"hypervolume_ref.{o.metric}": f"{v:.6g}"
                                   for o, v in zip(t.space.objectives, ref, strict=True)})
    for path in paths:
        t.client.log_artifact(t.parent_id, path)
    t.client.set_terminated(t.parent_id, "FINISHED")


def _write_csv(path: str, rows: list[dict]) -> str:
    import csv

    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return path
