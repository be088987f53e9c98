"""Configuration of the training loop (`dnasweep.train`): optimiser, schedule, budget, evaluation, device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dnasweep.errors import Problem


@dataclass
class TrainConfig:
    """How one trial trains. The budget is max_steps, or max_tokens when set, whichever ends first,
    and optionally a wall-clock limit."""

    max_steps: int = 1000  # optimizer steps
    max_tokens: int | None = None  # stop after this many training tokens (or patches); None: no limit
    time_limit_s: float | None = None  # stop (with a final eval + checkpoint) after this many seconds
    batch_size: int = 32  # sequences (or images) per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-3  # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1  # cosine decay floor, as a fraction of lr
    warmup_steps: int = 50  # linear warm-up steps
    weight_decay: float = 0.1  # AdamW decay on matrices (never on norms, biases, embeddings)
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: off)
    eval_every: int = 100  # evaluate on held-out data every this many steps (and at the end)
    eval_batches: int = 8  # fixed held-out batches per evaluation (LM; vision uses the whole split)
    log_every: int = 10  # report training metrics every this many steps
    checkpoint_every: int = 0  # checkpoint every this many steps (0: at evaluations and the end)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model
    seed: int = 0  # seeds weights, batches and router noise


def train_problems(cfg: TrainConfig, prefix: str = "train") -> list[Problem]:
    """Every problem of `cfg` at once."""
    p: list[Problem] = []
    for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "eval_batches", "log_every"):
        v = getattr(cfg, name)
        if v <= 0:
            p.append(Problem(f"{prefix}.{name}", f"must be > 0, got {v}"))
    for name in ("warmup_steps", "weight_decay", "grad_clip", "checkpoint_every"):
        v = getattr(cfg, name)
        if v < 0:
            p.append(Problem(f"{prefix}.{name}", f"must be >= 0, got {v}"))
    if cfg.lr <= 0:
        p.append(Problem(f"{prefix}.lr", f"must be > 0, got {cfg.lr}"))
    if not 0 <= cfg.min_lr_ratio <= 1:
        p.append(Problem(f"{prefix}.min_lr_ratio", f"must be in [0, 1], got {cfg.min_lr_ratio}"))
    for name in ("max_tokens", "time_limit_s"):
        v = getattr(cfg, name)
        if v is not None and v <= 0:
            p.append(Problem(f"{prefix}.{name}", f"must be > 0 or null, got {v}"))
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        p.append(Problem(f"{prefix}.device", f"unknown device {cfg.device!r}", "use auto, cpu, cuda or cuda:N"))
    if cfg.precision not in ("auto", "fp32", "bf16"):
        p.append(Problem(f"{prefix}.precision", f"unknown precision {cfg.precision!r}", "use auto, fp32 or bf16"))
    return p
