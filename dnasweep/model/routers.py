"""Routers: at each step, score the whole pool for every token and pick its modules.

A *rule* turns router logits into a Route (which modules, with which gates); the registry
(`dnasweep.model.registry`) maps `model.router.type` to a rule and its properties, and this
module registers the built-in rules there on import. `Routing` owns the linear routers (one per
step, or shared), the selection biases updated outside the gradient, and the hash table of the
hash baseline.

Tensor names carry their shape:
  T flattened tokens, M pool size, K slots per token (top-k; M for dense / expert choice),
  S routing steps, B batch, L tokens per sequence, D d_model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dnasweep.model.config import ModelConfig
from dnasweep.model.registry import ROUTERS, RouterSpec, register_router, router_spec

__all__ = ["BIAS_LIMIT", "ROUTERS", "Route", "RouteContext", "RouterSpec", "Routing", "Rule", "get_rule",
           "pi_skip_bias", "register_router"]


@dataclass
class Route:
    """One step's routing decision for every token."""

    idx_TK: torch.Tensor  # module index of each slot (int64)
    gate_TK: torch.Tensor  # weight ρ of each slot in h <- h + Σ ρ (M(h) - h)
    active_TK: torch.Tensor | None  # which slots are used (threshold, expert choice); None = all
    logits_TM: torch.Tensor | None  # router logits (None for the hash router: nothing is learnt)
    # softmax(logits_TM) when the rule computed it anyway: the auxiliary losses reuse it instead of
    # a second softmax (and its backward) per step; None: computed from logits_TM when needed.
    probs_TM: torch.Tensor | None = None


Rule = Callable[[torch.Tensor, torch.Tensor, "RouteContext"], Route]


@dataclass
class RouteContext:
    """What a rule may need besides logits and bias."""

    cfg: ModelConfig
    training: bool
    step: int
    keys_T: torch.Tensor  # routing keys: token ids (LM) or positions (vision)
    seq_len: int  # L, for rules that choose per sequence
    hash_table: torch.Tensor | None  # [S, n_keys, K] for routers registered with hash_table=True (hash)


def get_rule(name: str) -> Rule:
    """The rule of router `name`; ValueError naming the registered routers if there is none."""
    return router_spec(name).rule


def _topk_of(scores_TM, gates_TM, ctx: RouteContext) -> tuple[torch.Tensor, torch.Tensor]:
    idx_TK = scores_TM.topk(ctx.cfg.router.top_k, dim=-1).indices
    gate_TK = gates_TM.gather(-1, idx_TK)
    if ctx.cfg.router.normalize_gates:
        gate_TK = gate_TK / gate_TK.sum(-1, keepdim=True).clamp_min(1e-9)
    return idx_TK, gate_TK


@register_router("topk")
def topk_rule(logits_TM, bias_M, ctx):
    """The paper's router: softmax scores, hard top-k; the bias steers selection, not gates."""
    probs_TM = logits_TM.softmax(-1)
    idx, gate = _topk_of(probs_TM.detach() + bias_M, probs_TM, ctx)
    return Route(idx, gate, None, logits_TM, probs_TM)


@register_router("sigmoid")
def sigmoid_rule(logits_TM, bias_M, ctx):
    """Independent sigmoid gates per module (DeepSeek-V3 style), hard top-k.

    The auxiliary terms (compute penalty, Switch balance loss, entropy) get no probabilities from
    this rule, so they use softmax(logits_TM), as for every rule: a distribution over the pool that
    ranks modules as the unbiased sigmoid gates do (both increase with the logit), on the same scale
    as the other routers, so a `loss.*_weight` means the same whichever router a sweep samples.
    DeepSeek-V3 instead normalises the sigmoid gates (σ_m / Σ σ); that distribution is flatter at the
    same logits (about half softmax's deviation from 1/M near 0, and σ saturates beyond), so it would
    change what a given weight does to the shipped sigmoid trials. The z-loss reads the logits."""
    gates_TM = torch.sigmoid(logits_TM)
    idx, gate = _topk_of(gates_TM.detach() + bias_M, gates_TM, ctx)
    return Route(idx, gate, None, logits_TM)


