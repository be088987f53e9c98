"""Error messages a reviewer found wrong or unhelpful: each names the key the user set, where its
value came from, and a fix that works. Ray-free (`dnasweep run` is refused before Ray starts)."""

from __future__ import annotations

import json
import pathlib
import socket

import pytest
from helpers import VALID_SPACE, write_yaml

from dnasweep.cli import main
from dnasweep.config import load_trial
from dnasweep.errors import ConfigError
from dnasweep.space import parse_space

LM = str(pathlib.Path(__file__).resolve().parent.parent / "search_spaces" / "lm.yaml")


def _problems(space: dict, overrides: list[str]) -> list:
    with pytest.raises(ConfigError) as e:
        parse_space(space, "space.yaml", overrides)
    return e.value.problems


# 1. an override of one list item: OmegaConf read constraints[0] as a mapping key, and the error
#    blamed the file's list ("expected a list, got dict") with no fix

def test_an_override_of_a_list_item_says_lists_are_set_whole(capsys):
    assert main(["validate", LM, "constraints[0]=params/total <= 1e6"]) == 2
    err = capsys.readouterr().err
    assert "  constraints[0]: constraints is a list, and an override sets a list whole" in err, err
    assert "(set on the command line: constraints[0]=params/total <= 1e6)" in err
    assert """e.g. 'constraints=["params/total <= 1e6"]'""" in err
    assert "expected a list, got dict" not in err
    assert main(["validate", LM, 'constraints=["params/total <= 1e6"]']) == 0  # the fix, as written, works


def test_an_override_of_a_field_of_a_list_item_says_so():
    [p] = _problems(VALID_SPACE, ["objectives[1].mode=max"])
    assert p.key == "objectives[1].mode" and "objectives is a list" in p.message, p
    assert "'objectives=[..., {..., mode: max}]'" in p.fix and "write out each ..." in p.fix


def test_an_index_on_a_key_that_is_no_list_is_named_with_its_fix():
    p = {q.key: q for q in _problems(VALID_SPACE, ["budget.trials[0]=3", "budget.trals[0]=3"])}
    assert "budget.trials is not a list" in p["budget.trials[0]"].message
    assert p["budget.trials[0]"].fix == "e.g. budget.trials=3"
    assert p["budget.trals[0]"].fix == "did you mean budget.trials?"


# 2. `dnasweep train SPACE` trains its base:, so a base. prefix named an unknown key 'base'

def test_train_of_a_search_space_says_to_drop_the_base_prefix(capsys):
    assert main(["train", LM, "base.train.max_steps=3"]) == 2
    err = capsys.readouterr().err
    assert "  base.train.max_steps: " in err and "override keys are relative to base:" in err, err
    assert "fix: drop the base. prefix: train.max_steps=3" in err
    assert "unknown key" not in err


def test_a_base_prefix_is_reported_with_the_other_problems():
    with pytest.raises(ConfigError) as e:
        load_trial(LM, ["base.train.max_steps=3", "train.batch_size=0"])
    assert [p.key for p in e.value.problems] == ["base.train.max_steps", "train.batch_size"]
    assert load_trial(LM, ["train.max_steps=3"]).train.max_steps == 3  # the fix works


# 3. a parameter conditioned on itself was told to move above itself

def test_a_parameter_conditioned_on_itself_is_named_as_such():
    space = {**VALID_SPACE, "search": {"model.router.top_k": {"choice": [1, 2], "when": {"model.router.top_k": [1]}}}}
    [p] = _problems(space, [])
    assert p.key == "search.model.router.top_k.when" and "cannot be conditioned on itself" in p.message, p
    assert "above" not in p.fix and "drop the condition" in p.fix


# 4. the reference: ladder's rungs under a base.* override

REF_SPACE = {**VALID_SPACE, "base": {"model": {"d_model": 32, "n_heads": 4}},
             "reference": {"d_model": [16], "dense_layers": [1, 2]}}


def test_a_rung_problem_an_override_causes_is_said_once_on_the_key_set():
    """n_heads=16 builds the base (head dim 2) but no rung (d_model 16: head dim 1): one problem, on
    base.model.n_heads, not one per rung under `reference`, which the user never touched."""
    [p] = _problems(REF_SPACE, ["base.model.n_heads=16", "base.train.lr=0.002"])
    assert p.key == "base.model.n_heads", p
    assert "d_model=16, dense_layers=1; d_model=16, dense_layers=2" in p.message
    assert "(set on the command line: base.model.n_heads=16)" in p.message and "reference.d_model" in p.fix


def test_an_invalid_base_override_is_reported_once():
    [p] = _problems(REF_SPACE, ["base.model.d_model=0"])
    assert p.key == "base.model.d_model" and "set on the command line" in p.message, p


def test_a_rung_problem_of_the_ladder_itself_stays_on_reference():
    # d_model 6 is no multiple of the base's 4 heads, whatever the override (it changes the lr only)
    ps = _problems({**REF_SPACE, "reference": {"d_model": [6], "dense_layers": [1]}}, ["base.train.lr=0.002"])
    assert [p.key for p in ps] == ["reference"] and "rung d_model=6, dense_layers=1" in ps[0].message


# 5. an http tracking URI that does not answer is named where it was set

def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def no_tracking_env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # (check_reachable only sets a default)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


@pytest.mark.parametrize("where", ["flag", "env", "file"])
def test_an_unreachable_tracking_server_is_named_where_its_uri_was_set(tmp_path, capsys, monkeypatch,
                                                                      no_tracking_env, where):
    uri, args = _closed_port(), []
    space = dict(VALID_SPACE)
    if where == "flag":
        args = ["--tracking-uri", uri]
    elif where == "env":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    else:
        space["tracking"] = {"uri": uri}
    path, root = write_yaml(tmp_path, space), tmp_path / "root"
    assert main(["run", path, "--root", str(root), "--name", "s", *args]) == 2
    err = capsys.readouterr().err
    key, undo = {"flag": ("--tracking-uri", "leave --tracking-uri out"),
                 "env": ("MLFLOW_TRACKING_URI", "unset MLFLOW_TRACKING_URI"),
                 "file": ("tracking.uri", f"drop tracking.uri from {path}")}[where]
    assert f"  {key}: the MLflow tracking server {uri} does not answer" in err, err
    assert undo in err and not root.exists()


def test_an_unreachable_server_a_sweep_recorded_is_named_so(tmp_path, no_tracking_env):
    from dnasweep.sweep.tracking import STATE_FILE, check_reachable, resolve_uri

    uri = _closed_port()
    (tmp_path / STATE_FILE).write_text(json.dumps({"uri": uri}))
    with pytest.raises(ConfigError) as e:
        check_reachable(resolve_uri(None, str(tmp_path)), "resume")
    [p] = e.value.problems
    assert p.key == "SWEEP/tracking.json" and "pass --tracking-uri" in p.fix, p
