"""The fast routed paths equal slow, obviously-correct references (tests/reference.py)."""

import pytest
import torch
from helpers import tiny_cfg
from reference import reference_step

from dnasweep.model import banks, build_model
from dnasweep.model.banks import grouped_matmul
from dnasweep.model.routers import Route


def _pool_and_h(task="lm", B=3, L=24, dtype=torch.float64, **kw):
    model = build_model(tiny_cfg(task, **kw)).to(dtype)
    h = torch.randn(B, L, model.cfg.d_model, dtype=dtype)
    return model.pool, h


def _random_route(T, M, K, with_active=False, dtype=torch.float64):
    idx = torch.stack([torch.randperm(M)[:K] for _ in range(T)])
    gate = torch.rand(T, K, dtype=dtype)
    active = torch.rand(T, K) < 0.7 if with_active else None
    return Route(idx, gate, active, None)


# float32 runs the grouped-matmul kernel; float64 the loop fallback (the kernel has no fp64).
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("task", ["lm", "vision"])
@pytest.mark.parametrize("K,with_active", [(1, False), (2, False), (3, True)])
def test_pool_step_equals_reference(task, K, with_active, dtype):
    pool, h = _pool_and_h(task, dtype=dtype)
    route = _random_route(h.shape[0] * h.shape[1], pool.size, K, with_active, dtype)
    fast, res = pool(h, route)
    slow = reference_step(pool, h, route)
    assert (fast - slow).abs().max() < 1e-5
    active = route.active_TK if with_active else torch.ones_like(route.idx_TK, dtype=torch.bool)
    assert torch.equal(res.slots_M, torch.bincount(route.idx_TK[active], minlength=pool.size))


def test_uneven_loads_and_empty_modules():
    """Most tokens to one attention module, none to others: packing pads heavily; still exact."""
    pool, h = _pool_and_h("lm")
    T = h.shape[0] * h.shape[1]
    idx = torch.zeros(T, 2, dtype=torch.long)
    idx[:, 1] = torch.where(torch.rand(T) < 0.1, 5, pool.size - 1)  # module 5: attention-only
    route = Route(idx, torch.rand(T, 2, dtype=torch.float64), None, None)
    fast, res = pool(h, route)
    assert (fast - reference_step(pool, h, route)).abs().max() < 1e-5
    assert res.flops_executed > res.flops_useful  # padding of the sparse module's rows


@pytest.mark.parametrize("line_slots", [1, 7, 10_000])
def test_non_causal_core_packs_rows_into_lines_exactly(monkeypatch, line_slots):
    """Vision's exact core packs whole (module, image) rows into lines: a row longer than a line
    gets a line of its own length (1), several rows share lines (7), or the bank is one line
    (10_000); each row attends to its own tokens only, forward and backward, whatever the packing."""
    monkeypatch.setattr(banks, "LINE_SLOTS", line_slots)
    pool, h = _pool_and_h("vision", B=5, L=9, dtype=torch.float64)
    T = h.shape[0] * h.shape[1]
    route = _random_route(T, pool.size, 3, with_active=True)
    route.active_TK[: h.shape[1]] = False  # an image with no routed token at all
    h.requires_grad_(True)
    fast, res = pool(h, route)
    slow = reference_step(pool, h, route)
    assert (fast - slow).abs().max() < 1e-9
    g = torch.randn_like(fast)
    (grad_fast,) = torch.autograd.grad(fast, h, g)
    (grad_slow,) = torch.autograd.grad(slow, h, g)
    assert (grad_fast - grad_slow).abs().max() < 1e-9
    # executed FLOPs count every slot of every line: more than the useful ones unless rows fill lines
    assert res.flops_executed >= res.flops_useful


def test_gradients_match_reference():
    pool, h = _pool_and_h("lm", B=2, dtype=torch.float32)
    route = _random_route(h.shape[0] * h.shape[1], pool.size, 2, dtype=torch.float32)
    route.gate_TK.requires_grad_(True)
    h.requires_grad_(True)
    g_out = torch.randn_like(h)
    grads = []
    for fn in (lambda: pool(h, route)[0], lambda: reference_step(pool, h, route)):
        pool.zero_grad()
        h.grad = route.gate_TK.grad = None
        (fn() * g_out).sum().backward()
        grads.append([h.grad.clone(), route.gate_TK.grad.clone()]
                     + [p.grad.clone() for p in pool.parameters()])
    for a, b in zip(*grads, strict=True):
        assert (a - b).abs().max() < 1e-5


def test_transformer_module_with_all_tokens_equals_dense_block():
    """Routing every token to transformer module 0 with gate 1 is exactly a dense block."""
    model = build_model(tiny_cfg("lm", n_backbone=1)).double()
    blk, pool = model.backbone[0], model.pool
    with torch.no_grad():
        blk.attn.norm_AD.copy_(pool.attn.norm_AD[:1])
        blk.attn.w_qkv_AD3D.copy_(pool.attn.w_qkv_AD3D[:1])
        blk.attn.w_o_ADD.copy_(pool.attn.w_o_ADD[:1])
        blk.mlp.norm_ED.copy_(pool.mlp_t.norm_ED[:1])
        blk.mlp.w_in_EDF.copy_(pool.mlp_t.w_in_EDF[:1])
        blk.mlp.w_out_EFD.copy_(pool.mlp_t.w_out_EFD[:1])
    h = torch.randn(2, 24, 32, dtype=torch.float64)
    T = 48
    route = Route(torch.zeros(T, 1, dtype=torch.long), torch.ones(T, 1, dtype=torch.float64), None, None)
    assert (pool(h, route)[0] - blk(h)).abs().max() < 1e-10


def test_identity_only_routing_leaves_stream_unchanged():
    pool, h = _pool_and_h("lm")
    T = h.shape[0] * h.shape[1]
    ident = pool.size - 1
    route = Route(torch.full((T, 1), ident), torch.rand(T, 1, dtype=torch.float64), None, None)
    out, res = pool(h, route)
    assert torch.equal(out, h)
    assert res.flops_useful == 0.0


def test_dense_router_equals_soft_mixture():
    """The dense router: h + Σ_m softmax_m (M_m(h) - h) over the whole pool, every token."""
    model = build_model(tiny_cfg("lm", router="dense", n_steps=1, n_backbone=0)).double()
    x = torch.randint(0, 256, (2, 24))
    h, keys = model.stem(x)
    route = model.routing(h, 0, keys)
    routed = torch.ones(2, 24, dtype=torch.bool)
    from reference import module_update
    probs = route.logits_TM.softmax(-1).view(2, 24, -1)
    mix = h + sum(probs[..., m, None] * module_update(model.pool, m, h, routed) for m in range(model.pool.size))
    assert (model.pool(h, route)[0] - mix).abs().max() < 1e-10


@pytest.mark.parametrize("counts", [[5, 0, 7, 4], [0, 0, 16, 0], [1, 1, 1, 13]])
def test_grouped_matmul_equals_loop(counts):
    x = torch.randn(sum(counts), 16)
    w = torch.randn(len(counts), 16, 24)
    ref = torch.cat([xe @ w[e] for e, xe in enumerate(x.split(counts))])
    assert (grouped_matmul(x, w, counts) - ref).abs().max() < 1e-4
