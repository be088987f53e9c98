"""The DNA model library: proto-architectures, routers, efficiency terms, dense baselines.

This package never imports ray, optuna or mlflow (a test holds it to that).

Its names load lazily (PEP 562 `__getattr__`): `dnasweep.model.config` (the typed configs) and
`dnasweep.model.flops` (nominal costs) are torch-free, and importing them runs this file, so
importing torch here would make every config check (`dnasweep validate`, `pareto`, the driver)
pay for torch. Torch loads with the first name that needs it (build_model, the routers, the loss).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnasweep.lazy import exports

if TYPE_CHECKING:
    from torch import nn

    from dnasweep.model.config import ModelConfig

# name -> the module that defines it
_LAZY = {
    **dict.fromkeys(("BalanceConfig", "ModelConfig", "PoolConfig", "RouterConfig", "problems"),
                    "dnasweep.model.config"),
    **dict.fromkeys(("Nominal", "nominal"), "dnasweep.model.flops"),
    **dict.fromkeys(("LossConfig", "compute_loss"), "dnasweep.model.loss"),
    **dict.fromkeys(("ModelOutput", "RoutingStats"), "dnasweep.model.output"),
    **dict.fromkeys(("RouterSpec", "router_names", "router_spec"), "dnasweep.model.registry"),
    # from routers, not the registry: importing routers registers the built-in rules
    **dict.fromkeys(("ROUTERS", "register_router"), "dnasweep.model.routers"),
}

__all__ = [
    "BalanceConfig", "LossConfig", "ModelConfig", "ModelOutput", "Nominal", "PoolConfig", "ROUTERS",
    "RouterConfig", "RouterSpec", "RoutingStats", "build_model", "compute_loss", "nominal", "problems",
    "register_router", "router_names", "router_spec",
]


__getattr__, __dir__ = exports(globals(), _LAZY)


def build_model(cfg: ModelConfig) -> nn.Module:
    """A DNA or dense model for `cfg`; raises ConfigError listing every problem of `cfg`."""
    from dnasweep.errors import raise_if
    from dnasweep.model.config import problems

    raise_if(problems(cfg), source="model config")
    if cfg.kind == "dense":
        from dnasweep.model.dense import DenseModel

        return DenseModel(cfg)
    from dnasweep.model.dna import DNAModel

    return DNAModel(cfg)
