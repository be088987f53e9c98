"""The routed step is one static graph: torch.compile(fullgraph=True) traces forward and backward
for every router the shipped search spaces use and matches eager; static capacities drop nothing
when they suffice, and count what they drop when they do not."""

import glob
import os

import pytest
import torch
import yaml
from helpers import tiny_cfg

from dnasweep.model import LossConfig, build_model, compute_loss

SPACES = os.path.join(os.path.dirname(__file__), "..", "search_spaces")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles new models of the same classes: without a reset, dynamo's recompile
    limit for DNAModel.forward runs out within this file (and fullgraph makes that an error)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def shipped_routers() -> list[tuple[str, str]]:
    """(task, router type) of every router a shipped search space may sample, or its base uses."""
    found = set()
    for path in sorted(glob.glob(os.path.join(SPACES, "*.yaml"))):
        with open(path) as f:
            doc = yaml.safe_load(f)
        task = doc["base"]["model"]["task"]
        found.add((task, doc["base"]["model"].get("router", {}).get("type", "topk")))
        found.update((task, r) for r in doc.get("search", {}).get("model.router.type", {}).get("choice", []))
    return sorted(found)


def _model_and_batch(task: str, router: str):
    cfg = tiny_cfg(task, router, n_steps=2, n_backbone=1, seq_len=16)
    if router in ("topk", "sigmoid", "noisy_topk", "threshold"):
        cfg.balance.identity_bias = True  # as the spaces sample them: the skip control's bias in the graph
    torch.manual_seed(0)
    model = build_model(cfg)
    model.capacity_mode = "static"
    if task == "lm":
        x, y = torch.randint(0, 256, (2, 16)), torch.randint(0, 256, (2, 16))
    else:
        x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    return model, x, y


def _fwd_bwd(fn, model, x, y):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # noisy_topk draws its noise inside the graph: same draws both ways
    out = fn(x)
    loss, _ = compute_loss(out, y, LossConfig(compute_weight=0.1, balance_weight=0.01, z_weight=1e-3))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, loss.detach(), grads


def _check_compiled_matches_eager(task, router, backend):
    model, x, y = _model_and_batch(task, router)
    with torch.no_grad():
        model.adapt_capacity(model(x))  # the caps a training loop would hold after one step
    caps = model.caps
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    out_c, loss_c, g_c = _fwd_bwd(compiled, model, x, y)
    out_e, loss_e, g_e = _fwd_bwd(model, model, x, y)
    assert model.caps == caps
    if router == "noisy_topk":  # the compiled RNG stream differs from eager: compare shapes and finiteness
        assert out_c.logits.shape == out_e.logits.shape and torch.isfinite(loss_c)
        assert g_c.keys() == g_e.keys()
        return
    assert (out_c.logits - out_e.logits).abs().max() < 1e-4
    assert abs(float(loss_c) - float(loss_e)) < 1e-4
    assert g_c.keys() == g_e.keys() and g_c
    for n in g_e:
        assert (g_c[n] - g_e[n]).abs().max() < 1e-4, n
    assert out_c.stats.flops_per_token == pytest.approx(out_e.stats.flops_per_token, rel=1e-6)
    assert out_c.stats.flops_executed_per_token == pytest.approx(out_e.stats.flops_executed_per_token, rel=1e-6)
    assert out_c.stats.dropped_fraction == 0.0


def test_shipped_spaces_cover_the_routers():
    routers = {r for _, r in shipped_routers()}
    assert {"topk", "hash", "expert_choice"} <= routers


