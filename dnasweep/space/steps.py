"""The most training steps one trial of a space can be asked for: what a step budget must leave
room for, judged from the base and the searched dimensions alone (validate and the searcher agree)."""

from __future__ import annotations

import copy
import functools
import itertools
import math

from dnasweep.config import TrialConfig
from dnasweep.config.trial import planned_steps
from dnasweep.space.params import Param

# What a trial's planned steps depend on besides train.max_steps: the token budget and the tokens
# one step trains on (config.trial.tokens_per_step: batch x grad_accum x tokens per example).
PLANNED_BY = ("train.max_tokens", "train.batch_size", "train.grad_accum", "model.task", "model.seq_len",
              "model.image_size", "model.patch_size", "model.pooling")
_MOST_CORNERS = 4096  # more corners than this: bounded by train.max_steps alone


def get_path(cfg, path: str):
    """The value at the dotted leaf `path` of a config."""
    return functools.reduce(getattr, path.split("."), cfg)


def set_path(cfg, path: str, value) -> None:
    """Set the dotted leaf `path` of a config in place."""
    *parents, leaf = path.split(".")
    setattr(functools.reduce(getattr, parents, cfg), leaf, value)


def most_steps(base_max_steps: int, params: list[Param]) -> int:
    """The largest train.max_steps a trial can have: the base's unless every trial draws its own (a
    train.max_steps searched with no when:), and the most a searched one can draw. Counting the
    base's 1000 under a search of [100, 300] reserved 1000 steps per running trial: a step budget
    ended with half of it unspent, and one under 1000 was refused."""
    drawn = [q for q in params if q.path == "train.max_steps"]
    base = [base_max_steps] if not drawn or any(q.when for q in drawn) else []
    return max([*base, *(int(v) for q in drawn for v in q.ends())])


def most_planned(base: TrialConfig, params: list[Param]) -> int:
    """The most training steps one trial can be asked for: most_steps, bounded by the token budget
    where train.max_tokens ends every point sooner. Planned steps grow or shrink monotonically in
    each key they depend on, so the most is found at a corner: every end (or choice) of each
    searched such key, with its base value too when it is conditional."""
    most = most_steps(base.train.max_steps, params)
    keys = [q for q in params if q.path in PLANNED_BY]
    if not base.train.max_tokens and not any(q.path == "train.max_tokens" for q in keys):
        return most  # no token budget on any point: train.max_steps ends every trial
    options = [[int(v) if q.kind == "int" else v for v in q.ends()] + (
        [get_path(base, q.path)] if q.when else []) for q in keys]
    if math.prod(len(o) for o in options) > _MOST_CORNERS:
        return most
    cfg, best = copy.deepcopy(base), 0
    cfg.train.max_steps = most
    for corner in itertools.product(*options):
        for q, v in zip(keys, corner, strict=True):
            set_path(cfg, q.path, v)
        try:
            best = max(best, planned_steps(cfg))
        except (ArithmeticError, TypeError, ValueError):  # a corner no trial can be: bound by max_steps
            return most
    return min(most, best)
