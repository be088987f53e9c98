"""`dnasweep run` and `dnasweep resume`: the driver. A search space on a Ray cluster, trials chosen
by Optuna against Pareto objectives, recorded in MLflow. Ray, Optuna and MLflow are imported here,
inside functions, and nowhere below (model, data, train, space and analyze never see them).

Layout of a sweep directory SWEEP = ROOT/NAME:
  SWEEP/space.json         the search space as run (overrides and --smoke applied)
  SWEEP/optuna.log         Optuna journal storage (study name = NAME)
  SWEEP/trials/ID/         each trial's out_dir (metrics.jsonl, checkpoint/, result.json, attempts.log)
  SWEEP/tune/              Ray Tune's experiment state (what `dnasweep resume` restores)
  SWEEP/mlflow.db          MLflow store (default; parent run per sweep, child run per trial)
  SWEEP/tracking.json      MLflow parent run and Ray trial id -> MLflow run id (no duplicate runs on resume)
  SWEEP/pareto_front.csv, trials.csv, pareto.png, pareto.html, hypervolume.png

The jobs around it: cluster.py (which cluster, does a trial fit), trainable.py (one trial),
summary.py (the end of a sweep), storage.py (where its files live), compat.py (library internals).
"""

from __future__ import annotations

import json
import os
import signal
import time
import warnings

from dnasweep.errors import ConfigError, Problem
from dnasweep.space import SearchSpace
from dnasweep.sweep.study import (
    STOPPED,
    SweepResult,
    counts,
    is_sweep_dir,
    journal,
    open_study,
    read_json,
    read_space,
    result_of,
)

LOST = "its Optuna trial was asked for, but the driver was killed before Ray Tune saved the trial"


def run_sweep(space: SearchSpace, name: str, root: str = "runs/sweeps", address: str | None = None,
              log=print, tracking_uri: str | None = None, analyze: bool | None = None,
              storage: str | None = None, autoscaling: bool | None = None) -> SweepResult:
    """Run `space` to its budget; returns the Pareto front read back from the Optuna storage.
    Stopped early (Ctrl-C, SIGTERM) it returns with `interrupted` set; `resume_sweep` goes on.
    `storage` (or $DNASWEEP_STORAGE): an object-store URI that keeps the sweep (storage.py)."""
    from dnasweep.space import space_warnings
    from dnasweep.sweep.cluster import init_ray
    from dnasweep.sweep.storage import SETTINGS, check_shared, is_uri, open_store
    from dnasweep.sweep.tracking import check_reachable, resolve_uri

    if not name or name in (".", "..") or "/" in name or os.sep in name:  # the study is opened by the basename
        raise ConfigError([Problem("--name", f"{name!r} is not one path component: the sweep directory "
                                   "ROOT/NAME and its Optuna study must share the name",
                                   "use a plain name, e.g. --name exp2, and --root for the folder")], "run")
    sweep_dir = os.path.abspath(os.path.join(root, name))
    storage = storage or os.environ.get("DNASWEEP_STORAGE") or None
    if storage and not is_uri(storage):
        raise ConfigError([Problem("--storage", f"{storage!r} is not a URI", "use s3://BUCKET/PREFIX or gs://...; "
                                   "for a shared filesystem (NFS) pass it as --root instead")], "run")
    store = open_store(sweep_dir, storage)
    if is_sweep_dir(sweep_dir) or (store.uri and store.exists("space.json")):
        # `run --resume` comes here only when ROOT/NAME is not a sweep: --resume alone cannot continue it
        local = is_sweep_dir(sweep_dir)
        where = (sweep_dir if local else "") + (" / " if local and store.uri else "") + (store.uri or "")
        raise ConfigError([Problem("--name", f"a sweep named {name!r} already exists ({where})",
                                   f"continue it with: dnasweep resume {store.where if local else store.uri}"
                                   + (" (or add --resume)" if local else "") + ", or pick another --name")], "run")
    if os.path.exists(sweep_dir):
        raise ConfigError([Problem("--name", f"{sweep_dir} already exists and is not a sweep (no optuna.log / "
                                   "space.json): neither dnasweep resume nor --resume can continue it",
                                   f"pick another --name, or move {sweep_dir} away")], "run")
    uri = resolve_uri(tracking_uri, sweep_dir, space)
    check_reachable(uri, "run")  # before anything is created
    from dnasweep.space.sample import sampled_warnings

    for w in space_warnings(space) + sampled_warnings(space):
        log(f"warning: {w}")
    init_ray(space, address, log, autoscaling)
    if not store.uri:
        check_shared(root)
    import optuna  # noqa: F401 - imported before the sweep's files, so the journal follows them at once

    os.makedirs(sweep_dir)  # raises if it exists: from here on, a directory this run created
    try:
        os.mkdir(os.path.join(sweep_dir, "trials"))
        with open(os.path.join(sweep_dir, "space.json"), "w") as f:
            json.dump(space.to_dict(), f, indent=1)
        with open(os.path.join(sweep_dir, SETTINGS), "w") as f:
            json.dump({"storage": storage}, f)
        _create_study(space, name, sweep_dir)  # a resumable sweep from here on (a Ctrl-C now leaves one)
    except BaseException:  # Ctrl-C (or a failure) before the study: no sweep yet, nor a name to take
        _remove_unstarted(sweep_dir)
        raise
    store.mirror()  # the store holds a resumable sweep from the start, not only after the first trial
    return _drive(space, name, store, uri, log, analyze, resume=False, root=root)


