"""The router registry owns router names and properties: a router registered from outside the
package validates, builds, trains, and runs from the CLI through DNASWEEP_PLUGINS."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from dnasweep.config import build_trial
from dnasweep.errors import ConfigError
from dnasweep.model import ROUTERS, build_model, register_router, router_names
from dnasweep.model.routers import Route
from dnasweep.train.loop import run_trial

TINY = {"model": {"d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2},
        "data": {"source": "pystdlib", "max_bytes": 200000},
        "train": {"max_steps": 3, "batch_size": 2, "warmup_steps": 1, "eval_every": 3, "eval_batches": 1,
                  "device": "cpu"}}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def first_k_rule(logits_TM, bias_M, ctx):
    """Always the first top_k modules of the pool, equal gates: learns nothing, ignores biases."""
    T, k = ctx.keys_T.shape[0], ctx.cfg.router.top_k
    idx_TK = torch.arange(k, device=ctx.keys_T.device).expand(T, k)
    return Route(idx_TK, torch.full((T, k), 1.0 / k, device=ctx.keys_T.device), None, None)


@pytest.fixture
def registered():
    """Registers routers for one test (register(name, **props)) and removes them afterwards."""
    added = []

    def register(name, fn=first_k_rule, **props):
        register_router(name, **props)(fn)
        added.append(name)

    yield register
    for name in added:
        ROUTERS.pop(name, None)


def _trial(router, tmp_path, **model):
    return build_trial({**TINY, "model": {**TINY["model"], **model}, "out_dir": str(tmp_path)},
                       [f"model.router.type={router}"])


def test_registered_router_passes_validation(registered, tmp_path):
    registered("first_k", learns=False, biasable=False)
    cfg = _trial("first_k", tmp_path)
    assert cfg.model.router.type == "first_k" and cfg.model.slots_per_token == cfg.model.router.top_k


def test_registered_router_builds_and_trains(registered, tmp_path):
    registered("first_k", learns=False, biasable=False)
    cfg = _trial("first_k", tmp_path)
    model = build_model(cfg.model)
    assert len(model.routing.linears) == 0 and model.routing.hash_table is None
    result = run_trial(cfg)
    assert result.status == "completed", result.reason


def test_router_properties_drive_validation(registered, tmp_path):
    with pytest.raises(ConfigError) as e:
        _trial("nope", tmp_path)
    assert "model.router.type" in str(e.value) and ", ".join(router_names()) in str(e.value)

    registered("look_ahead", causal=False, biasable=False)  # the properties, not the name, are refused
    with pytest.raises(ConfigError) as e:
        _trial("look_ahead", tmp_path)
    msg = str(e.value)
    assert "is not causal" in msg and ", ".join(router_names(causal=True)) in msg and "expert_choice" not in msg

    registered("first_k", learns=False, biasable=False)
    with pytest.raises(ConfigError) as e:
        build_trial({**TINY, "out_dir": str(tmp_path)},
                    ["model.router.type=first_k", "model.balance.identity_bias=true", "model.balance.loss_free=true"])
    msg = str(e.value)
    assert "model.balance.identity_bias" in msg and "model.balance.loss_free" in msg
    assert ", ".join(router_names(biasable=True)) in msg and "first_k" not in router_names(biasable=True)

    registered("everyone", all_modules=True, biasable=False)
    cfg = _trial("everyone", tmp_path)
    assert cfg.model.slots_per_token == cfg.model.pool.size


def test_registering_a_taken_name_needs_replace(registered):
    with pytest.raises(ValueError, match="already registered"):
        register_router("topk")(first_k_rule)
    registered("first_k", learns=False)
    with pytest.raises(ValueError, match="'first_k' is already registered"):
        register_router("first_k")(first_k_rule)
    registered("first_k", learns=True, replace=True)
    assert ROUTERS["first_k"].learns


def test_builtin_properties():
    assert router_names(causal=False) == ["expert_choice"]
    assert router_names(learns=False) == ["hash"]
    assert router_names(all_modules=True) == ["dense", "expert_choice"]
    assert router_names(biasable=True) == ["noisy_topk", "sigmoid", "threshold", "topk"]


PLUGIN = textwrap.dedent('''
    import torch

    from dnasweep.model import register_router
    from dnasweep.model.routers import Route


    @register_router("first_k", learns=False, biasable=False)
    def first_k(logits_TM, bias_M, ctx):
        T, k = ctx.keys_T.shape[0], ctx.cfg.router.top_k
        idx = torch.arange(k).expand(T, k)
        return Route(idx, torch.full((T, k), 1.0 / k), None, None)
''')


@pytest.mark.slow  # dnasweep processes with plugins (~5 s)
def test_cli_loads_plugins(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "myplugin.py").write_text(PLUGIN)
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(textwrap.dedent(f"""
        model: {{d_model: 32, n_heads: 4, seq_len: 24, n_steps: 2, router: {{type: first_k}}}}
        data: {{source: pystdlib, max_bytes: 200000}}
        train: {{max_steps: 3, batch_size: 2, warmup_steps: 1, eval_every: 3, eval_batches: 1, device: cpu}}
        out_dir: {tmp_path / "out"}
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), REPO]), "DNASWEEP_PLUGINS": "myplugin"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "dnasweep.cli", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path)

    r = cli("train", str(cfg), "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "metrics.jsonl").exists()

    env["DNASWEEP_PLUGINS"] = "myplugin, no_such_plugin"
    r = cli("train", str(cfg), "--quiet")
    assert r.returncode == 2, r.stderr
    assert "DNASWEEP_PLUGINS" in r.stderr and "no_such_plugin" in r.stderr and "Traceback" not in r.stderr
