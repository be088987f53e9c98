"""Model behaviour: causality, gradients, shapes, paths, config errors, nominal accounting."""

import dataclasses

import pytest
import torch
from helpers import tiny_cfg

from dnasweep.errors import ConfigError
from dnasweep.model import LossConfig, build_model, calibrate, compute_loss, nominal, router_names, router_spec
from dnasweep.model.calibrate import solve_identity_bias
from dnasweep.model.flops import block_cost, dense_blocks

LM_ROUTERS = router_names(causal=True)


@pytest.mark.parametrize("router", LM_ROUTERS)
@pytest.mark.parametrize("kind", ["dna", "dense"])
def test_lm_is_causal(router, kind):
    """Changing future tokens never changes earlier logits (nor earlier paths)."""
    model = build_model(tiny_cfg("lm", router, kind=kind)).eval()
    x = torch.randint(0, 256, (2, 24))
    x2 = x.clone()
    x2[:, 12:] = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        a, b = model(x, return_paths=True), model(x2, return_paths=True)
    assert (a.logits[:, :12] - b.logits[:, :12]).abs().max() < 1e-5
    assert (a.logits[:, 12:] - b.logits[:, 12:]).abs().max() > 1e-4  # the change did reach the future
    if kind == "dna":
        assert torch.equal(a.paths[:, :12], b.paths[:, :12])


@pytest.mark.parametrize("router", router_names(learns=True))
def test_gradients_reach_every_router(router):
    task = "lm" if router_spec(router).causal else "vision"
    model = build_model(tiny_cfg(task, router))
    x = torch.randint(0, 256, (4, 24)) if task == "lm" else torch.randn(4, 1, 8, 8)
    y = torch.randint(0, 256, (4, 24)) if task == "lm" else torch.randint(0, 10, (4,))
    loss, _ = compute_loss(model(x), y, LossConfig())
    loss.backward()
    for s, lin in enumerate(model.routing.linears):
        assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0, f"router {s} got no gradient"


def test_hash_router_learns_nothing_and_is_fixed():
    model = build_model(tiny_cfg("lm", "hash"))
    assert len(model.routing.linears) == 0
    x = torch.randint(0, 256, (2, 24))
    p1 = model(x, return_paths=True).paths
    p2 = model(x.flip(1), return_paths=True).paths.flip(1)
    assert torch.equal(p1, p2)  # a token's path depends on its id alone


def test_shared_router_is_one_linear():
    cfg = tiny_cfg("lm")
    cfg.router.shared = True
    model = build_model(cfg)
    assert len(model.routing.linears) == 1
    assert model.params_total == nominal(cfg).params_total


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("kind", ["dna", "dense"])
def test_vision_shapes(pooling, kind):
    cfg = tiny_cfg("vision", "topk", pooling=pooling, kind=kind, image_size=8, patch_size=2, channels=3)
    out = build_model(cfg)(torch.randn(5, 3, 8, 8), return_paths=True)
    assert out.logits.shape == (5, 10)
    L = 16 + (pooling == "cls")
    if kind == "dna":
        assert out.paths.shape == (5, L, cfg.n_steps, cfg.router.top_k)


def test_vision_is_not_causal():
    """In vision every patch may attend to every other patch routed to the same module."""
    model = build_model(tiny_cfg("vision", "dense", n_backbone=0)).eval()
    x = torch.randn(1, 1, 8, 8)
    x2 = x.clone()
    x2[..., 6:, :] += 1.0  # change the last rows of pixels = the last patches
    with torch.no_grad():
        h, keys = model.stem(x)
        h2, _ = model.stem(x2)
        r = model.routing(h, 0, keys)
        a = model.pool(h, r)[0][0, 0]
        b = model.pool(h2, r)[0][0, 0]
    assert (a - b).abs().max() > 1e-6


def test_paths_record_the_chosen_modules():
    model = build_model(tiny_cfg("lm", "threshold"))
    out = model(torch.randint(0, 256, (2, 24)), return_paths=True)
    p = out.paths
    assert p.shape == (2, 24, 3, 2)
    assert ((p >= -1) & (p < model.cfg.pool.size)).all()
    assert (p[..., 0] >= 0).all()  # threshold keeps at least one module
    counts = torch.stack([torch.bincount(p[:, :, s][p[:, :, s] >= 0], minlength=model.cfg.pool.size)
                          for s in range(3)]).float()
    assert torch.equal(counts, out.stats.slots_SM)
    assert model(torch.randint(0, 256, (2, 24))).paths is None


def test_config_errors_are_reported_all_at_once():
    cfg = tiny_cfg("lm", "expert_choice", d_model=30, n_heads=4)
    cfg.router.top_k = 99
    cfg.balance.identity_bias = True
    cfg.pool.n_identity = 0
    with pytest.raises(ConfigError) as e:
        build_model(cfg)
    keys = {p.key for p in e.value.problems}
    assert {"model.d_model", "model.router.type", "model.balance.identity_bias"} <= keys
    assert "not causal" in str(e.value)


