"""Analysis of a sweep's trials: reports for its Pareto-front trials (or one named trial), logged as
artifacts of each trial's MLflow child run under `analysis/`. Called by `dnasweep analyze` on a
sweep and, unless switched off, at the end of `dnasweep run`."""

from __future__ import annotations

import os

from dnasweep.errors import ConfigError, Problem


def trial_dir(sweep_dir: str, trial: str) -> str:
    """SWEEP/TRIAL where TRIAL is a Ray trial id (its folder in SWEEP/trials) or an Optuna trial number."""
    direct = os.path.join(sweep_dir, "trials", trial)
    if os.path.isdir(direct):
        return direct
    if trial.isdigit():
        from dnasweep.sweep.study import open_study

        by_number = {t.number: t for t in open_study(sweep_dir).trials}
        t = by_number.get(int(trial))
        if t is not None and t.user_attrs.get("ray_trial_id"):
            return os.path.join(sweep_dir, "trials", t.user_attrs["ray_trial_id"])
    known = sorted(os.listdir(os.path.join(sweep_dir, "trials"))) if os.path.isdir(
        os.path.join(sweep_dir, "trials")) else []
    shown = ", ".join(known[:8]) + (f", ... ({len(known)} in all)" if len(known) > 8 else "")
    raise ConfigError([Problem("TARGET", f"{sweep_dir} has no trial {trial!r}",
                               f"use a trial id ({shown or 'none yet'}) or an Optuna trial number")],
                      "analyze")


def _mlflow_run(sweep_dir: str, ray_trial_id: str, uri: str | None):
    """(client, run id) of the trial's child run, or (None, None) when the store has none."""
    from mlflow import MlflowClient

    from dnasweep.sweep.study import read_space
    from dnasweep.sweep.tracking_uri import resolve_uri

    space = read_space(sweep_dir)
    experiment = space.tracking.experiment
    client = MlflowClient(uri or resolve_uri(None, sweep_dir, space, "analyze"))
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`dnasweep.trial` = '{ray_trial_id}'",
                              max_results=1) if exp else []
    return (client, runs[0].info.run_id) if runs else (None, None)


def analyze_in_sweep(sweep_dir: str, trial_dirs: list[str], log=print, uri: str | None = None,
                     max_examples: int | None = None, out_dir: str | None = None, device: str = "cpu") -> list[dict]:
    """Report on each trial directory of the sweep and log the files to its MLflow run. Reports go to
    TRIAL/analysis, or with `out_dir` to OUT (one trial) or OUT/ID (several)."""
    from dnasweep.analyze.trial import analyze_trial

    out = []
    for d in trial_dirs:
        ray_id = os.path.basename(os.path.normpath(d))
        where = None if out_dir is None else out_dir if len(trial_dirs) == 1 else os.path.join(out_dir, ray_id)
        summary, report_dir = analyze_trial(d, where, max_examples, device)
        client, run_id = _mlflow_run(sweep_dir, ray_id, uri)
        if client is not None:
            client.log_artifacts(run_id, report_dir, artifact_path="analysis")
        log(f"analysis of {ray_id}: {os.path.join(report_dir, 'report.html')}"
            + ("" if client else " (no MLflow run found for it)"))
        out.append({"trial_dir": d, "report_dir": report_dir, "mlflow_run": run_id, "summary": summary})
    return out


def front_dirs(sweep_dir: str) -> list[str]:
    """Trial directories of the sweep's current Pareto front."""
    from dnasweep.sweep.study import front_trial_dirs, load_sweep

    res, _ = load_sweep(sweep_dir)
    return front_trial_dirs(sweep_dir, res.front)
