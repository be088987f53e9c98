"""bench/multifidelity.py: its two arms are valid sweeps of the same space and budget, and its
hypervolume-versus-steps curve counts what it says (pure parts; the benchmark itself is not CI)."""

import datetime
import pathlib
import sys

import numpy as np
import pytest

optuna = pytest.importorskip("optuna", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
from multifidelity import MAX_STEPS, curve, hv, space_dict  # noqa: E402

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
