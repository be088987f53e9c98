"""CUDA paths (`pytest -m cuda`; bench/gpu.sh runs them): bf16 autocast, the bf16 grouped matmul,
fused AdamW, checkpoint/resume and out-of-memory on a GPU. Every test skips on a machine without
CUDA, with the reason "no CUDA"."""

import pytest
import torch
from helpers import tiny_cfg

from dnasweep.config import build_trial
from dnasweep.model import LossConfig, build_model, compute_loss
from dnasweep.model.banks import grouped_matmul

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")]

DEV = torch.device("cuda")


def _lm_batch(cfg, B=4):
    return (torch.randint(0, cfg.vocab_size, (B, cfg.seq_len), device=DEV),
            torch.randint(0, cfg.vocab_size, (B, cfg.seq_len), device=DEV))


@pytest.mark.parametrize("kind", ["dna", "dense"])
def test_bf16_autocast_forward_backward(kind):
    cfg = tiny_cfg("lm", kind=kind, d_model=64, seq_len=64)
    model = build_model(cfg).to(DEV)
    x, y = _lm_batch(cfg)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x)
        loss, _ = compute_loss(out, y, LossConfig(compute_weight=0.1))
    loss.backward()
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():  # the same weights in fp32 agree to bf16 precision
        ref = model(x).logits.float()
    assert (out.logits.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05
    if kind == "dna":  # eager training on a GPU stays exact (dna.DNAModel._caps): nothing dropped, no caps
        assert model.caps is None and out.stats.dropped_fraction == 0.0


def test_static_capacity_adapts_on_cuda_without_drops_after_one_step():
    """The static dispatch (what torch.compile trains with), forced in eager mode: its first caps hold
    every pair, one step adapts them to the need, and the same batch then drops nothing at lower cost."""
    cfg = tiny_cfg("lm", d_model=64, seq_len=64)
    model = build_model(cfg).to(DEV)
    model.capacity_mode = "static"  # eager runs are exact otherwise (caps None): this test checked nothing
    x, _ = _lm_batch(cfg)
    first = model(x)
    assert model.caps is not None and first.stats.dropped_fraction == 0.0
    model.update_routing_biases(first)
    caps = model.caps
    again = model(x)
    assert again.stats.dropped_fraction == 0.0
    assert again.stats.flops_executed_per_token <= first.stats.flops_executed_per_token
    assert caps == model.caps


@pytest.mark.parametrize("counts", [[5, 0, 7, 4], [0, 0, 16, 0], [64, 1, 1, 13]])
def test_bf16_grouped_matmul_equals_loop(counts):
    x = torch.randn(sum(counts), 64, device=DEV, dtype=torch.bfloat16)
    w = torch.randn(len(counts), 64, 32, device=DEV, dtype=torch.bfloat16)
    ref = torch.cat([(xe.float() @ w[e].float()) for e, xe in enumerate(x.split(counts))])
    got = grouped_matmul(x, w, counts).float()
    assert (got - ref).abs().max() < 0.05 * ref.abs().max()


def test_fused_adamw_on_cuda():
    from dnasweep.config.train import TrainConfig
    from dnasweep.train.optim import make_optimizer

    model = build_model(tiny_cfg("lm", d_model=64, seq_len=32)).to(DEV)
    opt = make_optimizer(model, TrainConfig(), DEV)
    assert all(g.get("fused") for g in opt.param_groups)
    x, y = _lm_batch(model.cfg)
    before = [p.detach().clone() for p in model.parameters()]
    loss, _ = compute_loss(model(x), y, LossConfig())
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert all(torch.isfinite(p).all() for p in model.parameters())


TRIAL = {"model": {"kind": "dna", "task": "lm", "d_model": 64, "n_heads": 4, "seq_len": 32, "n_steps": 2,
                   "pool": {"n_transformer": 2, "n_attention": 1, "n_mlp": 1, "n_identity": 1}},
         "data": {"source": "pystdlib", "max_bytes": 200000},
         "train": {"batch_size": 4, "eval_every": 4, "eval_batches": 2, "warmup_steps": 1, "log_every": 1,
                   "device": "cuda", "max_steps": 8}}


def test_checkpoint_resume_on_cuda_equals_uninterrupted(tmp_path):
    from dnasweep.train.loop import run_trial

    straight = run_trial(build_trial(TRIAL, [f"out_dir={tmp_path / 'a'}"]), resume=False)
    first = run_trial(build_trial(TRIAL, [f"out_dir={tmp_path / 'b'}", "train.max_steps=4"]), resume=False)
    assert first.status == "completed" and first.step == 4
    resumed = run_trial(build_trial(TRIAL, [f"out_dir={tmp_path / 'b'}"]), resume=True)
    assert straight.status == resumed.status == "completed" and resumed.step == 8
    assert resumed.metrics["val/loss"] == pytest.approx(straight.metrics["val/loss"], rel=1e-3)


def test_cuda_out_of_memory_is_trial_status_oom(tmp_path):
    from dnasweep.train.loop import run_trial

    # Small weights (the model is built before the loop's OOM handling), activations of many GiB.
    cfg = build_trial(TRIAL, [f"out_dir={tmp_path}", "train.batch_size=512", "model.seq_len=512",
                              "model.d_model=256", "train.max_steps=2", "train.eval_every=2",
                              "train.eval_batches=1", "data.max_bytes=6000000"])
    free, _ = torch.cuda.mem_get_info()
    # Cap this process at ~2 GiB of the device so the trial runs out of memory fast on any GPU.
    frac = min(1.0, 2 * 2**30 / torch.cuda.get_device_properties(0).total_memory)
    torch.cuda.set_per_process_memory_fraction(frac)
    try:
        res = run_trial(cfg, resume=False)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert free > 0
    assert res.status == "oom", res.reason
    assert "out of memory" in res.reason
