"""Routing review fixes: loss-free balancing with a skip target, the compute penalty's formula, the
identity share of a soft mixture, and skipped tokens under expert choice.

Tensor names carry their shape: T tokens, M pool size, S steps, N tokens, K slots.
"""

import contextlib

import numpy as np
import pytest
import torch
from helpers import tiny_cfg

from dnasweep import metrics as M_
from dnasweep.analyze.usage import skip_share
from dnasweep.model import LossConfig, build_model
from dnasweep.model.routers import Routing
from dnasweep.train.evaluate import evaluate


def _skip_lf_cfg(target: float = 0.5, rate: float = 1e-3):
    cfg = tiny_cfg("lm", "topk")  # pool 4 T + 2 A + 2 MLP + 2 identity (modules 8, 9), S = 3
    cfg.balance.identity_bias, cfg.balance.loss_free = True, True
    cfg.balance.target_skip, cfg.balance.loss_free_rate = target, rate
    return cfg


# ---------------------------------------------------------------- 1. loss_free + identity_bias


def test_loss_free_balances_only_the_computing_modules_under_a_skip_target():
    cfg = _skip_lf_cfg()
    routing = Routing(cfg)
    # Identity carries the target half of the slots; module 0 is overloaded among the computing ones.
    slots_SM = torch.tensor([[20.0, 10, 10, 10, 10, 10, 10, 10, 45, 45]]).repeat(cfg.n_steps, 1)
    routing.update_biases(slots_SM)
    g = cfg.balance.loss_free_rate
    want_M = torch.tensor([-g] + [g] * 7 + [0.0, 0.0])  # uniform over the 8 computing modules, identity untouched
    torch.testing.assert_close(routing.loss_free_bias_SM, want_M.repeat(cfg.n_steps, 1))


def test_loss_free_without_skip_target_still_balances_the_whole_pool():
    cfg = _skip_lf_cfg()
    cfg.balance.identity_bias = False
    routing = Routing(cfg)
    routing.update_biases(torch.tensor([[10.0] * 8 + [40.0, 40.0]]).repeat(cfg.n_steps, 1))
    g = cfg.balance.loss_free_rate
    torch.testing.assert_close(routing.loss_free_bias_SM[0], torch.tensor([g] * 8 + [-g, -g]))


def test_skip_target_is_held_with_loss_free_balancing_on():
    """A fixed tiny LM, biases updated from its own routing: the PI identity bias must reach the
    target although loss-free balancing runs too (γ raised so 150 updates would outrun the clamp)."""
    torch.manual_seed(0)
    cfg = _skip_lf_cfg(target=0.5, rate=0.02)
    model = build_model(cfg).eval()
    x = torch.randint(0, 256, (4, 24), generator=torch.Generator().manual_seed(1))
    shares = []
    with torch.no_grad():
        for _ in range(150):
            out = model(x)
            model.update_routing_biases(out)
            shares.append(out.stats.identity_fraction)
    assert np.mean(shares[-30:]) == pytest.approx(0.5, abs=0.05)
    assert model.routing.loss_free_bias_SM[:, 8:].abs().max() == 0  # the identity modules are the skip bias's


# ---------------------------------------------------------------- 2. the compute penalty's formula


def _cost_by_hand(D, L, F, k, n_t, n_a, n_mlp, n_id):
    """(C_m / C_block per module, C_block): the documented costs, written out from the formulas."""
    M = n_t + n_a + n_mlp + n_id
    ctx = L * min(k, M) / M
    attn = 8 * D * D + 4 * D * ctx
    costs = [attn + 4 * D * F] * n_t + [attn] * n_a + [4 * D * F] * n_mlp + [0.0] * n_id
    block = 8 * D * D + 4 * D * L + 4 * D * F
    return torch.tensor(costs, dtype=torch.float64) / block, block


def test_compute_penalty_is_the_documented_formula():
    """compute = (1/S) Σ_s (1/T) Σ_t Σ_m p[s,t,m] · C_m / C_block, from the router's own probabilities."""
    torch.manual_seed(0)
    cfg = tiny_cfg("lm", "topk")
    model = build_model(cfg).eval()
    probs = []
    model.routing.register_forward_hook(lambda mod, args, route: probs.append(route.logits_TM.softmax(-1)))
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(3)))
    c_M, _ = _cost_by_hand(32, 24, 128, cfg.router.top_k, 4, 2, 2, 2)
    by_hand = sum(float((p_TM.double() @ c_M).mean()) for p_TM in probs) / cfg.n_steps
    assert len(probs) == cfg.n_steps
    assert float(out.aux["compute"]) == pytest.approx(by_hand, rel=1e-5)


