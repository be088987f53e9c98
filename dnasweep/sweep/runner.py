"""`dnasweep run`: a search space on a Ray cluster, trials chosen by Optuna against Pareto
objectives. Ray, Optuna and MLflow are imported here, inside functions, and nowhere below.

Layout of a sweep directory SWEEP = ROOT/NAME:
  SWEEP/space.json      the parsed search space as run (with overrides and --smoke applied)
  SWEEP/optuna.log      Optuna journal storage (study name = NAME)
  SWEEP/trials/ID/      each trial's out_dir (metrics.jsonl, checkpoint/, result.json)
  SWEEP/tune/           Ray Tune's experiment state
  SWEEP/mlflow.db       MLflow store (default; parent run per sweep, child run per trial)
  SWEEP/pareto_front.csv
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field

from dnasweep.errors import ConfigError, Problem
from dnasweep.sweep.space import SearchSpace


@dataclass
class SweepResult:
    """What a finished sweep produced."""

    sweep_dir: str
    n_complete: int
    n_failed: int
    front: list[dict]  # Pareto-front trials: {"number", objectives..., params...}
    tracking_errors: list[str] = field(default_factory=list)  # MLflow failures (the sweep went on)


class _TuneReporter:
    """Adapter from the training loop's Reporter protocol to `ray.tune.report`."""

    def report(self, metrics, checkpoint_dir=None):
        from ray import tune

        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(dict(metrics), checkpoint=ckpt)

    def close(self):
        pass


def _trial(config: dict, space: SearchSpace, sweep_dir: str) -> None:
    """One Ray Tune trial: the sampled values -> a trial config -> run_trial."""
    from ray import tune

    from dnasweep.train import checkpoint
    from dnasweep.train.loop import run_trial

    trial_id = tune.get_context().get_trial_id()
    values = {p.path: config[p.path] for p in space.params if p.path in config}
    out = os.path.join(sweep_dir, "trials", trial_id)
    cfg = space.trial_config(values, out)
    # A retried trial (its worker died) continues from its own checkpoint in `out`; on another node
    # without it, from the last checkpoint it reported to Tune (copied back into place first).
    own = os.path.join(out, "checkpoint")
    reported = tune.get_checkpoint()
    if reported is not None and not checkpoint.exists(own):
        reported.to_directory(own)
    os.makedirs(out, exist_ok=True)
    start = int(checkpoint.load(own)["step"]) if checkpoint.exists(own) else 0
    with open(os.path.join(out, "attempts.log"), "a") as f:  # one line per (re)start: pid, step resumed from
        f.write(f"pid {os.getpid()} start_step {start} time {time.time():.1f}\n")
    result = run_trial(cfg, _TuneReporter())
    if result.status != "completed":  # no objectives in the last report: the searcher tells FAIL
        tune.report({"diverged": 1.0, "reason": result.reason})


