"""A sweep's budget read from its Optuna study: trials finished and training steps spent.

Ray-free (runner, searcher and `dnasweep ls` share it). Each trial's steps are user attrs written
by the searcher: `max_steps` when asked (what a running trial may still spend), `steps` when it
ends (what it spent: max_steps when complete, the rung when pruned, the last reported step when
failed). A trial abandoned with a killed driver spent an unknown number: counted as 0.
"""

from __future__ import annotations

from dnasweep.space import SearchSpace
from dnasweep.sweep.study import counts

STEPS = "steps"  # Optuna user attr: training steps a finished trial spent
MAX_STEPS = "max_steps"  # Optuna user attr: training steps a trial was asked to run


def steps_used(study, space: SearchSpace) -> tuple[int, int]:
    """(steps spent by finished trials, steps the running ones may still spend)."""
    spent = committed = 0
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "RUNNING":
            committed += int(t.user_attrs.get(MAX_STEPS, space.base.train.max_steps))
        elif t.state.is_finished():
            spent += int(t.user_attrs.get(STEPS, 0))
    return spent, committed


def finished(study) -> int:
    """Trials that count against budget.trials: complete, pruned or failed (not abandoned)."""
    c = counts(study)
    return c["complete"] + c["pruned"] + c["failed"]


def left(study, space: SearchSpace) -> bool:
    """Whether the budget allows another trial: trials below budget.trials and, with budget.steps,
    room beside the steps spent and committed for one more trial of the most steps it can draw."""
    if finished(study) >= space.budget.trials:
        return False
    if space.budget.steps is None:
        return True
    spent, committed = steps_used(study, space)
    return spent + committed + space.most_steps() <= space.budget.steps
