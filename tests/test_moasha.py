"""MO-ASHA rung decisions on synthetic reports (no cluster): dominated trials stop, front trials
continue, ties share a position, infeasible ranks last, promotion is asynchronous, and the
decisions survive a driver restart through the Optuna study."""

import math

import pytest

pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from ray.tune.schedulers import TrialScheduler  # noqa: E402

from dnasweep.errors import ConfigError  # noqa: E402
from dnasweep.space import parse_space  # noqa: E402
from dnasweep.sweep.moasha import MOASHA, crowding, fronts, keeps, make_scheduler  # noqa: E402

GO, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def _space(**over):
    d = {"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2},
                  "train": {"max_steps": 90, "eval_every": 10}},
         "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
         "objectives": [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}],
         "scheduler": {"type": "moasha", "grace_steps": 10, "reduction_factor": 2}}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_space(d, "test.yaml")


def _r(loss, flops, **kw):
    return {"val/loss": loss, "compute/flops_per_token": flops, **kw}


class Recorder:
    """The searcher's side of the scheduler: what it would write into the study."""

    def __init__(self):
        self.rungs, self.pruned = [], []

    def record_rung(self, tid, rung, bracket, values, violation):
        self.rungs.append((tid, rung, bracket, values, violation))

    def prune(self, tid, rung, step=None):
        self.pruned.append((tid, rung, step))


def _sched(**over):
    s = make_scheduler(_space(**over), Recorder())
    assert isinstance(s, MOASHA)
    return s


def test_rungs_follow_grace_and_reduction_factor_per_bracket():
    assert _space().rungs() == [[10, 20, 40, 80]]
    assert _space(scheduler={"brackets": 2, "reduction_factor": 3}).rungs() == [[10, 30], [30]]
    assert _space(scheduler={"type": "fifo"}).rungs() == []


def test_bad_scheduler_settings_are_all_reported_with_the_rule():
    with pytest.raises(ConfigError) as e:
        _space(scheduler={"grace_steps": 15, "reduction_factor": 1, "type": "sha"}, budget={"steps": 50})
    text = e.value.render() if hasattr(e.value, "render") else str(e.value)
    for key in ("scheduler.reduction_factor", "scheduler.type", "budget.steps"):
        assert key in text, text
    with pytest.raises(ConfigError, match="multiple of base train.eval_every"):
        _space(scheduler={"grace_steps": 15})
    with pytest.raises(ConfigError, match="no rung below"):
        _space(scheduler={"grace_steps": 90})


def test_pure_ranking_helpers():
    pts = [(1.0, 4.0), (2.0, 2.0), (4.0, 1.0), (3.0, 3.0), (5.0, 5.0)]
    assert fronts(pts) == [0, 0, 0, 1, 2]
    c = crowding(pts, [0, 1, 2])
    assert c[0] == c[2] == math.inf and 0 < c[1] < math.inf
    # equal points: neither dominates the other, both on the same front, same position
    assert fronts([(1.0, 1.0), (1.0, 1.0), (2.0, 2.0)]) == [0, 0, 1]


def test_a_dominated_trial_stops_and_front_trials_continue():
    s = _sched()
    assert s.decide("a", 10, _r(3.0, 100)) == GO  # alone at the rung: continues (no waiting)
    assert s.decide("b", 10, _r(2.0, 200)) == GO  # a trade-off: on the front
    assert s.decide("c", 10, _r(3.5, 250)) == STOP  # dominated by both, outside the top half
    assert s.searcher.pruned == [("c", 10, 10)] and s.pruned == {"c": 10}
    assert [r[:2] for r in s.searcher.rungs] == [("a", 10), ("b", 10), ("c", 10)]
    assert s.searcher.rungs[0][3] == {"val/loss": 3.0, "compute/flops_per_token": 100}
    # a training-loss row between evaluations decides nothing
    assert s.decide("d", 10, {"train/loss": 9.0, "step": 10}) == GO
    assert s.decide("c", 20, _r(0.1, 1)) == STOP  # the decision stands


