"""The searcher's bookkeeping on a real in-memory Optuna study (no Ray cluster): constraints told
as written, and a step budget that holds when train.max_steps itself is searched."""

import pytest

pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from dnasweep.errors import ConfigError  # noqa: E402
from dnasweep.space import parse_space  # noqa: E402
from dnasweep.sweep import budget, compat  # noqa: E402
from dnasweep.sweep.searcher import ParetoOptunaSearch  # noqa: E402
from dnasweep.sweep.study import trial_rows  # noqa: E402

OBJ = [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}]
BASE = {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2}, "train": {"max_steps": 1000}}


def _searcher(spec: dict) -> tuple:
    space = parse_space(spec, "s.yaml")
    s = ParetoOptunaSearch(space)
    s.set_search_properties(None, None, {})
    return space, s


def test_two_bounds_on_one_metric_are_both_enforced():
    """`params/total` in a band: a trial below the lower bound is infeasible, off the front (Optuna
    kept the first value set under a key; keyed by metric, the second bound was dropped)."""
    space, s = _searcher({"base": BASE, "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
                          "objectives": OBJ, "constraints": ["params/total <= 2e5", "params/total >= 5e4"]})
    s.suggest("a")
    s.on_trial_complete("a", {"val/loss": 1.0, "compute/flops_per_token": 1e5, "params/total": 3e4, "step": 1000})
    study = compat.search_study(s)
    (t,) = study.trials
    assert sorted(t.constraints.values()) == pytest.approx([-1.7e5, 2e4])
    assert study.best_trials == []
    assert [r["feasible"] for r in trial_rows(study, space)] == [False]


SEARCHED_STEPS = {"base": BASE, "search": {"train.max_steps": {"int": [500, 3000]}}, "objectives": OBJ,
                  "budget": {"trials": 10, "steps": 3000}}


def test_a_searched_max_steps_never_takes_a_step_budget_past_its_end():
    """600 steps committed, 3000 in the budget: room for a base trial (1000) but not for the 3000 a
    trial can draw, so no trial starts (one used to, and drew 3000: 3600 of 3000)."""
    space, s = _searcher(SEARCHED_STEPS)
    study = compat.search_study(s)
    running = study.ask()
    running.set_user_attr(budget.MAX_STEPS, 600)
    assert s.suggest("b") is None  # nothing can start until the running trial frees its steps
    assert space.most_steps() == 3000
    assert not budget.left(study, space)
    assert len(study.trials) == 1


def test_a_sweep_stopped_while_the_last_trials_that_fit_its_steps_run_is_stopped_not_finished():
    """Ctrl-C with the last trials that fit budget.steps running: `left` (may another trial start?) said
    no, and the runner closed the sweep as finished, its running trials left to no resume."""
    space, s = _searcher({"base": {**BASE, "train": {"max_steps": 1000}}, "objectives": OBJ,
                          "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
                          "budget": {"trials": 10, "steps": 3000, "concurrent": 2}})
    s.suggest("a")
    s.on_trial_complete("a", {"val/loss": 1.0, "compute/flops_per_token": 1e5, "step": 1000})
    s.suggest("b")
    s.suggest("c")  # 2000 steps committed: the budget is spent once they end
    assert not budget.left(compat.search_study(s), space)
    assert budget.stopped_short(compat.search_study(s), space)  # interrupted now: resumable
    for tid in "bc":
        s.on_trial_complete(tid, {"val/loss": 1.0, "compute/flops_per_token": 1e5, "step": 1000})
    assert not budget.stopped_short(compat.search_study(s), space)  # the budget's end


def test_a_step_budget_below_the_most_steps_a_trial_can_draw_is_refused():
    with pytest.raises(ConfigError) as e:
        parse_space({**SEARCHED_STEPS, "budget": {"trials": 10, "steps": 2000}}, "s.yaml")
    (p,) = e.value.problems
    assert p.key == "budget.steps" and "(3000: " in p.message


def test_tpe_never_models_good_points_on_trials_mo_asha_pruned():
    """Optuna 5's multi-objective TPE scores every pruned trial alike (they carry no values) and,
    with fewer complete trials than its good set wants, fills that set with pruned ones in trial
    order: the first trial MO-ASHA rejected became the model of a good point, and most draws went
    near it. Pruned trials now belong with the bad ones."""
    from optuna.trial import TrialState

    _, s = _searcher({"base": {**BASE, "train": {"max_steps": 90, "eval_every": 10}},
                      "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}}, "objectives": OBJ,
                      "scheduler": {"type": "moasha", "grace_steps": 10, "reduction_factor": 3},
                      "sampler": {"startup_trials": 4}})
    study = compat.search_study(s)

    def run(lr, values=None):
        study.enqueue_trial({"train.lr": lr})
        t = study.ask()
        t.suggest_float("train.lr", 1e-3, 1e-2, log=True)
        study.tell(t, values, state=TrialState.COMPLETE if values else TrialState.PRUNED)

    run(9.5e-3)  # pruned first, at the top of the range
    for i in range(18):
        run(2e-3 + 1e-4 * i)  # pruned too
    run(4e-3, [1.0, 1.0])  # the one complete trial
    draws = []
    for _ in range(30):
        t = study.ask()
        draws.append(t.suggest_float("train.lr", 1e-3, 1e-2, log=True))
        study.tell(t, state=TrialState.FAIL)
    near_first = sum(x > 8e-3 for x in draws) / len(draws)
    assert near_first < 0.3, (near_first, sorted(draws))


def test_the_good_set_cap_keeps_optunas_defaults():
    """Capped at the complete feasible trials, and otherwise Optuna's default: ceil(10%) for several
    objectives, at most 25 for one."""
    import optuna

    for directions, want in ((["minimize"], 25), (["minimize", "minimize"], 30)):
        study = optuna.create_study(directions=directions)
        for i in range(300):
            study.add_trial(optuna.trial.create_trial(values=[float(i)] * len(directions)))
        assert compat.GoodFromCompleteOnly(study)(300) == want
        assert compat.GoodFromCompleteOnly(optuna.create_study(directions=directions))(300) == 0


def test_a_gain_that_is_only_a_bound_meets_a_constraint_only_when_the_bound_settles_it():
    """Outside the dense ladder's range compare/compute_gain is a bound: '< 1.2' was told to Optuna
    as 1.2, feasible under 'compute_gain >= 1' though the true gain may be below 1."""
    space, s = _searcher({"base": BASE, "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
                          "objectives": OBJ, "constraints": ["compare/compute_gain >= 1"],
                          "reference": {"d_model": [32], "dense_layers": [1]}})
    gains = {"a": (1.2, -1), "b": (1.2, 1), "c": (0.8, 1), "d": (1.1, 0), "e": (0.8, -1)}
    for tid, (gain, bound) in gains.items():
        s.suggest(tid)
        s.on_trial_complete(tid, {"val/loss": 1.0, "compute/flops_per_token": 1e5, "step": 1000,
                                  "compare/compute_gain": gain, "compare/compute_gain_bound": float(bound)})
    feasible = [r["feasible"] for r in trial_rows(compat.search_study(s), space)]
    # a: below 1.2, maybe below 1; b: above 1.2; c: above 0.8, maybe not 1; d: exact; e: below 0.8
    assert feasible == [False, True, False, True, False]
