"""The search side against defects a review found (no Ray cluster: the searcher on an in-memory or
journal Optuna study, the scheduler on synthetic reports): a token budget's trials reserve their
planned steps, a resumed searcher mirrors this head's journal, MO-ASHA keeps brackets apart and
judges a rung only before the next one, the hypervolume plot says what it counts, and a trial the
time limit cut short never reaches the front."""

import pickle
import shutil

import pytest

pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from ray.tune.schedulers import TrialScheduler  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

from dnasweep.space import parse_space  # noqa: E402
from dnasweep.sweep import budget, compat  # noqa: E402
from dnasweep.sweep.moasha import MOASHA, make_scheduler  # noqa: E402
from dnasweep.sweep.searcher import ParetoOptunaSearch  # noqa: E402

GO, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
MODEL = {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2}
OBJ = [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}]
LR = {"train.lr": {"float": [1e-3, 1e-2], "log": True}}


def _space(train: dict, search: dict | None = None, **sections):
    return parse_space({"base": {"model": MODEL, "train": train}, "search": search or LR, "objectives": OBJ,
                        **sections}, "s.yaml")


def _searcher(space, **kw):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = ParetoOptunaSearch(space, **kw)
    s.set_search_properties(None, None, {})
    return s


def _r(loss, flops=None, **kw):
    return {"val/loss": loss, "compute/flops_per_token": 1e5 * loss if flops is None else flops, **kw}


def test_a_searched_max_steps_reserves_the_most_it_draws_not_the_bases():
    """Every trial draws train.max_steps from [100, 300]: the base's 1000 is never trained, but it
    was reserved for each running trial (a 1500-step budget ended after 674 steps) and a budget
    under 1000 was refused. Conditional, the base's value is still some trials' and still counts."""
    drawn = {"train.max_steps": {"int": [100, 300]}}
    space = _space({"max_steps": 1000}, drawn, budget={"trials": 100, "steps": 900, "concurrent": 1})
    assert space.most_steps() == 300 and budget.most_planned(space) == 300
    s = _searcher(space)
    n = 0
    while (config := s.suggest(f"t{n}")) not in (None, Searcher.FINISHED):
        s.on_trial_complete(f"t{n}", _r(1.0, step=config["train.max_steps"]))
        n += 1
    assert 900 - 300 < budget.steps_used(compat.search_study(s), space)[0] <= 900
    conditional = {"model.router.type": {"choice": ["topk", "hash"]},
                   "train.max_steps": {"int": [100, 300], "when": {"model.router.type": ["hash"]}}}
    assert _space({"max_steps": 1000}, conditional).most_steps() == 1000


def test_a_step_budget_is_judged_by_the_steps_the_token_budget_leaves():
    """Trials end at step 250 (max_tokens) of max_steps 1000: a budget of 800 (three trials) was
    refused as 'less than one trial's train.max_steps (1000)'."""
    space = _space(TOKENS, budget={"trials": 3, "steps": 800})
    assert budget.most_planned(space) == 250
    from dnasweep.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        _space(TOKENS, budget={"trials": 3, "steps": 200})
    (p,) = e.value.problems
    assert p.key == "budget.steps" and "(250:" in p.message


# 1. a token budget ends trials before train.max_steps: they reserve what they will train

TOKENS = {"max_steps": 1000, "batch_size": 8, "max_tokens": 32 * 8 * 250}  # 250 steps of 8 x 32 tokens


def test_a_token_budget_spends_the_whole_step_budget():
    """Each trial trains 250 steps (max_tokens) of max_steps 1000; 3000 budget steps fit 12. A running
    trial reserved max_steps and a new one started only if 1000 more fit: 9 trials, 2250 steps."""
    space = _space(TOKENS, budget={"trials": 100, "steps": 3000, "concurrent": 1})
    s = _searcher(space)
    n = 0
    while (config := s.suggest(f"t{n}")) not in (None, Searcher.FINISHED):
        study = compat.search_study(s)
        assert budget.steps_used(study, space) == (250 * n, 250)  # the running trial reserves its 250
        s.on_trial_complete(f"t{n}", _r(1.0, step=250))
        n += 1
    assert config is Searcher.FINISHED
    assert n == 12 and budget.steps_used(compat.search_study(s), space) == (3000, 0)
    assert budget.most_planned(space) == 250 and not budget.left(compat.search_study(s), space)


def test_the_most_steps_a_point_can_draw_bounds_a_searched_step_size_by_the_token_budget():
    """The smallest batch a point can draw trains the most steps on the token budget: 4 x 32 tokens a
    step, 500 steps; a max_steps below that bounds it instead."""
    space = _space(TOKENS, {**LR, "train.batch_size": {"int": [4, 16]}})
    assert budget.most_planned(space) == 500
    assert budget.most_planned(_space({**TOKENS, "max_steps": 400}, {"train.batch_size": {"int": [4, 16]}})) == 400
    assert budget.most_planned(_space({"max_steps": 1000})) == 1000  # no token budget: max_steps
    # a point's own planned steps, as its trial trains them
    assert budget.trial_planned(space, {"train.batch_size": 16}) == 125


