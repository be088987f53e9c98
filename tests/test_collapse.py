"""The collapse verdict of evaluation: router/distinct_paths and router/collapsed
(dnasweep.metrics.is_collapsed) on models whose routing is forced, no training needed."""

import contextlib

import torch
from helpers import tiny_cfg

from dnasweep import metrics as M
from dnasweep.model import LossConfig, build_model
from dnasweep.train.evaluate import evaluate, nonidentity_paths


def test_nonidentity_paths_by_hand():
    is_id = torch.tensor([False, False, False, True])  # modules 0-2 compute, 3 is an identity
    paths = torch.tensor([[  # [B=1, L=6, S=2, K=2]; -1: unused slot
        [[0, 3], [1, -1]],  # {0} > {1}
        [[3, 0], [-1, 1]],  # the same: slot order, identities and unused slots do not matter
        [[3, 3], [3, -1]],  # skips every step: no non-identity path
        [[2, -1], [3, 3]],  # {2} > -
        [[1, 0], [3, -1]],  # {0, 1} > -
        [[0, 1], [3, 3]],  # the same as the last
    ]])
    got = {tuple(r) for r in nonidentity_paths(paths, is_id).tolist()}
    assert got == {(0, 4, 1, 4), (2, 4, 4, 4), (0, 1, 4, 4)}


def _evaluate(model):
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, 256, (2, 24), generator=g), torch.randint(0, 256, (2, 24), generator=g))
               for _ in range(2)]
    return evaluate(model, batches, LossConfig(), "cpu", contextlib.nullcontext, None)


def test_evaluation_calls_a_bypassed_pool_collapsed():
    model = build_model(tiny_cfg("lm", "topk"))  # top-2 over 8 computing modules and 2 identities
    fresh = _evaluate(model)
    assert fresh[M.ROUTER_COLLAPSED] == 0.0 and fresh[M.ROUTER_NONIDENTITY_PATHS] > 10
    model.routing.identity_bias_S.fill_(1.0)  # identity wins every selection
    skip = _evaluate(model)
    assert skip[M.IDENTITY_FRACTION] == 1.0
    assert skip[M.ROUTER_NONIDENTITY_PATHS] == 0.0 and skip[M.ROUTER_COLLAPSED] == 1.0


def test_one_path_for_every_token_is_collapse_too():
    cfg = tiny_cfg("lm", "topk")
    cfg.router.top_k = 1
    model = build_model(cfg)
    model.routing.loss_free_bias_SM[:, 0] = 1.0  # every token to module 0 at every step
    res = _evaluate(model)
    assert res[M.IDENTITY_FRACTION] == 0.0  # not a skip at all, and still no routing left
    assert res[M.ROUTER_NONIDENTITY_PATHS] == 1.0 and res[M.ROUTER_COLLAPSED] == 1.0


def test_soft_mixture_and_dense_models():
    mix = _evaluate(build_model(tiny_cfg("lm", "dense")))  # every token through every module: one path
    assert mix[M.ROUTER_NONIDENTITY_PATHS] == 1.0 and mix[M.ROUTER_COLLAPSED] == 0.0
    dense = _evaluate(build_model(tiny_cfg("lm", "topk", kind="dense")))
    assert M.ROUTER_COLLAPSED not in dense and M.ROUTER_NONIDENTITY_PATHS not in dense


def test_verdict_rule():
    assert M.is_collapsed(0.95, 100) and M.is_collapsed(0.2, 1) and M.is_collapsed(0.2, 0)
    assert not M.is_collapsed(0.94, 2)
    assert not M.is_collapsed(0.2, 1, paths_vary=False) and M.is_collapsed(0.97, 1, paths_vary=False)