class DefineByRun:
    """Optuna define-by-run space: conditional parameters are suggested only when active.
    A module-level class so Ray can pickle the searcher's state."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial):
        values: dict = {}
        for p in self.space.params:
            if not self.space.active(p, values):
                continue
            if p.kind == "choice":
                values[p.path] = trial.suggest_categorical(p.path, p.choices)
            elif p.kind == "int":
                values[p.path] = trial.suggest_int(p.path, int(p.low), int(p.high), log=p.log)
            else:
                values[p.path] = trial.suggest_float(p.path, float(p.low), float(p.high), log=p.log)
        return None


def _sampler(space: SearchSpace):
    import optuna

    s = space.sampler
    seed, startup = s.get("seed", 0), s.get("startup_trials", 4)
    # Constraints reach the samplers through trial.set_constraint (Optuna 5), set when told.
    kind = s["type"]
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, constant_liar=True)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if kind == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    return optuna.samplers.RandomSampler(seed=seed)


def _searcher(space: SearchSpace, name: str, storage):
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class ParetoOptunaSearch(OptunaSearch):
        """OptunaSearch that tells FAIL for missing or non-finite objectives (Ray only logs a warning
        and leaves the Optuna trial RUNNING) and records the budget constraints."""

        def on_trial_complete(self, trial_id, result=None, error=False):
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot = self._ot_trials[trial_id]
            ot.set_user_attr("ray_trial_id", trial_id)  # -> SWEEP/trials/ID and the MLflow child run
            vals = [(result or {}).get(m) for m in self.metric]
            ok = not error and all(isinstance(v, int | float) and math.isfinite(v) for v in vals)
            if ok:
                for c in space.constraints:
                    v = result.get(c.metric)
                    violation = c.violation(v) if isinstance(v, int | float) and math.isfinite(v) else 1.0
                    ot.set_constraint(c.metric, violation)
                self._ot_study.tell(ot, [float(v) for v in vals])
            else:
                ot.set_user_attr("fail_reason", str((result or {}).get("reason", "no finite objectives reported")))
                self._ot_study.tell(ot, None, state=TrialState.FAIL)
            self._completed_trials.add(trial_id)

    return ParetoOptunaSearch(space=DefineByRun(space), metric=[o.metric for o in space.objectives],
                              mode=[o.mode for o in space.objectives], sampler=_sampler(space),
                              storage=storage, study_name=name)


def _check_fits(space: SearchSpace, resources: dict) -> None:
    cpu, gpu = space.resources["cpu"], space.resources["gpu"]
    have_cpu, have_gpu = resources.get("CPU", 0), resources.get("GPU", 0)
    p = []
    if cpu > have_cpu:
        p.append(Problem("resources.cpu", f"each trial asks for {cpu} CPUs, the cluster has {have_cpu:g}",
                         f"set resources.cpu <= {have_cpu:g}"))
    if gpu > have_gpu:
        p.append(Problem("resources.gpu", f"each trial asks for {gpu} GPUs, the cluster has {have_gpu:g}: "
                         "it would stay PENDING forever", "set resources.gpu=0 or connect to a GPU cluster"))
    if p:
        raise ConfigError(p, space.source)


def pareto_front(study, space: SearchSpace) -> list[dict]:
    """The study's feasible non-dominated trials as rows (Optuna's `best_trials` honours constraints)."""
    rows = []
    for t in sorted(study.best_trials, key=lambda t: t.values[0]):
        row = {"trial": t.number, **{o.metric: v for o, v in zip(space.objectives, t.values, strict=True)}}
        row.update(t.params)
        row["ray_trial_id"] = t.user_attrs.get("ray_trial_id")
        rows.append(row)
    return rows


def trial_rows(study, space: SearchSpace) -> list[dict]:
    """Every complete trial in completion order: number, objective values, params, whether it is
    feasible (all constraints <= 0) and on the feasible Pareto front."""
    from optuna.trial import TrialState

    from dnasweep.sweep.pareto import pareto_mask

    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                  key=lambda t: (t.datetime_complete, t.number))
    rows = [{"number": t.number, "values": list(t.values), "params": dict(t.params),
             "feasible": all(v <= 0 for v in t.constraints.values()), "front": False} for t in done]
    ok = [r for r in rows if r["feasible"]]
    if ok:
        for r, keep in zip(ok, pareto_mask([r["values"] for r in ok], [o.mode for o in space.objectives]),
                           strict=True):
            r["front"] = bool(keep)
    return rows


def run_sweep(space: SearchSpace, name: str, root: str = "runs/sweeps", address: str | None = None,
              log=print, tracking_uri: str | None = None, analyze: bool | None = None) -> SweepResult:
    """Run `space` to its budget; returns the Pareto front read back from the Optuna storage."""
    import optuna
    import ray
    from ray import tune

    sweep_dir = os.path.abspath(os.path.join(root, name))
    if os.path.exists(sweep_dir):
        raise ConfigError([Problem("--name", f"a sweep named {name!r} already exists in {sweep_dir}",
                                   "pick another --name (resuming sweeps comes with the reliability work)")], "run")
    from dnasweep.sweep.space import space_warnings

    for w in space_warnings(space):
        log(f"warning: {w}")
    address = address or os.environ.get("RAY_ADDRESS")
    ctx = ray.init(address=address, ignore_reinit_error=True, include_dashboard=address is None,
                   dashboard_host="127.0.0.1", log_to_driver=False)
    _check_fits(space, ray.cluster_resources())
    dash = getattr(ctx, "dashboard_url", None)
    if dash:
        log(f"Ray dashboard: http://{dash}")
    os.makedirs(os.path.join(sweep_dir, "trials"))
    with open(os.path.join(sweep_dir, "space.json"), "w") as f:
        json.dump(dataclasses.asdict(space), f, indent=1)
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(os.path.join(sweep_dir, "optuna.log")))
    from dnasweep.sweep.tracking import MLflowSweepLogger, default_uri

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri(sweep_dir)
    tracker = MLflowSweepLogger(space, name, sweep_dir, uri)
    from dnasweep.sweep.progress import Progress

    progress = Progress(space, log)
    # max_concurrent_trials wraps the searcher in a ConcurrencyLimiter (without it, older Ray ran
    # custom searchers' trials one at a time: ray #46965).
    searcher = _searcher(space, name, storage)
    trainable = tune.with_resources(tune.with_parameters(_trial, space=space, sweep_dir=sweep_dir),
                                    {"cpu": space.resources["cpu"], "gpu": space.resources["gpu"]})
    # Trials report training metrics between evaluations; only evaluations carry the objectives.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    t0 = time.time()
    tuner = tune.Tuner(trainable,
                       # reuse_actors: a finished trial's worker process (torch imported, data cached)
                       # takes the next trial, instead of a fresh process per trial.
                       tune_config=tune.TuneConfig(search_alg=searcher, num_samples=space.trials,
                                                   max_concurrent_trials=space.concurrent, reuse_actors=True),
                       # A trial whose worker dies is restarted (from its checkpoint) up to retries times.
                       run_config=tune.RunConfig(name="tune", storage_path=sweep_dir, verbose=0,
                                                 failure_config=tune.FailureConfig(max_failures=space.retries),
                                                 callbacks=[tracker, progress]))
    tuner.fit()
    study = optuna.load_study(study_name=name, storage=storage)
    states = [t.state.name for t in study.trials]
    front = pareto_front(study, space)
    tracker.finish(front, trial_rows(study, space))
    log(f"sweep {name}: {states.count('COMPLETE')} complete, {states.count('FAIL')} failed, "
        f"{time.time() - t0:.0f} s; results in {sweep_dir}")
    log(f"compare trials: mlflow ui --backend-store-uri {uri}")
    if (space.analyze["front"] if analyze is None else analyze) and front:
        _analyze_front(sweep_dir, front, uri, space, log)
    if tracker.errors:
        log(f"warning: {len(tracker.errors)} MLflow tracking calls failed; first: {tracker.errors[0]}")
    return SweepResult(sweep_dir, states.count("COMPLETE"), states.count("FAIL"), front, tracker.errors)


def _analyze_front(sweep_dir: str, front: list[dict], uri: str, space: SearchSpace, log) -> None:
    """Reports for the front's trials; a failing analysis is reported and never fails the sweep."""
    from dnasweep.sweep.analysis import analyze_in_sweep

    dirs = front_trial_dirs(sweep_dir, front)
    log(f"analysing the {len(dirs)} Pareto-front trials (analyze.front: false to skip)")
    try:
        analyze_in_sweep(sweep_dir, dirs, log=log, uri=uri, max_examples=space.analyze["examples"])
    except Exception as e:
        log(f"warning: analysis failed ({type(e).__name__}: {e}); rerun it with: dnasweep analyze {sweep_dir}")


