"""Slow, obviously-correct references for routed computation: no packing, no sorting, no
grouped matmuls. Full-length attention with an explicit mask, module by module."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dnasweep.model.banks import AttentionBank, MLPBank
from dnasweep.model.pool import ModulePool
from dnasweep.model.routers import Route


def attention_update(bank: AttentionBank, a: int, h_BLD: torch.Tensor, routed_BL: torch.Tensor) -> torch.Tensor:
    """Module a's attention update at every position, where query i sees key j iff j is routed to
    a (and j <= i when causal). Only rows of routed queries are meaningful."""
    B, L, D = h_BLD.shape
    H, Dh = bank.h, D // bank.h
    xn = F.layer_norm(h_BLD, (D,)) * bank.norm_AD[a]
    q, k, v = (xn @ bank.w_qkv_AD3D[a]).view(B, L, 3, H, Dh).permute(2, 0, 3, 1, 4)
    if bank.rope is not None:  # rotate pairs (i, i + Dh/2) by angle pos * theta_i, theta_i = 10000^(-2i/Dh)
        theta = 10000.0 ** -(torch.arange(0, Dh, 2, dtype=torch.float32) / Dh)
        ang = torch.arange(L, dtype=torch.float32)[:, None] * theta
        cos, sin = ang.cos().to(q.dtype), ang.sin().to(q.dtype)
        q, k = (torch.cat((t[..., :Dh // 2] * cos - t[..., Dh // 2:] * sin,
                           t[..., Dh // 2:] * cos + t[..., :Dh // 2] * sin), -1) for t in (q, k))
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)  # [B, H, L, L]
    allowed = routed_BL[:, None, None, :].expand(B, 1, L, L).clone()
    if bank.causal:
        allowed &= torch.ones(L, L, dtype=torch.bool).tril()
    allowed |= ~routed_BL[:, None, :, None]  # unrouted query rows: anything finite, never used
    scores = scores.masked_fill(~allowed, float("-inf"))
    o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, D)
    return o @ bank.w_o_ADD[a]


def mlp_update(bank: MLPBank, e: int, x_ND: torch.Tensor) -> torch.Tensor:
    xn = F.layer_norm(x_ND, (x_ND.shape[-1],)) * bank.norm_ED[e]
    return F.gelu(xn @ bank.w_in_EDF[e]) @ bank.w_out_EFD[e]


def module_update(pool: ModulePool, m: int, h_BLD: torch.Tensor, routed_BL: torch.Tensor) -> torch.Tensor:
    """M_m(h) - h for module m at every position (meaningful where routed)."""
    nt, na, nm = pool.n_t, pool.n_a, pool.n_m
    B, L, D = h_BLD.shape
    if m < nt + na:
        a = attention_update(pool.attn, m, h_BLD, routed_BL)
        if m < nt:
            a = a + mlp_update(pool.mlp_t, m, (h_BLD + a).reshape(-1, D)).view(B, L, D)
        return a
    if m < nt + na + nm:
        return mlp_update(pool.mlp_o, m - nt - na, h_BLD.reshape(-1, D)).view(B, L, D)
    return torch.zeros_like(h_BLD)


def reference_step(pool: ModulePool, h_BLD: torch.Tensor, route: Route) -> torch.Tensor:
    """h + Σ_slots gate * (M(h) - h), computed module by module."""
    B, L, D = h_BLD.shape
    T, K = route.idx_TK.shape
    active = route.active_TK if route.active_TK is not None else torch.ones(T, K, dtype=torch.bool)
    out = h_BLD.reshape(T, D).clone()
    for m in range(pool.size):
        hit_TK = (route.idx_TK == m) & active
        routed_T = hit_TK.any(-1)
        if not routed_T.any():
            continue
        upd = module_update(pool, m, h_BLD, routed_T.view(B, L)).reshape(T, D)
        gate_T = (route.gate_TK * hit_TK).sum(-1)
        out = out + torch.where(routed_T[:, None], gate_T[:, None] * upd, 0.0)
    return out.view(B, L, D)
