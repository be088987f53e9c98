"""The router registry: every `model.router.type` name, its rule, and the properties that the
config checks, the FLOPs accounting and `Routing` ask about it.

Nothing outside this registry lists router names: validation, `slots_per_token`, the nominal
FLOPs and `Routing` query a router's properties instead, so a router registered from outside
the package (see `dnasweep.plugins`) is validated and accounted for like a built-in one.

This module imports no torch: a rule is stored as an opaque callable. The built-in rules are
registered by `dnasweep.model.routers` when it is imported; every query here first makes sure
that happened (`_ensure_builtins`), which imports torch. We chose that over declaring the
built-ins' properties here apart from their rules: the properties then sit next to the rule
they describe, and the torch import costs nothing in practice, since `dnasweep.model`'s own
`__init__` (run by any `dnasweep.model.*` import) already imports torch and the routers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_BUILTINS = "dnasweep.model.routers"

Rule = Callable[..., Any]  # (logits_TM, bias_M, RouteContext) -> Route; see dnasweep.model.routers


@dataclass(frozen=True)
class RouterSpec:
    """One registered router: its rule and what the rest of the library may assume about it."""

    name: str  # the value of model.router.type
    rule: Rule  # (logits_TM, bias_M, ctx) -> Route
    learns: bool = True  # has trained linear routers (params, FLOPs, logits); False: hash (logits are None)
    causal: bool = True  # a token's route depends on no later token, so it may route a causal LM
    biasable: bool = True  # the selection biases (balance.identity_bias, balance.loss_free) steer it: top-k style
    all_modules: bool = False  # a slot per pool module (K = pool size, top_k is no slot count): dense, expert_choice
    capacity: bool = False  # modules pick tokens (router.capacity_factor); nominal K = factor * top_k: expert_choice
    hash_table: bool = False  # gets a fixed random [S, n_keys, top_k] table of modules per routing key: hash


ROUTERS: dict[str, RouterSpec] = {}


def _ensure_builtins() -> None:
    """Import the module that registers the built-in rules (a no-op once, or while, it loads)."""
    importlib.import_module(_BUILTINS)


def register_router(name: str, *, learns: bool = True, causal: bool = True, biasable: bool = True,
                    all_modules: bool = False, capacity: bool = False, hash_table: bool = False,
                    replace: bool = False) -> Callable[[Rule], Rule]:
    """Decorator: register `fn` as router `name` with the given properties. The defaults describe
    a learned, causal, top-k style router. A name already taken raises ValueError unless
    `replace=True`."""
    _ensure_builtins()

    def deco(fn: Rule) -> Rule:
        if name in ROUTERS and not replace:
            raise ValueError(f"router {name!r} is already registered (by {_where(ROUTERS[name].rule)}); "
                             "pick another name, or pass replace=True to override it")
        ROUTERS[name] = RouterSpec(name, fn, learns=learns, causal=causal, biasable=biasable,
                                   all_modules=all_modules, capacity=capacity, hash_table=hash_table)
        return fn

    return deco


def _where(fn: Rule) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def router_names(**props: bool) -> list[str]:
    """Registered router names, sorted; keyword args keep those whose properties match,
    e.g. `router_names(causal=True)`."""
    _ensure_builtins()
    return sorted(n for n, s in ROUTERS.items() if all(getattr(s, k) == v for k, v in props.items()))


def find_router(name: str) -> RouterSpec | None:
    """The spec of router `name`, or None when no router has that name."""
    _ensure_builtins()
    return ROUTERS.get(name)


def router_spec(name: str) -> RouterSpec:
    """The spec of router `name`; ValueError naming the registered routers if there is none."""
    spec = find_router(name)
    if spec is None:
        raise ValueError(f"unknown router type {name!r}; known: {', '.join(router_names())}")
    return spec
