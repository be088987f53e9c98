"""Measured FLOPs agree with what torch itself counts (FlopCounterMode), within 5%."""

import pytest
import torch
from helpers import tiny_cfg
from torch.utils.flop_counter import FlopCounterMode

from dnasweep.model import build_model

aten = torch.ops.aten


def _sdpa_cpu(q_shape, k_shape, *args, out_shape=None, **kwargs):
    """CPU SDPA forward, unmasked as the kernel executes it: QK^T and AV, 2 FLOPs per MAC."""
    b, h, sq, d = q_shape
    return 4 * b * h * sq * k_shape[2] * d


def _grouped_mm(a_shape, b_shape, *args, out_shape=None, **kwargs):
    """[P, K] x [E, K, N] with offsets: each row meets one group's weight."""
    n = b_shape[-1]
    return 2 * a_shape[0] * a_shape[1] * n


# torch 2.13 counts 0 for these two ops; teach it.
CUSTOM = {aten._grouped_mm: _grouped_mm}
if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
    CUSTOM[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu


def _count(model, x):
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=CUSTOM) as fc:
        out = model(x)
    return fc.get_total_flops(), out


@pytest.mark.parametrize("task,router", [("lm", "topk"), ("lm", "threshold"), ("lm", "sigmoid"),
                                         ("vision", "topk"), ("vision", "expert_choice")])
@pytest.mark.parametrize("kind", ["dna", "dense"])
def test_executed_flops_match_flop_counter(task, router, kind):
    cfg = tiny_cfg(task, router, kind=kind, d_model=64, seq_len=64)
    model = build_model(cfg).eval()
    x = torch.randint(0, 256, (4, 64)) if task == "lm" else torch.randn(4, 1, 8, 8)
    counted, out = _count(model, x)
    n_tokens = x.shape[0] * cfg.tokens_per_example
    ours = out.stats.flops_executed_per_token * n_tokens
    assert counted > 0
    assert abs(ours - counted) / counted < 0.05, (ours, counted)


def test_useful_flops_match_counter_when_nothing_is_padded():
    cfg = tiny_cfg("lm", "dense", d_model=64, seq_len=64)
    counted, out = _count(build_model(cfg).eval(), torch.randint(0, 256, (2, 64)))
    assert abs(out.stats.flops_per_token * 128 - counted) / counted < 0.05


def test_routing_only_pays_for_routed_tokens():
    """Top-1 over a pool of 8 computing modules costs far less than the dense soft mixture:
    tokens are gathered per module, not run through every module and masked."""
    flops = {}
    for router in ("topk", "dense"):
        cfg = tiny_cfg("lm", router, d_model=64, seq_len=64, n_backbone=0)
        cfg.pool.n_identity, cfg.router.top_k = 0, 1
        flops[router], _ = _count(build_model(cfg).eval(), torch.randint(0, 256, (4, 64)))
    assert flops["topk"] < flops["dense"] / 4


