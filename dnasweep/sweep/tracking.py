"""MLflow tracking of a sweep, written from the driver only (one writer per store, so a SQLite
store never locks): one parent run per sweep, one child run per trial (`mlflow.parentRunId`).

Default store: sqlite:///SWEEP/mlflow.db, opened with
    mlflow ui --backend-store-uri sqlite:///SWEEP/mlflow.db
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from pathlib import Path

from ray.tune import Callback

from dnasweep.config import flatten
from dnasweep.sweep.space import SearchSpace

FLUSH_EVERY_S = 5.0  # buffered metrics are written at least this often (and when a trial ends)

# Ray adds bookkeeping keys to every result; only our metrics (name with a "/") are logged.
_SKIP_PREFIXES = ("config/",)


def default_uri(sweep_dir: str) -> str:
    return f"sqlite:///{os.path.join(sweep_dir, 'mlflow.db')}"


def _guarded(fn):
    """A tracking failure is reported, never raised: an exception in a Tune callback would end the
    whole sweep, and losing a metric is better than losing the trials."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except Exception as e:
            self.errors.append(f"{fn.__name__}: {type(e).__name__}: {e}")
            print(f"warning: MLflow tracking failed in {fn.__name__}: {type(e).__name__}: {e}", file=sys.stderr)

    return wrapper


