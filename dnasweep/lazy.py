"""Lazy package exports (PEP 562): a package lists name -> defining module, and each name is
imported on first use. `dnasweep.model` and `dnasweep.data` use it so that importing a config
dataclass from them never imports torch (the listing commands stay fast)."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def exports(module_globals: dict, table: dict[str, str]) -> tuple[Callable, Callable]:
    """The `__getattr__` and `__dir__` of a package whose names in `table` load on first use."""

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {module_globals['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name]), name)
        module_globals[name] = value  # once: later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*module_globals, *module_globals.get("__all__", ())})

    return __getattr__, __dir__
