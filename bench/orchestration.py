"""Orchestration overhead of a sweep: what Ray + Optuna + MLflow cost on top of the training itself.

Runs, in one process, the same 8 trials twice, 2 at a time:
  dnasweep   run_sweep on a local Ray cluster started just before (its start is timed apart);
             TPE picks the 8 configs; MLflow logging on; the end-of-sweep analysis off
  optuna     a plain `study.optimize(objective, n_jobs=budget.concurrent)` loop (threads) over the same 8 configs,
             enqueued in the same order, each calling run_trial directly
and prints, for each arm, wall time vs ideal = (sum of the trials' own training times) / 2,
then the ratio of the two walls. The last line is dnasweep's overhead over ideal (target <= 0.10).

    python bench/orchestration.py                        # 8 trials of ~30 s on 2 CPU cores (~5 min)
    python bench/orchestration.py base.train.max_steps=60 # quicker, shorter trials
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time

import torch

from dnasweep.space import load_space

SPACE = "search_spaces/lm.yaml"
# No dense reference ladder: the plain Optuna arm trains none, and the ladder's 4 trainings would
# count as dnasweep's start-up overhead (they are trainings, not orchestration).
OVERRIDES = ["budget.trials=8", "budget.concurrent=2", "base.train.max_steps=150", "base.train.eval_every=75",
             "base.train.eval_batches=4", "base.data.max_bytes=2000000", "reference.d_model=[]",
             "reference.dense_layers=[]"]


def _span(trial_dir: str) -> tuple[float, float]:
    """The trial's own training: config written at its start -> result written at its end."""
    return (os.path.getctime(os.path.join(trial_dir, "config.yaml")),
            os.path.getmtime(os.path.join(trial_dir, "result.json")))


def _trial_time(trial_dir: str) -> float:
    a, b = _span(trial_dir)
    return b - a


def idle_breakdown(spans: list[tuple[float, float]], t0: float, t1: float, slots: int) -> dict[str, float]:
    """Where the slot-seconds not spent training went: before each slot's first trial (cluster,
    tracker and worker start), between trials (scheduling), after each slot's last trial (the
    tail: waiting for the longest trial, which a perfect packing would not have; `end`, in it: from
    the last trial's end to the sweep's)."""
    free = [(t0, i) for i in range(slots)]
    lanes: list[list[tuple[float, float]]] = [[] for _ in range(slots)]
    for a, b in sorted(spans):
        free.sort()
        _, lane = free.pop(0)
        lanes[lane].append((a, b))
        free.append((b, lane))
    out = {"start": 0.0, "between": 0.0, "tail": 0.0}
    for lane in lanes:
        if not lane:
            out["tail"] += t1 - t0
            continue
        out["start"] += lane[0][0] - t0
        out["between"] += sum(max(0.0, n[0] - p[1]) for p, n in zip(lane, lane[1:], strict=False))
        out["tail"] += t1 - lane[-1][1]
    out = {k: v / slots for k, v in out.items()}  # in wall seconds
    # of the tail, what follows the last trial (the end-of-sweep work), apart from the packing
    out["end"] = t1 - max((b for _, b in spans), default=t0)
    return out


def packed(spans: list[tuple[float, float]], slots: int) -> float:
    """The same trials, in the order they started, on `slots` slots each taking the next trial the
    moment it is free, with no overhead at all: the wall a perfect orchestrator would take. `ideal`
    (sum / slots) also assumes a perfect packing, which no scheduler of these trials could reach."""
    free = [0.0] * slots
    for a, b in sorted(spans):
        i = free.index(min(free))
        free[i] += b - a
    return max(free)


