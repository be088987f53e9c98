"""The benchmarks print honest ratios: the naive "masked" baseline computes the same function as the
routed pool, every arm's iterations alternate in one process, MFU is against the peak of the device and
precision that ran, and the suggest bench's trials carry constraints as a sweep's do. Fast: tiny models,
no Ray cluster, no CUDA."""

import pathlib
import sys

import pytest
import torch

from dnasweep.model import ModelConfig, PoolConfig, build_model

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
from throughput import masked_step  # noqa: E402


def test_masked_baseline_equals_routed_pool():
    cfg = ModelConfig(d_model=64, n_heads=4, n_steps=1, seq_len=32,
                      pool=PoolConfig(n_transformer=8, n_attention=0, n_mlp=0, n_identity=0))
    model = build_model(cfg)
    h = torch.randn(2, 32, 64)
    route = model.routing(h, 0, torch.zeros(2, 32, dtype=torch.long))
    assert (model.pool(h, route)[0] - masked_step(model.pool, h, route)[0]).abs().max() < 1e-5


def test_orchestration_idle_breakdown_hand_computed():
    from orchestration import idle_breakdown

    # two slots from t=0 to t=10: lane A trains 1-4 and 5-10, lane B trains 2-7 then idles
    parts = idle_breakdown([(1, 4), (2, 7), (5, 10)], 0, 10, 2)
    assert parts == {"start": (1 + 2) / 2, "between": 1 / 2, "tail": 3 / 2, "end": 0}
    assert idle_breakdown([(1, 4), (2, 7), (5, 9)], 0, 10, 2)["end"] == 1  # the sweep ended 1 s after its last trial


def test_orchestration_packed_makespan_hand_computed():
    from orchestration import packed

    # durations 3, 5, 5 in start order on 2 slots: [3, 0] -> [3, 5] -> [8, 5]
    assert packed([(5, 10), (1, 4), (2, 7)], 2) == 8
    assert packed([(0, 2), (0, 2), (0, 2)], 3) == 2


def test_synthetic_throughput_alternates_the_arms(monkeypatch, capsys):
    """The default (no --config) mode times DNA, dense and masked one iteration each in turn, with the
    same warm-up for each: timed one arm after another, load drift on a shared machine biased the ratio."""
    import throughput

    order = []
    step_time = throughput.step_time

    def recording(model, *args):
        order.append(id(model))
        return step_time(model, *args)

    monkeypatch.setattr(throughput, "step_time", recording)
    throughput.main(["--d-model", "32", "--heads", "2", "--modules", "2", "--steps", "1", "--seq", "16",
                     "--batch", "1", "--iters", "2", "--warmup", "1"])
    arms = order[:3]
    assert len(set(arms)) == 3 and order == arms * 3  # (1 warm-up + 2 timed) rounds of dna, dense, masked
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("median of 2 forward+backward after 1 warm-up, dna, dense, masked alternating")
    assert [ln.split()[0] for ln in out[2:5]] == ["dna", "dense", "masked"]
    assert out[5].startswith("dna/dense tokens/s: ") and out[6].startswith("dna/masked tokens/s: ")
    assert float(out[-1]) > 0


def test_throughput_times_the_threads_it_is_given(monkeypatch, capsys):
    """--threads 1 times what a 1-CPU sweep trial runs on (one intra-op thread), and says so."""
    import throughput

    seen = []
    step_time = throughput.step_time
    monkeypatch.setattr(throughput, "step_time", lambda *a: seen.append(torch.get_num_threads()) or step_time(*a))
    before = torch.get_num_threads()
    try:
        throughput.main(["--d-model", "32", "--heads", "2", "--modules", "2", "--steps", "1", "--seq", "16",
                         "--batch", "1", "--iters", "1", "--warmup", "0", "--no-masked", "--threads", "1"])
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}
    assert capsys.readouterr().out.startswith("device cpu, 1 threads, d_model 32")


