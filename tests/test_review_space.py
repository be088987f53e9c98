"""Review fixes of the space pipeline: a searched value no trial can take is refused at load; a
relative data path reaches every trial as the absolute path it named where the sweep started; a
space file's top-level trial settings are refused by `dnasweep train` as by `validate`."""

from __future__ import annotations

import os

import pytest
import yaml
from helpers import VALID_SPACE, write_yaml

from dnasweep.cli import main
from dnasweep.config import load_trial
from dnasweep.errors import ConfigError
from dnasweep.space import load_space, parse_space, space_from_dict

SMALL = {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32},
         "train": {"max_steps": 10, "batch_size": 4, "eval_every": 5, "warmup_steps": 2},
         "data": {"max_bytes": 100000}}


def _space(search: dict, **more) -> dict:
    return {"base": SMALL, "search": search, "objectives": [{"metric": "val/loss", "mode": "min"}], **more}


def _problems(content: dict, overrides: list[str] | None = None) -> dict:
    with pytest.raises(ConfigError) as e:
        parse_space(content, "space.yaml", overrides)
    return {p.key: p for p in e.value.problems}


# 1. a searched value that breaks a rule of the trial config at every point

@pytest.mark.parametrize("path,choices,bad,rule", [
    ("model.router.type", ["topk", "sigmod"], ["sigmod"], "model.router.type: unknown router 'sigmod'"),
    ("model.router.type", ["sigmod", "expert_choice"], ["sigmod", "expert_choice"],
     "router 'expert_choice' is not causal"),
    ("train.device", ["cpu", "gpu"], ["gpu"], "train.device: unknown device 'gpu'"),
    ("model.task", ["lm", "vision"], ["vision"], "data.source: unknown source 'pystdlib' for task 'vision'"),
])
def test_a_choice_invalid_at_every_point_is_refused_before_anything_starts(tmp_path, capsys, path, choices, bad,
                                                                          rule):
    """validate printed 'valid search space' (or only 'N corner combinations invalid') and run started
    a sweep (exit 0) in which every trial drawing the value failed `invalid`."""
    f, root = write_yaml(tmp_path, _space({path: {"choice": choices}})), tmp_path / "root"
    assert main(["validate", f]) == 2
    err = capsys.readouterr().err
    assert main(["run", f, "--root", str(root), "--name", "s"]) == 2
    assert capsys.readouterr().err == err and not root.exists()  # the same report, nothing started
    assert f"error: {f}:" in err and f"  search.{path}: " in err and rule in err and "fix: " in err
    for v in bad:
        assert f"choice {v!r} is invalid at every point: " in err
    for v in set(choices) - set(bad):  # valid values are not named
        assert f"choice {v!r}" not in err


def test_a_choice_invalid_on_the_shipped_space_names_the_override():
    with pytest.raises(ConfigError) as e:
        load_space("search_spaces/lm.yaml", ["search.model.d_model.choice=[64,100]"])
    (p,) = e.value.problems
    assert p.key == "search.model.d_model" and "choice 100 is invalid at every point: model.d_model: " in p.message
    assert "set on the command line" in p.message and "leave 100 out" in p.fix


def test_the_fix_says_where_the_rule_lies():
    """The rule on the value itself, on another searched parameter (a when: keeps them apart), or on
    the base."""
    with open("search_spaces/lm.yaml") as f:
        data = yaml.safe_load(f)
    del data["search"]["model.balance.identity_bias"]["when"]  # identity_bias: [true] is then drawn with hash
    p = _problems(data)["search.model.router.type"]
    assert "choice 'hash' is invalid at every point: model.balance.identity_bias: has no effect" in p.message
    assert "add a when: to search.model.balance.identity_bias" in p.fix
    p = _problems(_space({"model.task": {"choice": ["lm", "vision"]}}))["search.model.task"]
    assert "change base.data.source" in p.fix
    p = _problems(_space({"model.router.type": {"choice": ["topk", "sigmod"]}}))["search.model.router.type"]
    assert "leave 'sigmod' out of the choices, or correct it" in p.fix


def test_a_range_invalid_over_its_whole_length_is_refused():
    p = _problems(_space({"model.d_model": {"int": [30, 31]}}))["search.model.d_model"]
    assert "every value of the range [30, 31] is invalid at every point" in p.message
    assert "d_model=30 is not divisible by n_heads=4" in p.message and "narrow the range" in p.fix
    # a long range: its end, and the values near it, named
    p = _problems(_space({"model.d_model": {"int": [30, 31]}, "model.n_heads": {"choice": [4, 5]}}))
    assert len(p) == 1  # n_heads 5 and d_model 30 are valid together
    p = _problems(_space({"model.d_model": {"int": [1, 200]}, "model.n_heads": {"choice": [4, 400]}}))
    assert "choice 400 is invalid at every point" in p["search.model.n_heads"].message


def test_values_invalid_together_are_each_refused():
    """No point of the space is valid: each value is refused, whichever rule it breaks."""
    with pytest.raises(ConfigError) as e:
        parse_space(_space({"model.n_heads": {"choice": [3, 5]}}), "space.yaml")
    assert [p.key for p in e.value.problems] == ["search.model.n_heads"] * 2
    assert "choice 3 is invalid at every point: model.d_model: d_model=32 is not divisible by n_heads=3" in (
        e.value.problems[0].message) and "choice 5 is invalid" in e.value.problems[1].message


