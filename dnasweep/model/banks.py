"""Banks of modules with stacked weights, and the two ways tokens reach them.

A bank owns the weights of n modules of one type, stacked along a leading axis, so one
batched matmul serves all of them: routed tokens are gathered per module, never run through
every module and masked (that would cost pool_size / top_k times the useful work).

Tensor names carry their shape:
  B batch, L tokens per sequence (or patches per image), T = B*L flattened tokens, D d_model,
  A attention modules in a bank, C slots per (module, sequence) after packing, H heads,
  Dh head dim, E MLP modules in a bank, F MLP hidden width, P routed (token, module) pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_GROUPED_MM = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_matmul(x_PD: torch.Tensor, w_EDF: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Rows of x_PD, sorted by module, times their module's weight: one grouped matmul.

    `counts[e]` rows belong to module e. Uses torch's grouped matmul where it applies (same dtype,
    16-byte aligned widths), else a loop over modules (still no per-token Python work).
    """
    E = w_EDF.shape[0]
    if E == 1:
        return x_PD @ w_EDF[0]
    aligned = x_PD.shape[1] % 8 == 0 and w_EDF.shape[2] % 8 == 0
    kernel_dtype = x_PD.dtype in (torch.float32, torch.bfloat16, torch.float16) and x_PD.dtype == w_EDF.dtype
    if _GROUPED_MM is not None and aligned and kernel_dtype and x_PD.shape[0] > 0:
        offs = torch.tensor(counts, device=x_PD.device, dtype=torch.int32).cumsum(0, dtype=torch.int32)
        return _GROUPED_MM(x_PD.contiguous(), w_EDF, offs=offs)
    parts = [xe @ w_EDF[e] for e, xe in enumerate(x_PD.split(counts)) if counts[e]]
    return torch.cat(parts) if parts else x_PD.new_zeros(0, w_EDF.shape[2])


