"""The shared module pool and one routing step through it.

Module ids are laid out by type: [transformer blocks | attention-only | MLP-only | identity];
an unused slot (threshold, expert choice) goes to the null id M, which, like identity, computes
nothing.

Per step, for routed pairs p = (token t, module m) with gate ρ:
  attention part (transformer, attention-only):  a_p = Attn_m(LN(h_t))   over m's tokens only
  MLP part (transformer):                         u_p = a_p + MLP_m(LN(h_t + a_p))
  MLP part (MLP-only):                            u_p = MLP_m(LN(h_t))
  identity:                                       u_p = 0 (never computed)
  h_t <- h_t + Σ_p ρ_p u_p        (u_p = M_m(h_t) - h_t: modules carry their own skip)

Two dispatches, chosen by measurement (`DNAModel` picks; both give the same result when nothing
is dropped, tests/test_compile.py holds them to it):
- exact (`caps=None`; every eager run): pairs sorted by module, every module's rows at their
  own size through a grouped matmul, the causal attention core per module padded to its
  longest row, the non-causal one in lines of whole rows (AttentionBank._lines_core).
  Segment sizes are read on the host: on CPU that is no device sync, on a GPU it is one per
  step (eager GPU training stays here until bench/gpu.sh has measured static). Nothing is dropped and
  executed/useful FLOPs stay 1.02-1.04 on the shipped bases.
- static (`caps` given; training under torch.compile): no sort and no host read. A
  pair's slot is its rank among its module's pairs (and its (module, sequence) row's, for the
  core), from a cumsum over a one-hot of module ids in token order, so slots keep time order.
  Each bank gathers its tokens into [modules, C, D] and runs one bmm per weight; the core runs
  on per-(module, sequence) rows of R slots, real tokens first, padding after. Shapes are static
  python ints (`Caps`), so the step compiles with fullgraph=True; a pair beyond its module's or
  row's capacity is dropped (update 0; the latest tokens of a module go first, so dropping stays
  causal, though it couples the sequences of a batch, as any capacity does), counted in
  `StepResult.dropped` and reported as `RoutingStats.dropped_fraction`. `DNAModel` adapts the
  caps between optimizer steps from the maxima each step reports (`StepResult.need_3`).
Why not one of them everywhere (2-core CPU, torch 2.13, fp32, forward + backward, the shipped LM
base at d_model 64/128/256 and the vision base, all in one process, alternating): the exact
path runs 1.2-1.7x the tokens/s of the static one, because padding every module of a bank to
the bank's busiest module costs 1.5-1.6x the useful FLOPs on the LM bases at initialisation
(3.7x on the 16-patch vision base). On a GPU the host read would stall the stream and under
torch.compile it breaks the graph (and `_grouped_mm` traced takes bf16 only), so compiled
training uses static shapes; whether eager GPU training should too is for bench/gpu.sh to say.
Executed FLOPs count padded rows, useful FLOPs only the kept routed pairs.

Tensor names carry their shape:
  B batch, L tokens per sequence, T = B*L, D d_model, K slots per token, P = T*K pairs in token
  order, Q = L*K pairs of one sequence, M pool size (M+1 with the null id), A attention-bank
  modules (transformer + attention-only), E MLP-only modules, C rows per module, R rows per
  (module, sequence), S slots of a bank's [n, C] block, N = A*B*R slots of the attention core,
  H heads, Dh head dim, X = 3*D (q|k|v).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dnasweep.model.banks import AttentionBank, MLPBank, Rope
from dnasweep.model.config import ModelConfig
from dnasweep.model.flops import mlp_hidden
from dnasweep.model.routers import Route


class Caps(NamedTuple):
    """Static capacities of one routing step (python ints: they fix the shapes)."""

    attn_rows: int  # rows per attention-bank module (projections, transformer MLPs)
    seq_rows: int  # rows per (attention module, sequence) of the attention core
    mlp_rows: int  # rows per MLP-only module


@dataclass
class StepResult:
    """What one routing step did, for accounting (0-dim tensors: read them after the step)."""

    slots_M: torch.Tensor  # pairs routed to each module (int64, on the model's device)
    flops_useful: torch.Tensor  # forward FLOPs on kept routed pairs only
    flops_executed: torch.Tensor  # forward FLOPs including capacity padding
    dropped: torch.Tensor  # routed pairs of computing modules dropped by capacity (0 when exact)
    computing: torch.Tensor  # routed pairs of computing modules (the drop fraction's denominator)
    need_3: torch.Tensor  # the capacities this step needed to drop nothing (a Caps, int64 [3])


def _slot_map(dest_P: torch.Tensor, n: int) -> torch.Tensor:
    """[n] the pair in each slot (P at slots no pair reaches: padding). Dropped pairs point at
    slot n, cut off here."""
    P = dest_P.shape[0]
    out = torch.full((n + 1,), P, dtype=dest_P.dtype, device=dest_P.device)
    return out.scatter(0, dest_P, torch.arange(P, device=dest_P.device))[:n]


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

    def folded(self) -> dict[str, torch.Tensor]:
        """The banks' weights with their norm gains folded in: computed once per forward and
        shared by every step (each step reuses the same pool)."""
        w = {}
        if self.attn is not None:
            w["qkv"] = self.attn.norm_AD[:, :, None] * self.attn.w_qkv_AD3D
        for name, bank in (("t", self.mlp_t), ("o", self.mlp_o)):
            if bank is not None:
                w[name] = bank.norm_ED[:, :, None] * bank.w_in_EDF
        return w

    def forward(self, h_BLD: torch.Tensor, route: Route, caps: Caps | None = None,
                w: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, StepResult]:
        B, L, D = h_BLD.shape
        T, K = route.idx_TK.shape
        M, A, E = self.size, self.n_t + self.n_a, self.n_m
        mod_TK = route.idx_TK
        if route.active_TK is not None:
            mod_TK = torch.where(route.active_TK, mod_TK, M)
        mod_P = mod_TK.reshape(-1)
        if caps is None:  # exact, sized on the host (eager CPU: no device to sync with)
            return self._exact(h_BLD, mod_P, route, w)
        mod_BQ = mod_P.view(B, L * K)
        onehot_BQM = F.one_hot(mod_BQ, M + 1)
        # Rank of each pair among its module's pairs of its sequence, and of the whole batch.
        incl_BQM = onehot_BQM.cumsum(1)
        n_BM = incl_BQM[:, -1]  # [B, M+1] pairs per (sequence, module)
        rank_seq_P = (incl_BQM.gather(2, mod_BQ[..., None]).squeeze(2) - 1).reshape(-1)
        before_BM = n_BM.cumsum(0) - n_BM  # the module's pairs in earlier sequences
        rank_mod_P = rank_seq_P + before_BM.gather(1, mod_BQ).reshape(-1)
        slots_M = n_BM.sum(0)
        need_3 = self._need(n_BM)
        w = self.folded() if w is None else w
        h_TD = h_BLD.reshape(T, D)
        gate_P = route.gate_TK.reshape(-1).to(h_TD.dtype)
        f64 = dict(dtype=torch.float64, device=h_BLD.device)
        useful, executed = torch.zeros((), **f64), torch.zeros((), **f64)
        kept = torch.zeros((), dtype=torch.int64, device=h_BLD.device)
        out_TD = h_TD
        for bank, lo, n, C in ((self.attn, 0, A, caps.attn_rows), (self.mlp_o, A, E, caps.mlp_rows)):
            if not (n and C and (bank is not self.attn or caps.seq_rows)):
                continue
            C = min(C, T)
            e_P = mod_P - lo
            keep = (e_P >= 0) & (e_P < n) & (rank_mod_P < C)
            if bank is self.attn:
                R = min(caps.seq_rows, L)
                keep = keep & (rank_seq_P < R)
            dest_P = torch.where(keep, e_P * C + rank_mod_P, n * C)  # slot in the [n, C] block
            # Padding slots read token 0 and carry gate 0: their rows are computed (finite, real
            # values) and thrown away; causal attention never lets a real query see them.
            pair_S = _slot_map(dest_P, n * C)
            real_S = pair_S < T * K
            pair_S = pair_S.clamp(max=T * K - 1)
            tok_S = torch.where(real_S, pair_S // K, 0)
            gate_S = torch.where(real_S, gate_P[pair_S], 0.0)
            x_SD = h_TD[tok_S]
            n_kept = keep.sum()
            kept = kept + n_kept
            if bank is self.attn:
                out_TD, f_use, f_exe = self._attention(out_TD, x_SD.view(A, C, D), tok_S, gate_S, dest_P, keep,
                                                       mod_P * B + (torch.arange(T * K, device=h_BLD.device) // K) // L,
                                                       rank_seq_P, B, L, R, w)
                useful, executed = useful + f_use, executed + f_exe
            else:
                u_SD = self.mlp_o(x_SD.view(E, C, D), w["o"]).reshape(E * C, D)
                out_TD = out_TD.index_add(0, tok_S, u_SD.to(out_TD.dtype) * gate_S[:, None])
                useful = useful + self.mlp_o.flops(1) * n_kept
                executed = executed + self.mlp_o.flops(E * C)
        computing = slots_M[:A + E].sum()
        return out_TD.view(B, L, D), StepResult(slots_M[:M], useful, executed, computing - kept, computing, need_3)

    def _need(self, n_BM: torch.Tensor) -> torch.Tensor:
        """The Caps that drop nothing, from pairs per (sequence, module) [B, M+1] (int64 [3])."""
        A, E = self.n_t + self.n_a, self.n_m
        slots_M, zero = n_BM.sum(0), n_BM.new_zeros(())
        return torch.stack([slots_M[:A].max() if A else zero, n_BM[:, :A].max() if A else zero,
                            slots_M[A:A + E].max() if E else zero])

    def _exact(self, h_BLD, mod_P, route: Route, w: dict[str, torch.Tensor] | None):
        """Exact dispatch: pairs sorted by module, every segment at its own size (grouped matmul),
        sizes read on the host. Nothing is dropped or padded outside the attention core. `w`: the
        folded weights (`folded`), computed per bank if not given.

        Row gathers use index_select and scatters index_add: on CPU both are several times faster
        than advanced indexing and index_put, and each is the other's backward."""
        B, L, D = h_BLD.shape
        T, K = route.idx_TK.shape
        P, M, A, E, dev = T * K, self.size, self.n_t + self.n_a, self.n_m, h_BLD.device
        w = {} if w is None else w
        # Pairs come in token order (p = t*K + k, t = b*L + l), so a stable sort by row = module * B
        # + sequence orders them by module, then sequence, then time, and one bincount of the rows,
        # read on the host once, sizes everything: module segments, attention rows, capacity needs.
        key_P = mod_P * B + torch.arange(P, device=dev) // (K * L)
        row_P, order = torch.sort(key_P, stable=True)
        n_MB = torch.bincount(key_P, minlength=(M + 1) * B).tolist()  # pairs per (module, sequence)
        c = [sum(n_MB[m * B:(m + 1) * B]) for m in range(M + 1)]
        slots_M = torch.tensor(c[:M], device=dev)
        need_3 = torch.tensor([max(c[:A], default=0), max(n_MB[:A * B], default=0), max(c[A:A + E], default=0)],
                              device=dev)  # the Caps that drop nothing (as `_need`)
        tok_P = order // K  # pair p = t*K + k belongs to token t
        gate_P = route.gate_TK.reshape(-1).index_select(0, order)
        nt, na, nm = self.n_t, self.n_a, self.n_m
        p1 = sum(c[:nt])
        p2 = p1 + sum(c[nt:nt + na])
        p3 = p2 + sum(c[nt + na:nt + na + nm])
        h_TD = h_BLD.reshape(T, D)
        useful = executed = 0.0
        updates = []
        if p3:
            # One gather and one layer norm serve every computing pair (attention bank, MLP-only).
            # Segments are cut with split, never slicing: the backward of one split is one cat, that
            # of each slice a zero-filled copy of the whole tensor.
            tok_p3 = tok_P[:p3]
            x_PD = h_TD.index_select(0, tok_p3)
            xn_PD = F.layer_norm(x_PD, (D,))
            xn_attn, xn_mlp = xn_PD.split([p2, p3 - p2])
        if p2:
            attn_PD, (fu, fe) = self.attn.routed_exact(xn_attn, row_P[:p2], tok_P[:p2], n_MB[:A * B], B, L,
                                                       w.get("qkv"))
            useful, executed = useful + fu, executed + fe
            if p1:
                attn_t, attn_a = attn_PD.split([p1, p2 - p1])
                x_t = x_PD.split([p1, p3 - p1])[0]
                mlp_PD = self.mlp_t.grouped(x_t + attn_t, c[:nt], w.get("t"))
                updates.append(attn_t + mlp_PD)
                if p2 > p1:
                    updates.append(attn_a)
                f = self.mlp_t.flops(p1)
                useful, executed = useful + f, executed + f
            else:
                updates.append(attn_PD)
        if p3 > p2:
            updates.append(self.mlp_o.grouped(xn_mlp, c[nt + na:nt + na + nm], w.get("o"), normed=True))
            f = self.mlp_o.flops(p3 - p2)
            useful, executed = useful + f, executed + f
        if updates:
            u_PD = torch.cat(updates) if len(updates) > 1 else updates[0]
            gate_p3 = gate_P.split([p3, gate_P.shape[0] - p3])[0]
            h_TD = h_TD.index_add(0, tok_p3, u_PD.to(h_TD.dtype) * gate_p3[:, None].to(h_TD.dtype))
        useful_, executed_ = torch.tensor([useful, executed], dtype=torch.float64, device=dev).unbind()
        dropped_, computing_ = torch.tensor([0, p3], device=dev).unbind()
        return h_TD.view(B, L, D), StepResult(slots_M, useful_, executed_, dropped_, computing_, need_3)

    def _attention(self, out_TD, x_ACD, tok_S, gate_S, dest_P, keep_P, row_P, rank_seq_P, B: int, L: int, R: int, w):
        """The attention bank (and the MLPs of transformer modules) on packed slots S of the [A, C]
        block; adds gate * update of each slot to out_TD. -> (out_TD, useful, executed FLOPs)."""
        bank, nt = self.attn, self.n_t
        A, C, D = x_ACD.shape
        H = bank.h
        qkv_SX = bank.project(x_ACD, w["qkv"]).view(A * C, 3 * D)
        # Core rows: (module, sequence) rows of R slots, tokens in time order, then padding.
        core_P = torch.where(keep_P, row_P * R + rank_seq_P, A * B * R)
        pair_N = _slot_map(core_P, A * B * R)  # pair in each core slot (padding: P)
        blk_N = torch.cat([dest_P, dest_P.new_zeros(1)])[pair_N]  # its slot of the block (padding: 0)
        n_row = torch.zeros(A * B + 1, dtype=torch.int64, device=x_ACD.device).scatter_add(
            0, torch.where(keep_P, row_P, A * B), keep_P.long())[:A * B]  # kept tokens per row
        qkv_NX = qkv_SX[blk_N]
        if bank.rope is not None:  # each token at its ORIGINAL position (padding: any)
            qkv_NX = bank.rope.apply_qkv(qkv_NX, tok_S[blk_N] % L, H)
        q, k, v = qkv_NX.view(A * B * R, 3, H, D // H).unbind(1)
        valid = None
        if not bank.causal:  # a row with no token keeps slot 0 visible: finite softmax, never read
            slot_R = torch.arange(R, device=x_ACD.device)
            valid = (slot_R < n_row[:, None]) | (slot_R == 0)
        o_N = bank.core(*(t.view(A * B, R, H, -1) for t in (q, k, v)), valid).reshape(A * B * R, D)
        # Back to the block: the core slot of each block slot (padding: any row; gate 0).
        core_S = torch.zeros(A * C + 1, dtype=core_P.dtype, device=core_P.device).scatter(
            0, dest_P, core_P.clamp(max=A * B * R - 1))[:A * C]
        attn_ACD = bank.out(o_N[core_S].view(A, C, D))
        g_S = gate_S[:, None]
        out_TD = out_TD.index_add(0, tok_S, attn_ACD.reshape(A * C, D).to(out_TD.dtype) * g_S)
        useful = bank.flops(0, (n_row.double() ** 2).sum()) + 8.0 * D * D * keep_P.sum()
        executed = bank.flops(A * C, A * B * R * R)
        if nt:
            mlp_ACD = self.mlp_t(x_ACD[:nt] + attn_ACD[:nt].to(x_ACD.dtype), w["t"])
            out_TD = out_TD.index_add(0, tok_S[:nt * C], mlp_ACD.reshape(nt * C, D).to(out_TD.dtype) * g_S[:nt * C])
            useful = useful + self.mlp_t.flops(1) * (keep_P & (dest_P < nt * C)).sum()
            executed = executed + self.mlp_t.flops(nt * C)
        return out_TD, useful, executed
