"""Search-space files: parsing, one test per validation rule, conditional activity, Pareto helpers."""

import numpy as np
import pytest

from dnasweep.errors import ConfigError
from dnasweep.space import corners, load_space, parse_space
from dnasweep.sweep.pareto import hypervolume_2d, pareto_mask

OK = {"base": {"model": {"d_model": 32}}, "objectives": [{"metric": "val/loss", "mode": "min"}]}
LR = {"search": {"train.lr": {"float": [1e-3, 1e-2]}}}  # a dimension: a space without one warns of that


def _problems(**sections):
    with pytest.raises(ConfigError) as e:
        parse_space({**OK, **sections}, "space.yaml")
    return {p.key: p for p in e.value.problems}


def test_valid_space_parses_with_defaults():
    s = parse_space({**OK, "search": {"train.lr": {"float": [1e-4, 1e-2], "log": True},
                                      "model.router.type": {"choice": ["topk", "hash"]},
                                      "model.router.top_k": {"int": [1, 3], "when": {"model.router.type": "topk"}}}},
                    "space.yaml")
    assert [p.path for p in s.params] == ["train.lr", "model.router.type", "model.router.top_k"]
    assert s.params[0].log and s.sampler.type == "tpe" and s.budget.trials == 8 and s.budget.concurrent == 2
    top_k = s.params[2]
    assert top_k.active({"model.router.type": "topk"}) and not top_k.active({"model.router.type": "hash"})
    cfg = s.apply({"train.lr": 1e-3, "model.router.type": "hash"}, "/tmp/x")
    assert cfg.train.lr == 1e-3 and cfg.model.router.type == "hash" and cfg.model.d_model == 32


@pytest.mark.parametrize("search,key,text", [
    ({"model.d_modle": {"int": [1, 2]}}, "search.model.d_modle", "did you mean model.d_model"),
    ({"model.d_model": {"choice": [32, "big"]}}, "search.model.d_model.choice", "'big'"),
    ({"model.n_steps": {"int": [4, 2]}}, "search.model.n_steps.int", "inverted"),
    ({"model.n_steps": {"int": [3, 3]}}, "search.model.n_steps.int", "empty"),
    ({"train.lr": {"float": [0, 1e-2], "log": True}}, "search.train.lr.log", "low > 0"),
    ({"loss.compute_weight": {"int": [0, 1]}}, "search.loss.compute_weight", "int range on a float"),
    ({"model.n_steps": {"float": [1.0, 2.0]}}, "search.model.n_steps", "float range on a int"),
    ({"model.n_steps": {"range": [1, 2]}}, "search.model.n_steps", "exactly one of"),
    ({"model.n_steps": {"int": [1, 2], "when": {"model.router.type": ["topk"]}}}, "search.model.n_steps.when",
     "not a searched parameter"),
])
def test_search_rules(search, key, text):
    probs = _problems(search=search)
    assert key in probs and text in probs[key].message + probs[key].fix


def test_condition_values_must_be_choices():
    probs = _problems(search={"model.router.type": {"choice": ["topk"]},
                              "model.router.top_k": {"int": [1, 2], "when": {"model.router.type": ["hash"]}}})
    assert "not among" in probs["search.model.router.top_k.when"].message


@pytest.mark.parametrize("sections,key", [
    ({"objectives": []}, "objectives"),
    ({"objectives": [{"metric": "val/los"}]}, "objectives[0].metric"),
    ({"objectives": [{"metric": "val/loss", "mode": "down"}]}, "objectives[0].mode"),
    ({"constraints": ["params/total < 1"]}, "constraints[0]"),
    ({"constraints": ["param/total <= 1"]}, "constraints[0]"),
    ({"sampler": {"type": "cmaes"}}, "sampler.type"),
    ({"budget": {"trials": 0}}, "budget.trials"),
    ({"resources": {"gpu": -1}}, "resources.gpu"),
    ({"serch": {}}, "serch"),
    ({"base": {"model": {"d_model": 30}}}, "base.model.d_model"),
])
def test_section_rules(sections, key):
    assert key in _problems(**sections)


def test_every_problem_reported_at_once():
    probs = _problems(objectives=[{"metric": "nope"}], sampler={"type": "x"}, budget={"trials": -1})
    assert len(probs) >= 3