# 2. a resumed searcher keeps this head's journal hook and storage


MIRRORED: list[str] = []


class Store:
    """The run's SweepStore: mirror_journal copies that head's journal to the store."""

    def __init__(self, where):
        self.where = where

    def mirror_journal(self):
        MIRRORED.append(self.where)


def test_a_restored_searcher_mirrors_this_heads_journal(tmp_path):
    """Ray restores the searcher's saved state over the object the runner set up on the new head:
    `after_ask` came back as the first run's, which copied the old sweep dir's journal up."""
    import optuna

    from dnasweep.sweep.study import journal

    space = _space({"max_steps": 90, "eval_every": 10})
    a, b = tmp_path / "a" / "sw", tmp_path / "b" / "sw"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    MIRRORED.clear()
    optuna.create_study(study_name="sw", storage=journal(str(a)), directions=["minimize", "minimize"])
    first = ParetoOptunaSearch(space, storage=journal(str(a)), study_name="sw")
    first.after_ask = Store("a").mirror_journal
    first.suggest("t1")
    first.save(str(tmp_path / "ckpt.pkl"))
    shutil.copy(a / "optuna.log", b / "optuna.log")
    # a state saved with the hook in it (as Tune's was): the restore still keeps this head's
    with open(tmp_path / "old.pkl", "wb") as f:
        pickle.dump({**first.__dict__}, f)
    for ckpt in ("old.pkl", "ckpt.pkl"):
        MIRRORED.clear()
        second = ParetoOptunaSearch(space, storage=journal(str(b)), study_name="sw")  # the unpickled tuner's
        second.live_storage, second.after_ask = journal(str(b)), Store("b").mirror_journal
        second.restore(str(tmp_path / ckpt))
        second.suggest(f"t2-{ckpt}")
        assert MIRRORED == ["b"], ckpt
        assert compat.search_study(second)._storage is second.live_storage
    with open(tmp_path / "ckpt.pkl", "rb") as f:
        assert "after_ask" not in pickle.load(f)  # a head's hook is not part of the sweep's state
    assert first.after_ask is not None  # and saving leaves it in place


# 3. and 5. MO-ASHA: brackets apart, a rung judged only before the next one

MOASHA_2 = {"type": "moasha", "grace_steps": 10, "reduction_factor": 3, "brackets": 2}  # rungs [[10, 30], [30]]


class Recorder:
    def __init__(self):
        self.rungs, self.pruned = [], []

    def record_rung(self, tid, rung, bracket, values, violation):
        self.rungs.append((tid, rung, bracket))

    def prune(self, tid, rung, step=None):
        self.pruned.append((tid, rung, step))


def _sched(scheduler=MOASHA_2) -> MOASHA:
    s = make_scheduler(_space({"max_steps": 90, "eval_every": 10}, scheduler=scheduler), Recorder())
    assert isinstance(s, MOASHA)
    return s


def test_each_bracket_ranks_its_own_rungs():
    """A bracket-1 trial at its first rung (30) was ranked against bracket-0 trials that had already
    survived rung 10 there, and stopped: the first trial of its bracket at that rung."""
    s = _sched()
    assert s.ladders == [[10, 30], [30]]
    for t in "abcd":  # round-robin: a, c in bracket 0; b, d in bracket 1
        s.on_trial_add(None, type("T", (), {"trial_id": t})())
    assert s.decide("a", 10, _r(1.0)) == GO and s.decide("c", 10, _r(1.5)) == STOP
    assert s.decide("a", 30, _r(0.8)) == GO
    assert s.decide("b", 30, _r(0.9)) == GO  # alone in bracket 1's rung 30
    assert set(s.recorded[(0, 30)]) == {"a"} and set(s.recorded[(1, 30)]) == {"b"}
    assert s.decide("d", 30, _r(2.0)) == STOP  # ranked against b, its own bracket's trial
    assert s.pruned == {"c": 10, "d": 30}


def test_a_restart_rebuilds_each_brackets_rungs_from_the_study():
    import optuna

    from dnasweep.sweep.moasha import BRACKET, RUNG

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "minimize"])
    for tid, bracket in (("a", 0), ("b", 1)):
        t = study.ask()
        t.set_user_attr("ray_trial_id", tid)
        t.set_user_attr(BRACKET, bracket)
        for m, v in (("val/loss", 1.0), ("compute/flops_per_token", 1e5), ("violation", 0.0)):
            t.set_user_attr(RUNG.format(step=30, metric=m), v)
    s = _sched()
    s.recorded = {30: {"old": ((1.0, 1.0), 0.0)}}  # keyed by rung alone, as an older scheduler pickled it
    s.load(study)
    assert set(s.recorded) == {(0, 30), (1, 30)}
    assert set(s.recorded[(0, 30)]) == {"a"} and set(s.recorded[(1, 30)]) == {"b"}


