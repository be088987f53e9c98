"""`dnasweep run` and `dnasweep resume`: a search space on a Ray cluster, trials chosen by Optuna
against Pareto objectives. Ray, Optuna and MLflow are imported here, inside functions, and
nowhere below (model, data, train and analyze never see them).

Layout of a sweep directory SWEEP = ROOT/NAME:
  SWEEP/space.json         the parsed search space as run (with overrides and --smoke applied)
  SWEEP/optuna.log         Optuna journal storage (study name = NAME)
  SWEEP/trials/ID/         each trial's out_dir (metrics.jsonl, checkpoint/, result.json, attempts.log)
  SWEEP/tune/              Ray Tune's experiment state (what `dnasweep resume` restores)
  SWEEP/mlflow.db          MLflow store (default; parent run per sweep, child run per trial)
  SWEEP/tracking.json      MLflow parent run and Ray trial id -> MLflow run id (no duplicate runs on resume)
  SWEEP/pareto_front.csv, trials.csv, pareto.png, pareto.html, hypervolume.png
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import signal
import time

from dnasweep.errors import ConfigError, Problem
from dnasweep.sweep.space import SearchSpace
from dnasweep.sweep.study import (
    SweepResult,
    counts,
    front_trial_dirs,
    is_sweep_dir,
    journal,
    open_study,
    read_space,
    result_of,
    trial_rows,
)

LOST = "its Optuna trial was asked for, but the driver was killed before Ray Tune saved the trial"


class _TuneReporter:
    """Adapter from the training loop's Reporter protocol to `ray.tune.report`."""

    def report(self, metrics, checkpoint_dir=None):
        from ray import tune

        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(dict(metrics), checkpoint=ckpt)

    def close(self):
        pass


def _trial(config: dict, space: SearchSpace, sweep_dir: str, store_uri: str | None = None) -> None:
    """One Ray Tune trial: the sampled values -> a trial config -> run_trial."""
    import ray
    from ray import tune

    from dnasweep.sweep.storage import Store, scratch_dir
    from dnasweep.train import checkpoint
    from dnasweep.train.limits import is_oom, memory_limit
    from dnasweep.train.loop import run_trial

    trial_id = tune.get_context().get_trial_id()
    values = {p.path: config[p.path] for p in space.params if p.path in config}
    store = Store(store_uri) if store_uri else None
    # With object storage the trial trains in node-local scratch and uploads its directory at the end.
    out = scratch_dir(os.path.basename(sweep_dir), trial_id) if store else os.path.join(sweep_dir, "trials", trial_id)
    done = os.path.join(out, "result.json")
    if store and not os.path.exists(done):
        store.get(f"trials/{trial_id}/result.json", done)
    if os.path.exists(done):  # finished just before a driver died, after Tune last saved its state
        with open(done) as f:
            saved = json.load(f)
        status = saved.pop("status")
        tune.report(saved if status == "completed" else {"failed": 1.0, "status": status, "reason": saved["reason"]})
        return
    cfg = space.trial_config(values, out)
    # A retried or resumed trial continues from its own checkpoint in `out`; on another node
    # without it, from the last checkpoint it reported to Tune (copied back into place first).
    own = os.path.join(out, "checkpoint")
    reported = tune.get_checkpoint()
    if reported is not None and not checkpoint.exists(own):
        reported.to_directory(own)
    os.makedirs(out, exist_ok=True)
    start = int(checkpoint.load(own)["step"]) if checkpoint.exists(own) else 0
    node = ray.get_runtime_context().get_node_id()
    with open(os.path.join(out, "attempts.log"), "a") as f:  # one line per (re)start: pid, resumed step, node
        f.write(f"pid {os.getpid()} start_step {start} time {time.time():.1f} node {node}\n")
    try:
        with memory_limit(space.resources.get("memory_gb")):
            result = run_trial(cfg, _TuneReporter())
        status, reason = result.status, result.reason
    except Exception as e:  # out of memory before the loop (model or data): a failed trial, not a retry
        if not is_oom(e):
            raise
        status, reason = "oom", f"out of memory before training: {str(e).splitlines()[0][:300]}"
    if store:  # before returning: Tune then calls the trial complete and the driver fetches it
        store.put(out, f"trials/{trial_id}")
        shutil.rmtree(out, ignore_errors=True)  # the store has it; scratch must not fill the node's disk
    if status != "completed":  # no objectives in the last report: the searcher tells FAIL
        gc.collect()  # the worker is reused for the next trial
        tune.report({"failed": 1.0, "status": status, "reason": reason})


