"""FIFO vs MO-ASHA at equal compute: what early stopping against a Pareto front buys.

Runs, in one process on one local Ray cluster, the same small LM space (the base of
search_spaces/lm.yaml, shrunk) with the same `budget.steps`, once with `scheduler.type: fifo` and
once with `moasha`, for each of --seeds sampler seeds (TPE, the same seed for both arms): real
trainings through the sweep runner. For each sweep it prints the hypervolume of the final front
of complete trials, with val/loss and FLOPs/token normalised to one reference box shared by every
sweep (the range of all complete trials of all sweeps, +10%), and the training steps it had spent
when it first reached FIFO's final hypervolume (same seed). Steps are counted as trials end (a
trial's steps: max_steps if complete, its rung if pruned), so with 2 trials at a time the curve
moves in steps of one trial. The last lines: MO-ASHA's steps / FIFO's steps to that hypervolume
(target <= 0.5). A seed where MO-ASHA never reaches it within the budget is censored: its ratio is
only known to exceed budget.steps / FIFO's steps, so it is shown as "not reached" and left out of
the mean, which is over the seeds that reached it, with the count of censored seeds beside it; the
median over every seed counts a censored seed as above every reached one (exact when that cannot
move it, else given as a range).

    python bench/multifidelity.py              # 3 seeds x 2 arms, 16 full trials of budget each (~10 min, 2 CPUs)
    python bench/multifidelity.py --full-trials 8               # a smaller budget (~8 min)
    python bench/multifidelity.py --seeds 1 --full-trials 4     # a quick look
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from dnasweep.config import read_yaml
from dnasweep.space import parse_space

MAX_STEPS, EVAL = 150, 25


def space_dict(seed: int, scheduler: str, full_trials: int) -> dict:
    """The shipped LM space, shrunk to minutes: small widths and pools, short trials, a wide lr range
    (so some configurations are plainly bad early, as in a real first sweep)."""
    d = copy.deepcopy(read_yaml(os.path.join(os.path.dirname(__file__), "..", "search_spaces", "lm.yaml")))
    d.pop("smoke", None)
    d.pop("reference", None)
    d["base"]["model"].update(d_model=32, n_steps=2, seq_len=64, pool={"n_transformer": 2, "n_attention": 1,
                                                                          "n_mlp": 1, "n_identity": 1})
    d["base"]["data"] = {"source": "pystdlib", "max_bytes": 2000000}
    d["base"]["train"].update(max_steps=MAX_STEPS, batch_size=8, warmup_steps=10, eval_every=EVAL, eval_batches=4,
                              log_every=25)
    d["search"] = {"model.d_model": {"choice": [32, 64]}, "model.n_steps": {"int": [1, 4]},
                   "model.pool.n_transformer": {"int": [1, 4]}, "model.pool.n_identity": {"int": [1, 2]},
                   "model.router.type": {"choice": ["topk", "hash"]}, "model.router.top_k": {"int": [1, 2]},
                   "train.lr": {"float": [1e-4, 3e-2], "log": True}}
    d["constraints"] = []
    d["sampler"] = {"type": "tpe", "seed": seed, "startup_trials": 4}
    d["budget"] = {"trials": 10 * full_trials, "steps": full_trials * MAX_STEPS, "concurrent": 2}
    d["scheduler"] = {"type": scheduler, "grace_steps": EVAL, "reduction_factor": 3}
    d["analyze"] = {"front": False}
    return d


def curve(study) -> tuple[list[int], list[np.ndarray]]:
    """As trials end (in time order): cumulative steps spent, and the complete trials' objective
    points so far (min-min: val/loss, FLOPs/token)."""
    from dnasweep.sweep.budget import STEPS

    ended = sorted((t for t in study.trials if t.state.is_finished() and t.datetime_complete),
                   key=lambda t: t.datetime_complete)
    steps, points, spent, done = [], [], 0, []
    for t in ended:
        spent += int(t.user_attrs.get(STEPS, 0))
        if t.state.name == "COMPLETE":
            done.append(t.values)
        steps.append(spent)
        points.append(np.array(done, dtype=float).reshape(-1, 2))
    return steps, points


def hv(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    from dnasweep.sweep.pareto import hypervolume

    if not len(points):
        return 0.0
    norm = np.clip((points - lo) / (hi - lo), 0.0, 1.0)
    return hypervolume(norm, ["min", "min"], np.ones(2))


def ratio_summary(reached: list[tuple[int, int | None]], budget: int) -> list[str]:
    """The closing lines from, per seed, (FIFO's steps to its final hypervolume, MO-ASHA's steps to
    it or None when it never got there). A censored seed's ratio is only a lower bound (> budget /
    FIFO's steps): it never enters the mean, and the median is exact only where it cannot move it."""
    ratios = [None if m is None else m / max(f, 1) for f, m in reached]
    bounds = [budget / max(f, 1) for f, _ in reached]  # what a censored seed's ratio is known to exceed
    done = [r for r in ratios if r is not None]
    n, censored = len(ratios), len(ratios) - len(done)
    each = ", ".join(f"{r:.3f}" if r is not None else f"not reached (> {b:.3f})" for r, b in zip(ratios, bounds,
                                                                                                strict=True))
    lines = [f"per seed MO-ASHA/FIFO steps to FIFO's final hypervolume: {each}"]
    # the median with each censored seed at its bound, and above every reached seed: equal -> exact
    low = statistics.median([b if r is None else r for r, b in zip(ratios, bounds, strict=True)])
    high = statistics.median([math.inf if r is None else r for r in ratios])
    median = (f"{high:.3f}" if high == low else f"between {low:.3f} and {high:.3f}" if math.isfinite(high)
              else f"not reached (at least {low:.3f}: half the seeds or more censored)")
    lines.append(f"median over all {n} seeds: {median}")
    mean = f"{statistics.fmean(done):.3f}" if done else "n/a"
    cens = (f"{censored} censored (never reached it within budget.steps {budget}, not in the mean)" if censored
            else "none censored")
    lines.append(f"MO-ASHA steps / FIFO steps to FIFO's final hypervolume: mean {mean} over the {len(done)} of {n} "
                 f"seeds that reached it; {cens}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--full-trials", type=int, default=16, help="budget.steps = this many full trials")
    args = ap.parse_args()
    import ray

    from dnasweep.sweep.runner import run_sweep
    from dnasweep.sweep.study import open_study

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    root = tempfile.mkdtemp(prefix="bench-mf-")
    runs: dict[tuple[str, int], tuple[list[int], list[np.ndarray], float, int]] = {}
    for seed in range(args.seeds):
        for arm in ("fifo", "moasha"):
            space = parse_space(space_dict(seed, arm, args.full_trials), f"bench:{arm}:{seed}")
            t0 = time.time()
            res = run_sweep(space, f"{arm}-{seed}", root=root, log=lambda *_: None)
            study = open_study(res.sweep_dir)
            steps, points = curve(study)
            runs[arm, seed] = (steps, points, time.time() - t0, len(study.trials))
            print(f"  ran {arm:6} seed {seed}: {len(study.trials)} trials ({res.n_complete} complete, "
                  f"{res.n_pruned} pruned, {res.n_failed} failed), {steps[-1] if steps else 0} steps, "
                  f"{time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    every = np.concatenate([p[-1] for s, p, *_ in runs.values() if p and len(p[-1])])
    lo, hi = every.min(axis=0), every.max(axis=0)
    lo, hi = lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)  # the shared reference box
    budget = args.full_trials * MAX_STEPS
    print(f"box: val/loss [{lo[0]:.3f}, {hi[0]:.3f}], FLOPs/token [{lo[1]:.4g}, {hi[1]:.4g}]; "
          f"budget.steps {budget} ({args.full_trials} full trials of {MAX_STEPS} steps)")
    print(f"{'seed':>4} {'arm':>7} {'trials':>6} {'final HV':>9} {'steps to FIFO HV':>17} {'wall s':>7}")
    reached_steps = []
    for seed in range(args.seeds):
        fs, fp, *_ = runs["fifo", seed]
        target = hv(fp[-1], lo, hi) if fp else 0.0
        reached = {}
        for arm in ("fifo", "moasha"):
            steps, points, wall, n = runs[arm, seed]
            curve_hv = [hv(p, lo, hi) for p in points]
            first = next((s for s, h in zip(steps, curve_hv, strict=True) if h >= target - 1e-12), None)
            reached[arm] = first
            print(f"{seed:>4} {arm:>7} {n:>6} {curve_hv[-1] if curve_hv else 0:>9.4f} "
                  f"{first if first is not None else 'not reached':>17} {wall:>7.0f}")
        reached_steps.append((reached["fifo"] or 0, reached["moasha"]))
    print("\n".join(ratio_summary(reached_steps, budget)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
