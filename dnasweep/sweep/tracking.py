"""MLflow tracking of a sweep, written from the driver only (one writer per store, so a SQLite
store never locks): one parent run per sweep, one child run per trial (`mlflow.parentRunId`).

Default store: sqlite:///SWEEP/mlflow.db, opened with
    mlflow ui --backend-store-uri sqlite:///SWEEP/mlflow.db
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from ray.tune import Callback

from dnasweep import metrics as M
from dnasweep.config import flatten, to_dict
from dnasweep.space import SearchSpace
from dnasweep.sweep import budget
from dnasweep.sweep.reference import rung_status
from dnasweep.sweep.study import read_json
from dnasweep.sweep.tracking_uri import (  # noqa: F401 - the tracker's URI helpers, imported from here too
    STATE_FILE,
    TrackingURI,
    _quick_http_failures,
    check_reachable,
    default_uri,
    has_run,
    new_store_from_template,
    redact,
    resolve_uri,
    warm_store,
    warmed,
)

FLUSH_EVERY_S = 5.0  # buffered metrics are written at least this often (and when a trial ends)
BACKLOG_FILE = "tracking_backlog.json"  # results the store did not take before the driver stopped


class MLflowSweepLogger(Callback):
    """Ray Tune callback (runs on the driver): mirrors trials into MLflow child runs.

    Lifecycle: created before the Tuner (opens or, on resume, reopens the parent run); Tune calls
    on_trial_result / on_trial_complete / on_trial_error; `finish` closes the parent run, or
    `suspend` leaves it RUNNING for `dnasweep resume`. Everything goes through a buffer: when the
    server is down, results wait (and runs are created late) until it answers again.
    """

    def __init__(self, space: SearchSpace, name: str, sweep_dir: str, uri: str, resume: bool = False,
                 fetch=None, finished: dict[str, tuple[str, dict]] | None = None):
        _quick_http_failures()
        # Ray trial id -> (Optuna state, user attrs) of the study's finished trials, for a resume
        # that moves to a new store: a pruned, invalid or errored trial wrote no result.json
        self.finished = finished or {}
        self.space, self.sweep_dir, self.uri = space, sweep_dir, uri
        self.fetch = fetch  # trial id -> None: brings SWEEP/trials/ID from object storage (storage.py)
        self.state_path = os.path.join(sweep_dir, STATE_FILE)
        self.errors: list[str] = []  # tracking failures (reported, never raised)
        self.down_since: float | None = None  # set while the store fails; one warning per outage
        # Results wait here and go out in batches: one commit per few seconds instead of one per
        # report keeps the driver (which shares the CPUs with the trials) nearly idle.
        self.pending: dict[str, list] = {}  # Ray trial id -> metrics not yet written
        self.configs: dict[str, dict] = {}  # Ray trial id -> sampled values (params go with the run)
        self.ended: dict[str, tuple[str, dict]] = {}  # Ray trial id -> (status, tags) not yet written
        self.logged: dict[str, dict[str, set]] = {}  # Ray trial id -> metric -> steps written or pending
        self.backfilled: set[str] = set()  # ended trials whose metrics.jsonl has been checked
        self.params_todo: set[str] = set()  # Ray trial ids whose run has no params yet
        self.rungs: dict[str, dict] = {}  # "ref-HASH" -> a rung of the dense reference ladder (its own run)
        self.pruned: dict[str, int] = {}  # Ray trial id -> the rung MO-ASHA stopped it at (the scheduler's)
        # Runs are created late (buffering), so they carry the trial's own start and end, in ms
        self.times: dict[str, list] = {}  # Ray trial id -> [start, end or None]
        self.running_at_resume: set[str] = set()  # MLflow run ids a killed driver left RUNNING
        self.last_flush = time.monotonic()
        self.name, self.started_ms = name, int(time.time() * 1000)
        # A new sweep opens its store at its first write (`__getattr__`), which comes while the first
        # trials train: the parent run is then off the start of the sweep (bench/orchestration.py).
        # MLflow's import (~1.2 s) and the store's engine are warmed on a thread meanwhile: done at
        # the first write, they held Tune's event loop, and with it every trial's report (Tune's
        # function trainables wait for the driver at each report), ~3 s of the first results.
        # A resumed sweep opens it now: the steps its store already has must be known before the
        # first report.
        if resume:
            self._connect(resume=True)
        else:
            warm_store(uri, sweep_dir)

    def __getattr__(self, name: str):
        # The store's handles, made on first use (only reached while they are not set yet)
        if name in ("client", "exp_id", "parent_id", "runs") and "name" in self.__dict__:
            self._connect(resume=False)
            return self.__dict__[name]
        raise AttributeError(name)

    def _connect(self, resume: bool) -> None:
        warmed(self.uri)  # never two template copies at once; what it did is cached now
        from mlflow import MlflowClient

        if self.uri == default_uri(self.sweep_dir):
            new_store_from_template(self.sweep_dir)
        # An explicit client, never mlflow.set_tracking_uri: that also sets MLFLOW_TRACKING_URI in
        # os.environ, so the next sweep started from the same process would log into this store.
        client = MlflowClient(self.uri)
        state = read_json(self.state_path) if resume else None
        if state and has_run(client, state["parent"]):  # `dnasweep resume`: the same parent and child runs
            self.client = client
            self.exp_id, self.parent_id, self.runs = state["experiment_id"], state["parent"], state["runs"]
            self.client.update_run(self.parent_id, status="RUNNING")
            children = self.client.search_runs([self.exp_id], max_results=50000, order_by=["attributes.start_time ASC"],
                                               filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'")
            self._adopt_unsaved_runs(children)
            self._load_logged_steps()
            self._load_backlog()
            self._close_stale_runs(children)
            return
        self._open(client)
        if resume:  # before a rebuild's backfill: the backlog's steps keep their own times
            self._load_backlog()
        if state:  # resumed against a store without this sweep's runs (a new server after a lost head)
            self._rebuild(state["runs"])

    def _adopt_unsaved_runs(self, children: list) -> None:
        """Take back the runs this sweep created that tracking.json does not list: a sweep in object
        storage uploads the file when a trial ends, so a head lost meanwhile left the runs of the
        trials then running out of the copy a new head pulls, and each got a second run. The store
        itself knows them by their dnasweep.trial tag (`children`: the parent's runs, oldest first)."""
        known = set(self.runs.values())
        adopted = {}
        for r in children:
            tid = r.data.tags.get("dnasweep.trial")
            if tid and tid not in self.runs and tid not in adopted and r.info.run_id not in known:
                adopted[tid] = r.info.run_id
        if adopted:
            self.runs.update(adopted)
            self._save_state()

    def _close_stale_runs(self, children: list) -> None:
        """Close the runs of trials the study holds as finished that stayed RUNNING (the store was
        down when they ended, then the driver was killed): Ray Tune reports them no more.
        `children`: the parent's runs, as the store had them at the resume."""
        running = {r.info.run_id for r in children if r.info.status == "RUNNING"}
        self.running_at_resume = running
        for tid in self.finished:
            if self.runs.get(tid) in running:
                self._queue_end(tid)
        if self.ended:
            self.flush()

    def _queue_end(self, tid: str) -> bool:
        """Queue trial `tid` as ended, from its directory (result.json, brought from object storage
        first) or the study; False when it is neither (still running)."""
        if self.fetch:
            self.fetch(tid)
        trial_dir = os.path.join(self.sweep_dir, "trials", tid)
        res = read_json(os.path.join(trial_dir, "result.json"))
        state, attrs = self.finished.get(tid, (None, {}))
        if res is not None and res.get("status") == "completed" and not self._scored(res):
            status, tags = "FAILED", _failed_tags("no finite objectives reported", "failed")
        elif res is not None and res.get("status") == "completed" and state == "FAIL":  # e.g. time-limited
            status, tags = "FAILED", _failed_tags(attrs.get("fail_reason"), attrs.get("fail_status", "failed"))
        elif res is not None:
            status = "FINISHED" if res.get("status") == "completed" else "FAILED"
            tags = {} if status == "FINISHED" else _failed_tags(res.get("reason"), res.get("status"))
        elif state == "PRUNED":  # stopped at a rung: no result.json
            status, tags = "FINISHED", _pruned_tags(attrs.get("pruned_at"))
        elif state == "FAIL":  # an invalid point, or a trial that raised: no result.json
            status, tags = "FAILED", _failed_tags(attrs.get("fail_reason"), attrs.get("fail_status", "error"))
        else:
            return False
        self._times_from_dir(tid, trial_dir)
        self.pending.setdefault(tid, [])
        self.ended[tid] = (status, tags)
        return True

    def _times_from_dir(self, tid: str, trial_dir: str) -> None:
        """The trial's start (its first line in attempts.log) and end (result.json written), where the
        driver did not record them: a run closed or recreated on resume is otherwise stamped with now."""
        times = self.times.setdefault(tid, [None, None])
        log, res = os.path.join(trial_dir, "attempts.log"), os.path.join(trial_dir, "result.json")
        if times[0] is None and os.path.exists(log):
            with open(log) as f:
                words = f.readline().split()
            times[0] = int(float(words[words.index("time") + 1]) * 1000) if "time" in words else None
        if times[1] is None and os.path.exists(res):
            # the trial's own stamp; the mtime of a result.json from before it was kept (on a copy
            # pulled from object storage that is the pull's time)
            at = (read_json(res) or {}).get("finished_at")
            times[1] = int((at if M.is_number(at) else os.path.getmtime(res)) * 1000)

    def _sampled(self, tid: str) -> dict:
        """The trial's sampled values (Tune's config also holds the keys of inactive `when:` branches)."""
        cfg = self.configs.get(tid) or {}
        return {p.path: cfg[p.path] for p in self.space.params if p.path in cfg}

    def _scored(self, res: dict) -> bool:
        """Whether `res` holds every objective as a finite number: the searcher's test (else Optuna FAIL)."""
        vals = [res.get(o.metric) for o in self.space.objectives]
        return all(isinstance(v, int | float) and math.isfinite(v) for v in vals)

    def _rebuild(self, old_runs: dict[str, str]) -> None:
        """Recreate the runs of trials that ended before the sweep moved to this store, from their
        directories (config, metrics.jsonl, result.json): queued as ended, written by flush."""
        print(f"MLflow store {redact(self.uri)} has none of this sweep's runs: recreating the {len(old_runs)} "
              "trials' runs from their directories", file=sys.stderr)
        for tid in old_runs:  # one still running gets its run when it reports again
            self._queue_end(tid)
        self.flush()

    def _open(self, client) -> None:
        """A new parent run (and the experiment, if the store lacks it); its handles are set only
        once all of it exists."""
        space, sweep_dir = self.space, self.sweep_dir
        exp = client.get_experiment_by_name(space.tracking.experiment)
        # A new experiment keeps its artifacts in the sweep directory (MLflow's default would be
        # ./mlruns under whatever directory the user happened to start from).
        exp_id = exp.experiment_id if exp else client.create_experiment(
            space.tracking.experiment, artifact_location=Path(sweep_dir, "mlartifacts").resolve().as_uri())
        parent = client.create_run(exp_id, run_name=self.name, tags={"dnasweep.sweep": self.name},
                                   start_time=self.started_ms)
        self.client, self.exp_id, self.parent_id = client, exp_id, parent.info.run_id
        self.runs: dict[str, str] = {}  # Ray trial id -> MLflow run id (persisted: resume reuses it)
        self._save_state()
        base = flatten(to_dict(space.base))
        cfg = space.config
        self.log_params(self.parent_id, {**{f"base.{k}": v for k, v in base.items()},
                                          "objectives": ", ".join(f"{o.mode} {o.metric}" for o in cfg.objectives),
                                          "constraints": ", ".join(cfg.constraints) or "none",
                                          "space_file": space.source,
                                          **{f"sampler.{k}": v for k, v in vars(cfg.sampler).items()},
                                          **{f"budget.{k}": v for k, v in vars(cfg.budget).items()},
                                          **{f"search.{p.path}": p.kind for p in space.params}})

    def _save_state(self) -> None:
        # Written before any metric goes to a new run, so a killed driver never leaves a run that a
        # resumed sweep would not find (and duplicate).
        # The default store is written as null: a sweep resumed from a copy elsewhere uses its own.
        uri = None if self.uri == default_uri(self.sweep_dir) else redact(self.uri)
        _write_json(self.state_path, {"uri": uri, "experiment_id": self.exp_id,
                                      "parent": self.parent_id, "runs": self.runs})

    def _load_logged_steps(self) -> None:
        """Per run and metric, the steps the store already has: re-reported steps are skipped."""
        for tid, rid in self.runs.items():
            seen = self.logged.setdefault(tid, {})
            for key in self.client.get_run(rid).data.metrics:
                seen[key] = {_mark(key, m.step, m.value) for m in self.client.get_metric_history(rid, key)}

    def record_failure(self, where: str, e: Exception) -> None:
        text = redact(str(e))  # MLflow's HTTP errors quote the URL, password included
        self.errors.append(f"{where}: {type(e).__name__}: {text}")
        if self.down_since is None:
            self.down_since = time.monotonic()
            print(f"warning: MLflow tracking failed in {where} ({type(e).__name__}: {text[:200]}); "
                  "training goes on and the results wait on the driver until the store answers", file=sys.stderr)

    def _ensure_run(self, trial_id: str) -> str:
        if trial_id not in self.runs:
            rung = self.rungs.get(trial_id)
            # dnasweep.trial: also the key a resume finds a run by when tracking.json lost it (a rung's too:
            # untagged, it got a second run)
            role = {"dnasweep.role": "reference", "dnasweep.reference.reused": str(rung["reused"]).lower()} if rung \
                else {"dnasweep.role": "trial"}
            role["dnasweep.trial"] = trial_id
            run = self.client.create_run(self.exp_id, tags={"mlflow.parentRunId": self.parent_id, **role},
                                         start_time=self.times.get(trial_id, [None])[0],
                                         run_name=f"dense-d{rung['d_model']}-l{rung['dense_layers']}" if rung
                                         else trial_id)
            self.runs[trial_id] = run.info.run_id
            self._save_state()
            self.params_todo.add(trial_id)
        if trial_id in self.params_todo:  # kept until written: the store may drop between the two calls
            params = self.rungs[trial_id]["config"] if trial_id in self.rungs else \
                self._trial_params(trial_id, self.configs.get(trial_id))
            self.log_params(self.runs[trial_id], params)
            self.params_todo.discard(trial_id)
        return self.runs[trial_id]

    def _trial_params(self, trial_id: str, sampled: dict | None) -> dict:
        """The trial's complete config, flattened, so runs compare on any key: the base with the
        sampled values over it, as sampled (never rebuilt: a point that breaks a rule still gets
        its run, with the values that broke it)."""
        from omegaconf import OmegaConf

        if sampled is None:  # a run recreated from the trial's directory: its own config.yaml
            path = os.path.join(self.sweep_dir, "trials", trial_id, "config.yaml")
            return flatten(OmegaConf.to_container(OmegaConf.load(path))) if os.path.exists(path) else {}
        values = {p.path: sampled[p.path] for p in self.space.params if p.path in sampled}
        return {**flatten(to_dict(self.space.base)), **values,
                "out_dir": os.path.join(self.sweep_dir, "trials", trial_id)}

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i:i + 100])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tid = trial.trial_id
        if tid not in self.configs:  # once per trial: this runs on every report
            self.configs[tid] = dict(trial.config)
        self.times.setdefault(tid, [int((result.get("timestamp", time.time()) - result.get("time_total_s", 0)) * 1000),
                                    None])
        # A retried or resumed trial re-runs the steps after its last checkpoint and reports them
        # again, with the same values (resume is exact): keep the first report of each (metric, step),
        # but for timings, which the new attempt measured anew (`_mark`).
        self._add(tid, [result], int(result.get("timestamp", 0)) * 1000)
        if time.monotonic() - self.last_flush > FLUSH_EVERY_S:
            self.flush()

    def _add(self, tid: str, rows: list[dict], ts: int) -> None:
        """The metrics of `rows` (each with its step) not yet written or pending, queued for `tid`'s run."""
        from mlflow.entities import Metric

        # Ray adds bookkeeping keys to every result; only our metrics (name with a "/") are logged.
        metrics = [Metric(k, float(v), ts, int(r.get(M.STEP, 0))) for r in rows for k, v in r.items()
                   if "/" in k and not k.startswith("config/") and M.is_number(v)]
        seen = self.logged.setdefault(tid, {})
        fresh = [m for m in metrics if _mark(m.key, m.step, m.value) not in seen.setdefault(m.key, set())]
        for m in fresh:
            seen[m.key].add(_mark(m.key, m.step, m.value))
        self.pending.setdefault(tid, []).extend(fresh)

    def _backfill(self, tid: str) -> None:
        """An ended trial's metrics.jsonl (written by the trial itself) fills any step the store
        lacks: steps a killed driver held in its buffer, which a resumed trial never re-reports
        (it continues after its checkpoint)."""
        if self.fetch:
            self.fetch(tid)
        path = os.path.join(self.sweep_dir, "trials", tid, "metrics.jsonl")
        if os.path.exists(path):
            with open(path) as f:
                self._add(tid, [json.loads(line) for line in f if line.strip()], int(time.time() * 1000))
        self.backfilled.add(tid)

    def flush(self) -> bool:
        """Write what is buffered: runs not yet created, metrics (at most 1000 per call, MLflow's
        limit), ended runs' artifacts and status. Trial by trial: one trial's failure keeps its own
        results for the next call and never holds back another's. True when nothing is left."""
        self.last_flush = time.monotonic()
        ok = True
        for tid in list(dict.fromkeys([*self.pending, *self.ended])):
            try:
                self._flush_trial(tid)
            except Exception as e:
                self.record_failure(f"flush of trial {tid}", e)
                ok = False
        if ok and self.down_since is not None:
            print(f"MLflow tracking answers again after {time.monotonic() - self.down_since:.0f} s; "
                  "the buffered results are written", file=sys.stderr)
            self.down_since = None
        return ok

    def _flush_trial(self, tid: str) -> None:
        if tid in self.ended and tid not in self.backfilled:
            self._backfill(tid)
        rid = self._ensure_run(tid)
        batch = self.pending.get(tid, [])
        while batch:  # trimmed only after a write succeeded
            self.client.log_batch(rid, metrics=batch[:1000])
            del batch[:1000]
        if tid in self.ended:
            self._close(tid, *self.ended[tid])
            del self.ended[tid]

    def on_trial_complete(self, iteration, trials, trial, **info):
        res = trial.last_result or {}
        if trial.trial_id in self.pruned:  # stopped at a rung by MO-ASHA: not a failure, not a result
            self._end(trial, "FINISHED", _pruned_tags(self.pruned[trial.trial_id]))
        elif res.get("failed"):  # diverged or out of memory: the trial said why
            self._end(trial, "FAILED", _failed_tags(res.get("reason"), res.get("status")))
        elif not self._scored(res):  # the searcher tells Optuna FAIL: so does the run
            self._end(trial, "FAILED", _failed_tags(res.get("reason") or "no finite objectives reported",
                                                    res.get("status", "failed")))
        elif short := budget.short_of_plan(self.space, self._sampled(trial.trial_id), res):
            self._end(trial, "FAILED", _failed_tags(short, "time_limit"))  # as the searcher tells Optuna
        else:  # a bypassed pool is named on the run, as on the front table
            self._end(trial, "FINISHED", {"dnasweep.collapsed": str(bool(res[M.ROUTER_COLLAPSED])).lower()}
                      if M.ROUTER_COLLAPSED in res else {})

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "FAILED", _failed_tags("the trial raised or its worker died beyond budget.retries="
                                                f"{self.space.budget.retries} (see {trial.local_path or 'its log'})",
                                                "error"))

    def _end(self, trial, status: str, tags: dict) -> None:
        tid = trial.trial_id
        times = self.times.setdefault(tid, [None, None])
        # the trial's own end stamp (result.json): a trial that finished before the driver died is
        # replayed by the resume, which stamped its run with the resume's clock
        times[1] = None
        if tid in self.finished and self.fetch:
            self.fetch(tid)
        self._times_from_dir(tid, os.path.join(self.sweep_dir, "trials", tid))
        if times[1] is None:
            times[1] = int(time.time() * 1000)
        self.configs.setdefault(trial.trial_id, dict(trial.config))
        self.pending.setdefault(trial.trial_id, [])  # a trial that never reported still gets its run
        self.ended[trial.trial_id] = (status, tags)
        self.flush()

    def _close(self, tid: str, status: str, tags: dict) -> None:
        rid = self.runs[tid]
        for k, v in tags.items():
            self.client.set_tag(rid, k, v)
        trial_dir = os.path.join(self.sweep_dir, "trials", tid)
        for name in ("config.yaml", "metrics.jsonl", "result.json", "attempts.log"):
            path = os.path.join(trial_dir, name)
            if os.path.exists(path):
                self.client.log_artifact(rid, path)
        self.client.set_terminated(rid, status, end_time=self.times.get(tid, [None, None])[1])

    def drain(self, wait_s: float) -> bool:
        """Flush, retrying for up to `wait_s` while the store is down; what still cannot be written
        is saved to SWEEP/tracking_backlog.json (a later `dnasweep resume` writes it)."""
        deadline = time.monotonic() + wait_s
        while not self.flush():
            if time.monotonic() > deadline:
                self._save_backlog()
                return False
            time.sleep(2.0)
        backlog = os.path.join(self.sweep_dir, BACKLOG_FILE)
        if os.path.exists(backlog):  # emptied, not removed: the next mirror replaces the object store's copy
            _write_json(backlog, {})
        return True

    def _save_backlog(self) -> None:
        _write_json(os.path.join(self.sweep_dir, BACKLOG_FILE), {
            "pending": {t: [[m.key, m.value, m.timestamp, m.step] for m in ms] for t, ms in self.pending.items()},
            "ended": self.ended, "configs": self.configs, "times": self.times,
            "params_todo": sorted(self.params_todo)})

    def _load_backlog(self) -> None:
        """Results a previous run of this sweep could not write (its store was down at the end),
        loaded on resume before anything is written: metrics.jsonl's copy of them is then not new."""
        from mlflow.entities import Metric

        b = read_json(os.path.join(self.sweep_dir, BACKLOG_FILE))
        if b:
            for t, ms in b["pending"].items():
                seen = self.logged.setdefault(t, {})  # a driver killed before its drain: the store has some
                fresh = [m for m in ms if _mark(m[0], int(m[3]), m[1]) not in seen.setdefault(m[0], set())]
                self.pending.setdefault(t, []).extend(Metric(*m) for m in fresh)
                for key, value, _, step in fresh:
                    seen[key].add(_mark(key, int(step), value))
            self.ended.update({t: tuple(v) for t, v in b["ended"].items()})
            self.configs.update(b["configs"])
            self.times.update(b.get("times", {}))  # a backlog written before times were kept has none
            self.params_todo.update(b.get("params_todo", []))

    def abandon(self, trial_ids: list[str], reason: str) -> None:
        """Close the runs of trials that no longer exist in Ray Tune's state (FAILED, with the reason)."""
        for tid in trial_ids:
            if tid in self.runs and self.client.get_run(self.runs[tid]).info.status == "RUNNING":
                self.ended[tid] = ("FAILED", _failed_tags(reason, "abandoned"))
                self.pending.setdefault(tid, [])
        self.flush()

    def reference(self, rungs: list[dict]) -> None:
        """One child run per rung of the dense reference ladder (tag dnasweep.role=reference), with its
        config, metric history and result; a resumed sweep finds them in tracking.json (no duplicates)."""
        for r in rungs:
            tid = f"ref-{r['hash']}"
            self.rungs[tid] = r
            # a run created by a driver killed before it ended it (RUNNING) is finished now; its
            # steps already in the store are skipped by `_add`
            if "result" not in r or (tid in self.runs and self.runs[tid] not in self.running_at_resume):
                continue
            # the result repeats the last evaluation under the step training stopped at: that step's
            # own for a rung that trained to its end or its time limit; a diverged (oom) rung stopped
            # after it, at a step never evaluated, and its metrics.jsonl rows hold every evaluation
            status = rung_status(r)
            last = [r["result"]] if status in ("completed", "time-limited") else []
            self._add(tid, [*r["rows"], *last], int(time.time() * 1000))
            # as a trial's run: a rung stopped short by train.time_limit_s is off the frontier, FAILED here
            self.ended[tid] = ("FINISHED", {}) if status == "completed" else \
                ("FAILED", _failed_tags(r["result"]["reason"], "time_limit" if status == "time-limited" else status))
        self.flush()

    def suspend(self) -> None:
        """The sweep stopped early (Ctrl-C / SIGTERM): write what is buffered, leave runs open."""
        self.drain(wait_s=10.0)


def _mark(key: str, step: int, value: float):
    """What makes a metric point new for a run: its step, or for a timing (perf/*, and the speed gain
    read from it) its step and value. A retried trial re-runs the steps after its checkpoint; its
    metrics.jsonl keeps the new attempt's tokens/s, and MLflow kept the dead attempt's alone. Both
    now, the newer logged last."""
    return (step, float(value)) if M.is_timed(key) else step


def _pruned_tags(step) -> dict[str, str]:
    """The tags of a run MO-ASHA stopped at rung `step`."""
    return {"dnasweep.status": "pruned", "dnasweep.stopped_at_step": str(step)}


def _failed_tags(reason, status) -> dict[str, str]:
    """The tags of a failed run: why (MLflow keeps at most 5000 characters of a tag) and its status."""
    return {"dnasweep.fail_reason": str(reason or "unknown")[:5000], "dnasweep.status": str(status or "failed")}


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the old file, never half of one
