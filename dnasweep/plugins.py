"""Plugins: modules of your own, imported before a config is read, so that what they register
(a router, via `dnasweep.model.register_router`) is known to validation, `dnasweep train` and
sweep trials alike.

Name them, comma separated, in the environment variable DNASWEEP_PLUGINS, e.g.
`DNASWEEP_PLUGINS=mylab.routers,myplugin`; each must be importable (on PYTHONPATH, or installed).
"""

from __future__ import annotations

import importlib
import os

from dnasweep.errors import Problem, raise_if

ENV = "DNASWEEP_PLUGINS"


def load_plugins(names: str | None = None) -> list[str]:
    """Import each module named in `names` (default: $DNASWEEP_PLUGINS), comma separated; return
    their names. Importing one twice is a no-op. ConfigError listing every module that cannot be
    imported."""
    raw = os.environ.get(ENV, "") if names is None else names
    mods = [m.strip() for m in raw.split(",") if m.strip()]
    problems = []
    for mod in mods:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            problems.append(Problem(ENV, f"cannot import {mod!r}: {e}",
                                    "put the module on PYTHONPATH (or install it), or drop it from "
                                    f"{ENV}={raw!r}"))
    raise_if(problems, "plugins")
    return mods
