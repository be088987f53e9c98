"""Bad input to a sweep, one test per kind (docs/bad_input.md): each is refused before any trial
starts, with exit code 2, every problem at once (file, dotted key, rule, value, fix), and nothing
created on disk. Ray-free: the files go through `dnasweep validate` and `dnasweep run`, which
refuse them while parsing, and the cluster-side check is called directly."""

from __future__ import annotations

import pathlib

import pytest
import yaml
from helpers import VALID_SPACE, write_yaml

from dnasweep.cli import main
from dnasweep.errors import ConfigError
from dnasweep.space import load_space, parse_space


def _refused(tmp_path, capsys, content, *keys: str) -> str:
    """`dnasweep validate` and `dnasweep run` both exit 2 naming the file and every key, and `run`
    creates nothing under its root. Returns the error text."""
    path, root = write_yaml(tmp_path, content), tmp_path / "root"
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert main(["run", path, "--root", str(root), "--name", "s"]) == 2
    assert capsys.readouterr().err == err  # the same report, before anything starts
    assert not root.exists()
    assert f"error: {path}:" in err and "Traceback" not in err
    for k in keys:
        assert f"  {k}: " in err, f"{k} not in\n{err}"
    return err


def _problems(**sections) -> dict:
    with pytest.raises(ConfigError) as e:
        parse_space({**VALID_SPACE, **sections}, "space.yaml")
    return {p.key: p for p in e.value.problems}


def test_valid_space_passes(tmp_path, capsys):
    assert main(["validate", write_yaml(tmp_path, VALID_SPACE)]) == 0
    assert "valid search space" in capsys.readouterr().out


# 1. malformed YAML

@pytest.mark.parametrize("text,line", [
    ("base:\n  model: {d_model: 32\nobjectives: [{metric: val/loss}]\n", "line 3"),  # unclosed {
    ("base:\n  model:\n    d_model: 32\n   train: {}\nsearch: {}\n", "line 4"),  # bad indentation
    ("base:\n\tmodel: {}\n", "line 2"),  # a tab
    ("base: {}\nbase: {}\n", "line 2"),  # a key twice
])
def test_malformed_yaml_names_file_and_line(tmp_path, capsys, text, line):
    err = _refused(tmp_path, capsys, text, "<file>")
    assert f"not valid YAML: {line}, column" in err and "fix: " in err


def test_a_file_that_is_not_a_mapping(tmp_path, capsys):
    assert "expected a mapping, got list" in _refused(tmp_path, capsys, "- base\n- search\n", "<root>")


@pytest.mark.parametrize("cmd", ["validate", "run", "train"])
def test_a_directory_given_for_a_config_file_is_named_as_one(tmp_path, capsys, cmd):
    # was "no such file: DIR" for a directory that plainly exists (a sweep's, most often)
    sweep = tmp_path / "runs" / "lm"
    sweep.mkdir(parents=True)
    assert main([cmd, str(sweep)]) == 2
    err = capsys.readouterr().err
    assert f"{sweep} is a directory, not a YAML config file" in err and "no such file" not in err
    assert "dnasweep resume" in err and "Traceback" not in err


# 2. unknown keys, anywhere, with "did you mean"

def test_unknown_keys_anywhere_suggest_the_known_one(tmp_path, capsys):
    bad = {**VALID_SPACE, "serch": {}, "base": {"model": {"d_model": 32}, "train": {"max_step": 10}},
           "search": {"train.lr": {"float": [1.0e-3, 1.0e-2], "logg": True}, "model.d_modle": {"int": [16, 64]}},
           "objectives": [{"metric": "val/loss", "mod": "min"}], "sampler": {"typ": "tpe"},
           "budget": {"trails": 4}, "resources": {"gpus": 1}, "tracking": {"experimnt": "x"}}
    err = _refused(tmp_path, capsys, bad, "serch", "base.train.max_step", "search.train.lr.logg",
                   "search.model.d_modle", "objectives[0].mod", "sampler.typ", "budget.trails", "resources.gpus",
                   "tracking.experimnt")
    for fix in ("did you mean search?", "did you mean base.train.max_steps?", "did you mean log?",
                "did you mean model.d_model?", "did you mean objectives[0].mode?", "did you mean sampler.type?",
                "did you mean budget.trials?", "did you mean resources.gpu?", "did you mean tracking.experiment?"):
        assert f"fix: {fix}" in err
    assert "9 problems" in err


