"""Held-out evaluation: loss, bits/byte or accuracy, what routing did on those batches, and the
collapse verdict (metrics.is_collapsed) of a routed model.

Tensor names carry their shape: B batch, L tokens per sequence, S steps, K slots, M pool size,
P distinct paths.
"""

from __future__ import annotations

import math

import torch

from dnasweep import metrics as M
from dnasweep.model import LossConfig, router_spec


def nonidentity_paths(paths_BLSK: torch.Tensor, is_identity_M: torch.Tensor) -> torch.Tensor:
    """[P, S*K] the distinct non-identity paths of these tokens: per step the sorted non-identity
    modules a token was sent to (identity modules and unused slots dropped, padded with M). A token
    that skipped every step (all identity) has no non-identity path and is left out."""
    B, L, S, K = paths_BLSK.shape
    n_mod = is_identity_M.numel()
    p_TSK = paths_BLSK.reshape(B * L, S, K)
    real_TSK = (p_TSK >= 0) & ~is_identity_M[p_TSK.clamp_min(0)]
    keys_TX = torch.where(real_TSK, p_TSK, n_mod).sort(-1).values.reshape(B * L, S * K)
    return torch.unique(keys_TX[real_TSK.flatten(1).any(-1)], dim=0)


@torch.no_grad()
def evaluate(model, batches, loss_cfg: LossConfig, device, autocast, bytes_per_token: float | None) -> dict:
    """Mean metrics over fixed `batches`; FLOPs and active params are token-weighted means of
    what the forward passes measured (routing decides them, so they are data-dependent)."""
    was_training = model.training
    model.eval()
    n_tok = n_ex = 0
    loss_sum = correct = flops = flops_exec = active = entropy = ident = zl = 0.0
    slots = paths_PX = None
    routed = getattr(model, "routing", None) is not None  # a DNA (dense models route nothing)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast():
            out = model(x, return_paths=routed)
        if out.paths is not None:
            new_PX = nonidentity_paths(out.paths, model.routing.is_identity_M)
            paths_PX = new_PX if paths_PX is None else torch.unique(torch.cat([paths_PX, new_PX]), dim=0)
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
        res.update({M.IDENTITY_FRACTION: ident / n_tok, M.ROUTER_LOAD_MAX: float(load_M.max())})
        if model.routing.learns:  # hash: no logits, so no entropy or log-partition (not 0, a confident router)
            res.update({M.ROUTER_ENTROPY: entropy / n_tok, M.ROUTER_Z: zl / n_tok})
        res.update({f"{M.ROUTER_LOAD_PREFIX}m{i}": float(v) for i, v in enumerate(load_M)})
    if paths_PX is not None:
        n_paths = int(paths_PX.shape[0])
        spec = router_spec(model.cfg.router.type)
        paths_vary = not spec.all_modules or spec.capacity  # a soft mixture sends every token everywhere
        res[M.ROUTER_NONIDENTITY_PATHS] = float(n_paths)
        res[M.ROUTER_COLLAPSED] = float(M.is_collapsed(res[M.IDENTITY_FRACTION], n_paths, paths_vary))
    return res
