"""The DNA: stem -> dense backbone -> S routing steps over a shared module pool -> readout.

At step s the step's router scores the whole pool for every token, the token goes through the
modules it picked, and h <- h + Σ_i ρ_i (M_i(h) - h). A module may be picked at several steps.

No step reads the device from the host in static-capacity mode (training under torch.compile):
what routing did (FLOPs, identity share, drops) stays in 0-dim tensors that RoutingStats reads
when asked, and the capacities adapt between optimizer steps (`update_routing_biases`).

Tensor names carry their shape:
  B batch, L tokens per sequence, T = B*L, D d_model, M pool size, K slots per token, S steps.
"""

from __future__ import annotations

import torch
from torch import nn

from dnasweep.model.banks import Rope, out_std
from dnasweep.model.config import ModelConfig
from dnasweep.model.flops import block_cost, effective_k, module_costs, module_params
from dnasweep.model.layers import Block, Readout, Stem
from dnasweep.model.output import ModelOutput, RoutingStats
from dnasweep.model.pool import Caps, ModulePool
from dnasweep.model.registry import router_spec
from dnasweep.model.routers import Routing

CAPACITY_SLACK = 1.1  # static capacities: headroom over the largest need seen
CAPACITY_ROUND = 8  # ... rounded up to a multiple of this many rows
CAPACITY_SHRINK = 0.7  # shrink only when every wanted capacity is below this share of the current


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
        # "auto": exact dispatch in eager runs, static capacities in training under torch.compile;
        # "exact" / "static" force one. `caps` are the static capacities in use.
        self.capacity_mode: str = "auto"
        self.caps: Caps | None = None
        M = cfg.pool.size
        # Per-token cost of each module relative to a dense block (C_m / C_block), for the compute penalty.
        # Attention context is the uniform-routing share of the sequence, as `nominal` prices it.
        context = cfg.tokens_per_example * min(effective_k(cfg), M) / M
        cost = torch.tensor(module_costs(cfg, context)) / block_cost(cfg)
        self.register_buffer("cost_M", cost, persistent=False)
        self.register_buffer("params_M", torch.tensor(module_params(cfg), dtype=torch.float32),
                             persistent=False)
        # A soft mixture routes n_identity/M of the slots to identity whatever it learns, and so does
        # expert choice (every module picks its C tokens): their identity share is read from the gates.
        spec = router_spec(cfg.router.type)
        self.gate_identity_share = spec.all_modules and (spec.capacity or cfg.pool.n_identity > 0)
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
        caps = self._caps(B, L, h_BLD.device)
        results, idx, active, probs, logits_S, routed_steps, gate_ident_S = [], [], [], [], [], [], []
        w = self.pool.folded()  # once per forward: every step uses the pool (exact and static alike)
        for s in range(S):
            route = self.routing(h_BLD, s, keys_BL)
            h_BLD, res = self.pool(h_BLD, route, caps, w)
            results.append(res)
            idx.append(route.idx_TK)
            active.append(route.active_TK)
            if self.gate_identity_share:
                gate_ident_S.append(self._gate_identity_share(route))
            if route.logits_TM is not None:
                routed_steps.append(s)
                logits_S.append(route.logits_TM)
                # A rule that keeps no softmax (sigmoid) gets one here: see sigmoid_rule for why.
                probs.append(route.probs_TM if route.probs_TM is not None else route.logits_TM.softmax(-1))
        # What routing did, and the auxiliary terms, for all steps at once: a handful of ops on [S, ...]
        # stacks instead of a few dozen small ones per step (same sums, in another order).
        slots_SM_long = torch.stack([r.slots_M for r in results])
        useful = torch.stack([r.flops_useful for r in results]).sum()
        executed = torch.stack([r.flops_executed for r in results]).sum()
        dropped = torch.stack([r.dropped for r in results]).sum().double()
        computing = torch.stack([r.computing for r in results]).sum().double()
        needs = [r.need_3 for r in results]
        idx_TSK = torch.stack(idx, 1)
        if all(a is None for a in active):
            ones_TSK = torch.ones_like(idx_TSK, dtype=torch.bool)
        else:
            ones_TSK = torch.stack([torch.ones_like(i, dtype=torch.bool) if a is None else a
                                    for i, a in zip(idx, active, strict=True)], 1)
        visits_TM = torch.zeros(T, M, dtype=torch.int32, device=h_BLD.device)
        visits_TM.scatter_add_(1, idx_TSK.reshape(T, -1), ones_TSK.reshape(T, -1).to(torch.int32))
        zero = h_BLD.new_zeros((), dtype=torch.float32)
        compute, balance, zloss, entropy = zero, zero, zero, zero
        if logits_S:
            logits_STM, probs_STM = torch.stack(logits_S), torch.stack(probs)
            # Summed over steps here, / S below: the mean over steps and tokens of one slot's
            # probability-weighted cost in dense blocks = E[pool FLOPs/token] / (k·S·block cost);
            # see LossConfig for the formula and why it is not FLOPs/token ÷ block cost.
            compute = (probs_STM @ self.cost_M).mean(-1).sum()
            f_SM = slots_SM_long[routed_steps].float()
            f_SM = f_SM / f_SM.sum(-1, keepdim=True).clamp_min(1)
            balance = M * (f_SM * probs_STM.mean(1)).sum()
            zloss = torch.logsumexp(logits_STM, -1).square().mean(-1).sum()
            with torch.no_grad():
                entropy = (-(probs_STM * probs_STM.clamp_min(1e-12).log()).sum(-1).mean(-1)).sum()
        logits = self.readout(h_BLD)
        base = (self.stem.flops(B, L) + sum(b.flops(B, L) for b in self.backbone)
                + self.routing.flops(T) + self.readout.flops(B, L))
        slots_SM = slots_SM_long.detach().float()
        n_id = cfg.pool.n_identity
        stats = RoutingStats(
            flops_per_token_=(base + useful) / T,
            flops_executed_per_token_=(base + executed) / T,
            params_active_=self.params_base + (visits_TM > 0).float().mean(0) @ self.params_M,
            params_total=self.params_total,
            slots_SM=slots_SM,
            identity_fraction_=(torch.stack(gate_ident_S).mean() if gate_ident_S else
                                slots_SM[:, M - n_id:].sum() / slots_SM.sum() if n_id else 0.0),
            entropy_=entropy / S,
            dropped_fraction_=dropped / computing.clamp_min(1),
            capacity_need_S3=torch.stack(needs),
        )
        aux = {"compute": compute / S, "balance": balance / S, "z": zloss / S}
        paths = torch.where(ones_TSK, idx_TSK, -1).view(B, L, S, -1) if return_paths else None
        return ModelOutput(logits, stats, aux, paths)

    @torch.no_grad()
    def _gate_identity_share(self, route) -> torch.Tensor:
        """Mean over tokens of the share of a token's gate weight on the skip path (0-dim): for a
        softmax mixture, the probability mass on identity modules; under expert choice, on the
        identity modules that picked the token, and all of it for a token no module picked (the
        step leaves it as it was)."""
        gate_TK = route.gate_TK.float()
        if route.active_TK is not None:
            gate_TK = gate_TK * route.active_TK
        computes_TK = ~self.routing.is_identity_M[route.idx_TK]
        return 1 - ((gate_TK * computes_TK).sum(-1) / gate_TK.sum(-1).clamp_min(1e-9)).mean()

    def _caps(self, B: int, L: int, device: torch.device) -> Caps | None:
        """Capacities of this forward: None (exact, the pool sizes segments on the host) in every
        eager run, evaluation included (reported metrics never lose a dropped token); static ones
        (no host read) in training under torch.compile, which needs them, or when `capacity_mode`
        says so (see dnasweep.model.pool). Eager training on an accelerator stays exact: the static
        path changes what is trained (tokens over capacity are dropped) and has not been measured on
        a GPU yet (bench/gpu.sh runs both)."""
        mode = self.capacity_mode
        eager = not torch.compiler.is_compiling()
        if mode == "exact" or (mode == "auto" and (eager or not self.training)):
            return None
        if self.caps is None:  # nothing observed yet: room for every pair (drops nothing; adapted later)
            self.caps = Caps(B * L, L, B * L)
        return self.caps

    def get_extra_state(self) -> torch.Tensor:
        """The static capacities travel with the weights, so a resumed run keeps its shapes."""
        return torch.tensor(list(self.caps) if self.caps is not None else [], dtype=torch.long)

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.caps = Caps(*(int(v) for v in state.tolist())) if state is not None and state.numel() == 3 else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before static capacities hold none: start without (exact, then adapt).
        state_dict.setdefault(prefix + "_extra_state", torch.zeros(0, dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def adapt_capacity(self, out: ModelOutput) -> None:
        """Set the static capacities from what a forward needed: grow at once to the need plus
        CAPACITY_SLACK (rounded up to CAPACITY_ROUND rows), shrink only when that is under
        CAPACITY_SHRINK of the current caps, so a compiled model rarely meets new shapes.
        Reads 3 numbers on the host: call it between steps, never inside one."""
        need = out.stats.capacity_need_S3
        if need is None:
            return
        need = [int(v) for v in need.max(0).values.tolist()]
        want = [max(1, -(-int(n * CAPACITY_SLACK) // CAPACITY_ROUND)) * CAPACITY_ROUND for n in need]
        old = self.caps
        if old is None or any(n > c for n, c in zip(need, old, strict=True)) or all(
                w < CAPACITY_SHRINK * c for w, c in zip(want, old, strict=True)):
            self.caps = Caps(*want)

    def update_routing_biases(self, out: ModelOutput) -> None:
        """Apply the out-of-gradient selection-bias updates (identity skip target, loss-free
        balancing) from a training step's routed slot counts, and adapt the static capacities
        when they are in use. Call once per optimizer step."""
        if out.stats.slots_SM is not None:
            self.routing.update_biases(out.stats.slots_SM)
        if self.caps is not None and self.capacity_mode != "exact":
            self.adapt_capacity(out)