def test_a_report_at_the_next_rung_is_judged_there_not_at_the_rung_below():
    """Its rung-10 report lost, a trial's step-30 report was taken for rung 10 (10 <= 30 <= 30):
    ranked with 30 steps of training against others' 10, and its next rung never saw it."""
    s = _sched()
    for t in "ace":  # bracket 0; a1, c1, e1 go to bracket 1 between them
        s.on_trial_add(None, type("T", (), {"trial_id": t})())
        s.on_trial_add(None, type("T", (), {"trial_id": t + "1"})())
    s.decide("a", 10, _r(1.0))
    s.decide("c", 10, _r(3.0))
    assert s.decide("e", 30, _r(2.9)) == GO  # rung 30's: first there in bracket 0
    assert "e" not in s.recorded[(0, 10)] and "e" in s.recorded[(0, 30)]
    assert s.searcher.rungs[-1] == ("e", 30, 0)


def test_a_trial_pruned_by_a_later_report_spent_the_steps_it_trained():
    """Judged at rung 10 by its step-20 report, it trained 20 steps: booked as 10 before."""
    s = _sched()
    for i in range(6):
        s.on_trial_add(None, type("T", (), {"trial_id": f"t{i}"})())
        s.on_trial_add(None, type("T", (), {"trial_id": f"u{i}"})())  # bracket 1
        assert s.decide(f"t{i}", 10, _r(1.0 + 0.1 * i, 100 - i)) == GO
    assert s.decide("late", 20, _r(9.0, 200)) == STOP
    assert s.searcher.pruned == [("late", 10, 20)]

    space = _space({"max_steps": 90, "eval_every": 10}, scheduler=MOASHA_2)
    searcher = _searcher(space)
    searcher.suggest("late")
    searcher.prune("late", 10, 20)
    (t,) = compat.search_study(searcher).trials
    assert t.state.name == "PRUNED" and t.user_attrs["pruned_at"] == 10 and t.user_attrs[budget.STEPS] == 20


# 4. the hypervolume history counts complete trials, and says so


def test_the_hypervolume_plot_names_what_its_x_axis_counts(tmp_path, monkeypatch):
    """One point per complete trial (trial_rows: COMPLETE, in completion order): labelled "finished
    trials", pruned and failed trials among them seemed to count."""
    from dnasweep.sweep import plots

    seen = {}
    save = plots._save

    def spy(fig, ax, path):
        seen["x"] = ax.get_xlabel()
        return save(fig, ax, path)

    monkeypatch.setattr(plots, "_save", spy)
    plots.hypervolume_png([0.1, 0.5, 0.6], str(tmp_path / "hv.png"))
    assert "complete trials" in seen["x"] and "finished" not in seen["x"]


# 6. a trial the time limit stopped is no result at full fidelity


def test_a_trial_the_time_limit_stopped_is_failed_and_kept_off_the_front():
    """The loop's last evaluation at step 40 of 90 (train.time_limit_s) was told COMPLETE and, better
    than a trial that trained all 90 steps at a glance, took the front."""
    space = _space({"max_steps": 90, "eval_every": 10, "time_limit_s": 60.0})
    s = _searcher(space)
    for t in "abc":
        s.suggest(t)
    s.on_trial_complete("a", _r(1.0, step=90))
    s.on_trial_complete("b", _r(0.5, step=40))  # stopped by the time limit at step 40
    # c: finished before a driver restart, re-reported from its saved result.json
    s.on_trial_complete("c", _r(0.4, step=30, reason="time limit 60s reached at step 30"))
    study = compat.search_study(s)
    a, b, c = study.trials
    assert a.state.name == "COMPLETE" and [t.number for t in study.best_trials] == [a.number]
    for t, step in ((b, 40), (c, 30)):
        assert t.state.name == "FAIL" and t.user_attrs["fail_status"] == "time_limit"
        assert f"train.time_limit_s (60s) at step {step} of 90 planned" in t.user_attrs["fail_reason"]
        assert t.user_attrs[budget.STEPS] == step  # what it spent
    assert "time limit 60s reached at step 30" in c.user_attrs["fail_reason"]


def test_a_token_budget_trial_that_trained_its_planned_steps_is_complete():
    """Planned steps, not max_steps, are the full fidelity: 250 of max_steps 1000 under max_tokens."""
    space = _space({**TOKENS, "time_limit_s": 600.0})
    s = _searcher(space)
    s.suggest("a")
    s.on_trial_complete("a", _r(1.0, step=250))
    (t,) = compat.search_study(s).trials
    assert t.state.name == "COMPLETE" and t.user_attrs[budget.PLANNED] == 250


def test_a_trial_asked_before_planned_steps_were_recorded_is_judged_from_its_point():
    """A sweep resumed across this change: its running trials carry max_steps only."""
    space = _space({"max_steps": 90, "eval_every": 10, "time_limit_s": 60.0})
    s = _searcher(space)
    s.suggest("a")
    s.suggest("b")
    for tid in "ab":  # (Optuna cannot remove a user attr)
        compat.search_trials(s)[tid].set_user_attr(budget.PLANNED, None)
    s.on_trial_complete("a", _r(1.0, step=90))
    s.on_trial_complete("b", _r(0.5, step=20))
    assert [t.state.name for t in compat.search_study(s).trials] == ["COMPLETE", "FAIL"]