def _summary(tmp_path, device: str, bf16: bool) -> str:
    import json

    from throughput import gpu_summary

    # tokens/s, useful FLOPs/token, executed FLOPs/token, dropped
    row = {"label": "synthetic d_model 768", "n_tok": 1, "dna": [1e5, 1e9, 1e9, 0.0], "dense": [2e5, 1e9, 1e9, 0.0]}
    (tmp_path / "throughput_synthetic.json").write_text(json.dumps({"device": device, "bf16": bf16, "rows": [row]}))
    return gpu_summary(str(tmp_path))


def test_gpu_summary_gives_no_bf16_mfu_for_a_run_without_bf16(tmp_path):
    out = _summary(tmp_path, "NVIDIA H100 80GB HBM3", bf16=False)
    lines = [ln for ln in out.splitlines() if "tok/s" in ln]
    assert len(lines) == 2 and all("useful MFU n/a (not bf16)" in ln for ln in lines)
    assert "%" not in "".join(lines)


def test_gpu_summary_mfu_uses_the_devices_own_peak(tmp_path):
    # 3 x 1e9 FLOPs/token x 1e5 tokens/s = 3e14 FLOP/s: 30.3% of the SXM's 989 TFLOPS, 35.9% of the NVL's 835
    assert "useful MFU  30.3%" in _summary(tmp_path, "NVIDIA H200", bf16=True)
    assert "useful MFU  35.9%" in _summary(tmp_path, "NVIDIA H200 NVL", bf16=True)
    assert "useful MFU n/a (unknown peak)" in _summary(tmp_path, "NVIDIA GeForce RTX 4090", bf16=True)


@pytest.mark.parametrize("name,peak", [("NVIDIA H200", 989e12), ("NVIDIA H200 NVL", 835e12),
                                       ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                       ("NVIDIA H100 NVL", 835e12), ("NVIDIA GH200 480GB", 989e12),
                                       ("NVIDIA H20", None), ("NVIDIA L40S", 362e12), ("NVIDIA L4", 121e12)])
def test_peak_flops_by_the_most_specific_name(name, peak, monkeypatch):
    """Dense bf16 peaks (NVIDIA's 'with sparsity' BF16 figures halved): an H200 NVL (1,671 sparse) is not an
    H200 SXM (1,979), whatever order the table lists them in."""
    from dnasweep.train import loop

    assert loop.peak_flops(name) == peak
    monkeypatch.setattr(loop, "PEAK_FLOPS", list(reversed(loop.PEAK_FLOPS)))  # generic entries first
    assert loop.peak_flops(name) == peak


def test_suggest_bench_records_constraints_as_a_sweep_does():
    """Optuna's samplers read constraint values back from the trials (GPSampler fits one more model per
    constraint): the history and the timed trials must carry them as a real sweep's searcher records
    them, or a constrained space's latency is measured on the samplers' cheaper unconstrained path."""
    pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
    import numpy as np
    import suggest

    from dnasweep.model import nominal
    from dnasweep.space import load_space
    from dnasweep.space.apply import active_values, apply
    from dnasweep.sweep import compat
    from dnasweep.sweep.searcher import ParetoOptunaSearch

    space = load_space(str(pathlib.Path(__file__).resolve().parents[1] / "search_spaces" / "lm.yaml"))
    # what the real searcher records for a trial that reports its params/total
    s = ParetoOptunaSearch(space)
    s.set_search_properties(None, None, {})
    s.suggest("a")
    (live,) = compat.search_trials(s).values()
    params = dict(live.params)
    total = nominal(apply(space.base, active_values(space.params, params)).model).params_total
    s.on_trial_complete("a", {"val/loss": 1.0, "compute/flops_per_token": 1e5, "params/total": total})
    (told,) = compat.search_study(s).trials
    assert told.constraints

    past = suggest.history(space, 3)
    assert all(set(t.constraints) == set(told.constraints) for t in past)
    assert suggest.constraint_values(space, params, np.random.default_rng(0)) == told.constraints
    for t in past:
        assert t.constraints == suggest.constraint_values(space, t.params, np.random.default_rng(0))
    times, trials = suggest.time_sampler(space, "random", past, 2)
    assert len(times) == 2 and len(trials) == 5
    assert all(set(t.constraints) == set(told.constraints) for t in trials)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA, gpu.sh would run the whole GPU check")
