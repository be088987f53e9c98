"""A sweep's budget read from its Optuna study: trials finished and training steps spent.

Ray-free (runner, searcher and `dnasweep ls` share it). Each trial's steps are user attrs written
by the searcher: `planned_steps` when asked (what a running trial may still spend: train.max_steps,
or fewer when train.max_tokens ends it first), `max_steps` (its train.max_steps), and `steps` when
it ends (what it spent: the step it reached when complete, the step it was stopped at when pruned,
the last reported step when failed). A trial abandoned with a killed driver spent an unknown
number: counted as 0.
"""

from __future__ import annotations

import copy

from dnasweep.config.trial import planned_steps
from dnasweep.space import SearchSpace
from dnasweep.space.steps import set_path
from dnasweep.sweep.study import counts

STEPS = "steps"  # Optuna user attr: training steps a finished trial spent
MAX_STEPS = "max_steps"  # Optuna user attr: the trial's train.max_steps
PLANNED = "planned_steps"  # Optuna user attr: training steps a trial was asked to run (its planned_steps)

def steps_used(study, space: SearchSpace) -> tuple[int, int]:
    """(steps spent by finished trials, steps the running ones may still spend)."""
    spent = committed = 0
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "RUNNING":  # its planned steps (asked before they were recorded: its max_steps)
            committed += int(t.user_attrs.get(PLANNED, t.user_attrs.get(MAX_STEPS, space.base.train.max_steps)))
        elif t.state.is_finished():
            spent += int(t.user_attrs.get(STEPS, 0))
    return spent, committed


def trial_planned(space: SearchSpace, values: dict) -> int:
    """The steps a trial at `values` (its active sampled values) is asked to run: planned_steps of
    the base with those values, as the trainable's `space.apply` sets them. Computed without
    apply's checks: they read the data (paths that may exist on the workers only), and a point that
    breaks a rule fails at once, unscored; such a point is counted for its train.max_steps here."""
    cfg = copy.deepcopy(space.base)
    try:
        for path, v in values.items():
            set_path(cfg, path, v)
        return int(planned_steps(cfg))
    except (AttributeError, ArithmeticError, TypeError, ValueError):
        return int(values.get("train.max_steps", space.base.train.max_steps))


def short_of_plan(space: SearchSpace, values: dict, result: dict, planned: int | None = None) -> str | None:
    """Why a trial at `values` whose last report is `result` did not train all its planned steps,
    None when it did or its step is unknown: the searcher tells it FAIL and the tracker closes its
    run FAILED on this one rule. `planned`: as recorded when the trial was asked (None: from `values`,
    for trials asked before it was recorded)."""
    step = result.get("step")
    if not isinstance(step, int | float):
        return None
    planned = int(planned or trial_planned(space, values))
    if int(step) >= planned:
        return None
    limit = values.get("train.time_limit_s", space.base.train.time_limit_s)
    said = str(result.get("reason") or "")  # a saved result.json, re-reported after a driver restart
    by = f"by train.time_limit_s ({limit:g}s) " if limit is not None else "early "
    return (f"stopped {by}at step {int(step)} of {planned} planned: its objectives are at partial fidelity "
            "and are kept off the Pareto front" + (f" ({said})" if said else ""))


def most_planned(space: SearchSpace) -> int:
    """The most training steps one trial can be asked for (dnasweep.space.steps.most_planned)."""
    return space.most_planned()


def finished(study) -> int:
    """Trials that count against budget.trials: complete, pruned or failed (not abandoned)."""
    c = counts(study)
    return c["complete"] + c["pruned"] + c["failed"]


def stopped_short(study, space: SearchSpace) -> bool:
    """Whether a sweep back from Ray Tune stopped before its end (Ctrl-C, SIGTERM): another trial
    could start, or trials are still running. Under budget.steps the last trials that fit hold the
    remaining steps, so `left` alone called a sweep stopped while they ran finished: its parent run
    closed, its front reported final, its running trials left to no resume."""
    return left(study, space) or counts(study)["running"] > 0


def left(study, space: SearchSpace) -> bool:
    """Whether the budget allows another trial: trials below budget.trials and, with budget.steps,
    room beside the steps spent and committed for one more trial of the most steps it can draw."""
    if finished(study) >= space.budget.trials:
        return False
    if space.budget.steps is None:
        return True
    spent, committed = steps_used(study, space)
    return spent + committed + most_planned(space) <= space.budget.steps