def _remove_unstarted(sweep_dir: str) -> None:
    """Remove the directory run_sweep has just created, stopped before its Optuna study existed: the
    files run_sweep writes there first, and an empty trials/. Anything else in it (a trial's
    results), it is kept."""
    import shutil

    from dnasweep.sweep.storage import SETTINGS

    trials = os.path.join(sweep_dir, "trials")
    ours = {"trials", "space.json", SETTINGS, "optuna.log"}  # optuna.log: a journal being created, no trial in it
    if set(os.listdir(sweep_dir)) <= ours and not (os.path.isdir(trials) and os.listdir(trials)):
        shutil.rmtree(sweep_dir)


def resume_sweep(sweep_dir: str, address: str | None = None, log=print, tracking_uri: str | None = None,
                 analyze: bool | None = None, root: str = "runs/sweeps",
                 autoscaling: bool | None = None) -> SweepResult:
    """Continue a sweep whose driver stopped (Ctrl-C, SIGTERM, SIGKILL, lost node): finished trials
    stay, unfinished ones continue from their checkpoints, the budget is filled up. Resuming a
    finished sweep only writes what its tracker could not (and re-prints the front).
    `sweep_dir` may be the sweep's object-store URI (a new head node): its copy lands in ROOT/NAME."""
    from dnasweep.sweep.cluster import init_ray
    from dnasweep.sweep.storage import SETTINGS, ObjectStore, is_uri, open_store
    from dnasweep.sweep.tracking import check_reachable, resolve_uri

    storage = None
    if is_uri(sweep_dir):
        remote = ObjectStore(os.path.join(root, os.path.basename(sweep_dir.rstrip("/"))), sweep_dir)
        if not remote.exists("space.json"):
            raise ConfigError([Problem("SWEEP", f"{sweep_dir} holds no sweep (no space.json)",
                                       "pass STORAGE/NAME of a sweep started with --storage STORAGE")], "resume")
        storage, sweep_dir = os.path.dirname(remote.uri), remote.sweep_dir
        if not is_sweep_dir(sweep_dir) or _local_copy_behind(remote):
            remote.pull_sweep()
    sweep_dir = os.path.abspath(sweep_dir)
    open_study(sweep_dir, "resume")  # refuses a directory that is not a sweep (exit 2)
    storage = storage or (read_json(os.path.join(sweep_dir, SETTINGS)) or {}).get("storage")
    space = read_space(sweep_dir)
    uri = resolve_uri(tracking_uri, sweep_dir, space, "resume")
    check_reachable(uri, "resume")
    init_ray(space, address, log, autoscaling)
    return _drive(space, os.path.basename(sweep_dir), open_store(sweep_dir, storage), uri, log, analyze, resume=True,
                  root=os.path.dirname(sweep_dir))