def test_smoke_overlay_and_overrides(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("base: {train: {max_steps: 100}}\nobjectives: [{metric: val/loss}]\n"
                 "budget: {trials: 20}\nsmoke: {base: {train: {max_steps: 5}}, budget: {trials: 2}}\n")
    assert load_space(str(f)).budget.trials == 20
    s = load_space(str(f), ["budget.concurrent=1"], smoke=True)
    assert s.budget.trials == 2 and s.budget.concurrent == 1 and s.base.train.max_steps == 5


def test_corners_cover_every_choice_and_range_end():
    s = parse_space({**OK, "search": {"model.d_model": {"choice": [32, 64]}, "model.n_steps": {"int": [1, 4]}}}, "x")
    pts = corners(s.params)
    assert len(pts) == 4 and {(p["model.d_model"], p["model.n_steps"]) for p in pts} == {(32, 1), (32, 4), (64, 1),
                                                                                          (64, 4)}


def test_pareto_mask_hand_computed():
    pts = np.array([[1, 5], [2, 3], [3, 4], [4, 1], [2, 3]])
    assert pareto_mask(pts, ["min", "min"]).tolist() == [True, True, False, True, True]
    # maximising the second objective flips who dominates
    assert pareto_mask(pts, ["min", "max"]).tolist() == [True, False, False, False, False]


def test_hypervolume_2d_hand_computed():
    # points (1,3), (2,2), (3,1) under reference (4,4): 3 + 2 + 1 = 6
    assert hypervolume_2d([[1, 3], [2, 2], [3, 1], [3, 3]], ["min", "min"], [4, 4]) == pytest.approx(6.0)
    # accuracy maximised: (acc 0.9, flops 2) and (acc 0.8, flops 1), reference (acc 0, flops 3)
    assert hypervolume_2d([[0.9, 2], [0.8, 1]], ["max", "min"], [0.0, 3]) == pytest.approx(0.9 * 1 + 0.8 * 1)


def test_cli_run_with_bad_space_exits_2_and_creates_nothing(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "dnasweep.cli", "run", "search_spaces/lm.yaml", "--smoke",
                        "--root", str(tmp_path), "budget.trials=0", "sampler.type=cmaes"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "budget.trials" in r.stderr and "sampler.type" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_gp_sampler_with_a_long_budget_warns():
    from dnasweep.space import space_warnings

    assert space_warnings(parse_space({**OK, **LR, "sampler": {"type": "gp"}, "budget": {"trials": 500}}, "s.yaml"))
    assert not space_warnings(parse_space({**OK, **LR, "sampler": {"type": "gp"}, "budget": {"trials": 50}}, "s.yaml"))
    assert not space_warnings(parse_space({**OK, **LR, "budget": {"trials": 500}}, "s.yaml"))


def test_a_gain_as_objective_or_constraint_warns_that_it_may_be_a_bound():
    """The searcher ranks a trial by its gain's value even when the gain is only a bound ('> 0.7'):
    validate said nothing about it."""
    from dnasweep.space import space_warnings

    ref = {"reference": {"d_model": [32], "dense_layers": [1]}}
    gain = [{"metric": "val/loss", "mode": "min"}, {"metric": "compare/compute_gain", "mode": "max"}]
    (w,) = space_warnings(parse_space({**OK, **LR, **ref, "objectives": gain}, "s.yaml"))
    assert w.startswith("objective compare/compute_gain: ") and "bound" in w and "reference:" in w
    (w,) = space_warnings(parse_space({**OK, **LR, **ref, "constraints": ["compare/compute_gain >= 1"]}, "s.yaml"))
    assert w.startswith("constraint compare/compute_gain >= 1: ")
    assert not space_warnings(parse_space({**OK, **LR, **ref, "constraints": ["params/total <= 1e6"]}, "s.yaml"))


def test_analyze_section_rules():
    p = _problems(analyze={"front": "yes", "exemples": 3})
    assert "analyze.front" in p and "analyze.exemples" in p and "examples" in p["analyze.exemples"].fix
    analyze = parse_space({**OK, "analyze": {"front": False, "examples": 8}}, "s.yaml").analyze
    assert analyze.front is False and analyze.examples == 8


def test_budget_retries_rules():
    assert parse_space({**OK}, "s.yaml").budget.retries == 2
    assert parse_space({**OK, "budget": {"retries": 0}}, "s.yaml").budget.retries == 0
    p = _problems(budget={"retries": -1, "trails": 3})
    assert "budget.retries" in p and "budget.trails" in p and "trials" in p["budget.trails"].fix


def test_tracking_uri_rules():
    assert parse_space({**OK}, "s.yaml").tracking.uri is None
    s = parse_space({**OK, "tracking": {"experiment": "lm", "uri": "http://mlflow-host:5000"}}, "s.yaml")
    assert s.tracking.uri == "http://mlflow-host:5000" and s.tracking.experiment == "lm"
    over = parse_space({**OK}, "s.yaml", ["tracking.uri=sqlite:///x/mlflow.db"])
    assert over.tracking.uri == "sqlite:///x/mlflow.db"
    p = _problems(tracking={"uri": 5000, "urii": "x"})
    assert "tracking.uri" in p and "5000" in p["tracking.uri"].message and "uri" in p["tracking.urii"].fix


def test_space_json_round_trip_and_old_format(tmp_path):
    import json

    from dnasweep.sweep.study import read_space

    s = parse_space({**OK, "search": {"model.router.type": {"choice": ["topk", "hash"]}},
                     "budget": {"trials": 3}, "resources": {"custom": {"a100": 1}}}, "s.yaml")
    (tmp_path / "space.json").write_text(json.dumps(s.to_dict()))
    back = read_space(str(tmp_path))
    assert back.config == s.config and back.params == s.params and back.source == "s.yaml"
    (tmp_path / "space.json").write_text(json.dumps({"source": "s.yaml", "trials": 3}))  # before the typed config
    with pytest.raises(ConfigError, match="older dnasweep"):
        read_space(str(tmp_path))


def test_tracking_uri_with_a_password_is_refused():
    with pytest.raises(ConfigError) as e:
        parse_space({**OK, "tracking": {"uri": "http://me:hunter2@mlflow:5000"}}, "s.yaml")
    assert "tracking.uri" in str(e.value) and "MLFLOW_TRACKING_PASSWORD" in str(e.value)
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize("bound", ["1e", "2e7.5", ".", "+-1"])
def test_a_constraint_bound_that_is_not_a_number_is_a_problem(bound):
    """The pattern let these through to float(), which raised a traceback (rc 1) instead of a problem."""
    p = _problems(constraints=[f"params/total <= {bound}"])["constraints[0]"]
    assert "cannot parse" in p.message and "number" in p.fix


REF = {"d_model": [16, 32], "dense_layers": [1, 2]}


@pytest.mark.parametrize("path,spec", [
    ("train.max_steps", {"choice": [50, 400]}),
    ("train.batch_size", {"choice": [8, 16]}),
    ("model.seq_len", {"choice": [16, 32]}),
    # precision moves val/loss and tokens/s, compilation tokens/s: a bf16 or compiled DNA was set
    # against fp32 eager rungs, exit 0
    ("train.precision", {"choice": ["fp32", "bf16"]}),
    ("train.compile", {"choice": [False, True]}),
])
def test_searching_what_the_dense_rungs_are_trained_on_is_refused_with_a_reference(path, spec):
    """compare/* gains set each trial against the reference ladder, whose rungs train with the base's
    data, budget and context: a searched budget or context compared trials with dense models
    trained otherwise, silently."""
    p = _problems(search={path: spec}, reference=REF)[f"search.{path}"]
    assert "reference" in p.message and "base" in p.fix
    parse_space({**OK, "search": {path: spec}}, "space.yaml")  # without a ladder, searching them is fine


@pytest.mark.parametrize("path,spec", [("data.max_bytes", {"choice": [100000, 200000]}),
                                       ("data.seed", {"int": [0, 3]}), ("data.val_fraction", {"float": [0.1, 0.2]})])
def test_searching_the_data_is_refused(path, spec):
    """Each trial would be scored on other validation data: their val/* objectives could not be
    compared (a front mixing them is meaningless)."""
    p = _problems(search={path: spec})[f"search.{path}"]
    assert "validation" in p.message


def test_searching_the_validation_windows_is_refused_but_eval_batches_may_vary():
    """A searched train.eval_windows scored each trial on other held-out text; a searched
    eval_batches keeps the base's windows (SearchSpace.apply pins them)."""
    p = _problems(search={"train.eval_windows": {"choice": [8, 32]}})["search.train.eval_windows"]
    assert "held-out" in p.message
    space = parse_space({**OK, "search": {"train.eval_batches": {"choice": [2, 4]}}}, "space.yaml")
    windows = {space.apply({"train.eval_batches": n}, "/tmp/x").train.eval_windows for n in (2, 4)}
    assert len(windows) == 1


def test_a_record_field_the_source_does_not_read_may_be_searched():
    """data.field picks an hf column: with the default source it changes nothing (the config
    pipeline's tests search it as a free text field)."""
    parse_space({**OK, "search": {"data.field": {"choice": ["a", "b"]}}}, "space.yaml")


def test_a_constraint_that_holds_inside_a_range_with_an_invalid_end_is_satisfiable():
    """Only range ends were tried: d_model 30 (not divisible by 4 heads) was skipped, and the space
    was refused as if its smallest model were d_model 256 (5.6 M parameters). d_model 32 holds."""
    parse_space({"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2}},
                 "search": {"model.d_model": {"int": [30, 256]}},
                 "objectives": [{"metric": "val/loss", "mode": "min"}],
                 "constraints": ["params/total <= 2e5"]}, "x.yaml")
    p = _problems(search={"model.d_model": {"int": [30, 256]}}, constraints=["params/total <= 1e3"])
    assert "d_model=32" in p["constraints[0]"].message  # the smallest valid model, named


@pytest.mark.parametrize("metric", ["train/loss", "train/aux_loss", "router/train_identity_fraction",
                                    "router/dropped_fraction"])
def test_a_metric_of_training_rows_only_cannot_be_an_objective_or_constraint(metric):
    """The searcher and MO-ASHA see evaluation reports, which never carry these: as an objective
    every trial failed ('no finite objectives'), as a constraint every trial was infeasible."""
    assert "objectives[0].metric" in _problems(objectives=[{"metric": metric, "mode": "min"}])
    p = _problems(constraints=[f"{metric} <= 0.9"])["constraints[0]"]
    assert "training" in p.message


def test_mfu_needs_a_base_that_may_run_on_cuda():
    p = _problems(base={"model": {"d_model": 32}, "train": {"device": "cpu"}},
                  constraints=["perf/mfu >= 0.1"])["constraints[0]"]
    assert "CUDA" in p.message
    for device in ("cuda", "auto"):  # auto: CUDA where the workers have it (cuda: trials that ask for a GPU)
        parse_space({**OK, "base": {"model": {"d_model": 32}, "train": {"device": device}},
                     "constraints": ["perf/mfu >= 0.1"], "resources": {"gpu": 1}}, "space.yaml")


def test_a_sweeps_own_space_reads_back_under_rules_added_after_it_started():
    """space.json of a sweep started before a design rule existed (here: a searched budget with a
    reference ladder, a condition on a float range, log on a choice) must still read back, or the
    sweep can be neither resumed nor analysed."""
    from dnasweep.space import space_from_dict

    s = parse_space({**OK, "search": {"train.lr": {"float": [1e-3, 1e-2]},
                                      "model.n_steps": {"choice": [2, 3]}}}, "space.yaml").to_dict()
    s["config"]["search"] = {"train.lr": {"float": [1e-3, 1e-2]}, "train.max_steps": {"choice": [50, 100]},
                             "model.n_steps": {"choice": [2, 3], "log": True},
                             "model.router.top_k": {"int": [1, 2], "when": {"train.lr": [0.001]}}}
    s["config"]["reference"] = {"d_model": [16, 32], "dense_layers": [1]}
    assert [p.path for p in space_from_dict(s).params] == ["train.lr", "train.max_steps", "model.n_steps",
                                                           "model.router.top_k"]


def test_search_values_outside_a_fields_bounds_are_refused_before_any_trial():
    """validate passed (rc 0) a space whose choices or range ends break the field's own rule: each
    trial that drew them failed at run time (only --samples, by chance, found them)."""
    probs = _problems(search={"train.lr": {"choice": [1e-3, -1.0]}, "model.n_steps": {"int": [-3, 4]},
                              "train.beta2": {"float": [0.9, 1.5]},
                              "train.weight_decay": {"choice": [0.1, float("nan")]},
                              "train.beta1": {"choice": [0.8, 0.9, 0.8]}})
    assert "choice -1.0: train.lr must be > 0" in probs["search.train.lr.choice"].message
    assert "bound -3: model.n_steps must be >= 0" in probs["search.model.n_steps.int"].message
    assert "bound 1.5: train.beta2 must be >= 0 and < 1" in probs["search.train.beta2.float"].message
    assert "finite" in probs["search.train.weight_decay.choice"].message
    assert "listed twice" in probs["search.train.beta1.choice"].message


@pytest.mark.parametrize("key", ["train.lr", "model.init_std", "loss.compute_weight", "train.weight_decay"])
def test_an_infinite_value_is_refused_like_nan(key):
    """.inf passed '> 0' (NaN was refused): the trial then diverged at its first step."""
    from dnasweep.config import build_trial

    with pytest.raises(ConfigError) as e:
        build_trial({}, [f"{key}=.inf"])
    (p,) = e.value.problems
    assert p.key == key and "finite" in p.message


def test_a_tracking_uri_in_the_file_with_no_mlflow_store_is_refused():
    """--tracking-uri bogus://x is refused; the same URI as tracking.uri in the file ran a whole
    sweep that recorded nothing (the tracker only reports failed writes)."""
    probs = _problems(tracking={"uri": "bogus://x"})
    assert "no store for the scheme bogus:" in probs["tracking.uri"].message
    for ok in ("sqlite:///m.db", "http://h:5000", "postgresql+psycopg2://h/db", "runs/mlruns"):
        parse_space({**OK, "tracking": {"uri": ok}}, "s.yaml")
