"""bench/multifidelity.py: its two arms are valid sweeps of the same space and budget, and its
hypervolume-versus-steps curve counts what it says (pure parts; the benchmark itself is not CI)."""

import datetime
import pathlib
import sys

import numpy as np
import pytest

optuna = pytest.importorskip("optuna", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
from multifidelity import MAX_STEPS, curve, hv, ratio_summary, space_dict  # noqa: E402

from dnasweep.space import parse_space  # noqa: E402


def test_both_arms_parse_and_differ_only_in_the_scheduler():
    fifo, mo = (parse_space(space_dict(1, arm, 8), arm) for arm in ("fifo", "moasha"))
    assert fifo.budget.steps == mo.budget.steps == 8 * MAX_STEPS
    assert fifo.scheduler.type == "fifo" and mo.scheduler.type == "moasha" and mo.rungs() == [[25, 75]]
    a, b = fifo.to_dict()["config"], mo.to_dict()["config"]
    a.pop("scheduler"), b.pop("scheduler")
    assert a == b


def test_curve_counts_steps_as_trials_end_and_only_complete_points():
    from dnasweep.sweep.budget import STEPS

    study = optuna.create_study(directions=["minimize", "minimize"])
    t0 = datetime.datetime(2026, 1, 1)
    # (state, values, steps, end time offset): ended out of ask order
    for state, values, steps, end in [("COMPLETE", [3.0, 10.0], 150, 30), ("PRUNED", None, 25, 10),
                                      ("COMPLETE", [2.0, 20.0], 150, 40)]:
        t = optuna.trial.create_trial(state=getattr(optuna.trial.TrialState, state), values=values,
                                      user_attrs={STEPS: steps})
        t.datetime_start, t.datetime_complete = t0, t0 + datetime.timedelta(seconds=end)
        study.add_trial(t)
    steps, points = curve(study)
    assert steps == [25, 175, 325]
    assert [len(p) for p in points] == [0, 1, 2] and points[1].tolist() == [[3.0, 10.0]]


def test_hypervolume_in_the_shared_box():
    lo, hi = np.array([0.0, 0.0]), np.array([4.0, 100.0])
    assert hv(np.zeros((0, 2)), lo, hi) == 0.0
    assert hv(np.array([[0.0, 0.0]]), lo, hi) == pytest.approx(1.0)
    assert hv(np.array([[2.0, 50.0]]), lo, hi) == pytest.approx(0.25)
    assert hv(np.array([[2.0, 50.0], [1.0, 75.0]]), lo, hi) == pytest.approx(0.25 + 0.25 * 0.25)


def test_a_seed_that_never_reaches_fifos_hypervolume_is_censored_not_averaged():
    """The 2026-12-01 run (budget 2400): MO-ASHA reached FIFO's hypervolume at 1025 of FIFO's 2250
    steps and 1500 of 2400, and never for seed 2. Scored as budget / FIFO's steps (2400 / 2250) and
    mixed into the mean that read 0.716; the seed is censored: shown as not reached, out of the mean."""
    per_seed, median, mean = ratio_summary([(2250, 1025), (2400, 1500), (2250, None)], 2400)
    assert per_seed.endswith(": 0.456, 0.625, not reached (> 1.067)")
    assert median == "median over all 3 seeds: 0.625"  # the censored seed ranks above both: exact
    assert "mean 0.540 over the 2 of 3 seeds that reached it; 1 censored" in mean
    assert "0.716" not in per_seed + median + mean and "1.067" not in median + mean


def test_censored_median_is_a_range_or_not_reached_when_censoring_can_move_it():
    # seed 1 censored at > 1.0, below seed 0's reached 1.2: the median lies between 1.0 and 1.2
    assert ratio_summary([(1000, 1200), (1200, None), (1000, 500)], 1200)[1] == \
        "median over all 3 seeds: between 1.000 and 1.200"
    lines = ratio_summary([(1000, 1200), (1200, None), (900, None)], 1200)
    assert lines[1].startswith("median over all 3 seeds: not reached (at least 1.200")
    assert "mean 1.200 over the 1 of 3 seeds that reached it; 2 censored" in lines[2]
    assert ratio_summary([(1000, None)], 1200)[2].startswith(
        "MO-ASHA steps / FIFO steps to FIFO's final hypervolume: mean n/a over the 0 of 1 seeds")
    assert ratio_summary([(2400, 675), (2400, 1450)], 2400)[2].endswith("none censored")