def _create_study(space: SearchSpace, name: str, sweep_dir: str):
    """The sweep's Optuna study in SWEEP/optuna.log (loaded if there). Created by the runner, not
    the searcher, so `resume` recognises the directory even if the driver dies before any trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=journal(sweep_dir), load_if_exists=True,
                               directions=["minimize" if o.mode == "min" else "maximize" for o in space.objectives])


def _local_copy_behind(remote) -> bool:
    """Whether ROOT/NAME, a local sweep, is an older copy of `remote`'s sweep (True: pull the store's)
    rather than the same or newer (False: it goes on, and mirrors up). The Optuna journal is
    append-only: one copy of a sweep is a prefix of the other. Anything else is another sweep of
    the same name, which resuming would mirror over the store's: ConfigError."""
    import tempfile

    mine = os.path.join(remote.sweep_dir, "optuna.log")
    if not remote.exists("optuna.log"):  # stopped before its journal was first copied up: ours is all there is
        return False
    with tempfile.TemporaryDirectory() as tmp:
        remote.get("optuna.log", os.path.join(tmp, "optuna.log"))
        with open(os.path.join(tmp, "optuna.log"), "rb") as f:
            theirs = f.read()
    with open(mine, "rb") as f:
        ours = f.read()
    if theirs.startswith(ours):
        return len(theirs) > len(ours)
    if ours.startswith(theirs):
        return False
    raise ConfigError([Problem("--root", f"{remote.sweep_dir} and {remote.uri} have different Optuna journals: "
                               "another sweep of the same name, or a copy that went on apart from the store (resumed "
                               "on another head since); resuming there would overwrite the store's",
                               f"pass another --root to resume the store's copy, or move {remote.sweep_dir} away")],
                      "resume")