def run_dnasweep(space, root: str) -> tuple[float, float, list[float], list[dict]]:
    """(cluster start s, sweep wall s, trial times, params) with the local Ray cluster started first,
    as on a real cluster that is already up; the report at the end is not orchestration: off."""
    import ray

    from dnasweep.sweep.runner import run_sweep
    from dnasweep.sweep.study import open_study

    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)  # ours, never a `ray start` one
    t_init = time.perf_counter() - t0
    t0, w0 = time.perf_counter(), time.time()
    res = run_sweep(space, "bench", root=root, log=lambda *_: None, analyze=False)
    wall, w1 = time.perf_counter() - t0, time.time()
    trials = os.path.join(res.sweep_dir, "trials")
    times = [_trial_time(os.path.join(trials, d)) for d in os.listdir(trials)]
    spans = [_span(os.path.join(trials, d)) for d in os.listdir(trials)]
    parts = idle_breakdown(spans, w0, w1, space.budget.concurrent)
    print("dnasweep idle slot time, in wall seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
    pk = packed(spans, space.budget.concurrent)
    print(f"dnasweep over the same trials packed with no overhead ({pk:.1f} s): {(w1 - w0) / pk - 1:+.3f}")
    study = open_study(res.sweep_dir)
    return t_init, wall, times, [t.params for t in sorted(study.trials, key=lambda t: t.number)]


def run_plain_optuna(space, params: list[dict], root: str) -> tuple[float, list[float]]:
    import optuna

    from dnasweep.sweep.searcher import DefineByRun
    from dnasweep.train.loop import run_trial

    # Ray gives each 1-CPU trial one intra-op thread (OMP_NUM_THREADS=1); match it.
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=[o.mode + "imize" for o in space.objectives])
    for p in params:
        study.enqueue_trial(p)
    define, times, lock = DefineByRun(space), [], threading.Lock()

    def objective(trial):
        define(trial)
        out = os.path.join(root, f"t{trial.number}")
        res = run_trial(space.apply(trial.params, out))
        with lock:
            times.append(_trial_time(out))
        return [res.metrics[o.metric] for o in space.objectives]

    t0, w0 = time.perf_counter(), time.time()
    slots = space.budget.concurrent  # as many threads as the sweep runs trials at once (its ideal's divisor)
    study.optimize(objective, n_trials=len(params), n_jobs=slots)
    wall, w1 = time.perf_counter() - t0, time.time()
    spans = [_span(os.path.join(root, d)) for d in os.listdir(root)]
    parts = idle_breakdown(spans, w0, w1, slots)
    print("optuna idle slot time, in wall seconds:   " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
    print(f"optuna over the same trials packed with no overhead ({packed(spans, slots):.1f} s): "
          f"{(w1 - w0) / packed(spans, slots) - 1:+.3f}")
    return wall, times


def _report(name: str, wall: float, times: list[float], concurrent: int) -> float:
    ideal = sum(times) / concurrent
    print(f"{name:<9}: {len(times)} trials, wall {wall:6.1f} s, trials {sum(times):6.1f} s (mean "
          f"{sum(times) / len(times):.1f} s), ideal {ideal:6.1f} s, overhead {wall / ideal - 1:+.3f}", flush=True)
    return ideal


def main(argv: list[str]) -> None:
    space = load_space(SPACE, [*OVERRIDES, *argv], smoke=False)
    for p in space.params:  # the widest model would make ~1 min trials on a CPU: keep them near 30 s
        if p.path == "model.d_model":
            p.choices = [64, 128]
    with tempfile.TemporaryDirectory() as root:
        t_init, wall_d, times_d, params = run_dnasweep(space, root)
        ideal_d = _report("dnasweep", wall_d, times_d, space.budget.concurrent)
        print(f"(starting the local Ray cluster took {t_init:.1f} s more: overhead with it "
              f"{(wall_d + t_init) / ideal_d - 1:+.3f})")
        import ray

        ray.shutdown()
        wall_o, times_o = run_plain_optuna(space, params, os.path.join(root, "plain"))
        _report("optuna", wall_o, times_o, space.budget.concurrent)
    print(f"wall dnasweep / wall plain optuna n_jobs={space.budget.concurrent}: {wall_d / wall_o:.3f}")
    print(f"dnasweep overhead over ideal: {wall_d / ideal_d - 1:.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
