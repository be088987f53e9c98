"""The DNA model library: proto-architectures, routers, efficiency terms, dense baselines.

This package never imports ray, optuna or mlflow (a test holds it to that).
"""

from __future__ import annotations

from torch import nn

from dnasweep.errors import raise_if
from dnasweep.model.config import BalanceConfig, ModelConfig, PoolConfig, RouterConfig, problems
from dnasweep.model.flops import Nominal, nominal
from dnasweep.model.loss import LossConfig, compute_loss
from dnasweep.model.output import ModelOutput, RoutingStats
from dnasweep.model.registry import RouterSpec, router_names, router_spec
from dnasweep.model.routers import ROUTERS, register_router  # importing routers registers the built-ins

__all__ = [
    "BalanceConfig", "LossConfig", "ModelConfig", "ModelOutput", "Nominal", "PoolConfig", "ROUTERS",
    "RouterConfig", "RouterSpec", "RoutingStats", "build_model", "compute_loss", "nominal", "problems",
    "register_router", "router_names", "router_spec",
]


def build_model(cfg: ModelConfig) -> nn.Module:
    """A DNA or dense model for `cfg`; raises ConfigError listing every problem of `cfg`."""
    raise_if(problems(cfg), source="model config")
    if cfg.kind == "dense":
        from dnasweep.model.dense import DenseModel

        return DenseModel(cfg)
    from dnasweep.model.dna import DNAModel

    return DNAModel(cfg)
