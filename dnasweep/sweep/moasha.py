"""MO-ASHA: asynchronous successive halving against a Pareto front, as a Ray Tune scheduler.

A trial of bracket b meets rungs at grace_steps * reduction_factor^(b+k) training steps (below
train.max_steps; rungs are evaluation steps, so its objectives exist there). At each rung it is
ranked against every trial of its bracket recorded at that rung so far, as ASHA does (no waiting
for the rung to fill), and continues if it is in the top 1/reduction_factor, else it is stopped.
Brackets keep their rungs apart, as Ray's AsyncHyperBand does: a bracket-1 trial at its first rung
(grace * rf) is not ranked against bracket-0 trials that survived a rung below it.

Ranking, best first: feasible before infeasible (infeasible by total constraint violation), then
non-dominated sorting (front 0, 1, ...), then, within a front, crowding distance (larger first).
A trial on the rung's front 0 always continues: stopping a point that nothing at its rung beats
would cut the front the sweep is looking for. Why crowding distance and not the MO-ASHA paper's
epsilon-net: both break ties toward spread-out points; crowding distance needs no epsilon, is
deterministic and is what our nsga2 sampler uses, so the two rank a front alike.

Ray Tune does not save a scheduler's state with the experiment, so the rung values and prune
decisions live in the Optuna study (user attrs `rung/<step>/<metric>`, state PRUNED), written
through the searcher as they are taken; `load(study)` rebuilds them after `dnasweep resume`, and a
restored trial that was pruned before the driver died is stopped at its next report.
"""

from __future__ import annotations

import importlib
import math

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from dnasweep import metrics as M
from dnasweep.config.sweep import SCHEDULERS
from dnasweep.config.trial import planned_steps
from dnasweep.space import SearchSpace

RUNG = "rung/{step}/{metric}"  # Optuna user attr of a trial's objective value at a rung
BRACKET = "bracket"  # Optuna user attr: the trial's bracket