def _drive(space: SearchSpace, name: str, store, uri: str, log, analyze: bool | None, resume: bool,
           root: str) -> SweepResult:
    """Build (or restore) the Tuner, run it to the budget or to a stop signal, close the books."""
    import optuna
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from dnasweep.sweep import budget, compat, plots
    from dnasweep.sweep.cluster import bundle
    from dnasweep.sweep.moasha import MOASHA, make_scheduler
    from dnasweep.sweep.progress import Progress
    from dnasweep.sweep.reference import frontier_of, train_reference
    from dnasweep.sweep.searcher import ParetoOptunaSearch, abandon
    from dnasweep.sweep.summary import finish_sweep
    from dnasweep.sweep.tracking import MLflowSweepLogger
    from dnasweep.sweep.trainable import trial

    sweep_dir = store.sweep_dir
    storage = journal(sweep_dir)
    study = _create_study(space, name, sweep_dir)
    # What optuna-dashboard shows: the objectives by name (not "0" and "1"), and what the sweep is
    with warnings.catch_warnings():  # Optuna marks set_metric_names experimental
        warnings.simplefilter("ignore")
        study.set_metric_names([o.metric for o in space.objectives])
    for k, v in {"space_file": space.source, "objectives": [f"{o.mode} {o.metric}" for o in space.objectives],
                 "constraints": space.config.constraints, "sampler": vars(space.sampler),
                 "budget": vars(space.budget), STOPPED: None}.items():  # running again: not stopped
        study.set_user_attr(k, v)
    finished = {t.user_attrs["ray_trial_id"]: (t.state.name, t.user_attrs) for t in study.get_trials(deepcopy=False)
                if t.state.is_finished() and "ray_trial_id" in t.user_attrs}
    # resume: the tracker loads SWEEP/tracking_backlog.json itself, before it closes or rebuilds any run
    tracker = MLflowSweepLogger(space, name, sweep_dir, uri, resume=resume, fetch=store.fetch, finished=finished)
    with _sigterm_as_sigint():  # stopped while the rungs train: exit 130 and the resume line, as in the trials
        rungs = train_reference(space, sweep_dir, root, log)  # before the trials: their gains need it
    tracker.reference(rungs)
    store.mirror()
    pruned: dict[str, int] = {}  # MO-ASHA's decisions, read by the progress line and the tracker
    tracker.pruned = pruned
    progress = Progress(space, log, {**counts(study), "steps": budget.steps_used(study, space)[0]}, pruned,
                        on_draining=plots.warm, told=set(finished))
    # Tune's default loggers, less TensorBoard's: importing tensorboardX cost ~1 s of the driver's
    # start (bench/orchestration.py, py-spy), for event files nothing reads (MLflow holds the metrics).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    callbacks = [tracker, progress, *store.callbacks(), CSVLoggerCallback(), JsonLoggerCallback()]
    trainable = tune.with_resources(tune.with_parameters(trial, space=space, store=store, frontier=frontier_of(rungs)),
                                    bundle(space))
    # Trials report training metrics between evaluations; only evaluations carry the objectives.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    tune_dir = f"{store.tune_root}/tune"
    t0 = time.time()
    restored = resume and tune.Tuner.can_restore(tune_dir)
    known: set[str] = set()
    if restored:
        tuner = tune.Tuner.restore(tune_dir, trainable, resume_unfinished=True, resume_errored=False)
        # Tune unpickles the callbacks of the first run; ours carry this run's tracker state.
        compat.restored_run_config(tuner).callbacks = callbacks
        compat.restored_searcher(tuner).live_storage = storage  # this head's copy of the study
        compat.restored_searcher(tuner).after_ask = store.mirror_journal
        scheduler = compat.restored_scheduler(tuner)
        if isinstance(scheduler, MOASHA):  # Tune saves no scheduler state: its decisions are in the study
            scheduler.searcher, scheduler.pruned = compat.restored_searcher(tuner), pruned
            scheduler.load(study)
        known = {t.trial_id for t in tune.ExperimentAnalysis(tune_dir).trials}
    if resume:  # Optuna trials no Ray trial will finish: FAIL (marked abandoned), runs closed too
        lost = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"
                and t.user_attrs.get("ray_trial_id") not in known]
        abandon(study, [t.number for t in lost], LOST)
        tracker.abandon([t.user_attrs["ray_trial_id"] for t in lost if "ray_trial_id" in t.user_attrs], LOST)
        if lost:
            log(f"{len(lost)} trial(s) were lost with the driver (started but not yet saved by Ray Tune); "
                "their budget goes to new trials")
    todo = space.budget.trials - budget.finished(study)
    if not restored and budget.left(study, space):
        searcher = ParetoOptunaSearch(space, storage=storage, study_name=name)
        searcher.after_ask = store.mirror_journal
        tuner = tune.Tuner(trainable,
                           # reuse_actors: a finished trial's worker process (torch imported, data
                           # cached) takes the next trial, instead of a fresh process per trial.
                           # With budget.steps the searcher ends the search when the steps run out.
                           tune_config=tune.TuneConfig(search_alg=searcher, num_samples=todo, reuse_actors=True,
                                                       scheduler=make_scheduler(space, searcher, pruned),
                                                       max_concurrent_trials=space.budget.concurrent),
                           # A trial whose worker dies is restarted (from its checkpoint) up to retries times.
                           # Tune keeps every checkpoint it was given (pointers of a few bytes: storage.py):
                           # with num_to_keep, a driver killed between deleting an old one and saving its
                           # state left a state naming a deleted checkpoint, and the restored trial failed.
                           run_config=tune.RunConfig(name="tune", storage_path=store.tune_root, verbose=0,
                                                     callbacks=callbacks, failure_config=tune.FailureConfig(
                                                         max_failures=space.budget.retries)))
    if restored or budget.left(study, space):
        compat.retry_trials_whose_reused_worker_died()
        compat.tag_callbacks_without_imports()
        compat.trial_actors_in_idle_workers()
        with _sigterm_as_sigint():
            tuner.fit()
    study = optuna.load_study(study_name=name, storage=storage)
    if budget.stopped_short(study, space):
        tracker.suspend()
        # its RUNNING Optuna trials stay RUNNING: `dnasweep ls` reads this to call them stopped (cleared
        # by the next run; a SIGKILLed driver sets nothing)
        study.set_user_attr(STOPPED, time.strftime("%Y-%m-%d %H:%M:%S"))
        store.mirror()
        log(f"sweep {name} stopped at {budget.finished(study)}/{space.budget.trials} finished trials; its "
            f"state is saved. Continue it with:\n  dnasweep resume {store.where}")
        return result_of(study, space, sweep_dir, tracking_errors=tracker.errors, interrupted=True)
    return finish_sweep(study, space, store, tracker, uri, log, analyze, time.time() - t0)


class _sigterm_as_sigint:
    """SIGTERM (a scheduler or `kill`) stops the sweep the way Ctrl-C does: Ray Tune catches SIGINT,
    saves its experiment state and returns, so `dnasweep resume` can go on. Without this, SIGTERM
    would end the process on the spot."""

    def __enter__(self):
        self.old = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self.old)


__all__ = ["SweepResult", "is_sweep_dir", "resume_sweep", "run_sweep"]