def format_front(result: SweepResult, space: SearchSpace) -> str:
    """The Pareto front as a text table, plus where to look next."""
    objs = [o.metric for o in space.objectives]
    params = [p.path for p in space.params]
    head = ["trial", "ray_trial_id", *objs, *params]
    rows = [[str(r.get(k, "-")) if not isinstance(r.get(k), float) else f"{r[k]:.4g}" for k in head]
            for r in result.front]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    out = [f"Pareto front ({len(rows)} of {result.n_complete} complete trials; {result.n_failed} failed):",
           line(head), *map(line, rows), f"sweep directory: {result.sweep_dir}"]
    return "\n".join(out)


def is_sweep_dir(d: str) -> bool:
    """A directory written by `dnasweep run` (its Optuna journal and parsed space)."""
    return os.path.isfile(os.path.join(d, "optuna.log")) and os.path.isfile(os.path.join(d, "space.json"))


def front_trial_dirs(sweep_dir: str, front: list[dict]) -> list[str]:
    """SWEEP/trials/ID of each front row that knows its Ray trial id."""
    return [os.path.join(sweep_dir, "trials", r["ray_trial_id"]) for r in front if r.get("ray_trial_id")]


def _study(sweep_dir: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    log = os.path.join(sweep_dir, "optuna.log")
    if not is_sweep_dir(sweep_dir):
        raise ConfigError([Problem("SWEEP", f"{sweep_dir} is not a sweep directory (no optuna.log / space.json)",
                                   "pass ROOT/NAME of a sweep started by dnasweep run; see dnasweep ls")], "pareto")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=os.path.basename(os.path.normpath(sweep_dir)),
                             storage=JournalStorage(JournalFileBackend(log)))


def load_sweep(sweep_dir: str) -> tuple[SweepResult, SearchSpace]:
    """A sweep's current state (running or finished) read back from its storage."""
    from dnasweep.sweep.space import Constraint, Objective, Param

    study = _study(sweep_dir)  # first: refuses a directory that is not a sweep
    with open(os.path.join(sweep_dir, "space.json")) as f:
        d = json.load(f)
    d["params"] = [Param(**p) for p in d["params"]]
    d["objectives"] = [Objective(**o) for o in d["objectives"]]
    d["constraints"] = [Constraint(**c) for c in d["constraints"]]
    space = SearchSpace(**d)
    states = [t.state.name for t in study.trials]
    res = SweepResult(os.path.abspath(sweep_dir), states.count("COMPLETE"), states.count("FAIL"),
                      pareto_front(study, space))
    return res, space


def list_sweeps(root: str) -> list[dict]:
    """Every sweep under `root` with its trial counts by state."""
    rows = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        d = os.path.join(root, name)
        try:
            study = _study(d)
        except ConfigError:
            continue
        states = [t.state.name for t in study.trials]
        with open(os.path.join(d, "space.json")) as f:
            budget = json.load(f)["trials"]
        rows.append({"name": name, "complete": states.count("COMPLETE"), "failed": states.count("FAIL"),
                     "running": states.count("RUNNING"), "budget": budget})
    return rows
