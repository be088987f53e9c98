"""Progress of a running sweep on the console: one line per started, restarted and finished trial,
with counts, so a user sees it move without Ray's verbose table."""

from __future__ import annotations

import math
import os
import time

from ray.tune import Callback

from dnasweep.space import SearchSpace
from dnasweep.sweep import budget


def _why(trial) -> str:
    """The last line of the error that ended a trial's attempt (Ray keeps it in error.txt)."""
    path = getattr(trial, "error_file", None)
    try:
        with open(path) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
        return lines[-1][:200] if lines else "no error text"
    except (OSError, TypeError):
        return "its worker died"


class Progress(Callback):
    """Tune callback printing one line per started / restarted / finished trial. A trial restarted
    (its worker died, retried from its checkpoint) counts once as running, and apart as a restart."""

    def __init__(self, space: SearchSpace, log, before: dict | None = None, pruned: dict | None = None,
                 on_draining=None, told: set[str] | None = None):
        self.space, self.log = space, log
        # called once when no trial is left to start (a slot stays idle from then on)
        self.on_draining = on_draining
        before = before or {}  # a resumed sweep counts the trials its earlier runs finished
        self.done, self.failed = before.get("complete", 0), before.get("failed", 0)
        self.n_pruned = before.get("pruned", 0)
        self.steps = before.get("steps", 0)  # training steps of the finished trials (budget.steps)
        self.pruned = pruned if pruned is not None else {}  # Ray trial id -> rung (MO-ASHA's, shared)
        # Ray trial ids already counted in `before`: finished before a driver died, after Tune last
        # saved its state, they run again on resume (their saved result re-reported, or pruned again)
        self.told = set(told or ())
        self.running: set[str] = set()
        self.seen: dict[str, int] = {}  # Ray trial id -> last training step it reported (a failed trial's spend)
        self.restarts = 0
        self.t0 = time.time()

    def _head(self) -> str:
        extra = f", {self.restarts} restarts" if self.restarts else ""
        pruned = f"{self.n_pruned} pruned, " if self.n_pruned or self.space.scheduler.type != "fifo" else ""
        n, b = self.done + self.n_pruned + self.failed, self.space.budget
        total = f"{n} finished, {self.steps}/{b.steps} steps" if b.steps else f"{n}/{b.trials} finished"
        return (f"[{time.time() - self.t0:6.0f}s] {total} ({pruned}{self.failed} failed, "
                f"{len(self.running)} running{extra})")

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self.running:
            return  # a restart: reported by on_trial_recover
        self.running.add(trial.trial_id)
        vals = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                         for k, v in trial.config.items())
        self.log(f"{self._head()}  start {trial.trial_id}: {vals}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if isinstance(step := result.get("step"), int | float):
            self.seen[trial.trial_id] = max(int(step), self.seen.get(trial.trial_id, 0))

    def _spent(self, trial) -> int:
        """Steps a finished trial spent, as the searcher books them: the last step it reported (a
        failed trial's last report, its reason, carries none), and at least its rung if pruned."""
        step = (getattr(trial, "last_result", None) or {}).get("step")
        last = max(int(step) if isinstance(step, int | float) else 0, self.seen.pop(trial.trial_id, 0))
        return max(self.pruned[trial.trial_id], last) if trial.trial_id in self.pruned else last

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        if self._replayed(trial):
            return
        res = trial.last_result or {}
        objs = [res.get(o.metric) for o in self.space.objectives]
        self.steps += self._spent(trial)
        if trial.trial_id in self.pruned:
            self.n_pruned += 1
            self.log(f"{self._head()}  PRUNED {trial.trial_id} at step {self.pruned[trial.trial_id]}: "
                     "outside the top of its rung")
        elif not all(isinstance(v, int | float) and math.isfinite(v) for v in objs):
            self.failed += 1
            why = res.get("reason") or "no finite objectives"
            self.log(f"{self._head()}  FAIL  {trial.trial_id} ({res.get('status', 'failed')}): {why}")
        elif short := self._short(trial, res):  # FAIL in Optuna and in MLflow too: the same rule
            self.failed += 1
            self.log(f"{self._head()}  FAIL  {trial.trial_id} (time_limit): {short}")
        else:
            self.done += 1
            shown = ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(self.space.objectives, objs, strict=True))
            self.log(f"{self._head()}  done  {trial.trial_id}: {shown}")
        self._draining()

    def _short(self, trial, res: dict) -> str | None:
        """Why a scored trial stopped short of its planned steps (train.time_limit_s), None when it
        trained them all: budget.short_of_plan on its sampled values, as the searcher and tracker judge."""
        cfg = getattr(trial, "config", None) or {}
        values = {p.path: cfg[p.path] for p in self.space.params if p.path in cfg}
        return budget.short_of_plan(self.space, values, res)

    def _replayed(self, trial) -> bool:
        """A trial counted before this run (in `before`) ended again: said, not counted twice."""
        if trial.trial_id not in self.told:
            return False
        self.told.discard(trial.trial_id)
        self.log(f"{self._head()}  ended {trial.trial_id} again: counted before the driver stopped")
        self._draining()
        return True

    def _draining(self) -> None:
        b = self.space.budget
        if self.on_draining and self.done + self.n_pruned + self.failed > b.trials - b.concurrent:
            self.on_draining()
            self.on_draining = None

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.restarts += 1
        # a worker that died before the trial's first checkpoint (an idle reused one) restarts it at step 0
        self.log(f"{self._head()}  RETRY {trial.trial_id}: {_why(trial)}; restarting from its last checkpoint, "
                 "if it has one")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        if self._replayed(trial):
            return
        self.failed += 1
        self.steps += self._spent(trial)
        where = os.path.dirname(trial.error_file) if getattr(trial, "error_file", None) else "its log"
        self.log(f"{self._head()}  ERROR {trial.trial_id}: {_why(trial)} (see {where})")
        self._draining()
