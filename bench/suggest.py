"""Optuna suggest latency with a long history: how long the searcher takes to propose trial 501.

For each sampler a sweep can use, builds a study in the sweep's own storage kind (a JournalStorage
file) holding `--history` finished trials of the lm.yaml space (random points, random objectives),
then times `ask()` + the define-by-run space (what Ray's OptunaSearch does per new trial) followed
by `tell()`. Every trial, past and timed, carries the space's constraint values as a sweep records
them (lm.yaml: params/total <= 2e7), so a sampler that reads constraints (gp, tpe, nsga2, nsga3) is
timed on its constrained path, as in a real sweep. Training a trial takes minutes; a suggestion
must stay well under a second (target < 1 s).

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


def constraint_values(space, params: dict, rng) -> dict[str, float]:
    """{key: violation} of the space's constraints at `params`, as a sweep records them on every told
    trial (Optuna reads them back from the trial, so the samplers take their constrained path: the GP
    fits one more model per constraint). A metric the config fixes (feasibility.STATIC: params/total)
    gets its real value; one only training measures, a random violation on the bound's scale."""
    from dnasweep.model import nominal
    from dnasweep.space.apply import active_values, try_apply
    from dnasweep.space.feasibility import STATIC

    cfg = try_apply(space.base, active_values(space.params, params))
    out = {}
    for c in space.constraints:
        if c.metric in STATIC and cfg is not None:
            out[c.key] = float(c.violation(STATIC[c.metric](nominal(cfg.model))))
        else:
            out[c.key] = float(rng.uniform(-1.0, 0.3) * max(abs(c.bound), 1.0))
    return out


def history(space, n: int, seed: int = 0) -> list:
    """n finished trials drawn uniformly from the space (conditions honoured), with their constraint
    values recorded as a sweep records them."""
    rng = np.random.default_rng(seed)
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed),
                               directions=["minimize"] * len(space.objectives))
    define, out = DefineByRun(space), []
    for _ in range(n):
        t = draw.ask()
        define(t)
        out.append(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                             values=rng.uniform(0, 1, len(space.objectives)).tolist(),
                                             constraints=constraint_values(space, t.params, rng) or None))
    return out


def time_sampler(space, kind: str, past: list, repeats: int) -> tuple[list[float], list]:
    """Seconds of each ask() + define-by-run space after `past`, and the study's trials at the end.
    Each timed trial is told as a sweep tells it: constraint values first, then its objectives."""
    space.sampler.type = kind
    rng = np.random.default_rng(1)
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
            for key, v in constraint_values(space, trial.params, rng).items():
                trial.set_constraint(key, v)
            study.tell(trial, [float(i % 3), float(-i % 5)])
        trials = study.get_trials()
    return times, trials


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
        t, _ = time_sampler(space, kind, past, args.repeats)
        worst = max(worst, max(t))
        print(f"{kind:<7} after {args.history} trials: ask+suggest median {statistics.median(t) * 1e3:8.1f} ms, "
              f"max {max(t) * 1e3:8.1f} ms over {len(t)}", flush=True)
    print(f"slowest suggestion (s): {worst:.3f}")


if __name__ == "__main__":
    main()