# 3. wrong types

def test_wrong_types_name_key_value_and_expected_type(tmp_path, capsys):
    bad = {**VALID_SPACE, "base": {"model": {"d_model": "big"}, "train": {"lr": "fast", "max_steps": 10.5}},
           "search": {"model.n_steps": {"int": ["one", 4]}, "model.n_heads": {"choice": [2, "four"]},
                      "train.lr": {"float": [1.0e-3, 1.0e-2], "log": "yes"}},
           "budget": {"trials": "many", "concurrent": True}, "resources": {"cpu": "two"},
           "sampler": {"seed": 1.5}}
    err = _refused(tmp_path, capsys, bad, "base.model.d_model", "base.train.lr", "base.train.max_steps",
                   "search.model.n_steps.int", "search.model.n_heads.choice", "search.train.lr.log", "budget.trials",
                   "budget.concurrent", "resources.cpu", "sampler.seed")
    assert "'big'" in err and "expected int" in err and "'four'" in err and "['one', 4]" in err


@pytest.mark.parametrize("section,value", [
    ("base", ["model"]), ("search", ["train.lr"]), ("objectives", "val/loss"), ("constraints", "params/total <= 1"),
    ("sampler", "tpe"), ("budget", 8), ("resources", 1), ("tracking", "x"), ("analyze", "yes"), ("smoke", 1),
])
def test_wrong_type_of_a_whole_section(tmp_path, capsys, section, value):
    # these used to crash (AttributeError / TypeError) or report every character of a string
    err = _refused(tmp_path, capsys, {**VALID_SPACE, section: value}, section)
    assert "expected a mapping" in err or "expected a list" in err
    assert "1 problem" in err


# 4. empty or inverted ranges

def test_empty_or_inverted_ranges(tmp_path, capsys):
    # Decided: a zero-width range (float [x, x] too) is refused; a fixed value belongs in base:.
    bad = {**VALID_SPACE, "search": {"train.lr": {"float": [1.0e-3, 1.0e-3]}, "model.n_steps": {"int": [4, 2]},
                            "model.d_model": {"choice": []}}}
    err = _refused(tmp_path, capsys, bad, "search.train.lr.float", "search.model.n_steps.int",
                   "search.model.d_model.choice")
    assert "empty range [0.001, 0.001]" in err and "under base:" in err
    assert "inverted range [4, 2]" in err and "swap them: [2, 4]" in err
    assert "must be a non-empty list, got []" in err


# 5. `when:` on unknown parameters

def test_when_on_unknown_parameters(tmp_path, capsys):
    bad = {**VALID_SPACE, "search": {
        "model.router.type": {"choice": ["topk", "threshold"]},
        "model.router.top_k": {"int": [1, 2], "when": {"model.router.typ": ["topk"]}},  # a typo
        "model.router.threshold": {"float": [0.05, 0.5], "when": {"model.balance.identity_bias": [True]}},  # unsearched
        "model.router.noise": {"float": [0.5, 2.0], "when": {"train.lr": [1.0e-3]}},  # searched after it
        "train.lr": {"float": [1.0e-3, 1.0e-2]},
    }}
    err = _refused(tmp_path, capsys, bad, "search.model.router.top_k.when", "search.model.router.threshold.when",
                   "search.model.router.noise.when")
    assert "'model.router.typ', which is not a searched parameter" in err and "did you mean model.router.type?" in err
    assert "model.balance.identity_bias must be under search: too" in err
    assert "not listed before model.router.noise" in err and "move train.lr above model.router.noise" in err


# 6. objectives (and constraints) on unknown metrics

