"""Every use of a private attribute of Ray Tune or Optuna, in one place.

dnasweep needs a few things the libraries do not expose: swapping the callbacks and the live
Optuna storage into a restored Tuner (Tune unpickles the first run's, with stale state), and
reaching OptunaSearch's study and per-trial handles (to tell FAIL, set constraints and user
attrs). `check()` touches each of them on fresh objects; tests/test_compat.py runs it, so an
upgrade that moves one fails loudly there instead of deep inside a resumed sweep.
"""

from __future__ import annotations

import math


def restored_run_config(tuner):
    """The RunConfig a restored Tuner will run with (its callbacks can be replaced)."""
    return tuner._local_tuner.get_run_config()


def restored_scheduler(tuner):
    """The scheduler a restored Tuner unpickled (as first built: Tune saves no scheduler state)."""
    return tuner._local_tuner._tune_config.scheduler


def restored_searcher(tuner):
    """The searcher a restored Tuner unpickled."""
    return tuner._local_tuner._tune_config.search_alg


def search_study(search):
    """OptunaSearch's study."""
    return search._ot_study


def set_search_study(search, study) -> None:
    """Point OptunaSearch at `study` (re-opened on this head's storage) and rebind its live trials."""
    import optuna

    search._ot_study = study
    if isinstance(getattr(study.sampler, "_gamma", None), GoodFromCompleteOnly):
        study.sampler._gamma.study = study  # count the trials of the study the sampler now serves
    search._ot_trials = {tid: optuna.trial.Trial(study, t._trial_id) for tid, t in search._ot_trials.items()}


def search_trials(search) -> dict:
    """Ray trial id -> live optuna.trial.Trial that OptunaSearch asked for."""
    return search._ot_trials


def search_completed(search) -> set:
    """Ray trial ids OptunaSearch already told."""
    return search._completed_trials


class GoodFromCompleteOnly:
    """TPE's gamma (how many trials model the good region) capped at the study's complete, feasible
    trials. Optuna 5's multi-objective TPE scores every PRUNED trial alike (multi-objective trials
    carry no intermediate values) and tops its good set up with them, in trial order, when too few
    trials are complete: under MO-ASHA the first trial it pruned became the model of a good point.
    Pruned trials are left to the bad set. Picklable (Tune saves the sampler with the searcher)."""

    def __init__(self, study):
        self.study = study

    def __call__(self, n: int) -> int:
        from optuna.trial import TrialState

        done = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        feasible = sum(not any(v > 0 for v in t.constraints.values()) for t in done)
        default = math.ceil(0.1 * n) if len(self.study.directions) > 1 else min(math.ceil(0.1 * n), 25)  # Optuna's
        return min(default, feasible)


def good_from_complete_only(search) -> None:
    """Make a TPE sampler of `search`'s study model its good region on complete trials only (see
    GoodFromCompleteOnly; the sampler's `_gamma`, deprecated as an argument since Optuna 4.9)."""
    import optuna

    study = search_study(search)
    if isinstance(study.sampler, optuna.samplers.TPESampler):
        study.sampler._gamma = GoodFromCompleteOnly(study)


def live_trial(study, frozen):
    """A live handle on a frozen trial: the only one that can set user attrs on it."""
    import optuna

    return optuna.trial.Trial(study, frozen._trial_id)


def retry_trials_whose_reused_worker_died() -> None:
    """Make Ray Tune retry, once, a trial whose reused worker turns out dead (idempotent).

    With reuse_actors, a finished trial's worker waits, idle, for the next trial. If it dies there
    (OOM killer, a lost node), Tune hears of it twice when it hands the worker the next trial: as
    the actor's failure, which restarts the trial (a retry, as for a worker dying in its creation
    task), then as the failure of the `reset` task, which finds the trial PENDING again and, Tune
    retrying only RUNNING trials, errored it outright with its retries unspent. The second report
    of the one death is dropped; a reset failure reported alone is treated as the actor's.
    tests/faults/test_worker_killed.py kills an idle worker and checks the next trial completes.
    """
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.experiment import Trial

    failure = TuneController._trial_task_failure
    if getattr(failure, "dnasweep_patched", False):
        return

    def _trial_task_failure(self, trial, exception):
        echoes = self.__dict__.setdefault("_dnasweep_reset_echoes", set())
        if trial in self._resetting_trials:  # the worker being handed this trial died
            self._resetting_trials.discard(trial)
            if trial.status == Trial.RUNNING:  # the actor's failure: its reset's failure follows
                echoes.add(trial)
            else:
                self._set_trial_status(trial, Trial.RUNNING)
                if trial in self._staged_trials:
                    self._unstage_trial_with_resources(trial)
        elif trial in echoes:
            echoes.discard(trial)
            if trial.status == Trial.PENDING:  # requeued by the first report: nothing more to do
                return None
        return failure(self, trial, exception)

    _trial_task_failure.dnasweep_patched = True
    TuneController._trial_task_failure = _trial_task_failure


# Ray Tune's own integration callbacks, compared by class name in its usage telemetry.
_INTEGRATION_CALLBACKS = ("WandbLoggerCallback", "MLflowLoggerCallback", "CometLoggerCallback", "AimLoggerCallback")


