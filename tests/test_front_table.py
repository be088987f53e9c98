"""The front table reads the study as it is: the best trial of the first objective on top whichever
way it is ranked, and a sampled value shown whenever it differs on the front, however slightly."""

import pytest

optuna = pytest.importorskip("optuna", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from dnasweep import metrics as M  # noqa: E402
from dnasweep.space import parse_space  # noqa: E402
from dnasweep.sweep.study import SweepResult, format_front, pareto_front  # noqa: E402

BASE = {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2}, "train": {"max_steps": 50}}


def _front(objectives, trials):
    """(space, front rows, table) of a study holding `trials`: [(values, params)]."""
    space = parse_space({"base": BASE, "objectives": objectives,
                         "search": {"train.lr": {"float": [1e-4, 1e-2], "log": True},
                                    "model.n_steps": {"int": [1, 4]}}}, "s.yaml")
    study = optuna.create_study(directions=[{"min": "minimize", "max": "maximize"}[o["mode"]] for o in objectives])
    dists = {"train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
             "model.n_steps": optuna.distributions.IntDistribution(1, 4)}
    for values, params in trials:
        study.add_trial(optuna.trial.create_trial(values=values, params=params, distributions=dists))
    front = pareto_front(study, space)
    return space, front, format_front(SweepResult("x", len(trials), 0, front), space)


def test_a_value_that_differs_past_four_digits_is_shown_and_told_apart():
    """lr 0.0030001 and 0.0030004 printed alike at 4 digits: the column was dropped as 'the same on
    the whole front'."""
    space, front, table = _front([{"metric": "val/loss", "mode": "min"},
                                  {"metric": "compute/flops_per_token", "mode": "min"}],
                                 [([2.0, 2e5], {"train.lr": 0.0030001, "model.n_steps": 2}),
                                  ([2.5, 1e5], {"train.lr": 0.0030004, "model.n_steps": 2})])
    lines = table.splitlines()
    assert "lr" in lines[1].split() and "S" not in lines[1].split()
    assert "0.0030001" in lines[2] and "0.0030004" in lines[3]
    assert "same on the whole front, or not sampled: n_steps" in table


def test_a_maximised_first_objective_puts_its_best_trial_on_top():
    """A vision front (val/acc, max) listed its worst accuracy first."""
    _, front, _ = _front([{"metric": "router/identity_fraction", "mode": "max"},
                          {"metric": "compute/flops_per_token", "mode": "min"}],
                         [([0.80, 1e5], {"train.lr": 1e-3, "model.n_steps": 1}),
                          ([0.95, 3e5], {"train.lr": 2e-3, "model.n_steps": 3}),
                          ([0.90, 2e5], {"train.lr": 3e-3, "model.n_steps": 2})])
    assert [r["router/identity_fraction"] for r in front] == [0.95, 0.90, 0.80]


def test_a_trial_evaluated_with_another_skip_share_than_it_trained_with_is_marked(tmp_path):
    """A full LM sweep's front held a trial that trained at 49% identity and was evaluated at 99%
    (its share a step function of the skip bias), and a noisy_topk trial at 37% vs 54%: the table
    showed only the evaluation's share, as a healthy DNA's. Read from each trial's result.json, as
    `dnasweep run` and `pareto` do (the row once left the gap behind)."""
    import itertools
    import json

    space = parse_space({"base": BASE, "objectives": [{"metric": "val/loss", "mode": "min"},
                                                      {"metric": "compute/flops_per_token", "mode": "min"}],
                         "search": {"train.lr": {"float": [1e-4, 1e-2], "log": True}}}, "s.yaml")
    study = optuna.create_study(directions=["minimize", "minimize"])
    dist = {"train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for i, (values, lr, gap, collapsed) in enumerate([([2.0, 2e5], 1e-3, 0.02, 0.0), ([2.5, 1e5], 2e-3, 0.497, 1.0),
                                                       ([2.2, 1.5e5], 3e-3, -0.14, 0.0)]):
        study.add_trial(optuna.trial.create_trial(values=values, params={"train.lr": lr}, distributions=dist,
                                                  user_attrs={"ray_trial_id": f"t{i}"}))
        (tmp_path / "trials" / f"t{i}").mkdir(parents=True)
        (tmp_path / "trials" / f"t{i}" / "result.json").write_text(json.dumps(
            {"val/loss": values[0], M.ROUTER_IDENTITY_GAP: gap, M.ROUTER_COLLAPSED: collapsed}))
    front = pareto_front(study, space, str(tmp_path))
    lines = format_front(SweepResult("x", 3, 0, front), space).splitlines()
    assert lines[1].split()[-1] == "verdict"
    col = lines[1].split().index("lr")
    rows = {float(ln.split()[col]): ln for ln in lines[2:5]}
    assert rows[2e-3].rstrip().endswith("collapsed, skip gap +0.50")
    assert rows[3e-3].rstrip().endswith("skip gap -0.14")
    assert "gap" not in rows[1e-3] and "collapsed" not in rows[1e-3]
    # the rule beside the verdicts, naming the thresholds the code applies
    at = next(i for i, ln in enumerate(lines) if ln.startswith("verdict:"))
    legend = " ".join([lines[at], *itertools.takewhile(lambda ln: ln.startswith("  "), lines[at + 1:])])
    assert f">= {M.COLLAPSE_IDENTITY_SHARE:.0%}" in legend and f"|gap| >= {M.SKIP_GAP_LIMIT}" in legend, legend
