"""The one config pipeline (Ray-free): sampled values reach a trial exactly as sampled, every
shipped space samples only valid points, errors cross process boundaries intact."""

import copy
import pickle

import pytest
import yaml

from dnasweep.cli import main
from dnasweep.errors import ConfigError, Problem
from dnasweep.space import load_space, parse_space
from dnasweep.space.sample import check_samples

OK = {"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2}},
      "objectives": [{"metric": "val/loss", "mode": "min"}]}
TRICKY = ["true", "off", "1e3", "null"]  # text that YAML would read as a bool, a float, null


def test_choice_values_reach_the_trial_config_exactly():
    # A point used to travel as `path=value` text parsed back as YAML: 'true' arrived as 'True',
    # '1e3' as '1000.0', 'null' as None.
    # data.field: a free text field (the hf record field) that the default source does not read
    space = parse_space({**OK, "search": {"data.field": {"choice": TRICKY}}}, "s.yaml")
    for v in TRICKY:
        cfg = space.apply({"data.field": v}, "/tmp/unused")
        assert cfg.data.field == v and type(cfg.data.field) is type(v), (v, cfg.data.field)
    floats = parse_space({**OK, "search": {"loss.compute_weight": {"choice": [0, 0.3]}}}, "s.yaml")
    cfg = floats.apply({"loss.compute_weight": 0}, "/tmp/unused")
    assert cfg.loss.compute_weight == 0.0 and type(cfg.loss.compute_weight) is float  # an int for a float field


def test_a_choice_of_another_type_than_its_field_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as e:
        parse_space({**OK, "search": {"data.field": {"choice": [True, "x"]}, "train.lr": {"choice": ["1e3", 0.1]}}},
                    "s.yaml")
    probs = {p.key: p for p in e.value.problems}
    assert "True (bool) does not fit data.field" in probs["search.data.field.choice"].message
    assert "quote the word you wrote ('true', 'yes' or 'on'" in probs["search.data.field.choice"].fix
    assert "'1e3' (str) does not fit train.lr" in probs["search.train.lr.choice"].message


def test_base_values_keep_their_type():
    # OmegaConf alone would turn 5000 into "5000" (a str field) or "yes" into True (a bool field)
    with pytest.raises(ConfigError) as e:
        parse_space({**OK, "tracking": {"uri": 5000}, "analyze": {"front": "yes"}}, "s.yaml")
    assert {p.key for p in e.value.problems} == {"tracking.uri", "analyze.front"}


@pytest.mark.parametrize("path", ["search_spaces/lm.yaml", "search_spaces/vision.yaml"])
def test_shipped_spaces_sample_no_invalid_point(path, capsys):
    assert check_samples(load_space(path), 500).invalid == 0
    assert main(["validate", path, "--samples", "200"]) == 0
    assert "0 invalid" in capsys.readouterr().out


@pytest.mark.slow  # samples a few hundred points (~2.5 s)
def test_an_invalid_combination_in_a_space_is_found_by_sampling(tmp_path, capsys):
    # lm.yaml with identity_bias drawn true or false for every router, hash too: hash + identity_bias
    # (invalid) ~10% of the time. (Without the when:, identity_bias is true at every point and hash
    # invalid everywhere: refused outright, tests/test_review_space.py.)
    with open("search_spaces/lm.yaml") as f:
        data = yaml.safe_load(f)
    data["search"]["model.balance.identity_bias"] = {"choice": [True, False]}
    report = check_samples(parse_space(copy.deepcopy(data), "lm-no-when.yaml"), 500)
    assert 25 <= report.invalid <= 90, report.text()  # hash is 1 router in 5, and half of its draws
    (rule,) = report.rules
    assert rule.startswith("model.balance.identity_bias: has no effect with router 'hash'")
    f = tmp_path / "lm-no-when.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))  # search: order is draw order
    assert main(["validate", str(f), "--samples", "200"]) == 2
    out = capsys.readouterr()
    assert "invalid" in out.out and "Add a when:" in out.err


def test_config_error_survives_pickling():
    # A Ray worker's exception reaches the driver pickled; this used to raise AttributeError
    # ('str' object has no attribute 'render') and hide the rule.
    e = ConfigError([Problem("model.router.type", "unknown router 'x'", "use topk")], "space.yaml")
    back = pickle.loads(pickle.dumps(e))
    assert back.problems == e.problems and back.source == "space.yaml" and str(back) == str(e)


def test_trial_keys_given_as_sweep_overrides_point_to_base():
    with pytest.raises(ConfigError) as e:
        parse_space(OK, "s.yaml", ["model.d_model=64"])
    (p,) = e.value.problems
    assert p.key == "model" and "base.model" in p.fix