def tag_callbacks_without_imports() -> None:
    """Ray Tune's usage telemetry, as Tune records it, without importing all of MLflow (idempotent).

    At every `tune.run`, before the first trial starts, `ray.air._internal.usage.tag_callbacks`
    counts the callbacks by class; to know the class names it imports Tune's MLflow, W&B, Comet and
    Aim integrations, and the MLflow one imports `mlflow` whole (its genai packages too). That was
    the largest single cost of a sweep's start on the driver (py-spy). The same count by name;
    a sweep imports MLflow when it first writes to its store, while the first trials train.
    """
    import collections
    import json

    from ray.air._internal import usage

    if getattr(usage.tag_callbacks, "dnasweep_patched", False):
        return

    def tag_callbacks(callbacks) -> bool:
        from ray.tune import Callback
        from ray.tune.logger import LoggerCallback
        from ray.tune.utils.callback import DEFAULT_CALLBACK_CLASSES

        if not callbacks:
            return False
        known = {*_INTEGRATION_CALLBACKS, *(c.__name__ for c in DEFAULT_CALLBACK_CLASSES)}
        counts: dict[str, int] = collections.defaultdict(int)
        for cb in callbacks:
            if isinstance(cb, Callback):
                name = type(cb).__name__
                counts[name if name in known else
                       "CustomLoggerCallback" if isinstance(cb, LoggerCallback) else "CustomCallback"] += 1
        if counts:
            usage.record_extra_usage_tag(usage.TagKey.AIR_CALLBACKS, json.dumps(counts))
        return bool(counts)

    tag_callbacks.dnasweep_patched = True
    usage.tag_callbacks = tag_callbacks


def trial_actors_in_idle_workers() -> None:
    """Ray Tune's trial actors without a runtime env unless the driver has variables to pass on
    (idempotent), so they start in the workers Ray keeps idle.

    Tune registers every trainable with runtime_env={"env_vars": {"PL_DISABLE_FORK": "1", ...}}
    (a PyTorch Lightning switch, with AWS and Ray Train variables when the driver has them). An actor
    with a runtime env of its own never takes one of the workers Ray starts ahead (theirs is the
    job's), and its new process starts through Ray's setup_worker, which imports Ray once more: each
    slot's first trial waited for that. A 2-trial sweep on 2 cores began training 1.1 s sooner per
    slot without it (docs/benchmarks.md). With a variable to pass on, Tune's runtime env is kept.
    (A worker that has run a task never hosts an actor, so warming idle workers with torch cannot help.)
    """
    import os

    import ray
    from ray.tune.execution import class_cache

    tune_get = class_cache._ActorClassCache.get
    if getattr(tune_get, "dnasweep_patched", False):
        return

    def get(self, trainable_cls):
        if any(v in os.environ for v in class_cache.ENV_VARS_TO_PROPAGATE):
            return tune_get(self, trainable_cls)
        if trainable_cls not in self._cache:
            self._cache[trainable_cls] = ray.remote(trainable_cls)
        return self._cache[trainable_cls]

    get.dnasweep_patched, get.tune_get = True, tune_get
    class_cache._ActorClassCache.get = get


def check() -> None:
    """Touch every private attribute above on fresh objects; AttributeError if one moved."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    study = optuna.create_study()
    frozen = study.ask()
    live_trial(study, study.trials[0])
    assert frozen.number == 0
    search = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="m", mode="min")
    search.set_search_properties("m", "min", config={})
    search.suggest("t0")
    import importlib
    import inspect

    from ray.air._internal import usage
    from ray.tune.execution.tune_controller import TuneController

    assert callable(usage.tag_callbacks) and callable(usage.record_extra_usage_tag) and usage.TagKey.AIR_CALLBACKS
    from ray.tune.execution import class_cache

    tune_get = getattr(class_cache._ActorClassCache.get, "tune_get", class_cache._ActorClassCache.get)
    assert all(isinstance(v, str) for v in class_cache.ENV_VARS_TO_PROPAGATE), "class_cache.ENV_VARS_TO_PROPAGATE"
    assert getattr(class_cache._ActorClassCache(), "_cache", None) == {}, "_ActorClassCache._cache moved"
    assert "ray.remote(runtime_env=runtime_env)" in inspect.getsource(tune_get), \
        "Tune registers its trainables another way: trial_actors_in_idle_workers no longer applies"
    assert "air_usage.tag_callbacks(" in inspect.getsource(importlib.import_module("ray.tune.tune").run)

    tpe = optuna.samplers.TPESampler()
    assert hasattr(tpe, "_gamma") and "self._gamma(" in inspect.getsource(type(tpe)._sample), "TPESampler._gamma"
    for name in ("_trial_task_failure", "_set_trial_status", "_unstage_trial_with_resources"):
        assert callable(getattr(TuneController, name)), f"TuneController.{name} moved"
    assert "self._resetting_trials" in inspect.getsource(TuneController.__init__), "TuneController._resetting_trials"
    assert isinstance(search_trials(search), dict) and isinstance(search_completed(search), set)
    set_search_study(search, search_study(search))
    import tempfile

    from ray import tune

    with tempfile.TemporaryDirectory() as tmp:
        tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(search_alg=search, num_samples=1),
                           run_config=tune.RunConfig(name="compat", storage_path=tmp))
        restored_run_config(tuner).callbacks = []
        assert restored_run_config(tuner).callbacks == [], "the Tuner's RunConfig is a copy: callbacks not swapped"
        assert restored_searcher(tuner) is search, "the Tuner's searcher is not where compat looks"
        assert restored_scheduler(tuner) is None, "the Tuner's scheduler is not where compat looks"
