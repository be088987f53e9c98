"""Bad input that used to pass validation, crash, or report one problem per run (docs/bad_input.md):
each is now a Problem on its key, every one of a file at once, exit code 2."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from helpers import VALID_SPACE, write_yaml

from dnasweep.cli import main
from dnasweep.config import TrialConfig, build_trial, parse_overrides
from dnasweep.config.load import schema_problems
from dnasweep.data.sampler import LMSampler
from dnasweep.errors import ConfigError
from dnasweep.space import parse_space


def _refused(tmp_path, capsys, content, *keys: str, cmd: str = "validate", args=()) -> str:
    """`dnasweep CMD FILE` exits 2 without a traceback, naming every key. Returns the error text."""
    path = write_yaml(tmp_path, content)
    assert main([cmd, path, *args]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}:" in err and "Traceback" not in err, err
    for k in keys:
        assert f"  {k}: " in err, f"{k} not in\n{err}"
    return err


def _keys(space: dict, overrides=()) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_space(space, "s.yaml", list(overrides))
    return [p.key for p in e.value.problems]


# 1. range bounds must be finite numbers

@pytest.mark.parametrize("rng", ["[.nan, 1.0e-2]", "[0.0, .inf]", "[-.inf, 1.0]"])
def test_nan_or_inf_range_bounds_are_refused(tmp_path, capsys, rng):
    text = (f"base: {{model: {{d_model: 32}}}}\nsearch: {{train.lr: {{float: {rng}}}}}\n"
            "objectives: [{metric: val/loss}]\n")
    err = _refused(tmp_path, capsys, text, "search.train.lr.float")
    assert "finite" in err and "1 problem" in err


# 2. when: on an int or float range

def test_when_on_an_int_range_names_the_values_outside_it(tmp_path, capsys):
    bad = {**VALID_SPACE, "search": {"model.n_steps": {"int": [2, 4]},
                            "model.router.top_k": {"int": [1, 2], "when": {"model.n_steps": [10, "3", 3]}}}}
    err = _refused(tmp_path, capsys, bad, "search.model.router.top_k.when")
    assert "[10, '3']" in err and "[2, 4]" in err
    ok = {**VALID_SPACE, "search": {"model.n_steps": {"int": [2, 4]},
                           "model.router.top_k": {"int": [1, 2], "when": {"model.n_steps": [2, 4]}}}}
    assert parse_space(ok, "s.yaml").params[1].when == {"model.n_steps": [2, 4]}


def test_when_on_a_float_range_is_refused(tmp_path, capsys):
    conditional = {"int": [1, 2], "when": {"train.lr": [0.001]}}
    bad = {**VALID_SPACE, "search": {**VALID_SPACE["search"], "model.router.top_k": conditional}}
    err = _refused(tmp_path, capsys, bad, "search.model.router.top_k.when")
    assert "choice or int" in err


# 3. log: on a choice

def test_log_on_a_choice_is_refused(tmp_path, capsys):
    bad = {**VALID_SPACE, "search": {"model.d_model": {"choice": [32, 64], "log": True}}}
    assert "log" in _refused(tmp_path, capsys, bad, "search.model.d_model.log")
    parse_space({**VALID_SPACE, "search": {"model.d_model": {"choice": [32, 64], "log": False}}}, "s.yaml")  # harmless


# 4. / 5. train.seed, train.beta1, train.beta2 bounds

@pytest.mark.parametrize("key,value", [("seed", -1), ("beta1", -0.1), ("beta1", 1.0), ("beta2", 1.5)])
def test_train_seed_and_betas_are_bounded(tmp_path, capsys, key, value):
    err = _refused(tmp_path, capsys, {"train": {key: value}}, f"train.{key}")
    assert f"got {value}" in err
    assert main(["validate", write_yaml(tmp_path, {"train": {"beta1": 0.0, "beta2": 0.999, "seed": 0}})]) == 0


def test_the_sampler_names_the_seed_it_was_given():
    with pytest.raises(ConfigError) as e:
        LMSampler(np.arange(100), 2, 4, seed=-1)
    (p,) = e.value.problems
    assert p.key == "train.seed" and "-1" in p.message


# 6. every problem of a trial file at once

def test_schema_and_rule_problems_are_reported_together(tmp_path, capsys):
    bad = {"train": {"lr": "fast", "warmup_steps": -3}, "data": {"seed": -1, "val_fraction": 1.5}}
    err = _refused(tmp_path, capsys, bad, "train.lr", "train.warmup_steps", "data.seed", "data.val_fraction")
    assert "4 problems" in err


def test_a_dropped_key_leaves_no_problem_about_its_default():
    # n_heads 'x' falls back to 4 for the other rules: 30 % 4 must not be blamed on the user
    with pytest.raises(ConfigError) as e:
        build_trial({"model": {"d_model": 30, "n_heads": "x"}})
    assert [p.key for p in e.value.problems] == ["model.n_heads"]


# 7. base: not a mapping

@pytest.mark.parametrize("base", ["[1, 2]", "5", "[]", "0"])
@pytest.mark.parametrize("cmd", ["train", "validate"])
def test_a_base_that_is_not_a_mapping(tmp_path, capsys, base, cmd):
    # train: one step into tmp_path, should it train at all (`base: []` used to train the defaults)
    args = ("train.max_steps=1", "--out", str(tmp_path / "out"), "--quiet") if cmd == "train" else ()
    err = _refused(tmp_path, capsys, f"base: {base}\n", "base", cmd=cmd, args=args)
    assert "mapping" in err


def test_an_empty_base_means_the_defaults(tmp_path):
    from dnasweep.config import load_trial

    (tmp_path / "s.yaml").write_text("base:\nsearch: {}\n")
    assert load_trial(str(tmp_path / "s.yaml")).model.d_model > 0


# 8. falsy wrong-typed sweep sections; reference lists of another type

@pytest.mark.parametrize("section,value", [("budget", []), ("sampler", 0), ("resources", ""), ("reference", False)])
def test_a_falsy_section_of_the_wrong_type_is_refused(tmp_path, capsys, section, value):
    err = _refused(tmp_path, capsys, {**VALID_SPACE, section: value}, section)
    assert "expected a mapping" in err and "1 problem" in err


@pytest.mark.parametrize("widths", [[64, True], [64, "128"]])
def test_reference_widths_of_another_type_are_one_problem(widths):
    assert _keys({**VALID_SPACE, "reference": {"d_model": widths, "dense_layers": [1]}}) == ["reference.d_model"]


# 9. the fix of a wrong-shaped section is YAML; overrides of text fields arrive as typed

def test_the_example_of_a_wrong_shaped_section_is_valid_yaml():
    (p,) = schema_problems({"model": 5}, TrialConfig, "")
    example = yaml.safe_load(p.fix.removeprefix("e.g. "))
    assert example["model"]["pool"]["n_transformer"] == 4 and example["model"]["router"]["type"] == "topk"


def test_overrides_of_text_fields_arrive_as_typed():
    over, bad = parse_overrides(["data.path=a: b", "out_dir=runs/lm #2", "train.lr=1e-3", "train.compile=true",
                                 "data.name=null", 'model.router.type="topk"', "data.source=5000"], TrialConfig)
    assert not bad
    assert over == {"data": {"path": "a: b", "name": None, "source": "5000"}, "out_dir": "runs/lm #2",
                    "train": {"lr": 1e-3, "compile": True}, "model": {"router": {"type": "topk"}}}
    assert build_trial({}, ["out_dir=runs/lm #2"]).out_dir == "runs/lm #2"
    space = parse_space(VALID_SPACE, "s.yaml", ["tracking.experiment=lm #2", "base.out_dir=x #1", "budget.trials=3"])
    assert (space.tracking.experiment, space.base.out_dir, space.budget.trials) == ("lm #2", "x #1", 3)


# 10. model vs data, where the source's shape is known without loading it

@pytest.mark.parametrize("model,data,key", [
    ({"task": "lm", "vocab_size": 100}, {"source": "pystdlib"}, "model.vocab_size"),  # bytes need 256
    ({"task": "lm", "vocab_size": 500}, {"source": "tokens", "vocab_size": 1000}, "model.vocab_size"),
    ({"task": "vision", "channels": 3}, {"source": "digits"}, "model.image_size"),  # digits: 1x8x8
    ({"task": "vision", "image_size": 16, "patch_size": 4}, {"source": "digits"}, "model.image_size"),
    ({"task": "vision", "n_classes": 5}, {"source": "digits"}, "model.n_classes"),  # 10 digits
])
def test_a_model_that_cannot_take_the_data_is_refused_before_training(tmp_path, model, data, key):
    """These validated and failed only at run time ('config vs data'): in a sweep, every trial and
    every rung failed `invalid` one by one."""
    from dnasweep.config import build_trial

    if data["source"] == "tokens":
        import numpy as np

        np.save(tmp_path / "ids.npy", np.arange(900, dtype=np.uint16))
        data = {**data, "path": str(tmp_path / "ids.npy")}
    with pytest.raises(ConfigError) as e:
        build_trial({"model": {"d_model": 32, "n_heads": 4, **model}, "data": data})
    assert key in [p.key for p in e.value.problems], e.value.problems


def test_a_model_that_cannot_take_loaded_data_is_refused_before_training(tmp_path):
    """Where only loading tells the shape (an npz), the training loop checks the same rules."""
    import numpy as np

    from dnasweep.config import build_trial
    from dnasweep.train.loop import run_trial

    np.savez(tmp_path / "rgb.npz", images=np.zeros((40, 8, 8, 3), np.uint8), labels=np.arange(40) % 4)  # N H W C
    cfg = build_trial({"model": {"task": "vision", "d_model": 32, "n_heads": 4},
                       "data": {"source": "npz", "path": str(tmp_path / "rgb.npz")},
                       "out_dir": str(tmp_path / "out")})
    with pytest.raises(ConfigError) as e:
        run_trial(cfg)
    assert e.value.source == "config vs data" and [p.key for p in e.value.problems] == ["model.image_size"]
    assert "3x8x8" in e.value.problems[0].message and not (tmp_path / "out" / "checkpoint").exists()
