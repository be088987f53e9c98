"""Training steps of a search space's base DNA vs the dense model of its measured FLOPs, in one process.

What `bench/throughput.py` leaves out: it times forward + backward of an untrained DNA on random
inputs. Here both models train as `dnasweep train` does: real batches of the base's data, the
warm-up + cosine learning rate, gradient clipping, the AdamW step, the DNA's out-of-gradient
routing-bias updates. Their steps alternate (DNA, dense, DNA, ...), so load drift on a shared machine
hits both alike; separate `dnasweep train` runs minutes apart do not share conditions. Prints the
median forward / backward / optimizer time per step and the DNA/dense tokens/s ratio at equal FLOPs
(the DNA's mean measured FLOPs/token over the timed steps: they move as it learns to route).

    python bench/training.py --config search_spaces/vision.yaml --steps 300 [--threads 1]
    python bench/training.py --config search_spaces/lm.yaml --steps 100 --set model.d_model=64
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time

import torch

from dnasweep.config import load_trial
from dnasweep.data import LMSampler, VisionSampler, load_data
from dnasweep.model import build_model, compute_loss
from dnasweep.train.optim import lr_at, make_optimizer

PARTS = ("forward", "backward", "optimizer")


def arms(cfg) -> dict:
    """{"dna" | "dense": (model, optimizer, sampler)}: the base and its measured-FLOPs dense match,
    each with its own sampler of the same seed (the same batches in the same order)."""
    tc, m = cfg.train, cfg.model
    data = load_data(cfg.data, m.task)
    out = {}
    for name, mcfg in (("dna", m), ("dense", dataclasses.replace(m, kind="dense", dense_layers=0,
                                                                 dense_match="measured"))):
        torch.manual_seed(tc.seed)
        model = build_model(mcfg)
        if m.task == "lm":
            sampler = LMSampler(data.train, tc.batch_size, m.seq_len, seed=tc.seed)
        else:
            sampler = VisionSampler(data.train_x, data.train_y, tc.batch_size, tc.seed, data.mean, data.std)
        out[name] = (model, make_optimizer(model, tc, torch.device("cpu")), sampler)
    return out


def train_step(model, opt, sampler, cfg, step: int, total: int) -> tuple[list[float], float]:
    """One optimizer step as the training loop takes it -> ([forward, backward, optimizer] seconds,
    the step's measured FLOPs/token)."""
    x, y = sampler.next()
    for g in opt.param_groups:
        g["lr"] = lr_at(step, cfg.train, total)
    t0 = time.perf_counter()
    out = model(x)
    loss, _ = compute_loss(out, y, cfg.loss)
    t1 = time.perf_counter()
    loss.backward()
    t2 = time.perf_counter()
    clip = cfg.train.grad_clip
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip > 0 else math.inf)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if hasattr(model, "update_routing_biases"):
        model.update_routing_biases(out)
    return [t1 - t0, t2 - t1, time.perf_counter() - t2], out.stats.flops_per_token


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, metavar="SPACE", help="search-space (or trial) YAML: its base trains")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override of the base")
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps of each model")
    ap.add_argument("--warmup", type=int, default=20, help="first steps left out of the timing")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's); 1 = a 1-CPU sweep trial")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = load_trial(a.config, [*a.set, "train.device=cpu"])
    models = arms(cfg)
    times = {k: [] for k in models}
    flops = {k: [] for k in models}
    for step in range(a.steps):
        for name, (model, opt, sampler) in models.items():
            t, f = train_step(model, opt, sampler, cfg, step, a.steps)
            if step >= a.warmup:
                times[name].append(t)
                flops[name].append(f)
    print(f"{cfg.model.task} d_model {cfg.model.d_model}: {a.steps} training steps each ({a.warmup} untimed), "
          f"{torch.get_num_threads()} threads, DNA and dense alternating")
    per_step = {}
    for name in models:
        med = [statistics.median(t[i] for t in times[name]) * 1e3 for i in range(len(PARTS))]
        per_step[name] = sum(med)
        parts = ", ".join(f"{p} {v:.1f}" for p, v in zip(PARTS, med, strict=True))
        mean_f = statistics.mean(flops[name])
        print(f"{name:<6} {parts} ms; step {per_step[name]:.1f} ms; mean FLOPs/token {mean_f:.4g}")
    raw = per_step["dense"] / per_step["dna"]
    ratio = raw * statistics.mean(flops["dna"]) / statistics.mean(flops["dense"])
    print(f"DNA/dense tokens/s in training: {raw:.3f} raw, {ratio:.3f} at equal FLOPs/token")
    return ratio


if __name__ == "__main__":
    main()