def _bundle(space: SearchSpace) -> dict:
    """One trial's resources in Ray's node-resource names."""
    b = {"CPU": space.resources["cpu"], "GPU": space.resources["gpu"], **space.resources.get("custom", {})}
    if space.resources.get("memory_gb"):
        b["memory"] = space.resources["memory_gb"] * 2**30
    return {k: v for k, v in b.items() if v}


def _check_fits(space: SearchSpace, nodes: list[dict] | dict) -> None:
    """Some node must hold one whole trial (a cluster total can hide that none does)."""
    nodes = [nodes] if isinstance(nodes, dict) else nodes
    need = _bundle(space)
    if any(all(n.get(k, 0) >= v for k, v in need.items()) for n in nodes):
        return
    key = {"CPU": "resources.cpu", "GPU": "resources.gpu", "memory": "resources.memory_gb"}
    p = []
    for k, v in need.items():
        best = max((n.get(k, 0) for n in nodes), default=0)
        if best < v:
            shown = (lambda x: f"{x / 2**30:.3g} GiB") if k == "memory" else (lambda x: f"{x:g}")
            p.append(Problem(key.get(k, f"resources.custom.{k}"),
                             f"each trial asks for {shown(v)} {k}, the largest node of the cluster has {shown(best)}: "
                             "it would stay PENDING forever",
                             "lower it, connect to a cluster that has it (--address), or on an autoscaling cluster "
                             "pass --autoscaling so dnasweep asks for a node and waits"))
    raise ConfigError(p, space.source)


def run_sweep(space: SearchSpace, name: str, root: str = "runs/sweeps", address: str | None = None,
              log=print, tracking_uri: str | None = None, analyze: bool | None = None,
              storage: str | None = None, autoscaling: bool | None = None) -> SweepResult:
    """Run `space` to its budget; returns the Pareto front read back from the Optuna storage.
    Stopped early (Ctrl-C, SIGTERM) it returns with `interrupted` set; `resume_sweep` goes on.
    `storage` (or $DNASWEEP_STORAGE): an object-store URI that keeps the sweep (storage.py)."""
    from dnasweep.sweep.space import space_warnings
    from dnasweep.sweep.storage import SETTINGS, Store, check_shared, is_uri
    from dnasweep.sweep.tracking import check_reachable, default_uri

    sweep_dir = os.path.abspath(os.path.join(root, name))
    storage = storage or os.environ.get("DNASWEEP_STORAGE") or None
    if storage and not is_uri(storage):
        raise ConfigError([Problem("--storage", f"{storage!r} is not a URI", "use s3://BUCKET/PREFIX or gs://...; "
                                   "for a shared filesystem (NFS) pass it as --root instead")], "run")
    store = Store(f"{storage.rstrip('/')}/{name}") if storage else None
    if os.path.exists(sweep_dir) or (store and store.exists("space.json")):
        where = f"{sweep_dir}" + (f" / {store.uri}" if store else "")
        raise ConfigError([Problem("--name", f"a sweep named {name!r} already exists ({where})",
                                   f"continue it with: dnasweep resume {store.uri if store else sweep_dir} "
                                   "(or add --resume), or pick another --name")], "run")
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or space.tracking_uri
    uri = tracking_uri or default_uri(sweep_dir)
    check_reachable(uri, "run")  # before anything is created
    for w in space_warnings(space):
        log(f"warning: {w}")
    _init_ray(space, address, log, autoscaling)
    if not store:
        check_shared(root)
    os.makedirs(os.path.join(sweep_dir, "trials"))
    with open(os.path.join(sweep_dir, "space.json"), "w") as f:
        json.dump(dataclasses.asdict(space), f, indent=1)
    with open(os.path.join(sweep_dir, SETTINGS), "w") as f:
        json.dump({"storage": storage}, f)
    if store:  # the store holds a resumable sweep from the start, not only after the first trial
        store.mirror(sweep_dir)
    return _drive(space, name, sweep_dir, uri, log, analyze, resume=False, store=store)