def test_gpu_summary_reports_useful_mfu_from_measured_flops(tmp_path):
    """bench/gpu.sh's table (bench/throughput.py --gpu-summary) on the files its parts write:
    MFU = 3 x measured forward FLOPs/token x tokens/s / the device's peak; parts that did not
    finish say so instead of vanishing."""
    import importlib.util
    import json
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "bench", "throughput.py")
    spec = importlib.util.spec_from_file_location("bench_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = {"label": "lm d_model 768", "n_tok": 1, "dna": [1e5, 1e9, 1.05e9, 0.0], "dense": [1.2e5, 1e9, 1e9, 0.0]}
    (tmp_path / "throughput_lm.json").write_text(json.dumps({"device": "NVIDIA H200", "bf16": True, "rows": [row]}))
    (tmp_path / "pytest.txt").write_text("....\n7 passed in 30.1s\n")
    (tmp_path / "pytest.rc").write_text("pytest -m cuda: exit 0\n")
    trial = tmp_path / "sweeps" / "s" / "trials" / "a"
    trial.mkdir(parents=True)
    (trial / "result.json").write_text(json.dumps({"status": "completed", "perf/tokens_per_s": 5e4}))
    table = bench.gpu_summary(str(tmp_path))
    assert "7 passed" in table
    assert f"{3 * 1e9 * 1e5 / 989e12:.1%}" in table  # DNA useful MFU against the H200 peak
    assert "vs dense 0.833" in table and "exec/useful 1.050" in table
    assert "{'completed': 1}" in table and "(not run)" in table  # the sweep's exit code never written


@pytest.mark.parametrize("n_transformer,n_identity,top_k,factor", [(6, 3, 1, 1.0), (2, 2, 8, 2.0)])
def test_nominal_flops_of_expert_choice_follow_its_capacity(n_transformer, n_identity, top_k, factor):
    """Expert choice gives every module exactly its capacity of tokens per image, whatever it has
    learnt, so the config-only estimate must equal what a forward measures. It used to assume
    capacity_factor x top_k slots per token (39% under at 13 modules, top-1; 57% over when the
    capacity is the whole image)."""
    from dnasweep.model.flops import nominal

    cfg = tiny_cfg("vision", "expert_choice", d_model=64, image_size=8, patch_size=2)
    cfg.pool.n_transformer, cfg.pool.n_identity = n_transformer, n_identity
    cfg.router.top_k, cfg.router.capacity_factor = top_k, factor
    out = build_model(cfg).eval()(torch.randn(4, 1, 8, 8))
    assert nominal(cfg).flops_per_token == pytest.approx(out.stats.flops_per_token, rel=1e-6)


def test_compute_penalty_prices_expert_choice_attention_at_its_capacity():
    """cost_M (the compute penalty's per-module weights) prices an attention module at the tokens
    it attends over: under expert choice, its capacity per image, not the whole image."""
    from dnasweep.model.flops import block_cost, module_costs

    cfg = tiny_cfg("vision", "expert_choice", d_model=32, image_size=8, patch_size=2)
    model = build_model(cfg).eval()
    out = model(torch.randn(2, 1, 8, 8), return_paths=True)
    L, M = cfg.tokens_per_example, cfg.pool.size
    tokens_per_module = (out.paths[0] >= 0).sum(0).float().mean(0)  # [S, M] over steps: per image
    cap = tokens_per_module.max().item()
    assert cap < L  # the case that matters: modules see part of the image
    want = torch.tensor(module_costs(cfg, cap)) / block_cost(cfg)
    assert torch.allclose(model.cost_M, want), (model.cost_M, want, M)


def test_nominal_dense_match_is_the_depth_nearest_the_dna():
    """dense_match: nominal picks the block count whose FLOPs come nearest the DNA's nominal
    FLOPs, routers included (they were left out: one block short here)."""
    import dataclasses

    from dnasweep.model.flops import dense_blocks, nominal

    cfg = tiny_cfg("lm", "topk", d_model=128, n_steps=8, seq_len=256, dense_match="nominal")
    cfg.pool.n_transformer, cfg.router.top_k = 2, 2
    target = nominal(cfg).flops_per_token
    dense = dataclasses.replace(cfg, kind="dense")
    n = dense_blocks(dense)
    got = nominal(dense).flops_per_token
    for other in (n - 1, n + 1):
        f = nominal(dataclasses.replace(dense, dense_layers=other)).flops_per_token
        assert abs(got - target) < abs(f - target), (n, other, got, f, target)


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                       ("NVIDIA L40S", 362e12), ("NVIDIA L40", 181e12), ("NVIDIA L4", 121e12),
                                       ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A10G", None),
                                       ("NVIDIA GH200 480GB", 989e12),
                                       ("NVIDIA GeForce RTX 4090", None)])
def test_mfu_peak_is_looked_up_by_the_device_names_words(name, peak):
    """By substring, an L40S read the L4's peak (MFU 3x too high) and an H100 PCIe the SXM's."""
    from dnasweep.train.loop import peak_flops

    assert peak_flops(name) == peak


@pytest.mark.parametrize("threshold", [0.2, 0.1])
def test_nominal_flops_of_the_threshold_router_count_the_slots_uniform_routing_keeps(threshold):
    """Nominal FLOPs assumed top_k slots for the threshold router; at uniform routing (every
    probability 1/M) a threshold above 1/M keeps only the slot it always keeps: validate's nominal
    FLOPs, dense_match: nominal's depth and the compute penalty's scale came out top_k times too high."""
    from dnasweep.model.flops import effective_k, nominal

    cfg = tiny_cfg("lm", "threshold", d_model=32, seq_len=16, n_backbone=0)
    cfg.pool.n_transformer, cfg.pool.n_attention, cfg.pool.n_mlp, cfg.pool.n_identity = 0, 0, 6, 0  # M = 6
    cfg.router.top_k, cfg.router.threshold = 3, threshold
    model = build_model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "router" in name:  # zero logits: uniform routing, as the nominal count assumes
                p.zero_()
    out = model(torch.randint(0, 256, (2, 16)))
    assert effective_k(cfg) == (3 if threshold < 1 / 6 else 1)
    assert nominal(cfg).flops_per_token == pytest.approx(out.stats.flops_per_token, rel=1e-6)
