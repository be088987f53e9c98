"""Progress of a running sweep on the console: one line per started and finished trial, with
counts, so a user sees it move without Ray's verbose table."""

from __future__ import annotations

import math
import time

from ray.tune import Callback

from dnasweep.sweep.space import SearchSpace


class Progress(Callback):
    """Tune callback printing one line per started / finished trial (Ray's own table is off)."""

    def __init__(self, space: SearchSpace, log, before: dict | None = None):
        self.space, self.log = space, log
        before = before or {}  # a resumed sweep counts the trials its earlier runs finished
        self.done, self.failed = before.get("complete", 0), before.get("failed", 0)
        self.started = self.done + self.failed
        self.t0 = time.time()

    def _head(self) -> str:
        return (f"[{time.time() - self.t0:6.0f}s] {self.done + self.failed}/{self.space.trials} finished "
                f"({self.failed} failed, {self.started - self.done - self.failed} running)")

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started += 1
        vals = ", ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                         for k, v in trial.config.items())
        self.log(f"{self._head()}  start {trial.trial_id}: {vals}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        res = trial.last_result or {}
        objs = [res.get(o.metric) for o in self.space.objectives]
        if all(isinstance(v, int | float) and math.isfinite(v) for v in objs):
            self.done += 1
            shown = ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(self.space.objectives, objs, strict=True))
            self.log(f"{self._head()}  done  {trial.trial_id}: {shown}")
        else:
            self.failed += 1
            self.log(f"{self._head()}  FAIL  {trial.trial_id}: {res.get('reason') or 'no finite objectives'}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.log(f"{self._head()}  RETRY {trial.trial_id}: its worker died; restarting from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.failed += 1
        self.log(f"{self._head()}  ERROR {trial.trial_id}: the trial raised (see {trial.local_path or 'its log'})")