@register_router("noisy_topk")
def noisy_topk_rule(logits_TM, bias_M, ctx):
    """Top-k of Gumbel-perturbed logits in training (samples k modules without replacement from
    the softmax), plain top-k in eval; gates are the clean softmax probabilities."""
    probs_TM = logits_TM.softmax(-1)
    scores = logits_TM.detach()
    if ctx.training and ctx.cfg.router.noise > 0:
        u = torch.rand_like(scores).clamp_(1e-9, 1 - 1e-9)
        scores = scores - ctx.cfg.router.noise * torch.log(-torch.log(u))
    idx, gate = _topk_of(scores.softmax(-1) + bias_M, probs_TM, ctx)
    return Route(idx, gate, None, logits_TM, probs_TM)


@register_router("threshold", threshold=True)
def threshold_rule(logits_TM, bias_M, ctx):
    """A variable number of modules per token: every module whose (biased) probability reaches
    the threshold, at least one, at most top_k."""
    probs_TM = logits_TM.softmax(-1)
    scores = probs_TM.detach() + bias_M
    top = scores.topk(ctx.cfg.router.top_k, dim=-1)
    active_TK = top.values >= ctx.cfg.router.threshold
    active_TK[:, 0] = True
    gate_TK = probs_TM.gather(-1, top.indices)
    if ctx.cfg.router.normalize_gates:
        gate_TK = gate_TK * active_TK / (gate_TK * active_TK).sum(-1, keepdim=True).clamp_min(1e-9)
    return Route(top.indices, gate_TK, active_TK, logits_TM, probs_TM)


@register_router("hash", learns=False, biasable=False, hash_table=True)
def hash_rule(logits_TM, bias_M, ctx):
    """Fixed random routing by token id (LM) or position (vision): the baseline that learns nothing."""
    idx_TK = ctx.hash_table[ctx.step][ctx.keys_T]
    gate_TK = torch.full(idx_TK.shape, 1.0 / idx_TK.shape[1], device=idx_TK.device)
    return Route(idx_TK, gate_TK, None, None)


@register_router("dense", biasable=False, all_modules=True)
def dense_rule(logits_TM, bias_M, ctx):
    """Soft mixture over the whole pool: every module runs on every token (the reference)."""
    probs_TM = logits_TM.softmax(-1)
    T, M = probs_TM.shape
    idx_TK = torch.arange(M, device=probs_TM.device).expand(T, M)
    return Route(idx_TK, probs_TM, None, logits_TM, probs_TM)