def test_compute_penalty_is_pool_flops_per_token_over_k_s_block_cost():
    """Where the probability proxy is exact (dense router: k = M slots, every module on every token,
    uniform probabilities), compute · k · S · C_block is the pool's measured FLOPs per token."""
    cfg = tiny_cfg("lm", "dense")
    model = build_model(cfg).eval()
    for lin in model.routing.linears:
        torch.nn.init.zeros_(lin.weight)  # uniform probabilities
    B, L = 2, 24
    with torch.no_grad():
        out = model(torch.randint(0, 256, (B, L), generator=torch.Generator().manual_seed(3)))
    T = B * L
    base = (model.stem.flops(B, L) + sum(b.flops(B, L) for b in model.backbone) + model.routing.flops(T)
            + model.readout.flops(B, L))
    pool_flops = out.stats.flops_per_token - base / T
    _, block = _cost_by_hand(32, 24, 128, cfg.pool.size, 4, 2, 2, 2)
    k = cfg.slots_per_token
    assert float(out.aux["compute"]) * k * cfg.n_steps * block == pytest.approx(pool_flops, rel=1e-5)


# ---------------------------------------------------------------- 3. identity share of a soft mixture


def _on_identity(model_cfg, offset: float):
    """A model of `model_cfg` (seed 0) whose routers add `offset` to the identity modules' logits."""
    torch.manual_seed(0)
    model = build_model(model_cfg)
    is_id_M = model.routing.is_identity_M
    for lin in model.routing.linears:
        lin.register_forward_hook(lambda mod, args, logits_TM: logits_TM + offset * is_id_M)
    return model


def _dense_on_identity(offset: float):
    """A dense (soft mixture) LM whose routers add `offset` to the identity modules' logits."""
    return _on_identity(tiny_cfg("lm", "dense"), offset)


def test_soft_mixture_reports_the_gate_weight_on_identity():
    x = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        skip = _dense_on_identity(20.0).eval()(x).stats.identity_fraction
        fresh = _dense_on_identity(0.0).eval()(x).stats.identity_fraction
    assert skip > 0.99  # not n_identity / M = 0.2: nearly all gate weight is on the skip path
    assert fresh == pytest.approx(0.2, abs=0.02)  # near-uniform probabilities at init


def test_evaluation_calls_a_soft_mixture_on_identity_collapsed():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 256, (2, 24), generator=g), torch.randint(0, 256, (2, 24), generator=g))]
    res = evaluate(_dense_on_identity(20.0), batches, LossConfig(), "cpu", contextlib.nullcontext, None)
    assert res[M_.IDENTITY_FRACTION] > 0.99 and res[M_.ROUTER_COLLAPSED] == 1.0


# ---------------------------------------------------------------- 4. skip share under expert choice


def test_skip_share_counts_a_token_no_module_picked():
    names = ["T0", "A0", "I0"]
    paths_NSK = np.array([  # 4 tokens, 1 step, one slot per module (expert choice); -1: not picked
        [[0, -1, -1]],  # computes
        [[-1, 1, 2]],  # computes (A0) and skips (I0): computes
        [[-1, -1, 2]],  # only the identity picked it: skips
        [[-1, -1, -1]],  # no module picked it: its state passes unchanged, a skip too
    ])
    np.testing.assert_allclose(skip_share(paths_NSK, names), [2 / 4])


def test_skip_share_of_an_expert_choice_model():
    """On a real expert-choice ViT: a token skips a step iff no non-identity module picked it."""
    torch.manual_seed(0)
    cfg = tiny_cfg("vision", "expert_choice")
    model = build_model(cfg).eval()
    with torch.no_grad():
        paths = model(torch.randn(4, 1, 8, 8), return_paths=True).paths  # [B, L, S, M]
    p_NSK = paths.reshape(-1, *paths.shape[2:]).numpy()
    computes_NS = ((p_NSK >= 0) & (p_NSK < cfg.pool.size - cfg.pool.n_identity)).any(-1)
    names = ["T"] * (cfg.pool.size - cfg.pool.n_identity) + ["I"] * cfg.pool.n_identity
    assert (~(p_NSK >= 0).any(-1)).any()  # some token was picked by no module
    np.testing.assert_allclose(skip_share(p_NSK, names), 1 - computes_NS.mean(0))


