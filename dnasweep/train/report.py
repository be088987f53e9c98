"""How a training loop tells the world what happened: the Reporter protocol and its adapters.

The loop calls `report(metrics, checkpoint_dir=None)`; the console, the JSON-lines writer and
(in dnasweep.sweep) Ray Tune are adapters, so the loop never imports an orchestration library.
"""

from __future__ import annotations

import json
import os
from typing import Protocol

from dnasweep import metrics as M


class Reporter(Protocol):
    """Receives metrics as they are produced.

    Lifecycle: `report` is called every `train.log_every` steps with training metrics, and at
    every evaluation with validation metrics; `checkpoint_dir` is set when a checkpoint was just
    written there (the reporter may copy or register it). `close` is called once at the end.
    A reporter may also define `begin(step)`: called once before training with the step it starts
    from (a resumed run's checkpoint step, else 0); and `resend_evaluation = True`: a run resumed
    from a checkpoint an evaluation wrote reports that evaluation to it again first (a sweep's, whose
    report a killed worker may never have sent; the console would print an old line as new).
    """

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None = None) -> None: ...

    def close(self) -> None: ...


class Reporters:
    """Fans one report out to several reporters."""

    def __init__(self, *reporters: Reporter):
        self.reporters = [r for r in reporters if r is not None]

    def begin(self, step: int) -> None:
        for r in self.reporters:
            if hasattr(r, "begin"):
                r.begin(step)

    def report(self, metrics, checkpoint_dir=None):
        for r in self.reporters:
            r.report(metrics, checkpoint_dir)

    def close(self):
        for r in self.reporters:
            r.close()


class JsonlReporter:
    """Appends every report as one JSON line to OUT/metrics.jsonl."""

    def __init__(self, path: str, truncate_after_step: int | None = None):
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if truncate_after_step is not None and os.path.exists(path):
            # Resuming: drop what the interrupted run logged after its last checkpoint, so the
            # history has no duplicated steps.
            with open(path) as f:
                keep = [ln for ln in f if ln.strip() and json.loads(ln).get(M.STEP, 0) <= truncate_after_step]
            with open(path, "w") as f:
                f.writelines(keep)
        elif truncate_after_step is None and os.path.exists(path):
            os.remove(path)
        self.f = open(path, "a")  # noqa: SIM115 - kept open for the run

    def report(self, metrics, checkpoint_dir=None):
        self.f.write(json.dumps(metrics) + "\n")
        self.f.flush()

    def close(self):
        self.f.close()


class ConsoleReporter:
    """A progress bar with loss, tokens/s and ETA; evaluations printed as lines."""

    def __init__(self, total_steps: int, start_step: int = 0):
        from tqdm import tqdm

        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
        self.step = start_step

    def begin(self, step: int) -> None:
        """A resumed run starts at its checkpoint's step: its steps are not counted as trained now
        (the first report counted them, and the rate and ETA read 6x too fast)."""
        self.bar.initial = self.bar.n = self.bar.last_print_n = self.step = step
        self.bar.refresh()

    def report(self, metrics, checkpoint_dir=None):
        step = int(metrics.get(M.STEP, self.step))
        self.bar.update(max(0, step - self.step))
        self.step = step
        if M.TRAIN_LOSS in metrics:
            self.bar.set_postfix({"loss": f"{metrics[M.TRAIN_LOSS]:.3f}",
                                  "tok/s": f"{metrics.get(M.TOKENS_PER_S, 0):,.0f}"})
        if M.VAL_LOSS in metrics:
            keys = [M.VAL_LOSS, M.VAL_BPB, M.VAL_ACC, M.FLOPS_PER_TOKEN, M.IDENTITY_FRACTION]
            shown = "  ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)
            self.bar.write(f"step {step:>6}  {shown}")

    def close(self):
        self.bar.close()