@pytest.mark.slow  # the first pays for Dynamo's warm-up (~9 s on 2 CPU cores), the rest ~1-10 s each
@pytest.mark.parametrize("task,router", shipped_routers())
def test_fullgraph_trace_matches_eager(task, router):
    """Dynamo captures forward (fullgraph: no graph break, so no host sync) and AOT autograd the
    backward; aot_eager runs those graphs without inductor's slow CPU code generation."""
    _check_compiled_matches_eager(task, router, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("task,router", shipped_routers())
def test_inductor_compiled_matches_eager(task, router):
    _check_compiled_matches_eager(task, router, "inductor")


def test_static_capacity_with_room_equals_exact():
    model, x, y = _model_and_batch("lm", "topk")
    model.capacity_mode = "exact"
    exact = model(x)
    model.capacity_mode = "static"
    model.caps = None
    first = model(x)  # nothing observed yet: room for every pair
    model.adapt_capacity(first)
    tight = model(x)
    for out in (first, tight):
        assert (out.logits - exact.logits).abs().max() < 1e-5
        assert out.stats.dropped_fraction == 0.0
        assert out.stats.flops_per_token == pytest.approx(exact.stats.flops_per_token, rel=1e-6)
    assert first.stats.flops_executed_per_token > tight.stats.flops_executed_per_token


def test_static_capacity_drops_are_counted_and_adapted_away():
    from dnasweep.model.pool import Caps

    model, x, y = _model_and_batch("lm", "topk")
    model.cfg.balance.identity_bias = False  # so that the update below changes the caps only
    model.capacity_mode = "exact"
    exact = model(x)
    need = exact.stats.capacity_need_S3.max(0).values.tolist()
    model.capacity_mode = "static"
    model.caps = Caps(max(1, need[0] // 2), max(1, need[1] // 2), max(1, need[2] // 2))
    starved = model(x)
    assert 0.0 < starved.stats.dropped_fraction < 1.0
    assert starved.stats.flops_per_token < exact.stats.flops_per_token  # dropped pairs cost nothing
    assert (starved.logits - exact.logits).abs().max() > 1e-6
    model.update_routing_biases(starved)  # between steps: the caps grow to the need
    assert all(c >= n for c, n in zip(model.caps, need, strict=True))
    again = model(x)
    assert again.stats.dropped_fraction == 0.0
    assert (again.logits - exact.logits).abs().max() < 1e-5


@pytest.mark.slow  # compiles (~4 s)
def test_eager_cpu_is_exact_and_static_is_chosen_under_compile():
    model, x, _ = _model_and_batch("lm", "topk")
    model.capacity_mode = "auto"
    model(x)
    assert model.caps is None  # eager CPU: exact, nothing static was set
    torch.compile(model, fullgraph=True, backend="aot_eager")(x)
    assert model.caps is not None


@pytest.mark.slow
def test_train_compile_trains_and_adapts_capacity(tmp_path):
    """train.compile=true: the loop trains through torch.compile; the static capacities adapt
    between steps, drop nothing that the report would hide, and the loss falls as in eager."""
    from dnasweep.config import build_trial
    from dnasweep.train.loop import run_trial

    trial = {"model": {"kind": "dna", "task": "lm", "d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2,
                       "pool": {"n_transformer": 1, "n_attention": 1, "n_mlp": 1, "n_identity": 1}},
             "data": {"source": "pystdlib", "max_bytes": 200000},
             "train": {"batch_size": 4, "max_steps": 6, "eval_every": 6, "eval_batches": 2, "warmup_steps": 1,
                       "log_every": 1, "device": "cpu"}}
    res = {}
    for compiled in (False, True):
        cfg = build_trial(trial, [f"out_dir={tmp_path / str(compiled)}", f"train.compile={str(compiled).lower()}"])
        res[compiled] = run_trial(cfg, resume=False)
    assert res[True].status == "completed" and res[True].step == 6
    assert res[True].metrics["val/loss"] == pytest.approx(res[False].metrics["val/loss"], abs=0.05)
    import json

    from dnasweep import metrics as M

    rows = {c: [json.loads(line) for line in (tmp_path / str(c) / "metrics.jsonl").read_text().splitlines()]
            for c in (False, True)}
    drops = [r[M.ROUTER_DROPPED] for r in rows[True] if M.ROUTER_DROPPED in r]
    assert len(drops) == 6 and all(0.0 <= d <= 1.0 for d in drops)  # compiled: every training row says
    assert not any(M.ROUTER_DROPPED in r for r in rows[False])  # eager is exact: nothing to report


def test_static_capacities_travel_with_the_weights():
    """A resumed run keeps its static shapes (no recompile, same drops); a checkpoint from before
    static capacities loads and starts without any."""
    from dnasweep.model.pool import Caps

    model, x, _ = _model_and_batch("lm", "topk")
    model.caps = Caps(24, 8, 16)
    state = model.state_dict()
    fresh, _, _ = _model_and_batch("lm", "topk")
    fresh.load_state_dict(state)
    assert fresh.caps == Caps(24, 8, 16)
    old = {k: v for k, v in state.items() if not k.endswith("_extra_state")}
    fresh.load_state_dict(old)
    assert fresh.caps is None


def test_auto_is_exact_in_every_eager_run_and_evaluation_never_drops():
    """`auto` sizes segments on the host in eager runs on any device (eager GPU training is not
    switched to dropping tokens before bench/gpu.sh has measured it) and in evaluation; only
    training under torch.compile takes the static capacities (test above)."""
    from dnasweep.model.pool import Caps

    model, x, _ = _model_and_batch("lm", "topk")
    model.capacity_mode = "auto"
    model.caps = Caps(1, 1, 1)  # would drop nearly everything
    assert model._caps(2, 16, torch.device("cuda")) is None  # eager training on an accelerator: exact
    assert model(x).stats.dropped_fraction == 0.0
    model.capacity_mode = "static"
    assert model._caps(2, 16, torch.device("cuda")) == Caps(1, 1, 1)  # forced
    model.capacity_mode = "auto"
    model.eval()
    assert model._caps(2, 16, torch.device("cuda")) is None
    assert model(x).stats.dropped_fraction == 0.0
