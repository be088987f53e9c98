"""Optuna suggest latency with a long history: how long the searcher takes to propose trial 501.

For each sampler a sweep can use, builds a study in the sweep's own storage kind (a JournalStorage
file) holding `--history` finished trials of the lm.yaml space (random points, random objectives),
then times `ask()` + the define-by-run space (what Ray's OptunaSearch does per new trial) followed
by `tell()`. Training a trial takes minutes; a suggestion must stay well under a second (target < 1 s).

    python bench/suggest.py                    # 500 finished trials, every sampler
    python bench/suggest.py --history 1000 --samplers tpe gp
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from dnasweep.space import load_space
from dnasweep.sweep.searcher import DefineByRun, make_sampler


def history(space, n: int, seed: int = 0) -> list:
    """n finished trials drawn uniformly from the space (conditions honoured)."""
    rng = np.random.default_rng(seed)
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed),
                               directions=["minimize"] * len(space.objectives))
    define, out = DefineByRun(space), []
    for _ in range(n):
        t = draw.ask()
        define(t)
        out.append(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                             values=rng.uniform(0, 1, len(space.objectives)).tolist()))
    return out


def time_sampler(space, kind: str, past: list, repeats: int) -> list[float]:
    space.sampler.type = kind
    with tempfile.TemporaryDirectory() as d:
        storage = JournalStorage(JournalFileBackend(os.path.join(d, "optuna.log")))
        study = optuna.create_study(study_name="bench", storage=storage, sampler=make_sampler(space),
                                    directions=[o.mode + "imize" for o in space.objectives])
        study.add_trials(past)
        define, times = DefineByRun(space), []
        for i in range(repeats):
            t0 = time.perf_counter()
            trial = study.ask()
            define(trial)
            times.append(time.perf_counter() - t0)
            study.tell(trial, [float(i % 3), float(-i % 5)])
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--history", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "nsga3", "gp", "random"])
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = load_space("search_spaces/lm.yaml")
    past = history(space, args.history)
    worst = 0.0
    for kind in args.samplers:
        t = time_sampler(space, kind, past, args.repeats)
        worst = max(worst, max(t))
        print(f"{kind:<7} after {args.history} trials: ask+suggest median {statistics.median(t) * 1e3:8.1f} ms, "
              f"max {max(t) * 1e3:8.1f} ms over {len(t)}", flush=True)
    print(f"slowest suggestion (s): {worst:.3f}")


if __name__ == "__main__":
    main()
