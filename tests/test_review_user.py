"""Defects a user-side review found (docs/bad_input.md cases 15, 22-25): metric names validation
accepted that no trial reports, plugins whose import crashed every command, spaces whose every
trial is the same, a fix example that was itself invalid, and settings no trial reads."""

import os
import pathlib
import re

import pytest
import yaml

from dnasweep import metrics as M
from dnasweep.errors import ConfigError
from dnasweep.space import parse_space, space_warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOL9 = {"n_transformer": 4, "n_attention": 2, "n_mlp": 2, "n_identity": 1}  # modules m0 .. m8
BASE = {"model": {"d_model": 32, "pool": POOL9}}
SEARCH = {"train.lr": {"float": [1e-3, 1e-2], "log": True}}
OK = {"base": BASE, "search": SEARCH, "objectives": [{"metric": "val/loss", "mode": "min"}]}


def _problems(space: dict) -> list:
    with pytest.raises(ConfigError) as e:
        parse_space(space, "s.yaml")
    return e.value.problems


# --- 1. router/load/...: only the form the trainer reports (train/evaluate.py: router/load/m{i}) ---

def test_router_load_metrics_only_in_the_reported_form():
    assert not M.is_trial_metric("router/load/module0")  # a prefix test took any suffix
    for bad in ("router/load/module0", "router/load/m03", "router/load/", "router/load/m-1", M.ROUTER_LOAD_FORM):
        assert not M.is_trial_metric(bad), bad
    assert M.is_trial_metric("router/load/m0") and M.is_trial_metric("router/load/m12")
    assert M.router_load_index("router/load/m12") == 12 and M.router_load_index("router/load/module0") is None
    (p,) = _problems({**OK, "objectives": [{"metric": "val/loss"}, {"metric": "router/load/module0"}]})
    assert p.key == "objectives[1].metric" and "unknown metric 'router/load/module0'" in p.message
    assert M.ROUTER_LOAD_FORM in p.fix  # the error says which form is allowed
    (p,) = _problems({**OK, "constraints": ["router/load/m03 <= 0.5"]})
    assert p.key == "constraints[0]" and "unknown metric" in p.message and M.ROUTER_LOAD_FORM in p.fix
    parse_space({**OK, "objectives": [{"metric": "val/loss"}, {"metric": "router/load/m8"}]}, "s.yaml")


def test_a_router_load_index_beyond_every_pool_warns():
    def load_warnings(space):
        return [w for w in space_warnings(parse_space(space, "s.yaml")) if "router/load/m0 to" in w]

    (w,) = load_warnings({**OK, "constraints": ["router/load/m99 <= 0.5"]})
    assert w.startswith("constraint router/load/m99 <= 0.5: ") and "9 modules" in w and "router/load/m8" in w
    assert not load_warnings({**OK, "constraints": ["router/load/m8 <= 0.5"]})
    # a searched pool size can reach it: 8 + 2 + 2 + 1 = 13 modules, m0 .. m12
    grown = {**OK, "search": {**SEARCH, "model.pool.n_transformer": {"int": [2, 8]}}}
    assert not load_warnings({**grown, "objectives": [{"metric": "val/loss"}, {"metric": "router/load/m12"}]})
    (w,) = load_warnings({**grown, "objectives": [{"metric": "val/loss"}, {"metric": "router/load/m13"}]})
    assert w.startswith("objective router/load/m13: ") and "13 modules" in w and "every trial would fail" in w


# --- 2. DNASWEEP_PLUGINS: every failure of a plugin's import is a problem (exit 2), told apart ---