def test_unknown_router_lists_known_ones():
    cfg = tiny_cfg("lm", "topkk")
    with pytest.raises(ConfigError) as e:
        build_model(cfg)
    msg = str(e.value)
    assert "model.router.type" in msg and "topk" in msg and "sigmoid" in msg


def test_top_k_larger_than_pool_rejected():
    cfg = tiny_cfg("lm")
    n = cfg.pool.size
    cfg.router.top_k = n + 1
    with pytest.raises(ConfigError, match=rf"model.router.top_k: top_k={n + 1} must be in \[1, pool size {n}\]"):
        build_model(cfg)


@pytest.mark.parametrize("overrides", [
    {}, {"kind": "dense"}, {"task": "vision"}, {"task": "vision", "pooling": "cls"}, {"n_backbone": 0},
    {"router": "hash"}, {"router": "dense", "d_model": 64}, {"task": "vision", "kind": "dense", "channels": 3},
])
def test_nominal_params_match_built_model(overrides):
    overrides = dict(overrides)
    router = overrides.pop("router", "topk")
    task = overrides.pop("task", "lm")
    cfg = tiny_cfg(task, router, **overrides)
    model = build_model(cfg)
    assert nominal(cfg).params_total == sum(p.numel() for p in model.parameters())


def test_dense_router_measured_flops_equal_nominal():
    """With every module on every token, nothing is left to chance: measured == nominal."""
    cfg = tiny_cfg("lm", "dense")
    out = build_model(cfg)(torch.randint(0, 256, (2, 24)))
    assert out.stats.flops_per_token == pytest.approx(nominal(cfg).flops_per_token, rel=1e-9)
    assert out.stats.flops_executed_per_token == pytest.approx(out.stats.flops_per_token, rel=1e-9)


def test_dense_baseline_matches_dna_nominal_flops():
    cfg = tiny_cfg("lm", "topk", d_model=64, n_steps=8, dense_match="nominal")
    dna = nominal(cfg).flops_per_token
    cfg.kind = "dense"
    dense = nominal(cfg).flops_per_token
    assert abs(dense - dna) / dna < 0.35  # nearest whole number of blocks
    out = build_model(cfg)(torch.randint(0, 256, (1, 24)))
    assert out.stats.flops_per_token == pytest.approx(dense, rel=1e-9)


def test_bad_input_shapes_are_clear_errors():
    lm = build_model(tiny_cfg("lm"))
    with pytest.raises(ValueError, match="exceeds model.seq_len"):
        lm(torch.randint(0, 256, (1, 99)))
    vit = build_model(tiny_cfg("vision"))
    with pytest.raises(ValueError, match=r"images \[B, 1, 8, 8\]"):
        vit(torch.randn(2, 3, 8, 8))


def _measured(model, x) -> float:
    with torch.no_grad():
        return model.eval()(x).stats.flops_per_token


@pytest.mark.parametrize("router,skip", [("topk", None), ("sigmoid", None), ("threshold", None), ("topk", 0.5)])
def test_dense_matches_the_flops_the_dna_measures(router, skip):
    """dense_match: measured. The threshold router at init keeps one module of its two (no
    probability reaches 0.2 over 10 modules): the nominal rule counts that too now. A skip
    controller holds identity at its target: the nominal rule cannot see it and misses by blocks."""
    cfg = tiny_cfg("lm", router, d_model=64, n_steps=8, seq_len=64)
    if skip is not None:
        cfg.balance.identity_bias, cfg.balance.target_skip = True, skip
    torch.manual_seed(1)  # another DNA than the calibration's, measured on another batch
    dna = build_model(cfg)
    x = torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(5))
    if skip is not None:  # what the controller does in training: identity takes `skip` of the slots
        solve_identity_bias(dna, torch.randint(0, 256, (4, 64), generator=torch.Generator().manual_seed(6)), skip)
    dna_flops = _measured(dna, x)
    block = block_cost(cfg)
    dense = {m: _measured(build_model(dataclasses.replace(cfg, kind="dense", dense_match=m)), x)
             for m in ("measured", "nominal")}
    assert abs(dense["measured"] - dna_flops) <= block, (dense, dna_flops, block)
    if skip is not None:
        assert abs(dense["nominal"] - dna_flops) > 3 * block
    if router == "threshold":
        assert abs(dense["nominal"] - dna_flops) <= block


def test_measured_match_is_deterministic_and_leaves_the_rng_alone():
    cfg = tiny_cfg("lm", "threshold", kind="dense", d_model=64, n_steps=8)
    state = torch.get_rng_state()
    n = dense_blocks(cfg)
    assert torch.equal(state, torch.get_rng_state())
    calibrate._CACHE.clear()
    assert dense_blocks(cfg) == n  # recomputed from scratch: the same DNA, batch and depth
    assert nominal(cfg).params_total == sum(p.numel() for p in build_model(cfg).parameters())


def test_measured_match_needs_a_dna_it_can_build():
    cfg = tiny_cfg("lm", "expert_choice", kind="dense")  # expert choice cannot route a causal LM
    with pytest.raises(ConfigError, match=r"model.router.type: .*not causal.*dense_match: measured"):
        build_model(cfg)
    cfg.dense_match = "nominal"
    assert build_model(cfg)