def test_the_analysis_report_calls_a_soft_mixture_on_identity_collapsed(tmp_path, monkeypatch):
    # Its paths hold every module for every token (identity share n_identity/M from paths): the
    # report reads the gate weight instead, as training's evaluation does
    from dnasweep.analyze import collect as collect_mod
    from dnasweep.analyze.trial import analyze_trial
    from dnasweep.config import build_trial
    from dnasweep.train.loop import run_trial

    cfg = build_trial({}, ["model.router.type=dense", "model.d_model=32", "model.n_heads=4", "model.seq_len=24",
                           "model.n_steps=2", "data.max_bytes=200000", "train.max_steps=2", "train.batch_size=2",
                           "train.eval_batches=1", "train.device=cpu", f"out_dir={tmp_path}/t"])
    run_trial(cfg)

    def on_identity(offset):
        return _on_identity(cfg.model, offset).eval()

    monkeypatch.setattr(collect_mod, "_models", lambda target, dev: (on_identity(20.0), on_identity(0.0)))
    summary, _ = analyze_trial(str(tmp_path / "t"), max_examples=4)
    assert summary["collapse"]["identity_share"] > 0.99 and summary["collapse"]["collapsed"] is True
    # its slots say n_identity/M per step whatever it learnt: the text gives the gate weight instead
    assert "of the routers' gate weight" in summary["text"] and "of the slots per step" not in summary["text"]


# ---------------------------------------------------------------- 5. identity share under expert choice


def _expert_choice_on_identity(offset: float):
    """An expert-choice ViT whose routers add `offset` to the identity modules' logits."""
    return _on_identity(tiny_cfg("vision", "expert_choice"), offset).eval()


def test_expert_choice_reports_the_gate_weight_on_the_skip_path():
    """Every module picks its C patches, so the slots' identity share is n_identity / M whatever the
    router learns: it was reported as the identity fraction (0.2 here, with the identity modules'
    gates at ~1 or at ~0 alike)."""
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    shares = []
    for offset in (20.0, -20.0):
        model = _expert_choice_on_identity(offset)
        with torch.no_grad():
            out = model(x, return_paths=True)
        cfg = model.cfg
        p_NSK = out.paths.reshape(-1, *out.paths.shape[2:]).numpy()
        n_comp = cfg.pool.size - cfg.pool.n_identity
        computes_NS = ((p_NSK >= 0) & (p_NSK < n_comp)).any(-1)
        by_identity_NS = (p_NSK >= n_comp).any(-1)
        # identity gates at ~1: a patch an identity module picked is all skip; at ~0 it computes
        # wherever a computing module picked it. Unpicked patches skip either way.
        skip_NS = ~computes_NS | by_identity_NS if offset > 0 else ~computes_NS
        assert 0 < skip_NS.mean() < 0.95
        assert out.stats.identity_fraction == pytest.approx(skip_NS.mean(), abs=1e-4)
        shares.append(out.stats.identity_fraction)
    assert shares[0] > shares[1] + 0.2


def test_the_analysis_report_gives_expert_choices_gate_weight_on_the_skip_path(tmp_path, monkeypatch):
    """The report read expert choice's identity share from its paths (n_identity/M, always), and so
    judged collapse by another number than training's evaluation."""
    from dnasweep.analyze import collect as collect_mod
    from dnasweep.analyze.trial import analyze_trial
    from dnasweep.config import load_trial
    from dnasweep.train.loop import run_trial

    cfg = load_trial("search_spaces/vision.yaml", [
        "model.router.type=expert_choice", "model.d_model=32", "model.n_steps=2", "train.max_steps=2",
        "train.batch_size=8", "train.device=cpu", f"out_dir={tmp_path}/t"])
    run_trial(cfg)

    def on_identity(offset):
        return _on_identity(cfg.model, offset).eval()

    seen = []
    run = collect_mod._run
    monkeypatch.setattr(collect_mod, "_models", lambda target, dev: (on_identity(20.0), on_identity(0.0)))
    monkeypatch.setattr(collect_mod, "_run", lambda *a: seen.append(run(*a)) or seen[-1])
    summary, _ = analyze_trial(str(tmp_path / "t"), max_examples=16)
    slots = cfg.model.pool.n_identity / cfg.model.pool.size
    u = summary["usage"]
    assert u["identity_slot_share"] == pytest.approx(slots)
    assert u["identity_share"] == pytest.approx(float(seen[0]["identity"].mean()))  # the trained model's gates
    assert u["identity_share"] > slots + 0.2 and summary["collapse"]["identity_share"] == u["identity_share"]
    assert "as expert choice fixes; the skip path holds" in summary["text"]