@pytest.fixture
def plugins(tmp_path, monkeypatch):
    (tmp_path / "ru_dup_plugin.py").write_text(
        "from dnasweep.model import register_router\n@register_router('topk')\ndef my_topk(scores, cfg):\n"
        "    return scores\n")
    (tmp_path / "ru_syntax_plugin.py").write_text("def f(:\n    pass\n")
    (tmp_path / "ru_dep_plugin.py").write_text("import ru_missing_dependency_of_a_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_plugin_that_raises_on_import_is_a_problem_not_a_traceback(plugins, monkeypatch, capsys):
    from dnasweep.cli import main
    from dnasweep.plugins import load_plugins

    with pytest.raises(ConfigError) as e:
        load_plugins("ru_dup_plugin, ru_syntax_plugin")
    dup, syn = e.value.problems
    assert dup.key == syn.key == "DNASWEEP_PLUGINS"
    assert "'ru_dup_plugin' raised ValueError: router 'topk' is already registered" in dup.message
    assert "ru_dup_plugin.py:2" in dup.message  # where in the plugin
    assert "'ru_syntax_plugin' raised SyntaxError" in syn.message and "line 1" in syn.message
    assert all("drop it from DNASWEEP_PLUGINS" in p.fix for p in (dup, syn))
    # from the command line: exit 2 with the report, for any command
    space = plugins / "s.yaml"
    space.write_text(yaml.safe_dump(OK))
    monkeypatch.setenv("DNASWEEP_PLUGINS", "ru_dup_plugin")
    assert main(["validate", str(space)]) == 2
    err = capsys.readouterr().err
    assert "error: plugins: 1 problem" in err and "ru_dup_plugin" in err and "Traceback" not in err


def test_a_plugin_whose_dependency_is_missing_is_told_apart_from_a_missing_plugin(plugins):
    from dnasweep.plugins import load_plugins

    with pytest.raises(ConfigError) as e:
        load_plugins("ru_dep_plugin,ru_no_such_plugin")
    dep, missing = e.value.problems
    assert "'ru_dep_plugin' was found, but it imports 'ru_missing_dependency_of_a_plugin'" in dep.message
    assert "install the package that provides 'ru_missing_dependency_of_a_plugin'" in dep.fix
    assert "PYTHONPATH" not in dep.fix  # the module is on it: its dependency is what is missing
    assert "cannot find the module 'ru_no_such_plugin'" in missing.message and "PYTHONPATH" in missing.fix


# --- 3. a space that draws one config: every trial the same ---

def test_a_space_without_dimensions_warns_that_every_trial_is_the_same():
    def same(space):
        return [w for w in space_warnings(parse_space(space, "s.yaml")) if "would train the same config" in w]

    (w,) = same({"base": BASE, "objectives": [{"metric": "val/loss"}]})
    assert "no search: dimensions" in w and "budget.trials=8" in w and "dnasweep train s.yaml" in w
    (w,) = same({**OK, "search": {"model.d_model": {"choice": [64]}}})
    assert "1 search: dimension(s), each with one value" in w
    assert not same(OK)


# --- 4. objectives: [val/loss, ...]: the fix example is a valid objective with that metric ---

def test_a_bare_objective_name_gets_a_valid_fix_example():
    p0, p1 = _problems({**OK, "objectives": ["val/loss", "compute/flops_per_token"]})
    assert (p0.key, p1.key) == ("objectives[0]", "objectives[1]")
    assert p0.message == "expected a mapping, got str 'val/loss'"
    assert "objectives[0]: {metric: val/loss, mode: min}" in p0.fix and "''" not in p0.fix
    assert "{metric: compute/flops_per_token, mode: min}" in p1.fix
    # the examples, written back, make a valid space
    fixed = [yaml.safe_load(re.search(r"(\{metric: [^}]*\})", p.fix).group(1)) for p in (p0, p1)]
    parse_space({**OK, "objectives": fixed}, "s.yaml")
    # an unknown bare name: the example names the nearest metric, and the name is judged as a metric too
    probs = _problems({**OK, "objectives": ["val/los"]})
    assert [p.key for p in probs] == ["objectives[0]", "objectives[0].metric"]
    assert "{metric: val/loss, mode: min}" in probs[0].fix and "did you mean val/loss?" in probs[1].fix


# --- 6. search_spaces/lm.yaml: its base's skip_control comment says the base runs without skip control ---

def test_lm_yaml_skip_control_comment_says_the_base_runs_without_it():
    path = os.path.join(REPO, "search_spaces", "lm.yaml")
    text = pathlib.Path(path).read_text()
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.strip().startswith("balance:") and "skip_control" in line)
    j = i
    while j > 0 and lines[j - 1].strip().startswith("#"):
        j -= 1
    comment = " ".join([*lines[j:i], lines[i].partition("#")[2]])
    assert not yaml.safe_load(text)["base"]["model"]["balance"].get("identity_bias", False)
    assert "identity_bias" in comment and "without skip control" in comment


