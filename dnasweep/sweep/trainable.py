"""The Ray Tune trainable: one sampled point -> `space.apply` -> `run_trial`, reported to Tune.

Runs in a Ray worker. A point that breaks a rule of the trial config fails that trial at once as
`invalid` (no retry: retrying cannot fix a config); a trial that finished before the driver died
reports its saved result instead of training again; a retried or resumed trial continues from
its checkpoint.
"""

from __future__ import annotations

import gc
import json
import os
import time

from dnasweep import metrics as M
from dnasweep.errors import ConfigError
from dnasweep.space import SearchSpace
from dnasweep.space.reference import Frontier
from dnasweep.sweep.storage import LocalStore, read_pointer, write_pointer

FAILED = "failed"  # result key: the trial ended without objectives ("status" and "reason" say why)


class TuneReporter:
    """Adapter from the training loop's Reporter protocol to `ray.tune.report`. A checkpoint goes
    to Tune as a pointer to the trial's own (kept by `store`, see storage.py): Tune copies what it
    is given, and a copy of every checkpoint in tune/ doubled what a sweep writes."""

    # A resumed trial sends its checkpoint's evaluation again (train/report.py): a worker killed
    # between saving it and this report never sent it; the scheduler and tracker keep one per step.
    resend_evaluation = True

    def __init__(self, store: LocalStore | None = None, trial_id: str | None = None):
        self.store, self.trial_id = store, trial_id

    def report(self, metrics, checkpoint_dir=None):
        import tempfile

        from ray import tune

        if not checkpoint_dir:
            return tune.report(dict(metrics))
        if self.store is None:  # no store to point into: Tune keeps a copy
            return tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))
        step = int(metrics.get(M.STEP, 0))
        rel = self.store.checkpointed(self.trial_id, checkpoint_dir, step)
        with tempfile.TemporaryDirectory(prefix="dnasweep-pointer-") as d:  # Tune copies it before report returns
            write_pointer(d, rel, step)
            tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(d))

    def close(self):
        pass


def _fail(status: str, reason: str, step: int | None = None) -> None:
    """Report a trial that ended without objectives; `step`, where it stopped, is what it spent (a
    failed trial replayed after a driver restart was booked at the searcher's last seen step)."""
    from ray import tune

    tune.report({FAILED: 1.0, "status": status, "reason": reason, **({} if step is None else {M.STEP: int(step)})})


def _rules(e: ConfigError) -> str:
    """The rules a config broke, on one line (a failed trial's reason)."""
    return "; ".join(f"{p.key}: {p.message}" for p in e.problems)


def _derive(frontier: Frontier | None, cfg):
    """compare/* gains against the frontier, the speed gain only on the rungs' hardware."""
    if not frontier:
        return None
    from dnasweep.space.reference import hardware
    from dnasweep.train.loop import resolve_device

    here = hardware(resolve_device(cfg.train.device))
    return lambda m: frontier.metrics(m, here)


def trial(config: dict, space: SearchSpace, store: LocalStore, frontier: Frontier | None = None) -> None:
    """One Ray Tune trial; with a dense reference `frontier`, every evaluation adds its compare/* gains."""
    import ray
    from ray import tune

    from dnasweep.plugins import load_plugins
    from dnasweep.train import checkpoint
    from dnasweep.train.limits import is_oom, memory_limit
    from dnasweep.train.loop import run_trial

    load_plugins()  # routers (and more) registered by the user's modules, as in the driver
    trial_id = tune.get_context().get_trial_id()
    values = {p.path: config[p.path] for p in space.params if p.path in config}
    out = store.trial_out(trial_id)
    done = os.path.join(out, "result.json")
    store.pull_result(trial_id, out)
    if os.path.exists(done):  # finished just before a driver died, after Tune last saved its state
        with open(done) as f:
            saved = json.load(f)
        if set(os.listdir(out)) - {"result.json"}:  # its scratch is here: the upload may have been cut short
            store.trial_ended(trial_id, out)
        status = saved.pop("status")
        return tune.report(saved) if status == "completed" else _fail(status, saved["reason"], saved.get(M.STEP))
    try:
        cfg = space.apply(values, out)
    except ConfigError as e:  # this point breaks a rule: this trial fails, nothing else
        return _fail("invalid", _rules(e))
    # A retried or resumed trial continues from its own checkpoint in `out`; on another node
    # without it, from the one its last report to Tune points to (brought into place first; a
    # sweep started before pointers has a whole copy in Tune).
    own = os.path.join(out, "checkpoint")
    reported, pointer = tune.get_checkpoint(), None
    if reported is not None and not checkpoint.exists(own):
        with reported.as_directory() as d:
            pointer = read_pointer(d)
            if pointer is None:
                reported.to_directory(own)
    if not checkpoint.exists(own):
        # With no pointer (the worker died after mirroring its first checkpoint but before Tune
        # took the report), the store's newest mirror of this trial is still its own progress.
        store.restore_checkpoint(trial_id, pointer, own)
    os.makedirs(out, exist_ok=True)
    start = int(checkpoint.load(own)["step"]) if checkpoint.exists(own) else 0
    node = ray.get_runtime_context().get_node_id()
    with open(os.path.join(out, "attempts.log"), "a") as f:  # one line per (re)start: pid, resumed step, node
        f.write(f"pid {os.getpid()} start_step {start} time {time.time():.1f} node {node}\n")
    step = None  # where training stopped: what a failed trial spent
    try:
        with memory_limit(space.resources.memory_gb):
            result = run_trial(cfg, TuneReporter(store, trial_id), derive=_derive(frontier, cfg))
        status, reason, step = result.status, result.reason, result.step
    except ConfigError as e:  # the data does not fit the model (vocabulary, image shape): invalid
        status, reason = "invalid", _rules(e)
    except Exception as e:  # out of memory before the loop (model or data): a failed trial, not a retry
        if not is_oom(e):
            raise
        status, reason = "oom", f"out of memory before training: {str(e).splitlines()[0][:300]}"
    store.trial_ended(trial_id, out)  # before returning: Tune then calls the trial complete
    if status != "completed":  # no objectives in the last report: the searcher tells FAIL
        gc.collect()  # the worker is reused for the next trial
        _fail(status, reason, step)
