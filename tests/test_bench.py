"""The benchmark's naive "masked" baseline computes the same function as the routed pool, so the
speed ratio it prints compares equal models."""

import pathlib
import sys

import torch

from dnasweep.model import ModelConfig, PoolConfig, build_model

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
from throughput import masked_step  # noqa: E402


def test_masked_baseline_equals_routed_pool():
    cfg = ModelConfig(d_model=64, n_heads=4, n_steps=1, seq_len=32,
                      pool=PoolConfig(n_transformer=8, n_attention=0, n_mlp=0, n_identity=0))
    model = build_model(cfg)
    h = torch.randn(2, 32, 64)
    route = model.routing(h, 0, torch.zeros(2, 32, dtype=torch.long))
    assert (model.pool(h, route)[0] - masked_step(model.pool, h, route)[0]).abs().max() < 1e-5


def test_orchestration_idle_breakdown_hand_computed():
    from orchestration import idle_breakdown

    # two slots from t=0 to t=10: lane A trains 1-4 and 5-10, lane B trains 2-7 then idles
    parts = idle_breakdown([(1, 4), (2, 7), (5, 10)], 0, 10, 2)
    assert parts == {"start": (1 + 2) / 2, "between": 1 / 2, "tail": 3 / 2, "end": 0}
    assert idle_breakdown([(1, 4), (2, 7), (5, 9)], 0, 10, 2)["end"] == 1  # the sweep ended 1 s after its last trial


def test_orchestration_packed_makespan_hand_computed():
    from orchestration import packed

    # durations 3, 5, 5 in start order on 2 slots: [3, 0] -> [3, 5] -> [8, 5]
    assert packed([(5, 10), (1, 4), (2, 7)], 2) == 8
    assert packed([(0, 2), (0, 2), (0, 2)], 3) == 2