@pytest.mark.parametrize("search", [
    # valid at some corners only: left to when: and --samples, as before
    {"model.router.type": {"choice": ["topk", "hash"]}, "model.balance.identity_bias": {"choice": [True, False]}},
    # an invalid range end whose range is valid inward of it (d_model 32)
    {"model.d_model": {"int": [30, 256]}},
    # invalid at every corner, valid inside the other's range: n_heads 6 divides 36
    {"model.d_model": {"choice": [36]}, "model.n_heads": {"int": [5, 7]}},
    # drawn only where its when: holds, and valid there
    {"model.router.type": {"choice": ["topk", "hash"]},
     "model.balance.identity_bias": {"choice": [True], "when": {"model.router.type": ["topk"]}}},
])
def test_values_valid_at_some_point_stay_accepted(search):
    assert parse_space(_space(search), "space.yaml").params


def test_the_smoke_overlay_is_judged_too():
    """A value the overlay's base makes invalid everywhere: --smoke would run a sweep of failures."""
    base = {**SMALL, "model": {**SMALL["model"], "n_heads": 2}}
    content = {**_space({"model.n_heads": {"choice": [2, 4]}}), "base": base,
               "smoke": {"base": {"model": {"d_model": 36}}}}  # head dim 36 / 4 = 9: odd, RoPE refuses it
    p = _problems(content)["search.model.n_heads"]
    assert "choice 4 is invalid at every point" in p.message and "smoke: overlay applied" in p.message


def test_the_smoke_overlay_rejudges_only_the_witnesses_of_the_full_space(monkeypatch):
    """validate stays fast: the smoke overlay's base is judged at the few valid points that draw every
    value of the full space (a re-judging of all 256 corners doubled the check's cost)."""
    import dnasweep.space.feasibility as F

    built = []
    real = F.Trials.at
    monkeypatch.setattr(F.Trials, "at", lambda self, point: built.append(id(self)) or real(self, point))
    space = load_space("search_spaces/lm.yaml")
    assert space.config.smoke and built
    per_load: dict[int, int] = {}
    for i in built:
        per_load[i] = per_load.get(i, 0) + 1
    full, smoke = list(per_load.values())
    assert smoke <= 40 and full >= 256  # (the corners, and the constraint's descent)


def test_shipped_spaces_stay_valid():
    for path in ("search_spaces/lm.yaml", "search_spaces/vision.yaml"):
        assert load_space(path).params and load_space(path, smoke=True).params


# 2. a relative data path, read where each trial runs (Ray's own working directory)

def test_a_relative_data_path_reaches_every_trial_absolute(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "my_corpus").mkdir(parents=True)
    (project / "my_corpus" / "a.txt").write_text("def f(x):\n    return x + 1\n" * 200)
    monkeypatch.chdir(project)
    f = write_yaml(project, {**VALID_SPACE, "base": {"model": {"d_model": 32}}})
    # the form docs/training.md shows: dnasweep run SPACE base.data.source=text base.data.path=my_corpus/
    space = load_space(f, ["base.data.source=text", "base.data.path=my_corpus/"])
    want = str(project / "my_corpus")
    assert space.base.data.path == want
    assert space.to_dict()["config"]["base"]["data"]["path"] == want  # SWEEP/space.json
    workdir = tmp_path / "ray" / "working_dirs" / "trial"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)  # where Ray runs the trial function
    for s in (space, space_from_dict(space.to_dict())):
        cfg = s.apply({"train.lr": 2e-3}, str(workdir / "out"))  # invalid ('does not exist') before
        assert cfg.data.path == want and os.path.isdir(cfg.data.path)


def test_train_reads_a_relative_data_path_against_the_cwd_as_before(tmp_path, monkeypatch):
    (tmp_path / "my_corpus").mkdir()
    (tmp_path / "my_corpus" / "a.txt").write_text("x = 1\n" * 200)
    monkeypatch.chdir(tmp_path)
    f = write_yaml(tmp_path, {"base": {"model": {"d_model": 32}, "data": {"source": "text", "path": "my_corpus"}},
                              "search": VALID_SPACE["search"], "objectives": VALID_SPACE["objectives"]})
    assert load_trial(f).data.path == "my_corpus"


def test_a_home_relative_data_path_stays_as_written(tmp_path, monkeypatch):
    (tmp_path / "c.txt").write_text("x = 1\n" * 200)
    monkeypatch.setenv("HOME", str(tmp_path))
    space = parse_space({**VALID_SPACE, "base": {"model": {"d_model": 32},
                                                 "data": {"source": "text", "path": "~/c.txt"}}}, "s.yaml")
    assert space.base.data.path == "~/c.txt"  # each machine's home: not this cwd's


# 3. trial settings at the top level of a space file, outside base:

def test_train_refuses_trial_settings_outside_base(tmp_path, capsys):
    """`dnasweep train` trained the defaults (d_model 128), exit 0, while validate refused the file."""
    f = write_yaml(tmp_path, yaml.safe_dump({"model": {"d_model": 32}, "search": VALID_SPACE["search"],
                                             "objectives": VALID_SPACE["objectives"]}, sort_keys=False))
    with pytest.raises(ConfigError) as e:
        load_trial(f)
    (p,) = e.value.problems
    assert p.key == "model" and p.message == "unknown section" and "trial settings go under base:" in p.fix
    assert main(["validate", f]) == 2
    said = capsys.readouterr().err
    assert main(["train", f, "train.max_steps=1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "  model: unknown section" in err and "fix: trial settings go under base:, e.g. base.model..." in err
    assert "fix: trial settings go under base:, e.g. base.model..." in said  # the same words as validate
    assert not (tmp_path / "out").exists()


def test_train_refuses_them_beside_a_base_too(tmp_path):
    f = write_yaml(tmp_path, {**VALID_SPACE, "train": {"max_steps": 5}})
    with pytest.raises(ConfigError) as e:
        load_trial(f, ["base.model.d_model=64"])
    assert [p.key for p in e.value.problems] == ["train", "base.model.d_model"]