@register_router("expert_choice", causal=False, biasable=False, all_modules=True, capacity=True)
def expert_choice_rule(logits_TM, bias_M, ctx):
    """Each module picks its top-C tokens of each image (vision only: not causal)."""
    probs_TM = logits_TM.softmax(-1)
    T, M = probs_TM.shape
    L, cap = ctx.seq_len, ctx.cfg.expert_capacity
    p_BLM = probs_TM.detach().view(T // L, L, M)
    chosen_BCM = p_BLM.topk(cap, dim=1).indices
    active_BLM = torch.zeros_like(p_BLM, dtype=torch.bool).scatter_(1, chosen_BCM, True)
    idx_TK = torch.arange(M, device=probs_TM.device).expand(T, M)
    return Route(idx_TK, probs_TM, active_BLM.view(T, M), logits_TM, probs_TM)


# The identity bias is added to selection scores that every biasable built-in rule keeps in [0, 1]
# (softmax probabilities, sigmoid gates): at ±1 it already decides every selection, so the PI law
# clamps its output there and never integrates beyond it.
BIAS_LIMIT = 1.0


def pi_skip_bias(err_S: torch.Tensor, integral_S: torch.Tensor, kp: float, ki: float,
                 limit: float = BIAS_LIMIT) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the PI skip controller: (new identity bias [S], new integral [S]).

    err_S = target share - measured identity share of each routing step (> 0: too little skip,
    raise the bias). The integral sums the errors, but is kept where ki * integral stays within
    ±limit (anti-wind-up by clamping): after a long saturation the bias leaves the clamp as soon
    as the error changes sign instead of first unwinding a huge sum. The bias is clamped to ±limit.
    """
    integral_S = integral_S + err_S
    if ki > 0:
        integral_S = integral_S.clamp(-limit / ki, limit / ki)
    bias_S = (kp * err_S + ki * integral_S).clamp(-limit, limit)
    return bias_S, integral_S


class Routing(nn.Module):
    """Owns every router of the model, the selection biases, and their out-of-gradient updates."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        spec = router_spec(cfg.router.type)
        self.rule = spec.rule
        S, M, D = cfg.n_steps, cfg.pool.size, cfg.d_model
        self.learns = spec.learns
        n_lin = (1 if cfg.router.shared else S) if self.learns else 0
        self.linears = nn.ModuleList(nn.Linear(D, M, bias=False) for _ in range(n_lin))
        for lin in self.linears:
            nn.init.normal_(lin.weight, std=cfg.init_std)
        is_id = torch.zeros(M, dtype=torch.bool)
        is_id[M - cfg.pool.n_identity:] = True
        self.register_buffer("is_identity_M", is_id, persistent=False)
        # Selection biases live in the checkpoint: they are model state, not optimizer state.
        self.register_buffer("identity_bias_S", torch.zeros(S))
        self.register_buffer("skip_integral_S", torch.zeros(S))  # pi: summed error of the identity share
        self.register_buffer("loss_free_bias_SM", torch.zeros(S, M))
        if spec.hash_table:
            n_keys = cfg.vocab_size if cfg.task == "lm" else cfg.tokens_per_example
            g = torch.Generator().manual_seed(1234)
            table = torch.stack([torch.rand(n_keys, M, generator=g).topk(cfg.router.top_k, -1).indices
                                 for _ in range(S)])
            self.register_buffer("hash_table", table)
        else:
            self.hash_table = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the PI skip controller hold no integral: it starts from 0.
        state_dict.setdefault(prefix + "skip_integral_S", torch.zeros_like(self.skip_integral_S))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, h_BLD: torch.Tensor, step: int, keys_BL: torch.Tensor) -> Route:
        B, L, D = h_BLD.shape
        x_TD = h_BLD.reshape(B * L, D)
        logits_TM = None
        if self.learns:
            lin = self.linears[0 if self.cfg.router.shared else step]
            xin = F.layer_norm(x_TD, (D,)) if self.cfg.router_norm else x_TD
            logits_TM = lin(xin).float()  # routing decisions in fp32 even under autocast
        bias_M = self.loss_free_bias_SM[step] + self.identity_bias_S[step] * self.is_identity_M
        ctx = RouteContext(self.cfg, self.training, step, keys_BL.reshape(-1), L, self.hash_table)
        return self.rule(logits_TM, bias_M, ctx)

    @torch.no_grad()
    def update_biases(self, slots_SM: torch.Tensor) -> None:
        """Updates of the selection biases from one optimizer step's routed slot counts [S, M].

        Identity bias, balance.skip_control:
          pi:   b_s = kp * e_s + ki * Σ_t e_s(t), e_s = r - (identity share of step s's slots)
                (`pi_skip_bias`: clamped to ±BIAS_LIMIT, integral held there: no wind-up);
          sign: b_s += u * sign(r * slots_s - identity slots_s) (the paper's rule, fixed rate u).
        Loss-free balancing (DeepSeek-V3): b_sm += γ * sign(mean_m slots_sm - slots_sm), over the
        balanced modules only: every module, or with identity_bias on the non-identity ones (the
        identity modules' load is the skip target's to set; their loss-free bias stays put).
        """
        bal = self.cfg.balance
        slots_SM = slots_SM.to(self.identity_bias_S.device, torch.float32)
        if bal.identity_bias:
            ident_S = slots_SM[:, self.is_identity_M].sum(-1)
            if bal.skip_control == "pi":
                err_S = bal.target_skip - ident_S / slots_SM.sum(-1).clamp_min(1)
                bias_S, integral_S = pi_skip_bias(err_S, self.skip_integral_S, bal.skip_kp, bal.skip_ki)
                self.identity_bias_S.copy_(bias_S)
                self.skip_integral_S.copy_(integral_S)
            else:
                self.identity_bias_S += bal.identity_rate * torch.sign(bal.target_skip * slots_SM.sum(-1) - ident_S)
        if bal.loss_free:
            # With a skip target the identity modules are meant to carry r of the slots, not 1/M: a
            # uniform target would pull their bias down by γ every step while the skip bias, clamped
            # at ±BIAS_LIMIT, pushes up, until the loss-free bias wins and the target is never held.
            # So the two split the pool: skip control sets the identity share, loss-free balancing
            # evens out the load of the computing modules (uniform over them).
            balanced_M = ~self.is_identity_M if bal.identity_bias else torch.ones_like(self.is_identity_M)
            mean_S1 = slots_SM[:, balanced_M].mean(-1, keepdim=True)
            self.loss_free_bias_SM += bal.loss_free_rate * torch.sign(mean_S1 - slots_SM) * balanced_M

    def flops(self, n_tokens: int) -> float:
        if not self.learns:
            return 0.0
        return 2.0 * self.cfg.d_model * self.cfg.pool.size * n_tokens * self.cfg.n_steps
