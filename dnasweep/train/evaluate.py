"""Held-out evaluation: loss, bits/byte or accuracy, and what routing did on those batches."""

from __future__ import annotations

import math

import torch

from dnasweep import metrics as M
from dnasweep.model import LossConfig


@torch.no_grad()
def evaluate(model, batches, loss_cfg: LossConfig, device, autocast, bytes_per_token: float | None) -> dict:
    """Mean metrics over fixed `batches`; FLOPs and active params are token-weighted means of
    what the forward passes measured (routing decides them, so they are data-dependent)."""
    was_training = model.training
    model.eval()
    n_tok = n_ex = 0
    loss_sum = correct = flops = flops_exec = active = entropy = ident = zl = 0.0
    slots = None
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast():
            out = model(x)
        logits = out.logits.float()
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        toks = x.shape[0] * model.cfg.tokens_per_example  # tokens (LM) or patches (vision)
        ex = y.numel()
        loss_sum += float(ce) * ex
        n_ex += ex
        if logits.dim() == 2:  # vision: one label per image
            correct += float((logits.argmax(-1) == y).sum())
        n_tok += toks
        flops += out.stats.flops_per_token * toks
        flops_exec += out.stats.flops_executed_per_token * toks
        active += out.stats.params_active * toks
        entropy += out.stats.entropy * toks
        ident += out.stats.identity_fraction * toks
        zl += float(out.aux.get("z", 0.0)) * toks
        if out.stats.slots_SM is not None:
            slots = out.stats.slots_SM if slots is None else slots + out.stats.slots_SM
    if was_training:
        model.train()
    res = {M.VAL_LOSS: loss_sum / n_ex, M.FLOPS_PER_TOKEN: flops / n_tok,
           M.FLOPS_EXECUTED_PER_TOKEN: flops_exec / n_tok, M.PARAMS_ACTIVE: active / n_tok}
    if bytes_per_token:
        res[M.VAL_BPB] = res[M.VAL_LOSS] / math.log(2) / bytes_per_token
    if model.cfg.task == "vision":
        res[M.VAL_ACC] = correct / n_ex
    if slots is not None:
        load_M = slots.sum(0) / slots.sum()
        res.update({M.IDENTITY_FRACTION: ident / n_tok, M.ROUTER_ENTROPY: entropy / n_tok, M.ROUTER_Z: zl / n_tok,
                    M.ROUTER_LOAD_MAX: float(load_M.max())})
        res.update({f"{M.ROUTER_LOAD_PREFIX}m{i}": float(v) for i, v in enumerate(load_M)})
    return res