def test_every_front_trial_continues_even_beyond_the_top_fraction():
    s = _sched(scheduler={"reduction_factor": 4})
    for i, (loss, flops) in enumerate([(1.0, 500), (2.0, 400), (3.0, 300), (4.0, 200), (5.0, 100)]):
        assert s.decide(f"t{i}", 10, _r(loss, flops)) == GO, i
    assert s.decide("worse", 10, _r(5.0, 500)) == STOP


def test_ties_share_a_position():
    pts = [(1.0, 1.0), (2.0, 2.0), (2.0, 2.0), (3.0, 3.0)]
    # the two equal points rank second together: with 4 points and reduction factor 2 (top 2) both stay
    assert keeps(pts, [0.0] * 4, 1, 2) and keeps(pts, [0.0] * 4, 2, 2)
    assert not keeps(pts, [0.0] * 4, 3, 2)


def test_an_infeasible_trial_ranks_below_every_feasible_one():
    s = _sched(constraints=["params/total <= 1e6"])
    assert s.decide("a", 10, _r(3.0, 300, **{"params/total": 5e5})) == GO
    assert s.decide("b", 10, _r(2.5, 350, **{"params/total": 8e5})) == GO
    # better on both objectives, but over the parameter limit: below a and b
    assert s.decide("big", 10, _r(1.0, 100, **{"params/total": 5e6})) == STOP
    assert s.searcher.rungs[-1][4] == 4e6  # its violation, kept for a resumed scheduler


def test_a_gain_that_is_only_a_bound_breaks_a_constraint_it_cannot_settle_at_a_rung_too():
    """Under 'compute_gain >= 1' a '< 1.5' gain (bound -1) may be below 1: the searcher's final verdict
    calls it infeasible, and MO-ASHA ranked it feasible, stopping a truly feasible trial for it."""
    s = _sched(constraints=["compare/compute_gain >= 1"], reference={"d_model": [32], "dense_layers": [1, 2]})
    gain = lambda g, bound: {"compare/compute_gain": g, "compare/compute_gain_bound": float(bound)}  # noqa: E731
    assert s.decide("exact", 10, _r(3.1, 2e5, **gain(1.2, 0))) == GO
    assert s.decide("bound", 10, _r(3.0, 1e5, **gain(1.5, -1))) == STOP  # infeasible: below every feasible one
    assert s.searcher.rungs[-1][4] == pytest.approx(0.5)  # the violation a resumed scheduler rebuilds from
    assert s.decide("feasible", 10, _r(3.2, 3e5, **gain(1.1, 0))) == GO
    assert s.decide("above", 10, _r(2.9, 5e5, **gain(1.5, 1))) == GO  # "> 1.5" settles ">= 1": on the front


def test_promotion_is_asynchronous_and_decisions_are_not_taken_back():
    s = _sched()
    assert s.decide("early", 10, _r(5.0, 500)) == GO  # first at the rung: goes on at once
    assert s.decide("early", 20, _r(5.0, 500)) == GO  # and is first at the next rung too
    for i in range(3):  # better trials arrive later; the early one was already promoted
        s.decide(f"b{i}", 10, _r(1.0 + i, 100 - i))
    assert "early" not in s.pruned
    assert s.decide("late", 10, _r(5.0, 500)) == STOP  # the same point, now dominated at rung 10


def test_decisions_survive_a_restart_through_the_study():
    import optuna

    from dnasweep.sweep.moasha import BRACKET, RUNG

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = _space()
    study = optuna.create_study(directions=["minimize", "minimize"])
    for tid, vals, state in [("a", (3.0, 100.0), "RUNNING"), ("b", (2.0, 200.0), "RUNNING"),
                             ("c", (3.5, 250.0), "PRUNED")]:
        t = study.ask()
        t.suggest_float("train.lr", 1e-3, 1e-2, log=True)
        t.set_user_attr("ray_trial_id", tid)
        t.set_user_attr(BRACKET, 0)
        for m, v in zip(["val/loss", "compute/flops_per_token", "violation"], [*vals, 0.0], strict=True):
            t.set_user_attr(RUNG.format(step=10, metric=m), v)
        if state == "PRUNED":
            t.set_user_attr("pruned_at", 10)
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
    s = make_scheduler(space, Recorder())
    s.load(study)
    assert s.pruned == {"c": 10} and set(s.recorded[(0, 10)]) == {"a", "b", "c"}
    assert s.decide("c", 30, _r(0.1, 1)) == STOP  # restored and still pruned: stopped at its next report
    assert s.decide("d", 10, _r(4.0, 300)) == STOP  # judged against the trials recorded before the restart
    assert s.decide("a", 10, _r(3.0, 100)) == GO  # already recorded at rung 10: not judged twice
    assert [r[:2] for r in s.searcher.rungs] == [("d", 10)]


