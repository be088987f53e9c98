"""What the config alone says about a search space, before any trial runs.

Owns the corners of a space (each range's ends, every choice), the trial config at a point
(conditional parameters applied as DefineByRun applies them), and the static check that each
constraint on a config-determined metric (_STATIC) holds somewhere in the space. `parse_space`
refuses a space whose constraint holds nowhere; `summarize` reports the parameter/FLOP range
over the corners.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import TYPE_CHECKING

from dnasweep import metrics as M
from dnasweep.config import TrialConfig, build_trial, trial_problems
from dnasweep.errors import ConfigError, Problem
from dnasweep.sweep.space_rules import _fmt, _is_number

if TYPE_CHECKING:
    from dnasweep.sweep.space import Constraint, Param, SearchSpace

# Metrics the config alone fixes, exactly as trials report them (nominal == the built model,
# tests/test_model.py), so a constraint on them can be judged before any trial. Not params/active
# nor compute/flops_per_token: trials measure those under the learned routing (identity modules,
# thresholds), which can land far below or above the nominal uniform-routing value.
_STATIC = {M.PARAMS_TOTAL: lambda n: n.params_total}


def _ends(q: Param) -> list:
    """The extreme values of one dimension: every choice, or a range's two ends."""
    return q.choices if q.kind == "choice" else [q.low, q.high]


def _corners(params: list[Param], limit: int = 256) -> list[dict]:
    import itertools
    import random

    axes = [[(q.path, v) for v in _ends(q)] for q in params]
    n = math.prod(len(a) for a in axes) if axes else 1
    if n <= limit:
        return [dict(c) for c in itertools.product(*axes)]
    rnd = random.Random(0)
    return [dict(rnd.choice(a) for a in axes) for _ in range(limit)]


def corners(space: SearchSpace, limit: int = 256) -> list[dict]:
    """Extreme points of the space (each range's ends, every choice), at most `limit` of them."""
    return _corners(space.params, limit)


def _active(params: list[Param], point: dict) -> dict:
    """The values a trial at `point` gets: a conditional parameter only where its `when:` holds,
    decided in file order as DefineByRun does (an inactive one keeps the base value)."""
    values: dict = {}
    for q in params:
        if q.path in point and all(values.get(k) in v for k, v in q.when.items()):
            values[q.path] = point[q.path]
    return values


def _point_trial(base: dict, base_cfg: TrialConfig, values: dict) -> TrialConfig | None:
    """The trial config of base + `values`, None when that combination is invalid (e.g. top_k
    above the pool size). Sets the values on a copy of the parsed base: build_trial's per-leaf
    schema checks cost ~0.2 s a point, and each value was type-checked when the space was parsed.
    A value of another type than its field (a quoted number OmegaConf converts) goes through
    build_trial, the exact way."""
    cfg = copy.deepcopy(base_cfg)
    for path, v in values.items():
        *parents, leaf = path.split(".")
        node = functools.reduce(getattr, parents, cfg)
        now = getattr(node, leaf)
        if not (now is None or v is None or isinstance(v, type(now)) or isinstance(now, float) and _is_number(v)):
            try:
                return build_trial(base, [f"{k}={_fmt(x)}" for k, x in values.items()])
            except ConfigError:
                return None
        setattr(node, leaf, v)
    return None if trial_problems(cfg) else cfg


def _descend(params: list[Param], point: dict, f) -> tuple[float, dict]:
    """Lower f(point) greedily, one dimension at a time over its extreme values, until no move helps.
    f returns None at an invalid point, which is never moved to."""
    best, moved = f(point), True
    while moved:
        moved = False
        for q in params:
            for v in _ends(q):
                y = f({**point, q.path: v})
                if y is not None and y < best:
                    best, point, moved = y, {**point, q.path: v}, True
    return best, point


def _closest(c: Constraint, params: list[Param], base: dict, base_cfg: TrialConfig) -> tuple[float, dict] | None:
    """(violation, point) of the point of the space that comes closest to satisfying `c` (a
    constraint on a _STATIC metric); None when no corner is a valid combination."""
    from dnasweep.model import nominal

    def violation(point: dict) -> float | None:
        cfg = _point_trial(base, base_cfg, _active(params, point))
        return None if cfg is None else c.violation(_STATIC[c.metric](nominal(cfg.model)))

    scored = [(v, pt) for pt in _corners(params) if (v := violation(pt)) is not None]
    return _descend(params, min(scored, key=lambda s: s[0])[1], violation) if scored else None


def _unsatisfiable(params: list[Param], constraints: list[Constraint], base: dict,
                   base_cfg: TrialConfig) -> list[Problem]:
    """Constraints on static metrics (_STATIC) that no point of the space satisfies, so every
    trial would be infeasible. Such a metric (a parameter count) moves one way along each
    dimension, so its extremes lie at corners: the best corner is refined by a descent over the
    dimensions, which matters when there are too many corners to try them all."""
    out = []
    for i, c in enumerate(constraints):
        found = _closest(c, params, base, base_cfg) if c.metric in _STATIC else None
        if found is None or found[0] <= 0:
            continue  # satisfiable, not judged statically, or no valid corner to judge from
        point = _active(params, found[1])
        v = c.bound + found[0] if c.op == "<=" else c.bound - found[0]
        where = ", ".join(f"{k}={x}" for k, x in point.items() if k.startswith("model.")) or "the base model"
        least, fewer = ("smallest", "smaller") if c.op == "<=" else ("largest", "larger")
        out.append(Problem(f"constraints[{i}]", f"{c.metric} {c.op} {c.bound:g} holds at no point of the search "
                           f"space: its {least} {c.metric} is {v:,.0f} ({where})",
                           f"{'raise' if c.op == '<=' else 'lower'} the bound past {v:,.0f}, or search {fewer} models"))
    return out