def resume_sweep(sweep_dir: str, address: str | None = None, log=print, tracking_uri: str | None = None,
                 analyze: bool | None = None, root: str = "runs/sweeps",
                 autoscaling: bool | None = None) -> SweepResult:
    """Continue a sweep whose driver stopped (Ctrl-C, SIGTERM, SIGKILL, lost node): finished trials
    stay, unfinished ones continue from their checkpoints, the budget is filled up. Resuming a
    finished sweep only writes what its tracker could not (and re-prints the front).
    `sweep_dir` may be the sweep's object-store URI (a new head node): its copy lands in ROOT/NAME."""
    from dnasweep.sweep.storage import SETTINGS, Store, is_uri
    from dnasweep.sweep.tracking import STATE_FILE, check_reachable, default_uri, read_json

    store = None
    if is_uri(sweep_dir):
        store = Store(sweep_dir)
        if not store.exists("space.json"):
            raise ConfigError([Problem("SWEEP", f"{sweep_dir} holds no sweep (no space.json)",
                                       "pass STORAGE/NAME of a sweep started with --storage STORAGE")], "resume")
        sweep_dir = os.path.join(root, os.path.basename(store.uri))
        if not is_sweep_dir(sweep_dir):
            store.pull_sweep(sweep_dir)
    sweep_dir = os.path.abspath(sweep_dir)
    open_study(sweep_dir, "resume")  # refuses a directory that is not a sweep (exit 2)
    settings = read_json(os.path.join(sweep_dir, SETTINGS)) or {}
    if store is None and settings.get("storage"):
        store = Store(f"{settings['storage'].rstrip('/')}/{os.path.basename(sweep_dir)}")
    space = read_space(sweep_dir)
    stored = (read_json(os.path.join(sweep_dir, STATE_FILE)) or {}).get("uri") or default_uri(sweep_dir)
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or stored
    if "***@" in uri:
        raise ConfigError([Problem("MLFLOW_TRACKING_URI", "this sweep logged to a tracking server with a password, "
                                   "which dnasweep does not store", "export MLFLOW_TRACKING_URI with the "
                                   "password before resuming")], "resume")
    check_reachable(uri, "resume")
    _init_ray(space, address, log, autoscaling)
    return _drive(space, os.path.basename(sweep_dir), sweep_dir, uri, log, analyze, resume=True, store=store)


def _node_resources() -> list[dict]:
    import ray

    return [n["Resources"] for n in ray.nodes() if n["Alive"]]


def _init_ray(space: SearchSpace, address: str | None, log, autoscaling: bool | None = None) -> None:
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or _stale_cluster_guard(log)
    # The dashboard of a cluster we start binds to 127.0.0.1 only (ssh -L 8265 to watch it remotely).
    ctx = ray.init(address=address, ignore_reinit_error=True, include_dashboard=address in (None, "local"),
                   dashboard_host="127.0.0.1", log_to_driver=False)
    if autoscaling is None:
        autoscaling = os.environ.get("DNASWEEP_AUTOSCALING", "") not in ("", "0")
    try:
        _check_fits(space, _node_resources())
    except ConfigError:
        if not autoscaling:
            raise
        _wait_for_a_node(space, log)
    dash = getattr(ctx, "dashboard_url", None)
    if dash:
        log(f"Ray dashboard: http://{dash}")


def _stale_cluster_guard(log) -> str | None:
    """With no address, ray.init joins the cluster `ray start` recorded in /tmp/ray/ray_current_cluster;
    if that cluster died without `ray stop` (SIGKILL, reboot), it waits on it for minutes. A dead
    one is reported and a local cluster started instead ("local"); a live one is joined (None)."""
    import socket
    import tempfile

    path = os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")
    try:
        with open(path) as f:
            host, port = f.read().strip().rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=2).close()
        return None
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log(f"warning: {path} names a Ray cluster that does not answer (stopped without `ray stop`?); "
            "starting a local one instead (pass --address to join a cluster)")
        return "local"


