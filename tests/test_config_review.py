"""Bad input a config review found passing validation, crashing, or silently changed (docs/bad_input.md):
each is now a Problem on its key, exit code 2, no traceback."""

from __future__ import annotations

import copy

import pytest
from helpers import VALID_SPACE, write_yaml

from dnasweep.cli import main
from dnasweep.config import read_yaml, to_yaml
from dnasweep.errors import ConfigError
from dnasweep.space import active_values, load_space, parse_space

VISION = "search_spaces/vision.yaml"


def _refused(capsys, argv: list[str], *keys: str) -> str:
    """`dnasweep ARGV` exits 2 with no traceback, naming every key. Returns the error text."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "Traceback" not in err, err
    for k in keys:
        assert f"  {k}: " in err, f"{k} not in\n{err}"
    return err


def _problems(data: dict, overrides=(), smoke: bool = False) -> dict:
    with pytest.raises(ConfigError) as e:
        parse_space(data, "s.yaml", list(overrides), smoke=smoke)
    return {p.key: p for p in e.value.problems}


# 1. resources.custom: a mapping of names to numbers, checked like a list field

@pytest.mark.parametrize("override", ["resources.custom=[a100]", "resources.custom={a100: [1]}",
                                      'resources.custom={a100: "1"}', "resources.custom={a100: true}",
                                      "resources.custom=5"])
def test_custom_resources_of_the_wrong_shape_are_a_problem(tmp_path, capsys, override):
    err = _refused(capsys, ["validate", write_yaml(tmp_path, VALID_SPACE), override], "resources.custom")
    assert "1 problem" in err and ("dict[str, float]" in err or "expected a mapping" in err)


def test_custom_resources_keep_their_amounts():
    assert parse_space({**VALID_SPACE, "resources": {"custom": {"a100": 1}}}, "s.yaml").resources.custom == {
        "a100": 1.0}


# 2. ${...}: refused, never resolved

@pytest.mark.parametrize("out_dir", ["runs/${nope}", "runs/lr${train.lr}"])
def test_interpolation_in_a_trial_file_is_refused(tmp_path, capsys, out_dir):
    path = write_yaml(tmp_path, {"model": {"d_model": 16, "n_heads": 2}, "out_dir": out_dir})
    err = _refused(capsys, ["validate", path], "out_dir")
    assert "interpolation" in err and repr(out_dir) in err


def test_interpolation_anywhere_in_a_space_is_refused(tmp_path, capsys):
    bad = {**VALID_SPACE, "base": {"model": {"d_model": 32}, "out_dir": "runs/${x}"},
           "search": {"data.name": {"choice": ["a${b}"]}}, "objectives": [{"metric": "${m}"}],
           "constraints": ["${c} <= 1"], "tracking": {"experiment": "e${x}"}}
    err = _refused(capsys, ["validate", write_yaml(tmp_path, bad)], "base.out_dir", "search.data.name.choice[0]",
                   "objectives[0].metric", "constraints[0]", "tracking.experiment")
    assert "5 problems" in err


def test_interpolation_in_an_override_or_out_is_refused(tmp_path, capsys):
    path = write_yaml(tmp_path, {"model": {"d_model": 16, "n_heads": 2}, "train": {"max_steps": 1}})
    err = _refused(capsys, ["validate", path, "train.lr=${x}"], "train.lr")
    assert "set on the command line: train.lr=${x}" in err
    out = str(tmp_path / "runs" / "${nope}")
    _refused(capsys, ["train", path, "--out", out, "--quiet"], "out_dir")
    assert not (tmp_path / "runs").exists()


# 3. model.init_std > 0

@pytest.mark.parametrize("std", [-1, 0])
def test_init_std_must_be_positive(tmp_path, capsys, std):
    path = write_yaml(tmp_path, {"model": {"d_model": 16, "n_heads": 2, "init_std": std}})
    assert f"got {float(std)}" in _refused(capsys, ["validate", path], "model.init_std")


# 4. sampler.seed within numpy's (Optuna's) range

def test_sampler_seed_fits_every_optuna_sampler(tmp_path, capsys):
    path = write_yaml(tmp_path, VALID_SPACE)
    err = _refused(capsys, ["validate", path, f"sampler.seed={2**32}"], "sampler.seed")
    assert "4294967295" in err
    assert parse_space({**VALID_SPACE, "sampler": {"seed": 2**32 - 1}}, "s.yaml").sampler.seed == 2**32 - 1


# 5. train.device: auto, cpu, cuda or cuda:N

@pytest.mark.parametrize("device,ok", [("cuda:abc", False), ("cuda:", False), ("cuda:-1", False), ("gpu", False),
                                       ("cuda:0", True), ("cuda:12", True), ("cuda", True), ("cpu", True)])
def test_train_device_names(tmp_path, capsys, device, ok):
    path = write_yaml(tmp_path, {"model": {"d_model": 16, "n_heads": 2}, "train": {"device": device}})
    if ok:
        assert main(["validate", path]) == 0
    else:
        assert "cuda:N" in _refused(capsys, ["validate", path], "train.device")


# 6. the smoke: overlay: overrides reach it, it is checked without --smoke, its problems say smoke.

SMOKY = {**VALID_SPACE, "budget": {"trials": 20},
         "smoke": {"base": {"train": {"max_steps": 5}}, "budget": {"trials": 8, "concurrent": 1}}}


def test_overrides_of_the_smoke_overlay_apply(tmp_path):
    path = write_yaml(tmp_path, SMOKY)
    assert load_space(path, ["smoke.budget.trials=3"], smoke=True).budget.trials == 3
    assert load_space(path, ["smoke.budget.trials=3", "budget.trials=5"], smoke=True).budget.trials == 5
    assert load_space(path, ["smoke.budget.trials=3"]).budget.trials == 20


def test_a_smoke_overlay_that_is_not_a_mapping_given_as_override(tmp_path, capsys):
    _refused(capsys, ["validate", write_yaml(tmp_path, SMOKY), "smoke=5"], "smoke")


@pytest.mark.parametrize("smoke", [False, True])
def test_a_typo_in_the_smoke_overlay_is_found_with_and_without_smoke(tmp_path, capsys, smoke):
    bad = {**SMOKY, "smoke": {"budgett": {"trials": 2}, "budget": {"trials": 0}, "base": {"train": {"lr": -1}}}}
    err = _refused(capsys, ["validate", write_yaml(tmp_path, bad), *(["--smoke"] if smoke else [])],
                   "smoke.budgett", "smoke.budget.trials", "smoke.base.train.lr")
    assert "did you mean smoke.budget?" in err and "3 problems" in err


# 7. search entries: dotted paths; an entry replaced whole

def test_a_nested_search_section_says_to_write_dotted_paths(tmp_path, capsys):
    nested = {**VALID_SPACE, "search": {"model": {"d_model": {"choice": [32, 64]}}}}
    err = _refused(capsys, ["validate", write_yaml(tmp_path, nested)], "search.model")
    assert "write dotted paths, e.g. search: {model.d_model:" in err and "model.task" not in err


def test_search_overrides_name_a_whole_entry_or_one_option(tmp_path):
    space = {**VALID_SPACE, "search": {"model.router.type": {"choice": ["topk", "threshold"]},
                                       "model.router.threshold": {"float": [0.05, 0.5],
                                                                  "when": {"model.router.type": ["threshold"]}},
                                       "model.n_steps": {"int": [2, 4]}}}
    path = write_yaml(tmp_path, space)
    s = load_space(path, ["search.model.d_model={choice: [32, 64]}", "search={model.n_steps: {choice: [2, 3]}}",
                          "search.model.router.threshold.float=[0.1, 0.3]"])
    q = {p.path: p for p in s.params}
    assert q["model.d_model"].choices == [32, 64] and q["model.n_steps"].kind == "choice"
    assert q["model.n_steps"].choices == [2, 3] and q["model.n_steps"].low is None
    # one option changed: the entry keeps its when:
    assert (q["model.router.threshold"].low, q["model.router.threshold"].when) == (0.1, {"model.router.type":
                                                                                        ["threshold"]})
    # a whole entry given again (here by the smoke: overlay) replaces the old one, when: included
    smoky = {**space, "smoke": {"search": {"model.router.threshold": {"float": [0.1, 0.2]}}}}
    t = parse_space(smoky, "s.yaml", smoke=True)
    assert {p.path: p for p in t.params}["model.router.threshold"].when == {}


# 8. when: rules

def test_when_with_no_values_is_refused():
    space = {**VALID_SPACE, "search": {"model.router.type": {"choice": ["topk", "threshold"]},
                                       "model.router.threshold": {"float": [0.05, 0.5],
                                                                  "when": {"model.router.type": []}}}}
    assert "lists no values" in _problems(space)["search.model.router.threshold.when"].message


def test_a_nested_when_says_to_write_dotted_paths():
    space = {**VALID_SPACE, "search": {"model.router.type": {"choice": ["topk", "threshold"]},
                                       "model.router.threshold": {"float": [0.05, 0.5], "when": {
                                           "model": {"router": {"type": ["threshold"]}}}}}}
    p = _problems(space)["search.model.router.threshold.when"]
    assert "write dotted paths, e.g. when: {model.router.type:" in p.fix and "model.task" not in p.fix


def test_a_condition_on_a_parameter_not_drawn_does_not_hold():
    # max_tokens is drawn only for topk; warmup only where max_tokens was drawn as null
    space = parse_space({**VALID_SPACE, "search": {
        "model.router.type": {"choice": ["topk", "hash"]},
        "train.max_tokens": {"choice": [None, 100000], "when": {"model.router.type": ["topk"]}},
        "train.warmup_steps": {"int": [1, 5], "when": {"train.max_tokens": [None]}}}}, "s.yaml")
    warmup = space.params[2]
    assert warmup.active({"model.router.type": "topk", "train.max_tokens": None})
    assert not warmup.active({"model.router.type": "hash"})
    assert active_values(space.params, {"model.router.type": "hash", "train.warmup_steps": 3}) == {
        "model.router.type": "hash"}


# 9. a constraint met between a range's ends

def test_a_constraint_met_only_inside_an_int_range_is_satisfiable():
    from dnasweep.model import nominal

    data = read_yaml(VISION)
    data["search"] = {"model.patch_size": {"int": [1, 8]}}
    data.pop("reference", None)  # (a reference ladder would refuse a searched patch_size)
    base = parse_space({**data, "constraints": []}, VISION)
    counts = {}
    for p in range(1, 9):
        if (cfg := base.apply({"model.patch_size": p}, "/tmp/unused") if 8 % p == 0 else None) is not None:
            counts[p] = nominal(cfg.model).params_total
    best = min(counts, key=counts.get)
    assert best not in (1, 8)  # the count is not monotone in patch_size: the ends are not the extremes
    parse_space({**data, "constraints": [f"params/total <= {counts[best]}"]}, VISION)  # satisfiable
    p = _problems({**data, "constraints": [f"params/total <= {counts[best] - 1}"]})["constraints[0]"]
    assert f"{counts[best]:,}" in p.message and f"model.patch_size={best}" in p.message


# 10a. a YAML boolean where text was meant: the fix names the word that was written

def test_a_bare_off_choice_is_told_to_quote_off():
    fix = _problems({**VALID_SPACE, "search": {"model.router.type": {"choice": ["topk", False]}}})[
        "search.model.router.type.choice"].fix
    assert "'off'" in fix and "quote" in fix


# 10b. validate --samples N: N >= 1

@pytest.mark.parametrize("n", ["-3", "0"])
def test_validate_samples_must_be_positive(tmp_path, capsys, n):
    err = _refused(capsys, ["validate", write_yaml(tmp_path, VALID_SPACE), "--samples", n], "--samples")
    assert f"must be >= 1, got {n}" in err


# 10c. train.log_every and train.checkpoint_every may change on resume; train.device may not

def test_logging_and_checkpoint_cadence_may_change_on_resume(tmp_path):
    from dnasweep.config import build_trial
    from dnasweep.train.checkpoint import check_resumable

    cfg = build_trial({"model": {"d_model": 16, "n_heads": 2}})
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    changed = copy.deepcopy(cfg)
    changed.train.log_every, changed.train.checkpoint_every = 1, 7
    check_resumable(str(tmp_path), changed)
    changed.train.device = "cpu"
    with pytest.raises(ConfigError) as e:
        check_resumable(str(tmp_path), changed)
    assert [p.key for p in e.value.problems] == ["train.device"]


# 10d. a problem with a value given on the command line says so

def test_problems_of_overrides_name_the_command_line(tmp_path, capsys):
    path = write_yaml(tmp_path, {**VALID_SPACE, "budget": {"trials": 0}})
    err = _refused(capsys, ["validate", path, "base.train.lr=-1"], "base.train.lr", "budget.trials")
    assert "got -1.0 (set on the command line: base.train.lr=-1)" in err
    assert "got 0\n" in err  # the file's own value: no note
