"""Banks of modules with stacked weights.

A bank owns the weights of n modules of one type, stacked along a leading axis, so one
batched matmul serves all of them: routed tokens are gathered per module, never run through
every module and masked (that would cost pool_size / top_k times the useful work). Two ways in
(dnasweep.model.pool says which runs when, and why): exact rows sorted by module through
`grouped_matmul` (sizes on the host: `routed_exact`, `MLPBank.grouped`), or static,
capacity-padded [n, C, D] blocks through bmm (`project`, `out`, `core`, `MLPBank.forward`).

Tensor names carry their shape:
  B batch, L tokens per sequence (or patches per image), T = B*L flattened tokens, D d_model,
  A attention modules in a bank, C packed rows per module (or per (module, sequence) row of the
  attention core, N such rows), H heads, Dh head dim, E MLP modules in a bank, F MLP hidden
  width, P routed (token, module) pairs.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

_GROUPED_MM = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)
# Slots of one line of the non-causal exact core (AttentionBank._lines_core): chosen by measurement.
LINE_SLOTS = 16


def group_offsets(counts: list[int], device: torch.device) -> torch.Tensor:
    """The grouped matmul's end offsets of `counts` (int32): built once per bank and step, shared
    by every grouped matmul of the bank, as one host-to-tensor copy (no cumsum op)."""
    return torch.tensor(list(itertools.accumulate(counts)), dtype=torch.int32, device=device)


def grouped_matmul(x_PD: torch.Tensor, w_EDF: torch.Tensor, counts: list[int],
                   offs: torch.Tensor | None = None) -> torch.Tensor:
    """Rows of x_PD, sorted by module, times their module's weight: one grouped matmul.

    `counts[e]` rows belong to module e (`offs`: their `group_offsets`, built here if not given).
    Uses torch's grouped matmul where it applies (same dtype, 16-byte aligned widths), else a loop
    over modules (still no per-token Python work).
    """
    E = w_EDF.shape[0]
    if E == 1:
        return x_PD @ w_EDF[0]
    aligned = x_PD.shape[1] % 8 == 0 and w_EDF.shape[2] % 8 == 0
    kernel_dtype = x_PD.dtype in (torch.float32, torch.bfloat16, torch.float16) and x_PD.dtype == w_EDF.dtype
    if torch.compiler.is_compiling():  # traced, the kernel accepts bf16 only
        kernel_dtype = x_PD.dtype == torch.bfloat16 == w_EDF.dtype
    if _GROUPED_MM is not None and aligned and kernel_dtype and x_PD.shape[0] > 0:
        offs = group_offsets(counts, x_PD.device) if offs is None else offs
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
        # q and k rotated in one formula: x * cos + swap_halves(x) * sin, with sin signed -sin | +sin
        # over the halves (rotating pairs (i, i + Dh/2)) -> [L, 2 (cos, sin), Dh].
        cs = torch.stack([torch.cat((ang.cos(), ang.cos()), -1), torch.cat((-ang.sin(), ang.sin()), -1)], 1)
        self.register_buffer("cs_L2Dh", cs, persistent=False)

    def apply_qkv(self, qkv_PX: torch.Tensor, pos_P: torch.Tensor, n_heads: int) -> torch.Tensor:
        """Rotate q and k of packed q|k|v rows [P, 3D] by each row's position pos [P] -> [P, 3D].

        One table lookup and four elementwise ops for q and k together, then one cat with v."""
        P, X = qkv_PX.shape
        L, _, Dh = self.cs_L2Dh.shape
        D = X // 3
        # Tables spread over the heads first (a small [L, 2, D] copy): a per-pair table broadcast
        # over heads leaves the elementwise kernels an inner loop of Dh and runs several times slower.
        cs_L2D = self.cs_L2Dh[:, :, None].expand(L, 2, n_heads, Dh).reshape(L, 2, D)
        cs = cs_L2D.index_select(0, pos_P).to(qkv_PX.dtype)  # [P, 2, D]
        cos, sin = cs[:, :1], cs[:, 1:]  # [P, 1, D]: the same for q and k
        qk, v = qkv_PX.view(P, 3, D).split([2, 1], 1)  # split: one cat in backward, not two zero-filled copies
        rot = qk.reshape(P, 2, n_heads, Dh).roll(Dh // 2, -1).view(P, 2, D)
        return torch.cat((qk * cos + rot * sin, v), 1).view(P, X)


class AttentionBank(nn.Module):
    """Pre-norm multi-head self-attention modules with stacked weights.

    A module's output is its *update* Attn(LN(x)); the caller adds the skip connection.
    Routed semantics: a token routed to module a attends to the tokens of its own sequence that a
    also received at this step (causally in LM), and to nothing else.
    Static dispatch packs each module's tokens into a padded [A, C, D] block for the projections
    (`project`, `out`: one bmm each) and into per-(module, sequence) rows for the `core`; exact
    dispatch (`routed_exact`) projects exactly the routed rows and packs the core per module.
    """

    def __init__(self, n: int, d: int, n_heads: int, causal: bool, rope: Rope | None,
                 init_std: float, out_std: float):
        super().__init__()
        self.n, self.d, self.h, self.causal, self.rope = n, d, n_heads, causal, rope
        self.norm_AD = nn.Parameter(torch.ones(n, d))
        self.w_qkv_AD3D = nn.Parameter(torch.randn(n, d, 3 * d) * init_std)
        self.w_o_ADD = nn.Parameter(torch.randn(n, d, d) * out_std)

    def project(self, x_ACD: torch.Tensor, w_qkv: torch.Tensor | None = None) -> torch.Tensor:
        """Normed, projected q|k|v [A, C, 3D] of each module's packed rows (one bmm); `w_qkv` the
        weights with the norm gains folded in (ModulePool.folded), computed here if not given."""
        xn = F.layer_norm(x_ACD, (x_ACD.shape[-1],))
        if w_qkv is None:
            w_qkv = self.norm_AD[:, :, None] * self.w_qkv_AD3D
        return torch.bmm(xn, w_qkv.to(xn.dtype))

    def qkv(self, x_ACD: torch.Tensor, pos_AC: torch.Tensor):
        """Normed, projected, rotated q, k, v [A, C, H, Dh] of each module's packed rows (one bmm;
        `pos_AC` holds each row's ORIGINAL position in its sequence, for RoPE)."""
        A, C, D = x_ACD.shape
        xn = F.layer_norm(x_ACD, (D,))
        w_qkv = (self.norm_AD[:, :, None] * self.w_qkv_AD3D).to(xn.dtype)  # fold the norm's gain in
        qkv_PX = torch.bmm(xn, w_qkv).view(A * C, 3 * D)
        if self.rope is not None:
            qkv_PX = self.rope.apply_qkv(qkv_PX, pos_AC.reshape(-1), self.h)
        q, k, v = qkv_PX.view(A * C, 3, self.h, D // self.h).unbind(1)
        return tuple(t.view(A, C, self.h, D // self.h) for t in (q, k, v))

    def out(self, o_ACD: torch.Tensor) -> torch.Tensor:
        """Output projection of each module's packed rows (one bmm)."""
        return torch.bmm(o_ACD, self.w_o_ADD.to(o_ACD.dtype))

    def core(self, q, k, v, valid_NC: torch.Tensor | None) -> torch.Tensor:
        """SDPA over packed rows q, k, v [N, C, H, Dh] -> [N, C, H*Dh]. Real tokens sit first in
        each row in time order, padding after: a causal mask never lets a real query see padding;
        without one (vision) `valid_NC` masks padded keys."""
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if self.causal:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            mask = None if valid_NC is None else valid_NC[:, None, None, :]
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return o.transpose(1, 2).flatten(2)

    def full(self, h_BLD: torch.Tensor) -> torch.Tensor:
        """Module 0 on every token of every sequence (a dense block): update [B, L, D]."""
        B, L, D = h_BLD.shape
        pos = torch.arange(L, device=h_BLD.device).repeat(B)
        q, k, v = self.qkv(h_BLD.reshape(1, B * L, D), pos.view(1, -1))
        o = self.core(*(t.view(B, L, self.h, -1) for t in (q, k, v)), None)
        return (o.reshape(B * L, D) @ self.w_o_ADD[0].to(o.dtype)).view(B, L, D)

    def routed_exact(self, xn_PD: torch.Tensor, row_P: torch.Tensor, tok_P: torch.Tensor, n_AB: list[int],
                     B: int, L: int, w_qkv: torch.Tensor | None = None):
        """The exact (host-sized) path: updates for routed pairs -> (delta_PD, (useful, executed)).

        `xn_PD` holds the layer-normed (gain not applied) rows of the routed pairs, sorted by
        (module, sequence) row `row_P` = a*B + b and, within a row, by time (`tok_P`: flat token
        index b*L + l); `n_AB` (host ints, [A*B] row-major) pairs per row. `w_qkv`: the q|k|v
        weights with the norm gains folded in (ModulePool.folded), computed here if not given.
        Projections run on exactly the routed rows (grouped matmul). The causal core pads each
        module's rows to that module's longest row; the non-causal one packs rows into lines
        (`_lines_core`). FLOPs are host floats.
        """
        P, D = xn_PD.shape
        A, H, dev = self.n, self.h, xn_PD.device
        n_rows = [n_AB[a * B:(a + 1) * B] for a in range(A)]
        counts = [sum(r) for r in n_rows]
        C_A = [max(r) for r in n_rows]
        if w_qkv is None:
            w_qkv = self.norm_AD[:, :, None] * self.w_qkv_AD3D
        offs = group_offsets(counts, dev)  # shared by both projections
        qkv_PX = grouped_matmul(xn_PD, w_qkv.to(xn_PD.dtype), counts, offs)
        if self.rope is not None:
            qkv_PX = self.rope.apply_qkv(qkv_PX, tok_P % L, H)  # each pair at its ORIGINAL position
        if not self.causal:
            o_SD, dest_P, n_slots = self._lines_core(qkv_PX, row_P, n_AB)
            o_PD = o_SD.index_select(0, dest_P)
            delta_PD = grouped_matmul(o_PD, self.w_o_ADD.to(o_PD.dtype), counts, offs)
            return delta_PD, (self.flops(P, float(sum(n * n for n in n_AB))), self.flops(P, n_slots))
        # One buffer holds every module's [B, C_a] block of q|k|v at its offset; the pair of row r's
        # j-th slot lands at start_r + j = p + shift_r (shift_r: row r's block start minus its
        # first pair), so one table lookup places every pair. Padding slots stay zero.
        shift_AB, first, start = [], 0, 0
        for a in range(A):
            for n in n_rows[a]:
                shift_AB.append(start - first)
                first, start = first + n, start + C_A[a]
        dest_P = torch.arange(P, device=dev) + torch.tensor(shift_AB, device=dev).index_select(0, row_P)
        # index_add_ into zeros places each pair once (a copy); its backward is one index_select,
        # both far cheaper on CPU than index_put and its accumulating backward.
        qkv_SX = qkv_PX.new_zeros(start, 3 * D).index_add_(0, dest_P, qkv_PX)
        # split, not slicing: the backward of one split is one cat, that of each slice a zero-filled
        # copy of the whole buffer.
        outs = []
        for a, qkv_BCX in enumerate(qkv_SX.split([B * C for C in C_A])):
            if counts[a] == 0:
                continue
            q, k, v = qkv_BCX.view(B, C_A[a], 3, H, D // H).unbind(2)
            outs.append(self.core(q, k, v, None).reshape(B * C_A[a], D))
        o_SD = torch.cat(outs) if len(outs) > 1 else outs[0]
        o_PD = o_SD.index_select(0, dest_P)
        delta_PD = grouped_matmul(o_PD, self.w_o_ADD.to(o_PD.dtype), counts, offs)
        useful = self.flops(P, float(sum(n * n for n in n_AB)))
        executed = self.flops(P, B * float(sum(c * c for c in C_A)))
        return delta_PD, (useful, executed)

    def _lines_core(self, qkv_PX: torch.Tensor, row_P: torch.Tensor, n_AB: list[int]):
        """Non-causal core of the exact path: every (module, sequence) row packed whole, in order,
        into lines of LINE_SLOTS slots (or of the longest row, if longer), each line one SDPA row
        whose mask lets a slot see only its own row's slots (padding sees padding). One call for
        the whole bank. -> (o [N*R, D], each pair's slot dest_P [P], N*R*R attended slots).

        Why not a row per (module, sequence), as the causal core keeps: rows of a 16-patch image
        hold ~4 tokens, and the CPU kernel's cost goes by rows x heads, not by their length. On the
        vision base (2-core CPU, one thread) a step's six [64 images, 4 heads, 9, 16] masked calls
        took 6.8-7.9 ms forward + backward, the same pairs in lines of 32 1.3-1.5 ms. Whole-model,
        one process, alternating: lines of 16 and 32 alike on one thread, 16 best on two (64 and 128
        slower). Causal rows are long enough already: packed with a block-causal mask (no is_causal)
        they were slower at every LM size."""
        P, X = qkv_PX.shape
        D, H, dev = X // 3, self.h, qkv_PX.device
        R = max(LINE_SLOTS, max(n_AB))
        shift, first, start, used = [], 0, 0, 0  # used: slots taken in the current line
        for n in n_AB:
            if used + n > R:  # the row goes whole into a new line
                start, used = start + R - used, 0
            shift.append(start - first)
            first, start, used = first + n, start + n, used + n
        N = -(-start // R)
        dest_P = torch.arange(P, device=dev) + torch.tensor(shift, device=dev).index_select(0, row_P)
        qkv_SX = qkv_PX.new_zeros(N * R, X).index_add_(0, dest_P, qkv_PX)
        row_S = torch.full((N * R,), -1, dtype=row_P.dtype, device=dev).index_put_((dest_P,), row_P)
        row_NR = row_S.view(N, R)
        mask_N1RR = (row_NR[:, :, None] == row_NR[:, None, :])[:, None]
        q, k, v = qkv_SX.view(N, R, 3, H, D // H).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_N1RR)
        return o.transpose(1, 2).reshape(N * R, D), dest_P, float(N * R * R)

    def flops(self, rows: int, n_seqs_by_len: float) -> float:
        """Forward FLOPs of projections on `rows` rows plus cores whose squared lengths sum to
        `n_seqs_by_len` (unmasked, as the kernels execute them)."""
        return 8.0 * self.d * self.d * rows + 4.0 * self.d * n_seqs_by_len


class MLPBank(nn.Module):
    """E pre-norm MLP modules (D -> F -> D, GELU) with stacked weights; outputs the update."""

    def __init__(self, n: int, d: int, hidden: int, init_std: float, out_std: float):
        super().__init__()
        self.n, self.d, self.f = n, d, hidden
        self.norm_ED = nn.Parameter(torch.ones(n, d))
        self.w_in_EDF = nn.Parameter(torch.randn(n, d, hidden) * init_std)
        self.w_out_EFD = nn.Parameter(torch.randn(n, hidden, d) * out_std)

    def forward(self, x_ECD: torch.Tensor, w_in: torch.Tensor | None = None) -> torch.Tensor:
        """Each module's packed rows x [E, C, D] -> updates [E, C, D] (two bmm); `w_in` the input
        weights with the norm gains folded in (ModulePool.folded), computed here if not given."""
        xn = F.layer_norm(x_ECD, (self.d,))
        if w_in is None:
            w_in = self.norm_ED[:, :, None] * self.w_in_EDF
        w_in = w_in.to(xn.dtype)
        hid_ECF = F.gelu(torch.bmm(xn, w_in))
        return torch.bmm(hid_ECF, self.w_out_EFD.to(hid_ECF.dtype))

    def grouped(self, x_PD: torch.Tensor, counts: list[int], w_in: torch.Tensor | None = None,
                normed: bool = False) -> torch.Tensor:
        """The exact (host-sized) path: rows sorted by module, `counts[e]` for module e; `w_in` as
        in `forward`; `normed`: x_PD is already layer-normed (gain not applied)."""
        xn = x_PD if normed else F.layer_norm(x_PD, (self.d,))
        if w_in is None:
            w_in = self.norm_ED[:, :, None] * self.w_in_EDF
        offs = group_offsets(counts, x_PD.device)  # shared by both matmuls
        hid_PF = F.gelu(grouped_matmul(xn, w_in.to(xn.dtype), counts, offs))
        return grouped_matmul(hid_PF, self.w_out_EFD.to(hid_PF.dtype), counts, offs)

    def flops(self, n_tokens: int) -> float:
        return 4.0 * self.d * self.f * n_tokens


def out_std(init_std: float, depth: int) -> float:
    """GPT-2's scaled init of residual-output projections: keeps the stream's variance flat."""
    return init_std / math.sqrt(2 * max(depth, 1))