class Rope(nn.Module):
    """Rotary position tables; looked up by each token's ORIGINAL position, so a token keeps its
    place in time when it is packed with the other tokens of its module."""

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        ang = torch.outer(torch.arange(max_len, dtype=torch.float32), inv)  # [L, Dh/2]
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def apply(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Rotate x [..., H, C, Dh] by positions pos [..., C] (leading dims broadcast over H)."""
        cos = self.cos[pos].unsqueeze(-3).to(x.dtype)  # [..., 1, C, Dh/2]
        sin = self.sin[pos].unsqueeze(-3).to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class AttentionBank(nn.Module):
    """Pre-norm multi-head self-attention modules with stacked weights.

    A module's output is its *update* Attn(LN(x)); the caller adds the skip connection.
    Routed semantics: a token routed to module a attends to the tokens of its own sequence that a
    also received at this step (causally in LM), and to nothing else.
    """

    def __init__(self, n: int, d: int, n_heads: int, causal: bool, rope: Rope | None,
                 init_std: float, out_std: float):
        super().__init__()
        self.n, self.d, self.h, self.causal, self.rope = n, d, n_heads, causal, rope
        self.norm_AD = nn.Parameter(torch.ones(n, d))
        self.w_qkv_AD3D = nn.Parameter(torch.randn(n, d, 3 * d) * init_std)
        self.w_o_ADD = nn.Parameter(torch.randn(n, d, d) * out_std)

    def attend(self, x_ABCD: torch.Tensor, pos_ABC: torch.Tensor, valid_ABC: torch.Tensor | None):
        """Module a's attention over its packed tokens x_ABCD (raw stream) -> update [A,B,C,D].

        Real tokens sit first in each (a, b) row in time order; padding after them. With a causal
        mask no real query sees padding; without one (vision) `valid_ABC` masks padded keys.
        """
        A, B, C, D = x_ABCD.shape
        H, Dh = self.h, D // self.h
        xn = F.layer_norm(x_ABCD, (D,)).reshape(A, B * C, D)
        w_qkv = self.norm_AD[:, :, None] * self.w_qkv_AD3D  # fold the norm's gain into the projection
        qkv = torch.bmm(xn, w_qkv.to(xn.dtype)).view(A * B, C, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [A*B, H, C, Dh]
        if self.rope is not None:
            pos = pos_ABC.reshape(A * B, C)
            q, k = self.rope.apply(q, pos), self.rope.apply(k, pos)
        if self.causal:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            mask = None if valid_ABC is None else valid_ABC.reshape(A * B, 1, 1, C)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o = o.transpose(1, 2).reshape(A, B * C, D)
        return torch.bmm(o, self.w_o_ADD.to(o.dtype)).view(A, B, C, D)

    def full(self, h_BLD: torch.Tensor) -> torch.Tensor:
        """Module 0 on every token of every sequence (a dense block): update [B, L, D]."""
        B, L, _ = h_BLD.shape
        pos = torch.arange(L, device=h_BLD.device).expand(1, B, L)
        return self.attend(h_BLD.unsqueeze(0), pos, None)[0]

    def routed(self, h_BLD: torch.Tensor, mod_P: torch.Tensor, tok_P: torch.Tensor):
        """Updates for routed pairs (module mod_P[i] on flat token tok_P[i]) -> (delta_PD, flops).

        flops = (useful, executed) forward FLOPs: useful counts routed tokens only, executed also
        the padding of each (module, sequence) row up to the longest one.
        """
        B, L, D = h_BLD.shape
        A = self.n
        sel_ABL = torch.zeros(A * B * L, dtype=torch.bool, device=h_BLD.device)
        sel_ABL[mod_P * (B * L) + tok_P] = True
        sel_ABL = sel_ABL.view(A, B, L)
        count_AB = sel_ABL.sum(-1)
        C = int(count_AB.max())
        # Stable sort puts each row's routed positions first, in time order; keep C of them.
        pos_ABC = torch.argsort((~sel_ABL).to(torch.uint8), dim=-1, stable=True)[..., :C]
        slot_C = torch.arange(C, device=h_BLD.device)
        # Padded keys are masked (vision); a row with no tokens at all keeps slot 0 visible so its
        # softmax stays finite (its output is never gathered, but NaN would leak into gradients).
        valid_ABC = (slot_C < count_AB[..., None]) | (slot_C == 0)
        row_B = torch.arange(B, device=h_BLD.device)[None, :, None] * L
        x_ABCD = h_BLD.reshape(B * L, D)[row_B + pos_ABC]
        out_ABCD = self.attend(x_ABCD, pos_ABC, None if self.causal else valid_ABC)
        # Pair (a, t) sits at slot rank(t among a's tokens of its sequence) of row (a, b).
        rank_ABL = sel_ABL.cumsum(-1) - 1
        slot_P = rank_ABL.view(-1)[mod_P * (B * L) + tok_P]
        b_P = tok_P // L
        delta_PD = out_ABCD.reshape(-1, D)[(mod_P * B + b_P) * C + slot_P]
        n = count_AB.float()
        useful = 8 * D * D * float(n.sum()) + 4 * D * float((n * n).sum())
        executed = A * B * C * (8 * D * D + 4 * D * C)
        return delta_PD, (useful, float(executed))


class MLPBank(nn.Module):
    """E pre-norm MLP modules (D -> F -> D, GELU) with stacked weights; outputs the update."""

    def __init__(self, n: int, d: int, hidden: int, init_std: float, out_std: float):
        super().__init__()
        self.n, self.d, self.f = n, d, hidden
        self.norm_ED = nn.Parameter(torch.ones(n, d))
        self.w_in_EDF = nn.Parameter(torch.randn(n, d, hidden) * init_std)
        self.w_out_EFD = nn.Parameter(torch.randn(n, hidden, d) * out_std)

    def forward(self, x_PD: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """x_PD sorted by module, `counts[e]` rows for module e -> update [P, D]."""
        xn = F.layer_norm(x_PD, (self.d,))
        w_in = (self.norm_ED[:, :, None] * self.w_in_EDF).to(xn.dtype)
        hid_PF = F.gelu(grouped_matmul(xn, w_in, counts))
        return grouped_matmul(hid_PF, self.w_out_EFD.to(hid_PF.dtype), counts)

    def flops(self, n_tokens: int) -> float:
        return 4.0 * self.d * self.f * n_tokens


def out_std(init_std: float, depth: int) -> float:
    """GPT-2's scaled init of residual-output projections: keeps the stream's variance flat."""
    return init_std / math.sqrt(2 * max(depth, 1))
