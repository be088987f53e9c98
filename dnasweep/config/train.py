"""Configuration of the training loop (`dnasweep.train`): optimiser, schedule, budget, evaluation, device."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from dnasweep.errors import Problem, field_problems, ge, gt


@dataclass
class TrainConfig:
    """How one trial trains. The budget is max_steps, or max_tokens when set, whichever ends first,
    and optionally a wall-clock limit."""

    max_steps: int = field(default=1000, metadata=gt(0))  # optimizer steps
    max_tokens: int | None = field(default=None, metadata=gt(0))  # stop after this many training tokens; None: no limit
    time_limit_s: float | None = field(default=None, metadata=gt(0))  # stop after this much training time (s)
    batch_size: int = field(default=32, metadata=gt(0))  # sequences (or images) per micro-batch
    grad_accum: int = field(default=1, metadata=gt(0))  # micro-batches per optimizer step
    lr: float = field(default=3e-3, metadata=gt(0))  # peak learning rate (AdamW)
    min_lr_ratio: float = field(default=0.1, metadata={">=": 0, "<=": 1})  # cosine decay floor, as a fraction of lr
    warmup_steps: int = field(default=50, metadata=ge(0))  # linear warm-up steps
    weight_decay: float = field(default=0.1, metadata=ge(0))  # AdamW decay on matrices (not norms, biases, embeddings)
    beta1: float = field(default=0.9, metadata=ge(0, below=1))  # AdamW beta1 (torch refuses it outside [0, 1))
    beta2: float = field(default=0.95, metadata=ge(0, below=1))  # AdamW beta2 (torch refuses it outside [0, 1))
    grad_clip: float = field(default=1.0, metadata=ge(0))  # clip the global gradient norm to this (0: off)
    eval_every: int = field(default=100, metadata=gt(0))  # evaluate on held-out data every this many steps (and last)
    eval_batches: int = field(default=8, metadata=gt(0))  # fixed held-out batches per evaluation (LM; vision: all)
    eval_windows: int | None = field(default=None, metadata=gt(0))  # LM held-out windows; None: batch x eval_batches
    log_every: int = field(default=10, metadata=gt(0))  # report training metrics every this many steps
    checkpoint_every: int = field(default=0, metadata=ge(0))  # checkpoint every this many steps (0: at evaluations)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile the model (routing then runs static capacities: dnasweep.model.pool)
    seed: int = field(default=0, metadata=ge(0))  # seeds weights, batches and router noise


def train_problems(cfg: TrainConfig, prefix: str = "train") -> list[Problem]:
    """Every problem of `cfg` at once."""
    p = field_problems(cfg, prefix)
    if not (cfg.device in ("auto", "cpu") or re.fullmatch(r"cuda(:[0-9]+)?", cfg.device)):
        p.append(Problem(f"{prefix}.device", f"unknown device {cfg.device!r}", "use auto, cpu, cuda or cuda:N"))
    return p
