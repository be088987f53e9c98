"""Training throughput of a DNA LM vs a dense GPT with the same measured FLOPs per token.

Runs, in one process on the same batches, forward + backward of:
  dna     routed pool (packed routed attention, grouped-matmul MLP dispatch)
  dense   GPT of the same blocks, its depth chosen to match the DNA's measured FLOPs/token
  masked  the same DNA computed the naive way: every module on every token, outputs masked by
          the routing gates and attention masked to the routed keys (pool/top_k times the work)
and prints tokens/s, FLOPs/token and the ratios. The last line is the DNA/dense ratio of
tokens/s at equal FLOPs per token (raw tokens/s ratio x DNA FLOPs / dense FLOPs).

    python bench/throughput.py                 # CPU default: d_model 256, 8 modules, top-2
    python bench/throughput.py --device cuda --batch 32 --d-model 768 --heads 12
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from dnasweep.model import LossConfig, ModelConfig, PoolConfig, build_model, compute_loss
from dnasweep.model.flops import block_cost
from dnasweep.model.pool import StepResult


def masked_step(pool, h_BLD, route):
    """Every module on every token; unselected outputs multiplied by a zero gate."""
    B, L, D = h_BLD.shape
    T, K = route.idx_TK.shape
    gate_TM = torch.zeros(T, pool.size, dtype=h_BLD.dtype, device=h_BLD.device)
    gate_TM.scatter_(1, route.idx_TK, route.gate_TK.to(h_BLD.dtype))
    routed_AB1L = (gate_TM[:, : pool.n_t + pool.n_a] != 0).T.reshape(-1, B, 1, 1, L)
    bank = pool.attn
    A, H = bank.n, bank.h
    xn = F.layer_norm(h_BLD, (D,))
    qkv = torch.einsum("bld,ade->able", xn, bank.norm_AD[:, :, None] * bank.w_qkv_AD3D)
    q, k, v = qkv.view(A, B, L, 3, H, D // H).permute(3, 0, 1, 4, 2, 5).unbind(0)  # [A, B, H, L, Dh]
    if bank.rope is not None:
        pos = torch.arange(L, device=h_BLD.device).repeat(A * B * H)
        q, k = (bank.rope.apply(t.reshape(-1, 1, D // H), pos).view_as(t) for t in (q, k))
    causal = torch.ones(L, L, dtype=torch.bool, device=h_BLD.device).tril()
    mask = (causal & routed_AB1L) | torch.eye(L, dtype=torch.bool, device=h_BLD.device)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(2, 3).reshape(A, B * L, D)
    attn_ATD = torch.bmm(o, bank.w_o_ADD)
    u_ATD = attn_ATD.clone()
    nt = pool.n_t
    if nt:
        x = h_BLD.reshape(1, T, D) + attn_ATD[:nt]
        mlp = pool.mlp_t
        hid = F.gelu(torch.bmm(F.layer_norm(x, (D,)), mlp.norm_ED[:, :, None] * mlp.w_in_EDF))
        u_ATD[:nt] = attn_ATD[:nt] + torch.bmm(hid, mlp.w_out_EFD)
    h = h_BLD.reshape(T, D) + torch.einsum("at,atd->td", gate_TM[:, :A].T, u_ATD)
    return h.view(B, L, D), StepResult(torch.zeros(pool.size, dtype=torch.long), 0.0, 0.0)


def timed(model, x, y, iters: int, warmup: int) -> tuple[float, float]:
    """(median seconds per forward+backward, measured FLOPs/token)."""
    times, flops = [], 0.0
    for i in range(warmup + iters):
        if x.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = model(x)
        loss, _ = compute_loss(out, y, LossConfig())
        loss.backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
        flops = out.stats.flops_per_token
        model.zero_grad(set_to_none=True)
    return statistics.median(times), flops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--modules", type=int, default=8, help="transformer-block modules in the pool")
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-masked", action="store_true", help="skip the (slow) masked strategy")
    a = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    cfg = ModelConfig(d_model=a.d_model, n_heads=a.heads, n_steps=a.steps, seq_len=a.seq, n_backbone=1,
                      pool=PoolConfig(n_transformer=a.modules, n_attention=0, n_mlp=0, n_identity=0))
    cfg.router.top_k = a.top_k
    x = torch.randint(0, 256, (a.batch, a.seq), device=dev)
    y = torch.randint(0, 256, (a.batch, a.seq), device=dev)
    dna = build_model(cfg).to(dev)
    t_dna, f_dna = timed(dna, x, y, a.iters, a.warmup)
    # Dense depth with the closest measured FLOPs/token (the DNA's routed attention sees fewer keys).
    n_dense = max(1, round(f_dna / block_cost(cfg)))
    best = None
    for n in range(max(1, n_dense - 3), n_dense + 3):
        dcfg = ModelConfig(**{**cfg.__dict__, "kind": "dense", "n_backbone": 0, "dense_layers": n})
        f = build_model(dcfg).to(dev)(x[:1]).stats.flops_per_token
        if best is None or abs(f - f_dna) < abs(best[1] - f_dna):
            best = (dcfg, f)
    dense = build_model(best[0]).to(dev)
    t_dense, f_dense = timed(dense, x, y, a.iters, a.warmup)
    rows = [("dna", t_dna, f_dna), (f"dense ({best[0].dense_layers} blocks)", t_dense, f_dense)]
    if not a.no_masked:
        dna.pool.forward = lambda h, route: masked_step(dna.pool, h, route)
        t_mask, _ = timed(dna, x, y, a.iters, a.warmup)
        rows.append(("masked (every module, every token)", t_mask, f_dna))
    n_tok = x.numel()
    print(f"device {dev}, d_model {a.d_model}, pool {a.modules} blocks, top-{a.top_k}, {a.steps} steps, "
          f"batch {a.batch}x{a.seq}; median of {a.iters} forward+backward")
    print(f"{'strategy':<36} {'tokens/s':>10} {'FLOPs/token':>12} {'GFLOP/s':>9}")
    for name, t, f in rows:
        print(f"{name:<36} {n_tok / t:>10,.0f} {f:>12.4g} {3 * f * n_tok / t / 1e9:>9.1f}")
    raw = t_dense / t_dna
    print(f"dna/dense tokens/s: {raw:.3f} raw, {raw * f_dna / f_dense:.3f} at equal FLOPs/token")
    if not a.no_masked:
        print(f"dna/masked tokens/s: {rows[2][1] / t_dna:.2f}")
    print(f"{raw * f_dna / f_dense:.3f}")


if __name__ == "__main__":
    main()
