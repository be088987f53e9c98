"""The router registry: every `model.router.type` name, its rule, and the properties that the
config checks, the FLOPs accounting and `Routing` ask about it.

Nothing outside this registry lists router names: validation, `slots_per_token`, the nominal
FLOPs and `Routing` query a router's properties instead, so a router registered from outside
the package (see `dnasweep.plugins`) is validated and accounted for like a built-in one.

This module imports no torch: a rule is stored as an opaque callable. The built-in rules are
registered by `dnasweep.model.routers` when it is imported (torch). A query (the config checks of
`dnasweep validate`, `pareto` and the sweep driver) needs only names and properties, so until
then it reads them from the `@register_router(...)` decorators in that module's source, without
running it (`_declare_builtins`: about 3 ms against seconds for torch), each with a rule that
imports the module when called. The properties stay next to the rule they describe; a decorator
that is not plain literals falls back to importing the module. Registering a router imports it
first (its rule needs torch anyway), so built-in names are taken before any plugin registers.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
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
    threshold: bool = False  # keeps the top_k slots whose probability reaches router.threshold, at least one


ROUTERS: dict[str, RouterSpec] = {}


def _ensure_builtins() -> None:
    """Import the module that registers the built-in rules (a no-op once, or while, it loads)."""
    importlib.import_module(_BUILTINS)


class _LazyRule:
    """A built-in rule declared from source before its module ran: calling it imports the module
    (torch) and runs the real function. Carries the function's names, for messages."""

    def __init__(self, module: str, qualname: str):
        self.__module__, self.__qualname__ = module, qualname

    def __call__(self, *args, **kwargs):
        return getattr(importlib.import_module(self.__module__), self.__qualname__)(*args, **kwargs)


_declared = False


def _declare_builtins() -> None:
    """Names and properties of the built-in routers for a query, without importing torch: read
    from the decorators `@register_router("name", prop=literal, ...)` of the top-level functions
    in the built-ins' source. Imports the module instead when it is already (being) imported, or
    when its source or a decorator cannot be read that way."""
    global _declared
    if _declared or _BUILTINS in sys.modules:  # declared, or registered (or registering) for real
        return
    found: dict[str, RouterSpec] = {}
    try:
        tree = ast.parse(importlib.util.find_spec(_BUILTINS).loader.get_source(_BUILTINS))
        for fn in tree.body:
            for d in getattr(fn, "decorator_list", []) if isinstance(fn, ast.FunctionDef) else []:
                if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "register_router":
                    name = ast.literal_eval(d.args[0])
                    props = {k.arg: ast.literal_eval(k.value) for k in d.keywords}
                    found[name] = RouterSpec(name, _LazyRule(_BUILTINS, fn.name), **props)
    except Exception:  # not plain literals, no source (a zipped install): run the module
        return _ensure_builtins()
    if not found:
        return _ensure_builtins()
    for name, spec in found.items():
        ROUTERS.setdefault(name, spec)
    _declared = True


def register_router(name: str, *, learns: bool = True, causal: bool = True, biasable: bool = True,
                    all_modules: bool = False, capacity: bool = False, hash_table: bool = False,
                    threshold: bool = False, replace: bool = False) -> Callable[[Rule], Rule]:
    """Decorator: register `fn` as router `name` with the given properties. The defaults describe
    a learned, causal, top-k style router. A name already taken raises ValueError unless
    `replace=True`."""
    _ensure_builtins()

    def deco(fn: Rule) -> Rule:
        # the built-ins' own registration replaces what _declare_builtins read from their source
        taken = ROUTERS.get(name)
        if taken is not None and not replace and not isinstance(taken.rule, _LazyRule):
            raise ValueError(f"router {name!r} is already registered (by {_where(ROUTERS[name].rule)}); "
                             "pick another name, or pass replace=True to override it")
        ROUTERS[name] = RouterSpec(name, fn, learns=learns, causal=causal, biasable=biasable,
                                   all_modules=all_modules, capacity=capacity, hash_table=hash_table,
                                   threshold=threshold)
        return fn

    return deco


def _where(fn: Rule) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def router_names(**props: bool) -> list[str]:
    """Registered router names, sorted; keyword args keep those whose properties match,
    e.g. `router_names(causal=True)`."""
    _declare_builtins()
    return sorted(n for n, s in ROUTERS.items() if all(getattr(s, k) == v for k, v in props.items()))


def find_router(name: str) -> RouterSpec | None:
    """The spec of router `name`, or None when no router has that name."""
    _declare_builtins()
    return ROUTERS.get(name)


def router_spec(name: str) -> RouterSpec:
    """The spec of router `name`; ValueError naming the registered routers if there is none."""
    spec = find_router(name)
    if spec is None:
        raise ValueError(f"unknown router type {name!r}; known: {', '.join(router_names())}")
    return spec
