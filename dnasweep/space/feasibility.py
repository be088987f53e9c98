"""What the config alone says about a search space, before any trial runs.

Owns the corners of a space (each range's ends, every choice), the check that each searched value
is a valid trial somewhere in the space (`impossible_values`), and the static check that each
constraint on a config-determined metric (STATIC) holds somewhere in the space. Loading refuses a
space with a value that is valid nowhere or a constraint that holds nowhere; `summarize` reports the
parameter/FLOP range over the corners.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import TYPE_CHECKING

from dnasweep import metrics as M
from dnasweep.config import TrialConfig
from dnasweep.errors import ConfigError, Problem
from dnasweep.space.apply import active_values, apply
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


class Trials:
    """The trial config of each point of a space, or the problems that make it invalid: built once
    per distinct trial (many points are the same trial, an inactive parameter's value dropped) and
    shared by the checks of one load, which judge the same corners."""

    def __init__(self, params: list[Param], base: TrialConfig):
        self.params, self.base = params, base
        self._seen: dict[tuple, TrialConfig | list[Problem]] = {}

    def key(self, point: dict) -> tuple:
        """What tells two trials apart: the values the trial at `point` gets (typed: 1 is not 1.0)."""
        return tuple((k, type(v), v) for k, v in active_values(self.params, point).items())

    def at(self, point: dict) -> TrialConfig | list[Problem]:
        """The trial config at `point`, or (a list) every rule of the trial config it breaks."""
        key = self.key(point)
        if key not in self._seen:
            try:
                self._seen[key] = apply(self.base, dict((k, v) for k, _, v in key))
            except ConfigError as e:
                self._seen[key] = e.problems
        return self._seen[key]

    def witnesses(self) -> list[dict]:
        """Valid points judged so far that between them draw every value drawn at any of them, a few
        points in all: what a second judging of the same search (the smoke: overlay's base) tries first."""
        out, drawn = [], set()
        for key, got in self._seen.items():
            if not isinstance(got, list) and not set(key) <= drawn:
                out.append({k: v for k, _, v in key})
                drawn |= set(key)
        return out


def _at(q: Param, v, point: dict, f) -> tuple[float | None, dict]:
    """f at `point` with q = v; for an int range end that makes the point invalid (d_model 30 with 4
    heads), at the nearest valid value inward instead: the extreme of the valid part of the range."""
    y = f(cand := {**point, q.path: v})
    for w in _inward(q, v)[1:] if y is None else ():
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


def _closest(c: Constraint, params: list[Param], trials: Trials) -> tuple[float, dict] | None:
    """(violation, point) of the point of the space that comes closest to satisfying `c` (a
    constraint on a STATIC metric); None when no corner is a valid combination."""
    from dnasweep.model import nominal

    seen: dict[tuple, float | None] = {}  # by the values a trial gets: many points are the same trial

    def violation(point: dict) -> float | None:
        key = trials.key(point)
        if key not in seen:
            cfg = trials.at(point)
            seen[key] = None if isinstance(cfg, list) else c.violation(STATIC[c.metric](nominal(cfg.model)))
        return seen[key]

    scored = [(v, pt) for pt in corners(params) if (v := violation(pt)) is not None]
    if not scored:  # every corner invalid: start from the valid values nearest each one's int ends
        scored = [found for pt in corners(params) if (found := _descend(params, pt, violation))[0] is not None]
    return _descend(params, min(scored, key=lambda s: s[0])[1], violation) if scored else None


def unsatisfiable(params: list[Param], constraints: list[Constraint], base: TrialConfig,
                  trials: Trials | None = None) -> list[Problem]:
    """Constraints on static metrics (STATIC) that no point of the space satisfies, so every
    trial would be infeasible. The best corner is refined by a descent over the dimensions, each
    over every value of a short int range (a parameter count is not monotone in every dimension:
    patch_size), which also matters when there are too many corners to try them all. `trials`: the
    points already judged by this load's other checks (`impossible_values`)."""
    trials = trials or Trials(params, base)
    out = []
    for i, c in enumerate(constraints):
        found = _closest(c, params, trials) if c.metric in STATIC else None
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


_STARTS = 4  # corners a suspect value's descent starts from


def _moves(q: Param) -> list:
    """The values of `q` the search for a valid point tries: `_values`, and for a long int range the
    _INWARD values inward of each end too (d_model [30, 1000] with 4 heads is valid from 32 on)."""
    if q.kind != "int" or q.high - q.low < _INWARD:
        return _values(q)
    lo, hi = int(q.low), int(q.high)
    return sorted({*range(lo, lo + _INWARD), *range(hi - _INWARD + 1, hi + 1)})


def _inward(q: Param, v) -> list:
    """`v` and, for an int range, the values inward of it (up from the low end, down from any other
    value), _INWARD in all, within the range: an int range's valid part may start inward of an
    invalid end, so both checks (`_at`, `impossible_values`) judge an end by these; a choice or a
    float end is itself alone."""
    if q.kind != "int":
        return [v]
    step = 1 if v == q.low else -1
    return [w for w in range(int(v), int(v) + step * _INWARD, step) if q.low <= w <= q.high]


def _broken(trials: Trials, point: dict, held: Param | None, allowed: list) -> float:
    """How far `point` is from a valid trial: the rules it breaks (0: valid); infinite when `held`
    is not drawn there or draws a value outside `allowed` (the point says nothing about them)."""
    if held is not None:
        values = active_values(trials.params, point)
        if held.path not in values or not any(values[held.path] == w and type(values[held.path]) is type(w)
                                              for w in allowed):
            return math.inf
    got = trials.at(point)
    return len(got) if isinstance(got, list) else 0


def _valid_point(trials: Trials, starts: list[dict], held: Param | None = None, allowed: list = ()) -> bool:
    """Whether a descent from `starts` on the number of broken rules reaches a valid trial, with
    `held` (when given) kept to the `allowed` values. One dimension at a time over `_moves`: a value
    invalid at every corner can be valid inside the ranges of the others (d_model 36 with n_heads
    [5, 7] is valid at 6), and a space too large to try whole (lm.yaml) is searched from its corners."""
    for point in starts[:_STARTS]:
        best, moved = _broken(trials, point, held, allowed), True
        while moved and best > 0:
            moved = False
            for q in trials.params:
                for v in allowed if q is held else _moves(q):
                    cand = {**point, q.path: v}
                    if (n := _broken(trials, cand, held, allowed)) < best:
                        best, point, moved = n, cand, True
                if best == 0:
                    return True
        if best == 0:
            return True
    return False


def _rule(found: list[list[Problem]], path: str) -> Problem:
    """The rule a value breaks, from the problems of each corner it appears in: one broken at all of
    them (preferably on its own key), else the first corner's (the corners break different rules)."""
    common = [q for q in found[0] if all(q in f for f in found[1:])] or found[0]
    return next((q for q in common if q.key == path), common[0])


def _said(rule: Problem) -> str:
    return f"{rule.key}: {rule.message}" + (f" ({rule.fix})" if rule.fix else "")


def _fix(q: Param, v, rule: Problem, params: list[Param]) -> str:
    """What to do about value `v` of `q`, by where the rule it breaks lies: on the value itself, on
    another searched parameter (drawn with it: a when: keeps them apart), or on the base."""
    undo = f"leave {v!r} out of the choices" if q.kind == "choice" else "narrow the range to values the rule allows"
    if rule.key == q.path:
        return f"{undo}{', or correct it' if q.kind == 'choice' else ''} (see the rule)"
    if any(p.path == rule.key for p in params):
        return (f"{undo}, or add a when: to search.{rule.key} so that it is not drawn with {q.path}={v!r} (or "
                f"offer it a value valid with {v!r})")
    return f"{undo}, or change base.{rule.key} so that the rule holds"


def impossible_values(params: list[Param], base: TrialConfig, trials: Trials | None = None,
                      hint: list[dict] | None = None) -> list[Problem]:
    """Searched values that make every trial drawing them invalid: a choice (or a range end) that
    breaks a rule of the trial config at every corner it is drawn in (its when: holding), and at every
    point a descent over the other dimensions reaches. A space with no valid point at all is one
    whose every drawn value is such (the first dimension is always drawn): each is named. The
    sampler draws such a value like any other, and each trial that does fails `invalid` (an unknown
    router on every fourth trial, or every trial): refused at load, before anything starts. A value
    valid at some points and not others is left to when: (validate --samples counts those points).
    `hint`: points of this search valid on another base (Trials.witnesses): when those still draw
    every value validly, nothing else is tried (the smoke: overlay's judging stays cheap)."""
    trials = trials or Trials(params, base)
    if hint:
        drawn = {(k, type(v), v) for pt in hint if not isinstance(trials.at(pt), list)
                 for k, v in active_values(params, pt).items()}
        if all((q.path, type(v), v) in drawn for q in params for v in q.ends()):
            return []
    points = corners(params)
    found: dict[tuple, list[list[Problem]]] = {}  # (path, type, value) -> the problems where it is drawn
    valid: set[tuple] = set()  # the values drawn at a valid corner
    for point in points:
        got = trials.at(point)
        for path, v in active_values(params, point).items():
            k = (path, type(v), v)
            if not isinstance(got, list):
                valid.add(k)
            elif k not in valid:
                found.setdefault(k, []).append(got)
    out = []
    for q in params:
        for v in dict.fromkeys(q.ends()):  # (a choice listed twice is said once)
            k = (q.path, type(v), v)
            if k in valid or k not in found:  # valid somewhere, or never drawn at a corner (when: never holds)
                continue
            starts = [pt for pt in points if k in {(p, type(x), x) for p, x in active_values(params, pt).items()}]
            if _valid_point(trials, starts, q, _inward(q, v)):
                continue
            near = sorted(_inward(q, v))
            whole = q.kind == "int" and len(near) == q.high - q.low + 1  # the scan covered the range
            what = (f"choice {v!r}" if q.kind == "choice" else f"every value of the range {[q.low, q.high]}"
                    if whole else f"bound {v!r}" + (f" (and every value from {near[0]} to {near[-1]})"
                                                   if len(near) > 1 else ""))
            rule = _rule(found[k], q.path)
            out.append(Problem(f"search.{q.path}", f"{what} is invalid at every point: {_said(rule)}",
                               _fix(q, v, rule, params)))
            if whole:
                break  # (the other end's scan is the same range: said once)
    return out
