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
import functools
import itertools
import math

from dnasweep.config.trial import planned_steps
from dnasweep.space import SearchSpace
from dnasweep.sweep.study import counts

STEPS = "steps"  # Optuna user attr: training steps a finished trial spent
MAX_STEPS = "max_steps"  # Optuna user attr: the trial's train.max_steps
PLANNED = "planned_steps"  # Optuna user attr: training steps a trial was asked to run (its planned_steps)

# What a trial's planned steps depend on besides train.max_steps: the token budget and the tokens
# one step trains on (config.trial.tokens_per_step: batch x grad_accum x tokens per example).
_PLANNED_BY = ("train.max_tokens", "train.batch_size", "train.grad_accum", "model.task", "model.seq_len",
               "model.image_size", "model.patch_size", "model.pooling")
_MOST_CORNERS = 4096  # more corners than this: bounded by train.max_steps alone


def steps_used(study, space: SearchSpace) -> tuple[int, int]:
    """(steps spent by finished trials, steps the running ones may still spend)."""
    spent = committed = 0
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "RUNNING":  # its planned steps (asked before they were recorded: its max_steps)
            committed += int(t.user_attrs.get(PLANNED, t.user_attrs.get(MAX_STEPS, space.base.train.max_steps)))
        elif t.state.is_finished():
            spent += int(t.user_attrs.get(STEPS, 0))
    return spent, committed


def _set(cfg, path: str, value) -> None:
    *parents, leaf = path.split(".")
    setattr(functools.reduce(getattr, parents, cfg), leaf, value)


def trial_planned(space: SearchSpace, values: dict) -> int:
    """The steps a trial at `values` (its active sampled values) is asked to run: planned_steps of
    the base with those values, as the trainable's `space.apply` sets them. Computed without
    apply's checks: they read the data (paths that may exist on the workers only), and a point that
    breaks a rule fails at once, unscored; such a point is counted for its train.max_steps here."""
    cfg = copy.deepcopy(space.base)
    try:
        for path, v in values.items():
            _set(cfg, path, v)
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
    """The most training steps one trial can be asked for, what a step budget must leave room for:
    space.most_steps() (train.max_steps, or the most a searched one draws), bounded by the token
    budget where train.max_tokens ends every point sooner. Planned steps grow or shrink
    monotonically in each key they depend on, so the most is found at a corner: every end (or
    choice) of each searched such key, with its base value too when it is conditional."""
    most, base = space.most_steps(), space.base
    keys = [q for q in space.params if q.path in _PLANNED_BY]
    if not base.train.max_tokens and not any(q.path == "train.max_tokens" for q in keys):
        return most  # no token budget on any point: train.max_steps ends every trial
    options = [[int(v) if q.kind == "int" else v for v in q.ends()] + (
        [functools.reduce(getattr, q.path.split("."), base)] if q.when else []) for q in keys]
    if math.prod(len(o) for o in options) > _MOST_CORNERS:
        return most
    cfg, best = copy.deepcopy(base), 0
    cfg.train.max_steps = most
    for corner in itertools.product(*options):
        for q, v in zip(keys, corner, strict=True):
            _set(cfg, q.path, v)
        try:
            best = max(best, planned_steps(cfg))
        except (ArithmeticError, TypeError, ValueError):  # a corner no trial can be: bound by max_steps
            return most
    return min(most, best)


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
    return spent + committed + most_planned(space) <= space.budget.steps