# --- 7. settings no trial reads: warnings, not errors ---

def test_settings_no_trial_reads_warn():
    def warns(**base):
        space = {**OK, "base": {**BASE, **base}}
        return [w for w in space_warnings(parse_space(space, "s.yaml"))]

    (w,) = warns(model={**BASE["model"], "balance": {"target_skip": 0.5, "skip_control": "sign"}})
    assert w.startswith("model.balance.target_skip, model.balance.skip_control: set, but no trial turns "
                        "model.balance.identity_bias on")
    assert not warns(model={**BASE["model"], "balance": {"identity_bias": True, "target_skip": 0.5}})
    (w,) = warns(model={**BASE["model"], "router": {"type": "topk", "threshold": 0.3}})
    assert w.startswith("model.router.threshold: set, but no trial uses a threshold router")
    assert not warns(model={**BASE["model"], "router": {"type": "threshold", "threshold": 0.3}})
    (w,) = warns(model={**BASE["model"], "router": {"type": "sigmoid", "noise": 0.5}})
    assert w.startswith("model.router.noise: set, but no trial uses the noisy_topk router")
    assert not warns(model={**BASE["model"], "router": {"type": "noisy_topk", "noise": 0.5}})
    (w,) = warns(train={"max_steps": 40, "warmup_steps": 50})
    assert w.startswith("train.warmup_steps can be 50 and train.max_steps 40: ")
    assert not warns(train={"max_steps": 40, "warmup_steps": 10})
    searched = {**OK, "search": {**SEARCH, "out_dir": {"choice": ["runs/a", "runs/b"]}}}
    (w,) = space_warnings(parse_space(searched, "s.yaml"))
    assert w.startswith("search.out_dir: ") and "never used" in w
    # a setting searched where it is read: no warning (the lm.yaml pattern)
    skip = {**OK, "search": {**SEARCH, "model.balance.identity_bias": {"choice": [True, False]},
                             "model.balance.target_skip": {"float": [0.1, 0.5],
                                                           "when": {"model.balance.identity_bias": [True]}}}}
    assert not space_warnings(parse_space(skip, "s.yaml"))


def test_a_compute_penalty_drawn_with_routers_whose_flops_it_cannot_move_warns():
    """hash learns no router and expert_choice gives every module a fixed number of tokens: a
    compute_weight drawn with them trades no compute (a review measured expert_choice's FLOPs/token
    141,736 before and after the penalty drove its gates to identity); the shipped spaces did so."""
    def warns(router_types, when=None):
        cw = {"choice": [0.0, 0.3], **({"when": {"model.router.type": when}} if when else {})}
        search = {**SEARCH, "model.router.type": {"choice": router_types}, "loss.compute_weight": cw}
        vision = {"task": "vision", "d_model": 32, "n_heads": 4, "image_size": 8, "patch_size": 2, "channels": 1}
        return space_warnings(parse_space({**OK, "base": {"model": vision, "data": {"source": "digits"}},
                                           "search": search}, "s.yaml"))

    (w,) = warns(["topk", "expert_choice", "hash"])
    assert w.startswith("loss.compute_weight: up to 0.3 with model.router.type expert_choice, hash, whose FLOPs")
    assert "when: {model.router.type: [topk]}" in w
    assert not warns(["topk", "expert_choice", "hash"], when=["topk"])  # the fix it gives
    assert not warns(["topk", "sigmoid", "threshold"])


@pytest.mark.parametrize("name", ["lm.yaml", "vision.yaml"])
@pytest.mark.parametrize("smoke", [False, True])
def test_the_shipped_spaces_draw_no_warning(name, smoke):
    from dnasweep.space import load_space

    assert space_warnings(load_space(os.path.join(REPO, "search_spaces", name), smoke=smoke)) == []
