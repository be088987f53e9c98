"""The Optuna side of a sweep: the define-by-run space, the sampler, and the Ray Tune searcher
that asks Optuna for trials and tells it the outcomes (Pareto objectives, constraints, FAIL).

Only the driver holds the study (Ray Tune runs the searcher there), so concurrent trials never
write to the Optuna storage: one writer, whatever the cluster size or storage.
"""

from __future__ import annotations

import math

from ray.tune.search.optuna import OptunaSearch

from dnasweep.sweep.space import SearchSpace
from dnasweep.sweep.study import ABANDONED


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


def make_sampler(space: SearchSpace):
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


class ParetoOptunaSearch(OptunaSearch):
    """OptunaSearch that tells FAIL for missing or non-finite objectives (Ray only logs a warning and
    leaves the Optuna trial RUNNING), records the budget constraints, and links each Optuna trial to
    its Ray trial id from the moment it is asked (so a resumed sweep can find trials it lost).

    Lifecycle: created per `dnasweep run`; pickled into Tune's experiment state and restored by
    `dnasweep resume`, when the Optuna trials it still holds may already have been told.
    """

    def __init__(self, space: SearchSpace, **kw):
        self.sweep_space = space
        super().__init__(space=DefineByRun(space), metric=[o.metric for o in space.objectives],
                         mode=[o.mode for o in space.objectives], sampler=make_sampler(space), **kw)

    def restore(self, checkpoint_path: str):
        """Tune's saved state pickles the study with its storage *path*; a sweep resumed elsewhere
        (a new head node, another root) re-opens the study from `live_storage` when it is set."""
        import optuna

        live = getattr(self, "live_storage", None)
        super().restore(checkpoint_path)
        if live is not None:
            self.live_storage = live
            self._ot_study = optuna.load_study(study_name=self._ot_study.study_name, storage=live,
                                               sampler=self._ot_study.sampler)
            self._ot_trials = {tid: optuna.trial.Trial(self._ot_study, t._trial_id)
                               for tid, t in self._ot_trials.items()}

    def suggest(self, trial_id):
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr("ray_trial_id", trial_id)  # -> SWEEP/trials/ID, MLflow run
        return config

    def on_trial_complete(self, trial_id, result=None, error=False):
        from optuna.trial import TrialState

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot = self._ot_trials[trial_id]
        self._completed_trials.add(trial_id)
        # A resumed sweep can finish a trial whose outcome was told before the driver died.
        if self._ot_study.get_trials(deepcopy=False)[ot.number].state.is_finished():
            return
        vals = [(result or {}).get(m) for m in self.metric]
        if not error and all(isinstance(v, int | float) and math.isfinite(v) for v in vals):
            for c in self.sweep_space.constraints:
                v = result.get(c.metric)
                violation = c.violation(v) if isinstance(v, int | float) and math.isfinite(v) else 1.0
                ot.set_constraint(c.metric, violation)
            self._ot_study.tell(ot, [float(v) for v in vals])
        else:
            reason = (result or {}).get("reason") or ("the trial raised or its worker died too often" if error
                                                      else "no finite objectives reported")
            ot.set_user_attr("fail_reason", str(reason))
            self._ot_study.tell(ot, None, state=TrialState.FAIL)


def abandon(study, trial_numbers: list[int], reason: str) -> None:
    """FAIL Optuna trials that no Ray trial will ever finish, marked so counts leave them out."""
    import optuna
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False):
        if t.number in trial_numbers and t.state == TrialState.RUNNING:
            live = optuna.trial.Trial(study, t._trial_id)  # the only handle that can set attrs on it
            live.set_user_attr(ABANDONED, reason)
            study.tell(t.number, None, state=TrialState.FAIL)