class MLflowSweepLogger(Callback):
    """Ray Tune callback (runs on the driver): mirrors trials into MLflow child runs."""

    def __init__(self, space: SearchSpace, name: str, sweep_dir: str, uri: str):
        from mlflow import MlflowClient

        self.space, self.sweep_dir = space, sweep_dir
        # An explicit client, never mlflow.set_tracking_uri: that also sets MLFLOW_TRACKING_URI in
        # os.environ, so the next sweep started from the same process would log into this store.
        self.client = MlflowClient(uri)
        exp = self.client.get_experiment_by_name(space.experiment)
        # A new experiment keeps its artifacts in the sweep directory (MLflow's default would be
        # ./mlruns under whatever directory the user happened to start from).
        self.exp_id = exp.experiment_id if exp else self.client.create_experiment(
            space.experiment, artifact_location=Path(sweep_dir, "mlartifacts").resolve().as_uri())
        parent = self.client.create_run(self.exp_id, run_name=name, tags={"dnasweep.sweep": name})
        self.parent_id = parent.info.run_id
        base = flatten(space.base)
        self._log_params(self.parent_id, {f"base.{k}": v for k, v in base.items()})
        self.runs: dict[str, str] = {}  # Ray trial id -> MLflow run id
        self.errors: list[str] = []  # tracking failures (reported, never raised)
        # Metrics wait here and go out in batches: one SQLite commit per few seconds instead of one
        # per report keeps the driver (which shares the CPUs with the trials) nearly idle.
        self.pending: dict[str, list] = {}  # MLflow run id -> metrics not yet written
        self.logged: dict[str, dict[str, int]] = {}  # MLflow run id -> metric -> last step taken
        self.last_flush = time.monotonic()

    def _run(self, trial) -> str:
        if trial.trial_id not in self.runs:
            run = self.client.create_run(self.exp_id, run_name=trial.trial_id,
                                         tags={"mlflow.parentRunId": self.parent_id, "dnasweep.trial": trial.trial_id})
            self.runs[trial.trial_id] = run.info.run_id
            self._log_params(run.info.run_id, self._trial_params(trial.trial_id, trial.config))
        return self.runs[trial.trial_id]

    def _trial_params(self, trial_id: str, sampled: dict) -> dict:
        """The trial's complete config, flattened (base + sampled values), so runs compare on any key."""
        from omegaconf import OmegaConf

        values = {p.path: sampled[p.path] for p in self.space.params if p.path in sampled}
        cfg = self.space.trial_config(values, os.path.join(self.sweep_dir, "trials", trial_id))
        return flatten(OmegaConf.to_container(OmegaConf.structured(cfg)))

    def _log_params(self, run_id: str, params: dict) -> None:
        items = [_param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i:i + 100])

    @_guarded
    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        run_id = self._run(trial)
        step = int(result.get("step", 0))
        ts = int(result.get("timestamp", 0)) * 1000
        metrics = [Metric(k, float(v), ts, step) for k, v in result.items()
                   if "/" in k and not k.startswith(_SKIP_PREFIXES) and isinstance(v, int | float)
                   and not isinstance(v, bool) and math.isfinite(v)]
        # A retried trial re-runs the steps after its last checkpoint and reports them again, with the
        # same values (resume is exact): keep the first report of each (metric, step) only.
        seen = self.logged.setdefault(run_id, {})
        fresh = [m for m in metrics if step > seen.get(m.key, -1)]
        for m in fresh:
            seen[m.key] = step
        self.pending.setdefault(run_id, []).extend(fresh)
        if time.monotonic() - self.last_flush > FLUSH_EVERY_S:
            self.flush()

    def flush(self, run_id: str | None = None) -> None:
        """Write the buffered metrics (of one run, or all), at most 1000 per call (MLflow's limit)."""
        for rid in [run_id] if run_id else list(self.pending):
            batch = self.pending.get(rid, [])
            while batch:  # trimmed only after a write succeeded: a failed write is retried later
                self.client.log_batch(rid, metrics=batch[:1000])
                del batch[:1000]
        if run_id is None:
            self.last_flush = time.monotonic()

    @_guarded
    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, "FINISHED")

    @_guarded
    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, "FAILED")

    def _finish(self, trial, status: str):
        run_id = self._run(trial)
        self.flush(run_id)
        trial_dir = os.path.join(self.sweep_dir, "trials", trial.trial_id)
        for name in ("config.yaml", "metrics.jsonl", "result.json"):
            path = os.path.join(trial_dir, name)
            if os.path.exists(path):
                self.client.log_artifact(run_id, path)
        self.client.set_terminated(run_id, status)

    @_guarded
    def finish(self, front: list[dict], rows: list[dict]) -> None:
        """Close the parent run with the sweep's summary: Pareto front table (CSV), every complete
        trial (CSV), Pareto plots (PNG, HTML), and the hypervolume after each finished trial."""
        from mlflow.entities import Metric

        from dnasweep import metrics as M
        from dnasweep.sweep import plots
        from dnasweep.sweep.pareto import hypervolume_history, pareto_mask, reference_point

        self.flush()
        modes = [o.mode for o in self.space.objectives]
        paths = [_write_csv(os.path.join(self.sweep_dir, "pareto_front.csv"), front)]
        paths.append(_write_csv(os.path.join(self.sweep_dir, "trials.csv"), [
            {"trial": r["number"], **dict(zip([o.metric for o in self.space.objectives], r["values"], strict=True)),
             "feasible": r["feasible"], "pareto": r["front"], **r["params"]} for r in rows]))
        history: list[float] = []
        ok = [r["values"] for r in rows if r["feasible"]]
        if ok:
            ref = reference_point(ok, modes)
            history = hypervolume_history([r["values"] for r in rows], [r["feasible"] for r in rows], modes, ref)
            seen = lambda i: [r["values"] for r in rows[: i + 1] if r["feasible"]]  # noqa: E731
            front_sizes = [int(pareto_mask(seen(i), modes).sum()) if seen(i) else 0 for i in range(len(rows))]
            ts = int(time.time() * 1000)
            self.client.log_batch(self.parent_id, metrics=[
                *(Metric(M.SWEEP_HYPERVOLUME, h, ts, i + 1) for i, h in enumerate(history)),
                *(Metric(M.SWEEP_FRONT_SIZE, n, ts, i + 1) for i, n in enumerate(front_sizes))])
            self._log_params(self.parent_id, {f"hypervolume_ref.{o.metric}": f"{v:.6g}"
                                              for o, v in zip(self.space.objectives, ref, strict=True)})
        paths += plots.write_all(rows, self.space, history, self.sweep_dir)
        for path in paths:
            self.client.log_artifact(self.parent_id, path)
        self.client.set_terminated(self.parent_id, "FINISHED")


def _write_csv(path: str, rows: list[dict]) -> str:
    import csv

    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    return path


def _param(key: str, value):
    from mlflow.entities import Param

    return Param(key, str(value)[:6000])