def test_a_trial_short_of_its_first_rung_keeps_its_bracket_through_a_resume():
    """The study keeps a trial's bracket once a rung is recorded; a resumed scheduler dealt the others
    round robin in the order Ray re-adds restored trials, so one running short of its first rung could
    move to another bracket and be judged (and pruned) at that bracket's rungs."""
    from dnasweep.sweep import compat
    from dnasweep.sweep.searcher import ParetoOptunaSearch

    space = _space(scheduler={"brackets": 2, "reduction_factor": 3})
    search = ParetoOptunaSearch(space)
    search.set_search_properties(None, None, {})
    trial = lambda tid: type("T", (), {"trial_id": tid})()  # noqa: E731
    first = make_scheduler(space, search)
    for tid in "ABCD":
        search.suggest(tid)
        first.on_trial_add(None, trial(tid))
    before = dict(first.bracket)
    first.decide("A", 10, _r(1.0, 1e5))
    first.decide("C", 10, _r(1.1, 1e5))  # B and D (first rung 30) are still short of it
    for order in ("DCBA", "ABCD"):
        again = make_scheduler(space, search)
        again.load(compat.search_study(search))
        for tid in order:
            again.on_trial_add(None, trial(tid))
        assert again.bracket == before, (order, again.bracket, before)
        assert again.decide("D", 30, _r(1.3, 1e5)) == GO  # first of its own bracket at its rung 30


def test_brackets_are_assigned_round_robin():
    s = _sched(scheduler={"brackets": 2})
    assert s.ladders == [[10, 20, 40, 80], [20, 40, 80]]
    s.decide("x", 10, _r(1.0, 1.0))
    s.decide("y", 10, _r(1.0, 1.0))  # bracket 1: its first rung is 20, so nothing recorded at 10
    assert s.bracket == {"x": 0, "y": 1} and set(s.recorded[(0, 10)]) == {"x"}


def test_a_trial_is_judged_at_a_rung_only_by_an_evaluation_at_that_step():
    """A report at step 30 used to be recorded at rungs 10 and 20 too: a trial that really
    evaluated at 10 was then ranked against another's step-30 values, and stopped."""
    s = _sched()
    assert s.decide("a", 30, _r(2.0, 100)) == GO  # no evaluation at 10 or 20: not judged there
    assert "a" not in s.recorded.get((0, 10), {})
    assert s.decide("c", 10, _r(2.5, 100)) == GO  # the only real step-10 value


@pytest.mark.parametrize("search", [{"train.eval_every": {"choice": [10, 30]}},
                                    {"train.max_steps": {"int": [40, 90]}}])
def test_searching_what_decides_rungs_is_refused_under_mo_asha(search):
    """Rungs are evaluations below the end of every trial: a searched eval_every moves the
    evaluations off them, a searched max_steps ends trials on or before them (a trial that
    finished its 40 steps was PRUNED at rung 40, its objectives never told)."""
    with pytest.raises(ConfigError) as e:
        _space(search=search)
    (key,) = search
    assert f"search.{key}" in [p.key for p in e.value.problems]


def test_rungs_stop_below_the_steps_a_token_budget_leaves():
    """train.max_tokens ends every trial early: rungs at or past that end judged finished trials."""
    tokens = 30 * 16 * 32  # 30 steps of 16 x 32 tokens
    rungs = _space(base={"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2},
                         "train": {"max_steps": 1000, "eval_every": 10, "batch_size": 16, "max_tokens": tokens}},
                   scheduler={"reduction_factor": 3}).rungs()
    assert rungs == [[10]]


