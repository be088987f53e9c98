"""What the config alone says about a search space, before any trial runs.

Owns the corners of a space (each range's ends, every choice) and the static check that each
constraint on a config-determined metric (STATIC) holds somewhere in the space. Loading refuses a
space whose constraint holds nowhere; `summarize` reports the parameter/FLOP range over the corners.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import TYPE_CHECKING

from dnasweep import metrics as M
from dnasweep.config import TrialConfig
from dnasweep.errors import Problem
from dnasweep.space.apply import active_values, try_apply
from dnasweep.space.params import Param

if TYPE_CHECKING:
    from dnasweep.space.space import Constraint

# Metrics the config alone fixes, exactly as trials report them (nominal == the built model,
# tests/test_model.py), so a constraint on them can be judged before any trial. Not params/active
# nor compute/flops_per_token: trials measure those under the learned routing (identity modules,
# thresholds), which can land far below or above the nominal uniform-routing value.
STATIC = {M.PARAMS_TOTAL: lambda n: n.params_total}


def corners(params: list[Param], limit: int = 256) -> list[dict]:
    """Extreme points of the space (each range's ends, every choice), at most `limit` of them."""
    axes = [[(q.path, v) for v in q.ends()] for q in params]
    n = math.prod(len(a) for a in axes) if axes else 1
    if n <= limit:
        return [dict(c) for c in itertools.product(*axes)]
    rnd = random.Random(0)
    return [dict(rnd.choice(a) for a in axes) for _ in range(limit)]


_INWARD = 64  # int values tried inward from an invalid range end


def _at(q: Param, v, point: dict, f) -> tuple[float | None, dict]:
    """f at `point` with q = v; for an int range end that makes the point invalid (d_model 30 with 4
    heads), at the nearest valid value inward instead: the extreme of the valid part of the range."""
    y = f(cand := {**point, q.path: v})
    step = 1 if v == q.low else -1
    for w in range(int(v) + step, int(v) + step * _INWARD, step) if q.kind == "int" and y is None else ():
        if not q.low <= w <= q.high:
            break
        if (y := f(cand := {**point, q.path: w})) is not None:
            break
    return y, cand


def _values(q: Param) -> list:
    """The values of `q` the descent tries: every choice; every value of an int range of at most
    _INWARD values; else the range's ends. A parameter count need not be monotone in a dimension
    (patch_size 1 can count more than 2, as the patch embedding grows while the positions shrink;
    sizes that do not divide the image are invalid), so a short range is tried whole."""
    if q.kind == "int" and q.high - q.low < _INWARD:
        return list(range(int(q.low), int(q.high) + 1))
    return q.ends()


def _descend(params: list[Param], point: dict, f) -> tuple[float, dict]:
    """Lower f(point) greedily, one dimension at a time over its values (`_values`), until no move
    helps. f returns None at an invalid point, which is never moved to."""
    best, moved = f(point), True
    while moved:
        moved = False
        for q in params:
            for v in _values(q):
                y, cand = _at(q, v, point, f)
                if y is not None and (best is None or y < best):
                    best, point, moved = y, cand, True
    return best, point


def _closest(c: Constraint, params: list[Param], base: TrialConfig) -> tuple[float, dict] | None:
    """(violation, point) of the point of the space that comes closest to satisfying `c` (a
    constraint on a STATIC metric); None when no corner is a valid combination."""
    from dnasweep.model import nominal

    seen: dict[tuple, float | None] = {}  # by the values a trial gets: many points are the same trial

    def violation(point: dict) -> float | None:
        values = active_values(params, point)
        key = tuple((k, type(v), v) for k, v in values.items())
        if key not in seen:
            cfg = try_apply(base, values)
            seen[key] = None if cfg is None else c.violation(STATIC[c.metric](nominal(cfg.model)))
        return seen[key]

    scored = [(v, pt) for pt in corners(params) if (v := violation(pt)) is not None]
    if not scored:  # every corner invalid: start from the valid values nearest each one's int ends
        scored = [found for pt in corners(params) if (found := _descend(params, pt, violation))[0] is not None]
    return _descend(params, min(scored, key=lambda s: s[0])[1], violation) if scored else None


def unsatisfiable(params: list[Param], constraints: list[Constraint], base: TrialConfig) -> list[Problem]:
    """Constraints on static metrics (STATIC) that no point of the space satisfies, so every
    trial would be infeasible. The best corner is refined by a descent over the dimensions, each
    over every value of a short int range (a parameter count is not monotone in every dimension:
    patch_size), which also matters when there are too many corners to try them all."""
    out = []
    for i, c in enumerate(constraints):
        found = _closest(c, params, base) if c.metric in STATIC else None
        if found is None or found[0] <= 0:
            continue  # satisfiable, not judged statically, or no valid corner to judge from
        point = active_values(params, found[1])
        v = c.bound + found[0] if c.op == "<=" else c.bound - found[0]
        where = ", ".join(f"{k}={x}" for k, x in point.items() if k.startswith("model.")) or "the base model"
        least, fewer = ("smallest", "smaller") if c.op == "<=" else ("largest", "larger")
        out.append(Problem(f"constraints[{i}]", f"{c.metric} {c.op} {c.bound:g} holds at no point of the search "
                           f"space: its {least} {c.metric} is {v:,.0f} ({where})",
                           f"{'raise' if c.op == '<=' else 'lower'} the bound past {v:,.0f}, or search {fewer} models"))
    return out
