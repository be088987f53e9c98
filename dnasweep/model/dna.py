"""The DNA: stem -> dense backbone -> S routing steps over a shared module pool -> readout.

At step s the step's router scores the whole pool for every token, the token goes through the
modules it picked, and h <- h + Σ_i ρ_i (M_i(h) - h). A module may be picked at several steps.

Tensor names carry their shape:
  B batch, L tokens per sequence, T = B*L, D d_model, M pool size, K slots per token, S steps.
"""

from __future__ import annotations

import torch
from torch import nn

from dnasweep.model.banks import Rope, out_std
from dnasweep.model.config import ModelConfig
from dnasweep.model.flops import block_cost, module_costs, module_params
from dnasweep.model.layers import Block, Readout, Stem
from dnasweep.model.output import ModelOutput, RoutingStats
from dnasweep.model.pool import ModulePool
from dnasweep.model.routers import Routing


class DNAModel(nn.Module):
    """A Distributed Neural Architecture (Cowsik, He, Gromov, arXiv 2506.22389)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        depth = cfg.n_backbone + cfg.n_steps
        o_std = out_std(cfg.init_std, depth)
        rope = Rope(cfg.d_model // cfg.n_heads, cfg.seq_len) if cfg.task == "lm" else None
        self.stem = Stem(cfg)
        self.backbone = nn.ModuleList(Block(cfg, rope, o_std) for _ in range(cfg.n_backbone))
        self.routing = Routing(cfg)
        self.pool = ModulePool(cfg, rope, o_std)
        self.readout = Readout(cfg)
        M = cfg.pool.size
        # Per-token cost of each module relative to a dense block, for the compute penalty.
        # Attention context is the uniform-routing share of the sequence (see flops.py).
        k_share = min(cfg.slots_per_token, M) / M
        cost = torch.tensor(module_costs(cfg, cfg.tokens_per_example * k_share)) / block_cost(cfg)
        self.register_buffer("cost_M", cost, persistent=False)
        self.register_buffer("params_M", torch.tensor(module_params(cfg), dtype=torch.float32),
                             persistent=False)
        self.params_total = sum(p.numel() for p in self.parameters())
        emb = self.stem.untouched_params_per_token()
        # Everything outside the pool is touched by every token (one embedding row for LM).
        self.params_base = float(self.params_total - emb - sum(p.numel() for p in self.pool.parameters()))

    def forward(self, x: torch.Tensor, return_paths: bool = False) -> ModelOutput:
        """x: token ids [B, T] (LM) or images [B, C, H, W] (vision)."""
        cfg = self.cfg
        h_BLD, keys_BL = self.stem(x)
        for blk in self.backbone:
            h_BLD = blk(h_BLD)
        B, L, _ = h_BLD.shape
        T, M, S = B * L, cfg.pool.size, cfg.n_steps
        visits_TM = torch.zeros(T, M, dtype=torch.int32, device=h_BLD.device)
        zero = h_BLD.new_zeros((), dtype=torch.float32)
        compute, balance, zloss, entropy = zero, zero, zero, 0.0
        useful = executed = 0.0
        slots, paths = [], []
        for s in range(S):
            route = self.routing(h_BLD, s, keys_BL)
            h_BLD, res = self.pool(h_BLD, route)
            useful, executed = useful + res.flops_useful, executed + res.flops_executed
            slots.append(res.slots_M)
            ones_TK = (route.active_TK if route.active_TK is not None
                       else torch.ones_like(route.idx_TK, dtype=torch.bool)).to(torch.int32)
            visits_TM.scatter_add_(1, route.idx_TK, ones_TK)
            if return_paths:
                paths.append(torch.where(ones_TK.bool(), route.idx_TK, -1))
            if route.logits_TM is not None:
                logits_TM = route.logits_TM
                probs_TM = logits_TM.softmax(-1)
                compute = compute + (probs_TM @ self.cost_M).mean()
                f_M = res.slots_M.float() / res.slots_M.sum().clamp_min(1)
                balance = balance + M * (f_M * probs_TM.mean(0)).sum()
                zloss = zloss + torch.logsumexp(logits_TM, -1).square().mean()
                with torch.no_grad():
                    entropy += float(-(probs_TM * probs_TM.clamp_min(1e-12).log()).sum(-1).mean())
        logits = self.readout(h_BLD)
        base = (self.stem.flops(B, L) + sum(b.flops(B, L) for b in self.backbone)
                + self.routing.flops(T) + self.readout.flops(B, L))
        slots_SM = torch.stack(slots).detach().float()
        n_id = cfg.pool.n_identity
        stats = RoutingStats(
            flops_per_token=(base + useful) / T,
            flops_executed_per_token=(base + executed) / T,
            params_active=self.params_base + float((visits_TM > 0).float().mean(0) @ self.params_M),
            params_total=self.params_total,
            slots_SM=slots_SM.cpu(),
            identity_fraction=float(slots_SM[:, M - n_id:].sum() / slots_SM.sum()) if n_id else 0.0,
            entropy=entropy / S,
        )
        aux = {"compute": compute / S, "balance": balance / S, "z": zloss / S}
        return ModelOutput(logits, stats, aux, torch.stack(paths, 1).view(B, L, S, -1) if return_paths else None)

    def update_routing_biases(self, out: ModelOutput) -> None:
        """Apply the out-of-gradient selection-bias updates (identity skip target, loss-free
        balancing) from a training step's routed slot counts. Call once per optimizer step."""
        if out.stats.slots_SM is not None:
            self.routing.update_biases(out.stats.slots_SM)