def test_a_searched_pooling_under_a_token_budget_is_refused_under_mo_asha():
    """With train.max_tokens, what sets a step's tokens sets a trial's end: model.pooling (a vision class
    token adds one per image) was missing from the keys refused, so its trials ended off the rungs."""
    base = {"model": {"task": "vision", "d_model": 32, "n_heads": 4, "n_steps": 2, "image_size": 8, "patch_size": 2,
                      "channels": 1, "n_classes": 10}, "data": {"source": "digits"},
            "train": {"max_steps": 1000, "eval_every": 10, "batch_size": 16, "max_tokens": 16 * 17 * 200}}
    with pytest.raises(ConfigError) as e:
        _space(base=base, objectives=[{"metric": "val/acc", "mode": "max"},
                                      {"metric": "compute/flops_per_token", "mode": "min"}],
               search={"model.pooling": {"choice": ["mean", "cls"]}})
    assert "search.model.pooling" in [p.key for p in e.value.problems]


def test_equal_points_inside_a_front_share_their_crowding():
    """Crowding over a sorted front gave two equal interior points different distances (one saw its
    twin as a neighbour), so one was stopped and its equal kept; equal points must rank alike."""
    pts = [(1.0, 5.0), (2.0, 3.0), (2.0, 3.0), (3.0, 2.0), (5.0, 1.0), (2.5, 4.0)]
    d = crowding(pts, [0, 1, 2, 3, 4])
    assert d[1] == d[2]
    assert keeps(pts, [0.0] * 6, 1, 3) == keeps(pts, [0.0] * 6, 2, 3)


def test_a_trial_resumed_past_its_rung_evaluation_is_still_judged_there():
    """A trial that checkpointed at a rung and died before the scheduler saw the report resumes
    there and next evaluates one eval_every later: it is judged at the rung by that evaluation
    (it used to escape pruning), but never at an earlier rung by a report at or past the next one."""
    s = _sched(scheduler={"reduction_factor": 3})  # rungs 10, 30; eval_every 10
    for i in range(6):
        assert s.decide(f"t{i}", 10, _r(1.0 + 0.1 * i, 100 - i)) == GO
    assert s.decide("bad", 20, _r(9.0, 200)) == STOP  # its step-10 report was lost: judged at 10 by step 20
    assert s.searcher.pruned == [("bad", 10, 20)]  # stopped at rung 10, having trained 20 steps


def test_a_trial_that_finished_training_is_never_pruned():
    """Its step-80 report lost, a trial's last report (step 90, the end) would be judged at rung 80."""
    s = _sched()  # rungs 10, 20, 40, 80; max_steps 90
    for i in range(6):
        assert s.decide(f"t{i}", 80, _r(1.0 + 0.1 * i, 100 - i)) == GO
    assert s.decide("done", 90, _r(9.0, 200)) == GO


def test_a_training_row_at_a_rung_step_is_not_the_rungs_evaluation():
    """With perf/tokens_per_s the objective, the training row the loop logs at a rung step (just
    before that step's evaluation) carries the objective and no constraint metric: MO-ASHA judged
    every trial by it, each broke every constraint, all tied, and none was ever stopped."""
    s = _sched(objectives=[{"metric": "perf/tokens_per_s", "mode": "max"}], constraints=["val/loss <= 5"])
    decisions = {}
    for tid, tps, loss in [("a", 1000.0, 3.0), ("b", 900.0, 3.0), ("c", 800.0, 9.0), ("d", 100.0, 9.0)]:
        assert s.decide(tid, 10, {"step": 10, "train/loss": 3.0, "perf/tokens_per_s": tps}) == GO
        decisions[tid] = s.decide(tid, 10, {"step": 10, **_r(loss, 1e5), "perf/tokens_per_s": tps})
    assert decisions == {"a": GO, "b": STOP, "c": STOP, "d": STOP}
    assert s.recorded[(0, 10)]["c"][1] == pytest.approx(4.0)  # val/loss 9 breaks <= 5 by 4, as evaluated
