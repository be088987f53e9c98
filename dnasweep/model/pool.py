"""The shared module pool and one routing step through it.

Module ids are laid out by type: [transformer blocks | attention-only | MLP-only | identity].
Sorting the routed (token, module) pairs by module id therefore makes each type a contiguous
run of pairs, so each bank runs once per step on exactly the tokens routed to it.

Per step, for routed pairs p = (token t, module m) with gate ρ:
  attention part (transformer, attention-only):  a_p = Attn_m(LN(h_t))   over m's tokens only
  MLP part (transformer):                         u_p = a_p + MLP_m(LN(h_t + a_p))
  MLP part (MLP-only):                            u_p = MLP_m(LN(h_t))
  identity:                                       u_p = 0 (never computed)
  h_t <- h_t + Σ_p ρ_p u_p        (u_p = M_m(h_t) - h_t: modules carry their own skip)

Tensor names carry their shape:
  B batch, L tokens per sequence, T = B*L, D d_model, K slots per token, P routed pairs, M pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dnasweep.model.banks import AttentionBank, MLPBank, Rope
from dnasweep.model.config import ModelConfig
from dnasweep.model.flops import mlp_hidden
from dnasweep.model.routers import Route


@dataclass
class StepResult:
    """What one routing step did, for accounting (host-side numbers, no graph)."""

    slots_M: torch.Tensor  # pairs routed to each module (int64, on the model's device)
    flops_useful: float  # forward FLOPs on routed tokens only
    flops_executed: float  # forward FLOPs including padding in packed attention


class ModulePool(nn.Module):
    """Owns the weights of every module in the pool; `forward` runs one routing step."""

    def __init__(self, cfg: ModelConfig, rope: Rope | None, out_std: float):
        super().__init__()
        p, d = cfg.pool, cfg.d_model
        f_t, f_o = mlp_hidden(cfg)
        n_attn = p.n_transformer + p.n_attention
        causal = cfg.task == "lm"
        self.attn = AttentionBank(n_attn, d, cfg.n_heads, causal, rope, cfg.init_std, out_std) if n_attn else None
        self.mlp_t = MLPBank(p.n_transformer, d, f_t, cfg.init_std, out_std) if p.n_transformer else None
        self.mlp_o = MLPBank(p.n_mlp, d, f_o, cfg.init_std, out_std) if p.n_mlp else None
        self.n_t, self.n_a, self.n_m, self.size = p.n_transformer, p.n_attention, p.n_mlp, p.size

    def forward(self, h_BLD: torch.Tensor, route: Route) -> tuple[torch.Tensor, StepResult]:
        B, L, D = h_BLD.shape
        T, K = route.idx_TK.shape
        mod_P = route.idx_TK.reshape(-1)
        gate_P = route.gate_TK.reshape(-1)
        tok_P = torch.arange(T, device=h_BLD.device).repeat_interleave(K)
        if route.active_TK is not None:
            keep = route.active_TK.reshape(-1).nonzero().squeeze(1)
            mod_P, gate_P, tok_P = mod_P[keep], gate_P[keep], tok_P[keep]
        order = torch.argsort(mod_P, stable=True)
        mod_P, gate_P, tok_P = mod_P[order], gate_P[order], tok_P[order]
        slots_M = torch.bincount(mod_P, minlength=self.size)
        c = slots_M.tolist()  # the one host sync of a step: segment sizes for slicing
        nt, na, nm = self.n_t, self.n_a, self.n_m
        p1 = sum(c[:nt])
        p2 = p1 + sum(c[nt:nt + na])
        p3 = p2 + sum(c[nt + na:nt + na + nm])
        h_TD = h_BLD.reshape(T, D)
        useful = executed = 0.0
        updates = []
        if p2:
            attn_PD, (fu, fe) = self.attn.routed(h_BLD, mod_P[:p2], tok_P[:p2], c[:nt + na])
            useful, executed = useful + fu, executed + fe
            if p1:
                mlp_PD = self.mlp_t(h_TD[tok_P[:p1]] + attn_PD[:p1], c[:nt])
                updates.append(attn_PD[:p1] + mlp_PD)
                f = self.mlp_t.flops(p1)
                useful, executed = useful + f, executed + f
            if p2 > p1:
                updates.append(attn_PD[p1:p2])
        if p3 > p2:
            updates.append(self.mlp_o(h_TD[tok_P[p2:p3]], c[nt + na:nt + na + nm]))
            f = self.mlp_o.flops(p3 - p2)
            useful, executed = useful + f, executed + f
        if updates:
            u_PD = torch.cat(updates) if len(updates) > 1 else updates[0]
            h_TD = h_TD.index_add(0, tok_P[:p3], u_PD.to(h_TD.dtype) * gate_P[:p3, None].to(h_TD.dtype))
        return h_TD.view(B, L, D), StepResult(slots_M, useful, executed)
