"""The progress callback (fake Tune trials, no cluster): counts, and the one call it makes when no
trial is left to start, which warms the end-of-sweep figures while the last trials run."""

import subprocess
import sys
from types import SimpleNamespace

import pytest

pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from dnasweep.space import parse_space  # noqa: E402
from dnasweep.sweep.progress import Progress  # noqa: E402

SPACE = {"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2}, "train": {"max_steps": 10}},
         "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
         "objectives": [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}],
         "budget": {"trials": 5, "concurrent": 2}}


def _trial(i, loss=1.0):
    return SimpleNamespace(trial_id=f"t{i}", config={"train.lr": 1e-3},
                           last_result={"val/loss": loss, "compute/flops_per_token": 1e5, "step": 10})


@pytest.mark.parametrize("before", [0, 2])
def test_draining_is_called_once_when_no_trial_is_left_to_start(before):
    """5 trials, 2 at a time: from the 4th end on, the 5th runs alone (a slot stays idle); a resumed
    sweep counts the trials its earlier runs finished."""
    calls, lines = [], []
    p = Progress(parse_space(SPACE, "s.yaml"), lines.append, {"complete": before}, on_draining=lambda: calls.append(1))
    ends = []
    for i in range(before, 5):
        p.on_trial_start(0, [], _trial(i))
        if i % 2:
            p.on_trial_error(0, [], SimpleNamespace(trial_id=f"t{i}", error_file=None))
        else:
            p.on_trial_complete(0, [], _trial(i))
        ends.append(len(calls))
    assert ends == [0] * (3 - before) + [1, 1]  # after the 4th of 5 ended, and only once
    assert "5/5 finished" in lines[-1]


def test_warm_imports_the_figure_libraries_in_a_thread():
    code = ("import sys, threading\n"
            "from dnasweep.sweep import plots\n"
            "assert 'plotly.graph_objects' not in sys.modules and 'matplotlib.figure' not in sys.modules\n"
            "plots.warm()\n"
            "[t.join() for t in threading.enumerate() if t.name == 'dnasweep-warm-figures']\n"
            "assert 'plotly.graph_objects' in sys.modules and 'matplotlib.figure' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_trial_counted_before_a_resume_is_not_counted_again_when_it_replays():
    """Finished (or pruned) before the driver died, after Tune last saved: on resume it runs again,
    and its end was counted twice ('3/2 finished')."""
    lines = []
    p = Progress(parse_space(SPACE, "s.yaml"), lines.append, {"complete": 1, "pruned": 1, "steps": 15},
                 pruned={"t1": 5}, told={"t0", "t1"})
    for i in (0, 1, 2):
        p.on_trial_start(0, [], _trial(i))
    p.on_trial_complete(0, [], _trial(0))  # its saved result re-reported
    p.on_trial_complete(0, [], _trial(1))  # MO-ASHA stops it again at its rung
    p.on_trial_complete(0, [], _trial(2))  # a new trial
    assert (p.done, p.n_pruned, p.failed, p.steps, p.running) == (2, 1, 0, 25, set())
    assert "3/5 finished" in lines[-1]  # not 5/5
    assert sum("again" in ln for ln in lines) == 2


def test_steps_of_failed_and_errored_trials_count_toward_the_step_line():
    """With budget.steps the line shows steps spent, as the budget counts them: a trial that
    diverged (its last report has no step) or errored added nothing ('0/400 steps')."""
    lines = []
    p = Progress(parse_space({**SPACE, "budget": {"trials": 5, "steps": 400}}, "s.yaml"), lines.append)
    a, b = (SimpleNamespace(trial_id=t, config={}, error_file=None, last_result={}) for t in ("a", "b"))
    for t, steps in ((a, (10, 20, 30)), (b, (10, 20))):
        p.on_trial_start(0, [], t)
        for s in steps:
            p.on_trial_result(0, [], t, {"step": s, "train/loss": 1.0})
    a.last_result = {"failed": 1.0, "status": "diverged", "reason": "non-finite loss"}
    p.on_trial_complete(0, [], a)
    assert "30/400 steps" in lines[-1], lines[-1]
    p.on_trial_error(0, [], b)
    assert "50/400 steps" in lines[-1], lines[-1]