def test_objectives_on_unknown_metrics_suggest_the_known_one(tmp_path, capsys):
    bad = {**VALID_SPACE, "objectives": [{"metric": "val/los"}, {"metric": "compute/flops", "mode": "min"}],
           "constraints": ["param/total <= 2e7"]}
    err = _refused(tmp_path, capsys, bad, "objectives[0].metric", "objectives[1].metric", "constraints[0]")
    assert "unknown metric 'val/los'" in err and "did you mean val/loss?" in err
    assert "did you mean compute/flops_per_token?" in err and "did you mean params/total?" in err


def test_metrics_the_trials_never_report(tmp_path, capsys):
    # val/acc on a language model: known, but no trial would ever report it, so every trial would fail
    bad = {**VALID_SPACE, "objectives": [{"metric": "val/acc", "mode": "max"}], "constraints": ["router/entropy <= 1"],
           "base": {"model": {"d_model": 32, "kind": "dense"}}}
    err = _refused(tmp_path, capsys, bad, "objectives[0].metric", "constraints[0]")
    assert "val/acc is reported by vision trials only (base.model.task is 'lm')" in err
    assert "router/entropy is reported by routed models only" in err
    assert parse_space({**VALID_SPACE, "objectives": [{"metric": "val/bpb"}]}, "s.yaml")  # byte-level LM: fine


def test_router_entropy_of_a_hash_router_is_refused_unless_the_router_is_searched(tmp_path, capsys):
    # hash learns no router: no entropy to constrain (it reported 0.0 once, a confident router)
    bad = {**VALID_SPACE, "constraints": ["router/entropy >= 0.5"],
           "base": {"model": {"d_model": 32, "router": {"type": "hash"}}}}
    err = _refused(tmp_path, capsys, bad, "constraints[0]")
    assert "router/entropy is reported by routers that learn only" in err and "'hash'" in err
    searched = {**bad, "search": {**VALID_SPACE["search"], "model.router.type": {"choice": ["hash", "topk"]}}}
    assert parse_space(searched, "s.yaml")  # the topk trials report it; hash trials are infeasible


# 7. constraints no point of the space satisfies

def test_unsatisfiable_constraint(tmp_path, capsys):
    bad = {**VALID_SPACE, "search": {"model.d_model": {"choice": [64, 128]}, "model.n_steps": {"int": [2, 4]}},
           "constraints": ["params/total <= 10"]}
    err = _refused(tmp_path, capsys, bad, "constraints[0]")
    from dnasweep.model import nominal

    least = nominal(parse_space({**bad, "constraints": []}, "s").apply(
        {"model.d_model": 64, "model.n_steps": 2}, "/tmp/unused").model).params_total
    assert "params/total <= 10 holds at no point of the search space" in err
    assert f"smallest params/total is {least:,} (model.d_model=64, model.n_steps=2)" in err
    assert f"raise the bound past {least:,}" in err
    p = _problems(constraints=["params/total >= 1e12"])["constraints[0]"]
    assert "largest params/total" in p.message and "lower the bound" in p.fix


def test_unsatisfiable_constraint_is_judged_at_the_true_extreme():
    # lm.yaml has far more than 256 corners, so they are sampled; the descent must still reach the
    # smallest model, or a bound just above it would be refused by mistake.
    space = load_space("search_spaces/lm.yaml")
    smallest = {"model.d_model": 64, "model.n_steps": 2, "model.pool.n_transformer": 2, "model.pool.n_attention": 0,
                "model.pool.n_mlp": 0, "model.pool.n_identity": 1, "model.router.type": "hash",
                "model.router.top_k": 1}
    from dnasweep.model import nominal

    least = nominal(space.apply(smallest, "/tmp/unused").model).params_total
    assert load_space("search_spaces/lm.yaml", [f"constraints=[params/total <= {least}]"]).constraints
    with pytest.raises(ConfigError) as e:
        load_space("search_spaces/lm.yaml", [f"constraints=[params/total <= {least - 1}]"])
    assert f"smallest params/total is {least:,}" in str(e.value)


