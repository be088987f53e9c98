"""Run a trained trial's model (and the same model at initialisation) over the held-out split with
paths recorded, and turn what routing did into a `Routed` for the analysis.

Torch lives here, not in the statistics modules. Tensor names carry their shape:
  B batch, L tokens per sequence (patches per image), S steps, K slots, M modules, N = all tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from dnasweep.analyze.routed import Routed
from dnasweep.config import TrialConfig, load_trial
from dnasweep.errors import ConfigError, Problem

# Byte classes of the LM attribute: what kind of character a token is.
BYTE_CLASSES = ["letter", "digit", "space", "punct", "newline", "other"]


def byte_class_N(tokens_N: np.ndarray) -> np.ndarray:
    """Class of each byte value (BYTE_CLASSES order); non-ASCII bytes are "other"."""
    table = np.full(256, 5, dtype=np.int64)
    for b in range(128):
        c = chr(b)
        table[b] = (0 if c.isalpha() else 1 if c.isdigit() else 4 if c == "\n"
                    else 2 if c in " \t" else 3 if 33 <= b < 127 else 5)
    return table[tokens_N.astype(np.int64)]


@dataclass
class Target:
    """A trained trial to analyse: its config and checkpoint directory."""

    cfg: TrialConfig
    checkpoint_dir: str
    name: str


def find_target(path: str) -> Target:
    """`path` is a trial directory (with checkpoint/) or a checkpoint directory itself."""
    for ckpt in (os.path.join(path, "checkpoint"), path):
        if os.path.isfile(os.path.join(ckpt, "state.pt")) and os.path.isfile(os.path.join(ckpt, "config.yaml")):
            name = os.path.basename(os.path.normpath(path if ckpt != path else os.path.dirname(ckpt)))
            return Target(load_trial(os.path.join(ckpt, "config.yaml")), ckpt, name)
    raise ConfigError([Problem("TARGET", f"{path} holds no trained trial (no checkpoint/state.pt + config.yaml)",
                               "pass a trial directory (e.g. runs/lm or SWEEP/trials/ID) or a sweep directory")],
                      "analyze")


def _models(target: Target, device: torch.device):
    from dnasweep.model import build_model
    from dnasweep.train import checkpoint

    cfg = target.cfg
    if cfg.model.kind != "dna":
        raise ConfigError([Problem("model.kind", f"{target.name} is a {cfg.model.kind} model: it routes nothing",
                                   "analyze a DNA trial (model.kind: dna)")], "analyze")
    torch.manual_seed(cfg.train.seed)  # the same initialisation the trial started from
    init = build_model(cfg.model).to(device).eval()
    trained = build_model(cfg.model).to(device).eval()
    trained.load_state_dict(checkpoint.load(target.checkpoint_dir, map_location=device)["model"])
    return trained, init


def module_names(cfg) -> list[str]:
    p = cfg.model.pool
    return ([f"T{i}" for i in range(p.n_transformer)] + [f"A{i}" for i in range(p.n_attention)]
            + [f"M{i}" for i in range(p.n_mlp)] + [f"I{i}" for i in range(p.n_identity)])


def token_flops_BL(model, paths_BLSK: torch.Tensor) -> torch.Tensor:
    """Forward FLOPs each token spent, by its path: the modules it visited, attention priced by the
    tokens of its sequence routed to the same module at that step (as the model's own accounting
    does). Pool modules only: the caller adds the per-token cost of everything outside the pool."""
    from dnasweep.model.flops import module_costs

    cfg = model.cfg
    B, L, S, K = paths_BLSK.shape
    M = cfg.pool.size
    c0 = torch.tensor(module_costs(cfg, 0.0), dtype=torch.float64)
    per_ctx = torch.tensor(module_costs(cfg, 1.0), dtype=torch.float64) - c0  # attention: 4 D per key
    flops_BL = torch.zeros((B, L), dtype=torch.float64)
    for s in range(S):
        idx_BLK = paths_BLSK[:, :, s].long()
        used_BLK = idx_BLK >= 0
        one_hot_BLKM = F.one_hot(idx_BLK.clamp_min(0), M).to(torch.float64) * used_BLK[..., None]
        n_BM = one_hot_BLKM.sum(dim=(1, 2))  # tokens of each sequence routed to each module
        cost_BLK = c0[idx_BLK.clamp_min(0)] + per_ctx[idx_BLK.clamp_min(0)] * torch.gather(
            n_BM, 1, idx_BLK.clamp_min(0).flatten(1)).view(B, L, K)
        flops_BL += (cost_BLK * used_BLK).sum(-1)
    return flops_BL


@torch.no_grad()
def _run(model, batches, device) -> dict[str, np.ndarray]:
    out: dict[str, list] = {"paths": [], "flops": [], "loss": [], "x": [], "y": [], "identity": []}
    for x, y in batches:
        o = model(x.to(device), return_paths=True)
        B, L = o.paths.shape[:2]
        flops_BL = token_flops_BL(model, o.paths.cpu())
        useful = float(flops_BL.sum()) / (B * L)
        base = o.stats.flops_per_token - useful  # stem/backbone/routers/readout: same for every token
        out["paths"].append(o.paths.cpu().numpy())
        out["flops"].append((flops_BL + base).numpy())
        if model.cfg.task == "lm":
            loss = F.cross_entropy(o.logits.float().flatten(0, 1), y.to(device).flatten(), reduction="none")
            out["loss"].append(loss.view(B, L).mean(1).cpu().numpy())
        else:
            out["loss"].append(F.cross_entropy(o.logits.float(), y.to(device), reduction="none").cpu().numpy())
        out["x"].append(x.numpy())
        out["y"].append(y.numpy())
        out["identity"].append(np.full(B * L, o.stats.identity_fraction))  # per token: batches weigh by size
    return {k: np.concatenate(v) for k, v in out.items()}


def _context(row_L: np.ndarray, p: int, width: int = 12) -> str:
    """Printable text around position p with the token bracketed (bytes; others as '·')."""
    show = lambda b: chr(b) if 32 <= b < 127 else ("⏎" if b == 10 else "·")  # noqa: E731
    lo = max(0, p - width)
    return "".join(map(show, row_L[lo:p])) + "[" + show(int(row_L[p])) + "]" + "".join(
        map(show, row_L[p + 1:p + 4]))


def vision_analysis_batches(data, batch_size: int, max_examples: int) -> tuple[list, np.ndarray]:
    """(batches, their images' val indices) of an evenly spaced, deterministic subset of the val
    images (whole batches, as the LM windows are): val keeps the source's order, which is class by
    class for a folder source (and many npz / hf sets), so its first max_examples images left whole
    classes out of the analysis."""
    from dnasweep.data.sampler import even_picks, vision_val_batches

    n_val = len(data.val_y)
    pick = even_picks(n_val, batch_size * max(1, max_examples // batch_size))
    return vision_val_batches(replace(data, val_x=data.val_x[pick], val_y=data.val_y[pick]), batch_size), pick


def collect(target: Target, max_examples: int = 64, device: str = "cpu") -> tuple[Routed, Routed, dict]:
    """(trained, init, extra) routings over the held-out split; `extra` carries images and the patch
    grid for vision, and facts for the report (paths_vary: whether the router lets paths differ;
    identity_share: for a soft mixture or expert choice, the trained model's gate weight on the
    skip path, which their paths cannot show: the slots' identity share is n_identity/M for both)."""
    from dnasweep.data import load_data
    from dnasweep.data.sampler import lm_val_batches, lm_val_starts

    cfg, dev = target.cfg, torch.device(device)
    data = load_data(cfg.data, cfg.model.task)
    bs = min(cfg.train.batch_size, max_examples)
    if cfg.model.task == "lm":
        n_batches = max(1, max_examples // bs)
        batches = lm_val_batches(data.val, bs, cfg.model.seq_len, n_batches)
        val_index_G = lm_val_starts(data.val, cfg.model.seq_len, bs * n_batches)
    else:
        batches, val_index_G = vision_analysis_batches(data, bs, max_examples)
    trained, init = _models(target, dev)
    names = module_names(cfg)
    from dnasweep.model import router_spec

    spec = router_spec(cfg.model.router.type)  # a soft mixture sends every token through every module
    routed, extra = [], {"task": cfg.model.task, "paths_vary": not spec.all_modules or spec.capacity}
    for model in (trained, init):
        r = _run(model, batches, dev)
        if model.gate_identity_share and "identity_share" not in extra:  # the trained model comes first
            extra["identity_share"] = float(r["identity"].mean())
        if cfg.model.task == "vision" and cfg.model.pooling == "cls":  # analyse patches; the class token is no patch
            r["paths"], r["flops"] = r["paths"][:, 1:], r["flops"][:, 1:]
        G, L = r["paths"].shape[:2]
        paths_NSK = r["paths"].reshape(G * L, *r["paths"].shape[2:])
        group_N, position_N = np.repeat(np.arange(G), L), np.tile(np.arange(L), G)
        if cfg.model.task == "lm":
            byte_level = getattr(data, "bytes_per_token", None) == 1.0
            tokens_N = r["x"].reshape(-1)
            attr_N = byte_class_N(tokens_N) if byte_level else np.zeros(G * L, dtype=np.int64)
            attr_names = BYTE_CLASSES if byte_level else ["token"]
            context = [_context(r["x"][g], p) for g, p in zip(group_N, position_N, strict=True)] if byte_level else None
        else:
            attr_N = np.repeat(r["y"], L).astype(np.int64)
            attr_names = data.class_names or [str(c) for c in range(data.n_classes)]
            context = None
            extra["images_GHW"] = r["x"][:, 0]  # first channel, normalised
            g = cfg.model.image_size // cfg.model.patch_size
            extra["patch_grid"] = (g, g)
        routed.append(Routed(paths_NSK=paths_NSK.astype(np.int64), module_names=names,
                             flops_N=r["flops"].reshape(-1), attr_N=attr_N, attr_names=attr_names,
                             group_N=group_N, position_N=position_N, group_loss_G=r["loss"], context_N=context,
                             val_index_G=val_index_G))
    return routed[0], routed[1], extra
