"""Input a review of the config pipeline found silently changed or not refused: a sweep or a model
other than the one asked for, with exit 0. Each is now a Problem on its key (exit 2) or a warning."""

from __future__ import annotations

import pytest
from helpers import VALID_SPACE, write_yaml

from dnasweep.cli import main
from dnasweep.config import build_trial
from dnasweep.errors import ConfigError
from dnasweep.space import load_space, parse_space, space_warnings

LM = "search_spaces/lm.yaml"


def _problems(data: dict, overrides=(), smoke: bool = False) -> dict:
    with pytest.raises(ConfigError) as e:
        parse_space(data, "s.yaml", list(overrides), smoke=smoke)
    return {p.key: p for p in e.value.problems}


def _trial_problems(overrides: list[str]) -> dict:
    with pytest.raises(ConfigError) as e:
        build_trial({}, overrides)
    return {p.key: p for p in e.value.problems}


# 1. `base.X=v` where every trial draws X: the sweep searched X as before, exit 0, no word

def test_a_base_override_no_trial_uses_is_refused_with_the_search_entry_that_would_fix_it():
    p = _problems(VALID_SPACE, ["base.train.lr=1e-4", "base.train.max_steps=30"])
    assert set(p) == {"base.train.lr"}, p  # max_steps is not searched: used as given
    assert "every trial draws train.lr" in p["base.train.lr"].message
    assert "search.train.lr='{choice: [1e-4]}'" in p["base.train.lr"].fix
    # the entry set to that one value is what the user meant: accepted
    space = parse_space(VALID_SPACE, "s.yaml", ["base.train.lr=1e-4", "search.train.lr={choice: [1e-4]}"])
    assert space.params[0].ends() == [1e-4]


def test_a_base_override_of_a_conditional_dimension_is_used_where_its_when_is_off():
    space = {**VALID_SPACE, "search": {"model.router.type": {"choice": ["topk", "threshold"]},
                                       "model.router.threshold": {"float": [0.1, 0.3],
                                                                  "when": {"model.router.type": ["threshold"]}}}}
    parse_space(space, "s.yaml", ["base.model.router.threshold=0.4"])  # no problem


def test_a_base_override_that_reaches_only_the_dense_rungs_is_a_warning():
    space = load_space(LM, ["base.train.lr=1e-4"], smoke=True)  # the rungs train the base's lr
    [w] = [w for w in space_warnings(space) if "train.lr" in w]
    assert "only the dense reference rungs train with 1e-4" in w and "search.train.lr='{choice: [1e-4]}'" in w
    with pytest.raises(ConfigError) as e:  # every rung sets its own d_model: reaches nothing
        load_space(LM, ["base.model.d_model=256"], smoke=True)
    assert [p.key for p in e.value.problems] == ["base.model.d_model"]


# 2. a dense model's pool / router fields: never checked, while they size it

@pytest.mark.parametrize("override", ["model.pool.mlp_ratio=-1", "model.pool.n_transformer=-10",
                                      "model.router.top_k=-4"])
def test_the_pool_and_router_fields_of_a_dense_model_are_checked(override):
    key = override.split("=")[0]
    assert key in _trial_problems(["model.kind=dense", "model.dense_layers=2", override])
    assert key in _trial_problems(["model.kind=dense", "model.dense_match=nominal", override])


def test_an_mlp_ratio_that_leaves_no_hidden_unit_is_refused():
    p = _trial_problems(["model.d_model=32", "model.pool.mlp_ratio=0.01"])
    assert "hidden width of 0" in p["model.pool.mlp_ratio"].message


# 5. expert_choice read top_k <= 0 as a capacity of 1

def test_expert_choice_refuses_a_top_k_below_one():
    p = _trial_problems(["model.task=vision", "model.router.type=expert_choice", "model.router.top_k=-5"])
    assert "model.router.top_k" in p and ">= 1" in p["model.router.top_k"].message


# 3. smoke.search.X.OPTION=v: built a one-option entry that replaced the file's whole (log, when lost)