def test_constraints_on_measured_metrics_are_not_judged_statically():
    # FLOPs and active parameters are measured under the learned routing (identity modules can make
    # them far smaller than nominal), so the config alone cannot prove such a bound unreachable.
    assert parse_space({**VALID_SPACE, "constraints": ["compute/flops_per_token <= 1", "params/active <= 1"]}, "s.yaml")


# 8. data paths that do not exist or hold no data

def _vision_base(source: str, path: str) -> dict:
    base = yaml.safe_load(pathlib.Path("search_spaces/vision.yaml").read_text())["base"]
    return {**base, "data": {"source": source, "path": path}}


@pytest.mark.parametrize("case,text", [
    ("missing file", "does not exist"), ("empty file", "is empty (0 bytes"),
    ("empty folder", "holds no text files"), ("folder without text files", "holds no text files"),
    ("empty npz", "is empty (0 bytes"), ("folder without images", "holds no images"),
])
def test_data_path_missing_or_without_data(tmp_path, capsys, case, text):
    data = tmp_path / "data"
    data.mkdir()
    base = {"model": {"d_model": 32}, "data": {"source": "text", "path": str(data / "corpus.txt")}}
    if case == "empty file":
        (data / "corpus.txt").write_text("")
    elif case == "empty folder":
        base["data"]["path"] = str(data)
    elif case == "folder without text files":
        (data / "__pycache__").mkdir()
        (data / "__pycache__" / "x.pyc").write_bytes(b"\0")
        (data / "empty.txt").write_text("")
        base["data"]["path"] = str(data)
    elif case == "empty npz":
        (data / "x.npz").write_bytes(b"")
        base = _vision_base("npz", str(data / "x.npz"))
    elif case == "folder without images":
        (data / "cat").mkdir()
        (data / "cat" / "notes.txt").write_text("no images here")
        base = _vision_base("folder", str(data))
    err = _refused(tmp_path, capsys, {**VALID_SPACE, "base": base}, "base.data.path")
    assert text in err and str(data) in err and "fix: " in err


# 9. GPUs requested on a cluster without them (checked once Ray is up, before any trial)

def test_gpu_requested_on_a_cluster_without_gpus():
    from dnasweep.sweep.cluster import check_fits as _check_fits

    space = parse_space({**VALID_SPACE, "resources": {"cpu": 1, "gpu": 1}}, "space.yaml")
    with pytest.raises(ConfigError) as e:
        _check_fits(space, {"CPU": 2})
    (p,) = e.value.problems
    assert e.value.source == "space.yaml" and p.key == "resources.gpu"
    assert "asks for 1 GPU, the largest node of the cluster has 0" in p.message and "--autoscaling" in p.fix
    _check_fits(space, {"CPU": 2, "GPU": 1})  # fits


def test_a_trial_must_fit_on_one_node_not_on_the_cluster_total():
    from dnasweep.sweep.cluster import check_fits as _check_fits

    space = parse_space({**VALID_SPACE, "resources": {"cpu": 2, "custom": {"a100": 1}}}, "s.yaml")
    two_small = [{"CPU": 1.0, "a100": 1.0}, {"CPU": 1.0}]
    with pytest.raises(ConfigError) as e:
        _check_fits(space, two_small)  # 2 CPUs in total, but no node has 2
    assert "resources.cpu" in str(e.value) and "largest node" in str(e.value) and "--autoscaling" in str(e.value)
    with pytest.raises(ConfigError) as e:
        _check_fits(space, [{"CPU": 4.0}])
    assert "resources.custom.a100" in str(e.value)
    _check_fits(space, [{"CPU": 1.0}, {"CPU": 2.0, "a100": 1.0}])  # one node holds a whole trial


def test_validate_judges_a_space_without_search_as_a_space(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump({"base": {"model": {"d_model": 32}}, "objectives": [{"metric": "val/los"}]}))
    assert main(["validate", str(f)]) == 2  # was "valid trial": objectives were never looked at