def test_gpu_script_says_what_is_missing_before_it_checks_for_cuda(tmp_path):
    """bench/gpu.sh on a Python without dnasweep's packages (the lent GPU machine's image has torch, not
    omegaconf; its .venv does not travel) said 'no CUDA device: nothing to check', the wrong reason."""
    import subprocess

    root = pathlib.Path(__file__).resolve().parents[1]
    bare = tmp_path / "bare-python"  # this interpreter without its site-packages: no torch, no omegaconf
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    bare.chmod(0o755)
    runs = {}
    for name, py in (("bare", str(bare)), ("full", sys.executable)):
        p = subprocess.run(["bash", str(root / "bench" / "gpu.sh"), str(tmp_path / name)], env={"PY": py,
                           "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)
        runs[name] = (p.returncode, p.stdout)
    code, out = runs["bare"]
    assert code == 3 and "dnasweep does not import" in out and "No module named" in out
    assert runs["full"][0] == 2 and "no CUDA device" in runs["full"][1]  # dnasweep imports: only CUDA is missing


def test_plain_optuna_arm_runs_as_many_trials_at_once_as_the_sweep(tmp_path, monkeypatch):
    """The plain-Optuna arm ran 2 threads whatever budget.concurrent said, while its ideal divided by
    budget.concurrent: with 4 slots its overhead read ~+100%."""
    pytest.importorskip("optuna", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
    import os
    import threading
    import time
    from types import SimpleNamespace

    import orchestration

    from dnasweep.space import load_space
    from dnasweep.train import loop

    running, most, lock = [0], [0], threading.Lock()

    def fake_run_trial(cfg):
        os.makedirs(cfg.out_dir, exist_ok=True)
        open(os.path.join(cfg.out_dir, "config.yaml"), "w").close()
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        open(os.path.join(cfg.out_dir, "result.json"), "w").close()
        return SimpleNamespace(metrics={"val/loss": 1.0, "compute/flops_per_token": 1.0})

    monkeypatch.setattr(loop, "run_trial", fake_run_trial)
    # the arm pins torch to one thread, as Ray does its trials: not for the rest of this test process
    # (later trainings then ran single-threaded, other numerics: test_efficiency missed its bound)
    monkeypatch.setattr(orchestration.torch, "set_num_threads", lambda n: None)
    space = load_space("search_spaces/lm.yaml", ["budget.concurrent=3", "objectives=[{metric: val/loss}, "
                                                 "{metric: compute/flops_per_token}]"])
    orchestration.run_plain_optuna(space, [{}] * 6, str(tmp_path))
    assert most[0] == 3


def test_training_bench_trains_both_models_on_the_same_real_batches(capsys):
    """bench/training.py: the DNA and its dense match draw the same batches of the base's data, each
    step moves their weights and the DNA's routing biases update as in training; the ratio is printed."""
    import training

    from dnasweep.config import load_trial

    overrides = ["model.d_model=32", "model.n_steps=2", "train.batch_size=8", "model.balance.identity_bias=true"]
    cfg = load_trial("search_spaces/vision.yaml", overrides)
    models = training.arms(cfg)
    (dna, dna_opt, dna_s), (dense, _, dense_s) = models["dna"], models["dense"]
    assert dense.cfg.kind == "dense" and dna.cfg.kind == "dna"
    x_a, y_a = dna_s.next()
    x_b, y_b = dense_s.next()
    assert torch.equal(x_a, x_b) and torch.equal(y_a, y_b) and x_a.std() > 0  # real digits, normalized
    before = [p.detach().clone() for p in dna.parameters()]
    bias = dna.routing.identity_bias_S.clone()
    parts, flops = training.train_step(dna, dna_opt, dna_s, cfg, 10, 20)
    assert len(parts) == 3 and all(t > 0 for t in parts) and flops > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, dna.parameters(), strict=True))
    assert not torch.equal(bias, dna.routing.identity_bias_S)  # the skip controller ran
    ratio = training.main(["--config", "search_spaces/vision.yaml", *[f"--set={o}" for o in overrides],
                           "--steps", "3", "--warmup", "1"])
    out = capsys.readouterr().out
    assert "DNA and dense alternating" in out and f"{ratio:.3f} at equal FLOPs/token" in out and ratio > 0
