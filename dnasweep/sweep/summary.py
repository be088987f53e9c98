"""The end of a sweep: every trial's directory on the driver, the MLflow parent run closed with the
front, the trial table, plots and hypervolume, reports on the front's trials, and what to open."""

from __future__ import annotations

from dnasweep.space import SearchSpace
from dnasweep.sweep.study import SweepResult, counts, front_trial_dirs, result_of, trial_rows


def finish_sweep(study, space: SearchSpace, store, tracker, uri: str, log, analyze: bool | None,
                 elapsed_s: float) -> SweepResult:
    from dnasweep.sweep.tracking import redact

    sweep_dir = store.sweep_dir
    for t in study.get_trials(deepcopy=False):  # trials that ended under an earlier head (resume from a store)
        if t.user_attrs.get("ray_trial_id"):
            store.fetch(t.user_attrs["ray_trial_id"])
    front = result_of(study, space, sweep_dir).front
    tracker.finish(front, trial_rows(study, space))
    c = counts(study)
    lost = f", {c['abandoned']} abandoned" if c["abandoned"] else ""
    log(f"sweep {study.study_name}: {c['complete']} complete, {c['failed']} failed{lost}, {elapsed_s:.0f} s; "
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
