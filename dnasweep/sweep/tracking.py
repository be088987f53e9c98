"""MLflow tracking of a sweep, written from the driver only (one writer per store, so a SQLite
store never locks): one parent run per sweep, one child run per trial (`mlflow.parentRunId`).

Default store: sqlite:///SWEEP/mlflow.db, opened with
    mlflow ui --backend-store-uri sqlite:///SWEEP/mlflow.db
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ray.tune import Callback

from dnasweep.config import flatten
from dnasweep.sweep.space import SearchSpace

# Ray adds bookkeeping keys to every result; only our metrics (name with a "/") are logged.
_SKIP_PREFIXES = ("config/",)


def default_uri(sweep_dir: str) -> str:
    return f"sqlite:///{os.path.join(sweep_dir, 'mlflow.db')}"


class MLflowSweepLogger(Callback):
    """Ray Tune callback (runs on the driver): mirrors trials into MLflow child runs."""

    def __init__(self, space: SearchSpace, name: str, sweep_dir: str, uri: str):
        import mlflow
        from mlflow import MlflowClient

        self.space, self.sweep_dir = space, sweep_dir
        mlflow.set_tracking_uri(uri)
        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(space.experiment)
        # A new experiment keeps its artifacts in the sweep directory (MLflow's default would be
        # ./mlruns under whatever directory the user happened to start from).
        self.exp_id = exp.experiment_id if exp else self.client.create_experiment(
            space.experiment, artifact_location=Path(sweep_dir, "mlartifacts").resolve().as_uri())
        parent = self.client.create_run(self.exp_id, run_name=name, tags={"dnasweep.sweep": name})
        self.parent_id = parent.info.run_id
        base = flatten(space.base)
        self.client.log_batch(self.parent_id, params=[_param(f"base.{k}", v) for k, v in sorted(base.items())][:500])
        self.runs: dict[str, str] = {}  # Ray trial id -> MLflow run id

    def _run(self, trial) -> str:
        if trial.trial_id not in self.runs:
            run = self.client.create_run(self.exp_id, run_name=trial.trial_id,
                                         tags={"mlflow.parentRunId": self.parent_id, "dnasweep.trial": trial.trial_id})
            self.runs[trial.trial_id] = run.info.run_id
            self.client.log_batch(run.info.run_id, params=[_param(k, v) for k, v in trial.config.items()])
        return self.runs[trial.trial_id]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        run_id = self._run(trial)
        step = int(result.get("step", 0))
        ts = int(result.get("timestamp", 0)) * 1000
        metrics = [Metric(k, float(v), ts, step) for k, v in result.items()
                   if "/" in k and not k.startswith(_SKIP_PREFIXES) and isinstance(v, int | float)
                   and not isinstance(v, bool) and math.isfinite(v)]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "FAILED")

    def _finish(self, trial, status: str):
        run_id = self._run(trial)
        trial_dir = os.path.join(self.sweep_dir, "trials", trial.trial_id)
        for name in ("config.yaml", "metrics.jsonl", "result.json"):
            path = os.path.join(trial_dir, name)
            if os.path.exists(path):
                self.client.log_artifact(run_id, path)
        self.client.set_terminated(run_id, status)

    def finish(self, front: list[dict]) -> None:
        """Close the parent run with the Pareto front table as an artifact."""
        import csv

        path = os.path.join(self.sweep_dir, "pareto_front.csv")
        keys = sorted({k for row in front for k in row}, key=lambda k: (k != "trial", k))
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(front)
        self.client.log_artifact(self.parent_id, path)
        self.client.set_terminated(self.parent_id, "FINISHED")


def _param(key: str, value):
    from mlflow.entities import Param

    return Param(key, str(value)[:6000])