def test_a_smoke_search_option_override_keeps_the_entry_s_other_options():
    space = load_space(LM, ["smoke.search.train.lr.float=[1e-3, 5e-3]",
                            "smoke.search.model.router.threshold.float=[0.1, 0.3]"], smoke=True)
    lr, thr = (next(q for q in space.params if q.path == k) for k in ("train.lr", "model.router.threshold"))
    assert lr.log and lr.ends() == [1e-3, 5e-3]
    assert thr.when == {"model.router.type": ["threshold"]} and thr.ends() == [0.1, 0.3]


# 6. smoke.* overrides of text fields were read as YAML ('lm run #2' cut at its comment)

def test_a_smoke_override_of_a_text_field_arrives_as_typed():
    for text in ("lm run #2", "2026"):
        space = load_space(LM, [f"smoke.tracking.experiment={text}"], smoke=True)
        assert space.tracking.experiment == text


# 4. train.device cuda with resources.gpu 0: every trial failed after the sweep started

def test_cuda_trials_that_ask_for_no_gpu_are_refused_before_the_sweep():
    p = _problems(VALID_SPACE, ["base.train.device=cuda"])
    assert "resources.gpu" in p["base.train.device"].fix
    assert "search.train.device" in _problems({**VALID_SPACE, "search": {"train.device": {"choice": ["cpu", "cuda"]}}})
    parse_space(VALID_SPACE, "s.yaml", ["base.train.device=cuda", "resources.gpu=0.5"])  # asked for: fine


# lower: '???' took the default; validate TRIAL --samples N was ignored

@pytest.mark.parametrize("override", ["out_dir=???", "train.device=???", "data.source=???"])
def test_omegaconf_s_missing_marker_is_refused_not_read_as_the_default(override):
    assert "'???'" in _trial_problems([override])[override.split("=")[0]].message


def test_validate_refuses_samples_on_a_trial_config(tmp_path, capsys):
    path = write_yaml(tmp_path, {"model": {"d_model": 32}})
    assert main(["validate", path, "--samples", "10"]) == 2
    assert "--samples:" in capsys.readouterr().err


# an int range whose inner values mostly break a rule passed (load-time checks judge its ends only)

def test_run_warns_before_the_sweep_when_sampled_points_break_a_rule(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
    from dnasweep.sweep import cluster
    from dnasweep.sweep.runner import run_sweep

    space = parse_space({**VALID_SPACE, "search": {"model.d_model": {"int": [16, 64]}}}, "s.yaml")

    def no_ray(*_a, **_k):
        raise RuntimeError("stop before Ray")

    monkeypatch.setattr(cluster, "init_ray", no_ray)
    lines: list[str] = []
    with pytest.raises(RuntimeError, match="stop before Ray"):
        run_sweep(space, "s", root=str(tmp_path), log=lines.append)
    [w] = [ln for ln in lines if "sampled points" in ln]
    assert "break a rule of the trial config" in w and "d_model" in w and "--samples 500" in w
    assert not (tmp_path / "s").exists()  # nothing started
    for path in ("search_spaces/lm.yaml", "search_spaces/vision.yaml"):  # the shipped spaces: no such point
        from dnasweep.space.sample import sampled_warnings

        assert sampled_warnings(load_space(path)) == []


@pytest.mark.parametrize("override", ["search={}", "search=null"])
def test_an_empty_search_on_the_command_line_clears_the_file_s(override):
    # `search={}` was merged into the file's search: and changed nothing: the sweep searched every
    # entry of lm.yaml while the user asked for the base alone
    assert load_space(LM, [override]).params == []
    # a mapping with entries still gives those entries again, the file's others kept (docs/bad_input.md)
    some = load_space(LM, ["search={train.lr: {choice: [1e-4]}}"])
    ends = {q.path: q.ends() for q in some.params}
    assert len(ends) == len(load_space(LM).params) and ends["train.lr"] == [1e-4]


def test_smoke_search_given_whole_replaces_the_overlay_s():
    data = {**VALID_SPACE, "smoke": {"search": {"train.lr": {"choice": [1.0e-3]}}}}
    assert parse_space(data, "s.yaml", smoke=True).params[0].ends() == [1.0e-3]  # the overlay's entry
    # cleared, the overlay searches as the file does (merged, `{}` had left the overlay's entry)
    assert parse_space(data, "s.yaml", ["smoke.search={}"], smoke=True).params[0].ends() == [1.0e-3, 1.0e-2]
