"""The Optuna side of a sweep: the define-by-run space, the sampler, and the Ray Tune searcher
that asks Optuna for trials and tells it the outcomes (Pareto objectives, constraints, FAIL).

Only the driver holds the study (Ray Tune runs the searcher there), so concurrent trials never
write to the Optuna storage: one writer, whatever the cluster size or storage.
"""

from __future__ import annotations

import math

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from dnasweep.config.sweep import SAMPLERS
from dnasweep.space import SearchSpace
from dnasweep.sweep import budget, compat
from dnasweep.sweep.moasha import BRACKET, RUNG
from dnasweep.sweep.study import ABANDONED


class DefineByRun:
    """Optuna define-by-run space: conditional parameters are suggested only when active.
    A module-level class so Ray can pickle the searcher's state."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial):
        values: dict = {}
        for p in self.space.params:
            if not p.active(values):
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

    return SAMPLERS[space.sampler.type](optuna, space.sampler)


class ParetoOptunaSearch(OptunaSearch):
    """OptunaSearch that tells FAIL for missing or non-finite objectives (Ray only logs a warning and
    leaves the Optuna trial RUNNING), records the budget constraints, and links each Optuna trial to
    its Ray trial id from the moment it is asked (so a resumed sweep can find trials it lost).

    Lifecycle: created per `dnasweep run`; pickled into Tune's experiment state and restored by
    `dnasweep resume`, when the Optuna trials it still holds may already have been told.

    A trial that `train.time_limit_s` stopped before its planned steps (train.max_steps, or fewer
    under train.max_tokens) is told FAIL (fail_status `time_limit`, fail_reason naming the step it
    reached and the steps planned), never COMPLETE: it stopped where its machine's speed put it, and
    its objectives, measured at partial fidelity, would sit on the front beside trials that trained
    every planned step (the dense reference refuses such rungs for the same reason). Its steps count
    as spent.
    """

    def __init__(self, space: SearchSpace, **kw):
        self.sweep_space = space
        self.steps_seen: dict[str, int] = {}  # Ray trial id -> last training step reported
        super().__init__(space=DefineByRun(space), metric=[o.metric for o in space.objectives],
                         mode=[o.mode for o in space.objectives], sampler=make_sampler(space), **kw)
        if space.scheduler.type != "fifo":  # pruned trials must not model TPE's good region
            compat.good_from_complete_only(self)

    # Set by the runner on each head, never taken from a saved state: this head's storage of the
    # study, and the hook that copies this sweep's journal up after each ask.
    HEAD_ONLY = ("live_storage", "after_ask")

    def save(self, checkpoint_path: str):
        """Tune's saved state as OptunaSearch.save writes it (the pickled __dict__), without this
        head's storage and journal hook (HEAD_ONLY)."""
        import pickle

        with open(checkpoint_path, "wb") as f:
            pickle.dump({k: v for k, v in self.__dict__.items() if k not in self.HEAD_ONLY}, f)

    def restore(self, checkpoint_path: str):
        """Tune's saved state pickles the study with its storage *path*; a sweep resumed elsewhere
        (a new head node, another root) re-opens the study from `live_storage` when it is set. The
        HEAD_ONLY attributes stay this head's: a saved state (one written before save() dropped them)
        would otherwise bring back the first run's `after_ask`, which mirrors the old sweep dir."""
        import optuna

        head = {k: getattr(self, k, None) for k in self.HEAD_ONLY}
        super().restore(checkpoint_path)
        self.__dict__.update(head)
        live = head["live_storage"]
        if live is not None:
            old = compat.search_study(self)
            compat.set_search_study(self, optuna.load_study(study_name=old.study_name, storage=live,
                                                            sampler=old.sampler))

    def suggest(self, trial_id):
        space = self.sweep_space
        if space.budget.steps is not None:  # a step budget: start a trial only if its planned steps fit
            # judged before the point is drawn, so for the most steps a trial can draw (a searched
            # train.max_steps): a 3000-step draw once went past a 3000 budget with 600 committed.
            # Planned, not max_steps: under train.max_tokens trials end sooner, and reserving max_steps
            # stopped the sweep with a quarter of its budget unspent.
            spent, committed = budget.steps_used(compat.search_study(self), space)
            if spent + committed + budget.most_planned(space) > space.budget.steps:
                # nothing running: nothing can free steps (a pruned trial returns its unspent ones)
                return Searcher.FINISHED if committed == 0 else None
        config = super().suggest(trial_id)
        live = compat.search_trials(self)
        if trial_id in live:
            values = {p.path: config[p.path] for p in space.params if p.path in (config or {})}  # as the trainable
            live[trial_id].set_user_attr("ray_trial_id", trial_id)  # -> SWEEP/trials/ID, MLflow run
            live[trial_id].set_user_attr(budget.MAX_STEPS, int(values.get("train.max_steps",
                                                                          space.base.train.max_steps)))
            live[trial_id].set_user_attr(budget.PLANNED, budget.trial_planned(space, values))
            # A sweep kept in object storage copies the journal up now, before Tune's saved state can
            # name this trial: a new head restoring that state then always finds the trial in the copy.
            if getattr(self, "after_ask", None) is not None:
                self.after_ask()
        return config

    def trial_number(self, trial_id: str) -> int | None:
        """The Optuna number of the trial asked for Ray trial `trial_id` (None if unknown)."""
        ot = compat.search_trials(self).get(trial_id)
        return None if ot is None else ot.number

    def on_trial_result(self, trial_id, result):
        """The last training step each trial reported (what a failed trial spent)."""
        if isinstance(result.get("step"), int | float):
            self.steps_seen[trial_id] = max(int(result["step"]), self.steps_seen.get(trial_id, 0))

    def record_rung(self, trial_id: str, rung: int, bracket: int, values: dict, violation: float) -> None:
        """MO-ASHA recorded the trial's objectives at a rung: kept in the study (user attrs), the
        state a resumed sweep's scheduler is rebuilt from."""
        ot = compat.search_trials(self).get(trial_id)
        # a trial told before a driver died re-reports after `resume`: its record is final
        if ot is None or compat.search_study(self).get_trials(deepcopy=False)[ot.number].state.is_finished():
            return
        ot.set_user_attr(BRACKET, bracket)
        for m, v in {**values, "violation": violation}.items():
            ot.set_user_attr(RUNG.format(step=rung, metric=m), float(v))

    def prune(self, trial_id: str, rung: int, step: int | None = None) -> None:
        """MO-ASHA stopped the trial at `rung`, judged by its report at training step `step` (the
        rung's, or a later one when the rung's report was lost): PRUNED in Optuna (never on the
        front), told now so the decision stands if the driver dies before Ray Tune saves it. It spent
        `step` steps (the steps it trained, not the rung's)."""
        from optuna.trial import TrialState

        if (taken := self._take(trial_id)) is None:
            return
        ot, study = taken
        ot.set_user_attr("pruned_at", rung)
        ot.set_user_attr(budget.STEPS, int(rung if step is None else max(rung, step)))
        study.tell(ot, None, state=TrialState.PRUNED)

    def _take(self, trial_id: str):
        """(live Optuna trial, study) of a Ray trial whose outcome is still to be told, marked told;
        None if it was told already (or is unknown). A resumed sweep can finish a trial whose outcome
        was told before the driver died: the study's state says so."""
        done, live = compat.search_completed(self), compat.search_trials(self)
        if trial_id in done or trial_id not in live:
            return None
        ot, study = live[trial_id], compat.search_study(self)
        done.add(trial_id)
        return None if study.get_trials(deepcopy=False)[ot.number].state.is_finished() else (ot, study)

    def _time_limited(self, ot, result: dict) -> str | None:
        """Why a trial that reports objectives did not train all its planned steps (None when it did,
        or when its step is not known). Ray Tune hands over the trial's last report: the training
        loop's last evaluation (or, after a driver restart, its saved result.json), whose `step` is
        where training stopped. Only train.time_limit_s ends a completed trial early (MO-ASHA's stops
        are told PRUNED before Ray Tune calls the trial complete)."""
        space = self.sweep_space
        values = {p.path: ot.params[p.path] for p in space.params if p.path in ot.params}
        return budget.short_of_plan(space, values, result, ot.user_attrs.get(budget.PLANNED))

    def on_trial_complete(self, trial_id, result=None, error=False):
        from optuna.trial import TrialState

        if (taken := self._take(trial_id)) is None:
            return
        ot, study = taken
        step = (result or {}).get("step")
        ot.set_user_attr(budget.STEPS, int(step) if isinstance(step, int | float)
                         else self.steps_seen.get(trial_id, 0))
        vals = [(result or {}).get(m) for m in self.metric]
        scored = not error and all(isinstance(v, int | float) and math.isfinite(v) for v in vals)
        if scored and (short := self._time_limited(ot, result)) is not None:
            # partial fidelity: FAIL, never on the front (class docstring)
            ot.set_user_attr("fail_reason", short)
            ot.set_user_attr("fail_status", "time_limit")
            study.tell(ot, None, state=TrialState.FAIL)
        elif scored:
            for c in self.sweep_space.constraints:
                # one key per constraint: Optuna keeps the first value set under a key, so two bounds
                # on one metric keyed by the metric left the second unenforced
                ot.set_constraint(c.key, c.violation_in(result))
            study.tell(ot, [float(v) for v in vals])
        else:
            reason = (result or {}).get("reason") or ("the trial raised or its worker died too often" if error
                                                      else "no finite objectives reported")
            ot.set_user_attr("fail_reason", str(reason))
            ot.set_user_attr("fail_status", str((result or {}).get("status", "error" if error else "failed")))
            study.tell(ot, None, state=TrialState.FAIL)


def abandon(study, trial_numbers: list[int], reason: str) -> None:
    """FAIL Optuna trials that no Ray trial will ever finish, marked so counts leave them out."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False):
        if t.number in trial_numbers and t.state == TrialState.RUNNING:
            compat.live_trial(study, t).set_user_attr(ABANDONED, reason)
            study.tell(t.number, None, state=TrialState.FAIL)