def dominates(a: tuple, b: tuple) -> bool:
    """a is no worse than b in every objective and better in one (all minimised)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def fronts(points: list[tuple]) -> list[int]:
    """Non-dominated sorting: the front index of each point (0 = not dominated by any)."""
    left, out, k = set(range(len(points))), [0] * len(points), 0
    while left:
        front = {i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)}
        for i in front:
            out[i] = k
        left -= front
        k += 1
    return out


def crowding(points: list[tuple], members: list[int]) -> dict[int, float]:
    """NSGA-II crowding distance of each member of one front (boundary points: inf), computed over
    the distinct points: equal points share one distance (sorted side by side, one would count its
    twin as a neighbour and rank apart from it)."""
    distinct = sorted({points[i] for i in members})
    dist = {pt: 0.0 for pt in distinct}
    if len(distinct) <= 2:
        return {i: math.inf for i in members}
    for m in range(len(distinct[0])):
        order = sorted(distinct, key=lambda pt: pt[m])
        lo, hi = order[0][m], order[-1][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi > lo:
            for a, pt, b in zip(order, order[1:], order[2:], strict=False):
                dist[pt] += (b[m] - a[m]) / (hi - lo)
    return {i: dist[points[i]] for i in members}


def rank_keys(points: list[tuple], violations: list[float]) -> list[tuple]:
    """A sort key per point, smaller is better: (infeasible, violation, front, -crowding)."""
    feasible = [i for i, v in enumerate(violations) if v <= 0]
    keys: list[tuple] = [()] * len(points)
    front_of = fronts([points[i] for i in feasible])
    for k in set(front_of):
        members = [feasible[j] for j, f in enumerate(front_of) if f == k]
        crowd = crowding(points, members)
        for i in members:
            keys[i] = (0, 0.0, k, -crowd[i])
    for i, v in enumerate(violations):
        if v > 0:
            keys[i] = (1, v, 0, 0.0)
    return keys


def keeps(points: list[tuple], violations: list[float], me: int, reduction_factor: int) -> bool:
    """Whether point `me` continues: on the feasible front 0, or ranked in the top 1/reduction_factor
    (its position = how many points rank strictly better; equal points share a position)."""
    keys = rank_keys(points, violations)
    if keys[me][:3] == (0, 0.0, 0):
        return True
    position = sum(k < keys[me] for k in keys)
    return position < max(1.0, len(points) / reduction_factor)


class MOASHA(FIFOScheduler):
    """Tune scheduler: records each trial's objectives at its rungs and stops the ones that rank
    outside the top 1/reduction_factor. `searcher` (the sweep's ParetoOptunaSearch, set by the
    runner) writes the rung values into the study and tells PRUNED."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space, self.searcher = space, None
        self.ladders = space.rungs()  # per bracket
        # (bracket, rung) -> trial id -> (point, violation): each bracket's rungs apart
        self.recorded: dict[tuple[int, int], dict[str, tuple[tuple, float]]] = {}
        self.bracket: dict[str, int] = {}
        self.pruned: dict[str, int] = {}  # trial id -> the rung it stopped at
        self.added = 0

    def _point(self, result: dict) -> tuple | None:
        vals = [result.get(o.metric) for o in self.space.objectives]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in vals):
            return None
        return tuple(float(v) if o.mode == "min" else -float(v)
                     for o, v in zip(self.space.objectives, vals, strict=True))

    def _violation(self, result: dict) -> float:
        # as the searcher judges (an undecided gain bound breaks the constraint): under
        # 'compute_gain >= 1' a '< 1.5' gain ranked feasible here and pushed out feasible trials
        return sum(max(0.0, c.violation_in(result)) for c in self.space.constraints)

    def on_trial_add(self, tune_controller, trial):
        if trial.trial_id not in self.bracket:
            # by the trial's Optuna number, which a resume finds again (the study keeps a bracket only
            # once a rung is recorded): by the order Ray re-adds restored trials, a trial running
            # short of its first rung moved to another bracket and was judged at its rungs
            number = getattr(self.searcher, "trial_number", lambda tid: None)(trial.trial_id)
            self.bracket[trial.trial_id] = (self.added if number is None else number) % len(self.ladders)
            self.added += 1

    def decide(self, trial_id: str, step: int, result: dict) -> str:
        """CONTINUE or STOP for a report of `trial_id` at training step `step` (Ray-free: tests call it)."""
        if trial_id in self.pruned:
            return TrialScheduler.STOP  # pruned before a driver restart: the decision stands
        if M.VAL_LOSS not in result:  # only evaluations are judged: a training row (reported just
            # before the evaluation at the same step) carries perf/tokens_per_s too, and no constraint
            # metric: judged by it, a trial counted as breaking every constraint and was never stopped
            return TrialScheduler.CONTINUE
        point = self._point(result)
        if point is None:
            return TrialScheduler.CONTINUE  # a training-loss row between evaluations
        if trial_id not in self.bracket:
            self.on_trial_add(None, _Id(trial_id))
        bracket = self.bracket[trial_id]
        ladder = self.ladders[bracket]
        # the last evaluation ends training: a finished trial is never pruned (every trial trains to
        # the base's end: a pruning scheduler refuses anything that would move it)
        for rung, end in zip(ladder, [*ladder[1:], planned_steps(self.space.base)], strict=True):
            at = self.recorded.setdefault((bracket, rung), {})
            # Judged at a rung by its evaluation there, or, when that report was lost (a trial that
            # checkpointed at the rung and died before the scheduler saw it resumes there), by its
            # first one after it, before the next rung (or before the end of training); never by a
            # report at or past the next rung: that report is the next rung's, and values from later
            # in training would beat the other trials' at this rung.
            if not rung <= step < end or trial_id in at:
                continue
            at[trial_id] = (point, self._violation(result))
            if self.searcher is not None:
                self.searcher.record_rung(trial_id, rung, bracket,
                                          {o.metric: result[o.metric] for o in self.space.objectives}, at[trial_id][1])
            ids = list(at)
            if not keeps([at[t][0] for t in ids], [at[t][1] for t in ids], ids.index(trial_id),
                         self.space.scheduler.reduction_factor):
                self.pruned[trial_id] = rung
                if self.searcher is not None:  # it trained to `step`: what it spent
                    self.searcher.prune(trial_id, rung, step)
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self.decide(trial.trial_id, int(result.get("step", 0)), result)

    def load(self, study) -> None:
        """Rebuild rung records, brackets and prune decisions from the study (a resumed sweep). The
        study keeps each trial's bracket (user attr) beside its rung values, so a study written when
        records were keyed by rung alone loads into (bracket, rung) as it is; records of that form
        in a scheduler unpickled from such a sweep's Tune state are dropped, rebuilt here."""
        self.recorded = {k: v for k, v in self.recorded.items() if isinstance(k, tuple)}
        for t in study.get_trials(deepcopy=False):
            tid = t.user_attrs.get("ray_trial_id")
            if tid is None:
                continue
            self.bracket[tid] = int(t.user_attrs.get(BRACKET, t.number % len(self.ladders)))  # as on_trial_add
            self.added = max(self.added, len(self.bracket))
            for rung in self.ladders[self.bracket[tid]]:
                vals = {o.metric: t.user_attrs.get(RUNG.format(step=rung, metric=o.metric))
                        for o in self.space.objectives}
                point = self._point(vals)
                if point is not None:
                    violation = float(t.user_attrs.get(RUNG.format(step=rung, metric="violation"), 0.0))
                    self.recorded.setdefault((self.bracket[tid], rung), {})[tid] = (point, violation)
            if t.state.name == "PRUNED":
                self.pruned[tid] = int(t.user_attrs.get("pruned_at", 0))


class _Id:
    """A stand-in Tune trial for `decide` called without one."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def make_scheduler(space: SearchSpace, searcher=None, pruned: dict | None = None):
    """The Tune scheduler of `space.scheduler.type` (SCHEDULERS: "module:class"); MO-ASHA gets
    the searcher that keeps its decisions in the study, and the dict it notes pruned trials in."""
    module, name = SCHEDULERS[space.scheduler.type].split(":")
    cls = getattr(importlib.import_module(module), name)
    if cls is FIFOScheduler:
        return cls()
    sched = cls(space)
    sched.searcher = searcher
    if pruned is not None:
        sched.pruned = pruned
    return sched
