import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/reference.py and friends

from dnasweep.model import ModelConfig  # noqa: E402


def tiny_cfg(task: str = "lm", router: str = "topk", **kw) -> ModelConfig:
    """A small, fast model config; keyword args override top-level fields."""
    cfg = ModelConfig(task=task, d_model=32, n_heads=4, seq_len=24, n_steps=3)
    cfg.router.type = router
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance for the whole session (ray.init takes seconds). address="local":
    always a fresh cluster of our own, even when `ray start` left one running on this machine."""
    ray = pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