def _wait_for_a_node(space: SearchSpace, log) -> None:
    """An autoscaling cluster (`ray up`, workers from zero) has no node for a trial yet: ask the
    autoscaler for one trial's bundle and wait until a node holds it (Tune's own pending trials
    keep the nodes up afterwards)."""
    from ray.autoscaler.sdk import request_resources

    wait_s = float(os.environ.get("DNASWEEP_AUTOSCALING_WAIT_S", 900))
    log(f"no node can hold a trial ({_bundle(space)}) yet; asking the autoscaler and waiting up to {wait_s:.0f} s")
    request_resources(bundles=[_bundle(space)])
    deadline = time.time() + wait_s
    try:
        while True:
            try:
                _check_fits(space, _node_resources())
                log("a node that holds a trial is up")
                return
            except ConfigError:
                if time.time() > deadline:
                    raise
            time.sleep(5.0)
    finally:
        request_resources(bundles=[])


def _drive(space: SearchSpace, name: str, sweep_dir: str, uri: str, log, analyze: bool | None,
           resume: bool, store=None) -> SweepResult:
    """Build (or restore) the Tuner, run it to the budget or to a stop signal, close the books."""
    import optuna
    from ray import tune

    from dnasweep.sweep.progress import Progress
    from dnasweep.sweep.searcher import ParetoOptunaSearch, abandon
    from dnasweep.sweep.storage import StoreMirror
    from dnasweep.sweep.tracking import MLflowSweepLogger, redact

    storage = journal(sweep_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Created here, not by the searcher, so optuna.log exists (and `resume` recognises the
    # directory) even if the driver dies before the first trial.
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                directions=["minimize" if o.mode == "min" else "maximize" for o in space.objectives])
    tracker = MLflowSweepLogger(space, name, sweep_dir, uri, resume=resume, fetch=_fetcher(store, sweep_dir))
    if resume:
        tracker.load_backlog()
    progress = Progress(space, log, counts(study))
    callbacks = [tracker, progress] + ([StoreMirror(store, sweep_dir)] if store else [])
    trainable = tune.with_resources(tune.with_parameters(_trial, space=space, sweep_dir=sweep_dir,
                                                         store_uri=store.uri if store else None),
                                    _trial_resources(space))
    # Trials report training metrics between evaluations; only evaluations carry the objectives.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    tune_dir = f"{store.uri}/tune" if store else os.path.join(sweep_dir, "tune")
    t0 = time.time()
    restored = resume and tune.Tuner.can_restore(tune_dir)
    if restored:
        tuner = tune.Tuner.restore(tune_dir, trainable, resume_unfinished=True, resume_errored=False)
        # Tune unpickles the callbacks of the first run; ours carry this run's tracker state.
        tuner._local_tuner.get_run_config().callbacks = callbacks
        tuner._local_tuner._tune_config.search_alg.live_storage = storage  # this head's copy of the study
        known = {t.trial_id for t in tune.ExperimentAnalysis(tune_dir).trials}
    else:
        known = set()
    if resume:  # Optuna trials no Ray trial will finish: FAIL (marked abandoned), runs closed too
        lost = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"
                and t.user_attrs.get("ray_trial_id") not in known]
        abandon(study, [t.number for t in lost], LOST)
        tracker.abandon([t.user_attrs["ray_trial_id"] for t in lost if "ray_trial_id" in t.user_attrs], LOST)
        if lost:
            log(f"{len(lost)} trial(s) were lost with the driver (started but not yet saved by Ray Tune); "
                "their budget goes to new trials")
    c = counts(study)
    todo = space.trials - c["complete"] - c["failed"]
    if not restored and todo > 0:
        searcher = ParetoOptunaSearch(space, storage=storage, study_name=name)
        tuner = tune.Tuner(trainable,
                           # reuse_actors: a finished trial's worker process (torch imported, data
                           # cached) takes the next trial, instead of a fresh process per trial.
                           tune_config=tune.TuneConfig(search_alg=searcher, num_samples=todo,
                                                       max_concurrent_trials=space.concurrent, reuse_actors=True),
                           # A trial whose worker dies is restarted (from its checkpoint) up to retries times.
                           run_config=tune.RunConfig(name="tune", storage_path=store.uri if store else sweep_dir,
                                                     verbose=0, callbacks=callbacks,
                                                     failure_config=tune.FailureConfig(max_failures=space.retries)))
    if restored or todo > 0:
        with _sigterm_as_sigint():
            tuner.fit()
    study = optuna.load_study(study_name=name, storage=storage)
    c = counts(study)
    if c["complete"] + c["failed"] < space.trials:
        tracker.suspend()
        if store:
            store.mirror(sweep_dir)
        log(f"sweep {name} stopped at {c['complete'] + c['failed']}/{space.trials} finished trials; its state "
            f"is saved. Continue it with:\n  dnasweep resume {store.uri if store else sweep_dir}")
        return result_of(study, space, sweep_dir, tracking_errors=tracker.errors, interrupted=True)
    if tracker.fetch:  # trials that ended under an earlier head (resume from the store) are fetched too
        for t in study.get_trials(deepcopy=False):
            if t.user_attrs.get("ray_trial_id"):
                tracker.fetch(t.user_attrs["ray_trial_id"])
    front = result_of(study, space, sweep_dir).front
    tracker.finish(front, trial_rows(study, space))
    lost = f", {c['abandoned']} abandoned" if c["abandoned"] else ""
    log(f"sweep {name}: {c['complete']} complete, {c['failed']} failed{lost}, {time.time() - t0:.0f} s; "
        f"results in {sweep_dir}")
    log(f"compare trials: mlflow ui --backend-store-uri {redact(uri)}")
    if (space.analyze["front"] if analyze is None else analyze) and front:
        _analyze_front(sweep_dir, front, uri, space, log)
    if store:
        store.mirror(sweep_dir)
        log(f"sweep kept in {store.uri}")
    if tracker.errors:
        log(f"warning: {len(tracker.errors)} MLflow tracking calls failed; first: {tracker.errors[0]}")
    return result_of(study, space, sweep_dir, tracking_errors=tracker.errors)


