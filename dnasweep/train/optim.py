"""AdamW with parameter groups and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from dnasweep.config.train import TrainConfig


class AdamW(torch.optim.AdamW):
    """torch's AdamW, same update, for eager use only (the training loop never compiles it).

    torch guards step, zero_grad, add_param_group and (load_)state_dict against torch.compile with
    wrappers that import torch._dynamo on first call: 1.1 s of CPU in every process that trains,
    a sweep worker's start included. Here they call what those wrappers wrap; nothing else changes
    (the functional update, step hooks and the profiler's record of step are torch's)."""

    def step(self, closure=None):
        # what torch's wrapper does besides its graph breaks: autograd as `differentiable` says
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return _STEP(self, closure)


_STEP = inspect.unwrap(torch.optim.AdamW.step)
for _name in ("zero_grad", "add_param_group", "state_dict", "load_state_dict"):
    setattr(AdamW, _name, inspect.unwrap(getattr(torch.optim.Optimizer, _name)))


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> AdamW:
    """AdamW that decays matrices only: norms, biases, embeddings and a ViT's position table and
    class token (1-D, looked up, or added rather than multiplied) are not pulled toward zero."""
    decay, no_decay = [], []
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    # a module names its added parameters in `no_weight_decay` (timm's convention): by their shape
    # (2-D, 3-D) they were decayed, against this docstring
    embeddings |= {id(p) for m in model.modules() for n in getattr(m, "no_weight_decay", ())
                   if isinstance(p := getattr(m, n, None), nn.Parameter)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_norm = "norm" in name.split(".")[-1] or name.endswith(".norm.weight")
        (no_decay if p.dim() < 2 or is_norm or id(p) in embeddings else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"  # one kernel for the whole update on GPU
    return AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.lr * min_lr_ratio at total_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * t))