def _trial_resources(space: SearchSpace) -> dict:
    res = {"cpu": space.resources["cpu"], "gpu": space.resources["gpu"], **space.resources.get("custom", {})}
    if space.resources.get("memory_gb"):  # Ray then packs no more trials on a node than its memory holds
        res["memory"] = int(space.resources["memory_gb"] * 2**30)
    return res


def _fetcher(store, sweep_dir: str):
    """With object storage, the driver's copy of a finished trial's directory comes from the store."""
    if store is None:
        return None

    def fetch(trial_id: str) -> None:
        local = os.path.join(sweep_dir, "trials", trial_id)
        if not os.path.exists(os.path.join(local, "result.json")):
            store.get(f"trials/{trial_id}", local)

    return fetch


class _sigterm_as_sigint:
    """SIGTERM (a scheduler or `kill`) stops the sweep the way Ctrl-C does: Ray Tune catches SIGINT,
    saves its experiment state and returns, so `dnasweep resume` can go on. Without this, SIGTERM
    would end the process on the spot."""

    def __enter__(self):
        self.old = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self.old)


def _analyze_front(sweep_dir: str, front: list[dict], uri: str, space: SearchSpace, log) -> None:
    """Reports for the front's trials; a failing analysis is reported and never fails the sweep."""
    from dnasweep.sweep.analysis import analyze_in_sweep

    dirs = front_trial_dirs(sweep_dir, front)
    log(f"analysing the {len(dirs)} Pareto-front trials (analyze.front: false to skip)")
    try:
        analyze_in_sweep(sweep_dir, dirs, log=log, uri=uri, max_examples=space.analyze["examples"])
    except Exception as e:
        log(f"warning: analysis failed ({type(e).__name__}: {e}); rerun it with: dnasweep analyze {sweep_dir}")


__all__ = ["SweepResult", "is_sweep_dir", "resume_sweep", "run_sweep"]
