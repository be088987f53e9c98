"""Plugins: modules of your own, imported before a config is read, so that what they register
(a router, via `dnasweep.model.register_router`) is known to validation, `dnasweep train` and
sweep trials alike.

Name them, comma separated, in the environment variable DNASWEEP_PLUGINS, e.g.
`DNASWEEP_PLUGINS=mylab.routers,myplugin`; each must be importable (on PYTHONPATH, or installed).
"""

from __future__ import annotations

import importlib
import os
import traceback

from dnasweep.errors import Problem, raise_if

ENV = "DNASWEEP_PLUGINS"
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def load_plugins(names: str | None = None) -> list[str]:
    """Import each module named in `names` (default: $DNASWEEP_PLUGINS), comma separated; return
    their names. Importing one twice is a no-op. ConfigError listing every module that cannot be
    imported, or whose import raised (every command imports them first: a traceback there would
    end each with exit 1 and no word of which variable to fix)."""
    raw = os.environ.get(ENV, "") if names is None else names
    mods = [m.strip() for m in raw.split(",") if m.strip()]
    problems = []
    drop = f"drop it from {ENV}={raw!r}"
    for mod in mods:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and (mod == e.name or mod.startswith(e.name + ".")):  # the plugin itself (or its package)
                problems.append(Problem(ENV, f"cannot find the module {mod!r}: {e}",
                                        f"put the module on PYTHONPATH (or install it), or {drop}"))
            else:  # found and running: something it imports is missing
                problems.append(Problem(ENV, f"the module {mod!r} was found, but it imports {e.name!r}, which is "
                                        f"not installed: {e}", f"install the package that provides {e.name!r} in this "
                                        f"environment (on every node of a cluster), or {drop}"))
        except Exception as e:  # SyntaxError, a router registered twice (ValueError), any error of its own code
            problems.append(Problem(ENV, f"importing the module {mod!r} raised {type(e).__name__}: {e}"
                                    + _where(e), f"fix the module until `python -c 'import {mod}'` runs cleanly "
                                    f"(a router it registers needs a new name, or replace=True), or {drop}"))
    raise_if(problems, "plugins")
    return mods


def _where(e: BaseException) -> str:
    """' (at FILE:LINE)': the innermost line of the plugin's own code that the error passed through
    (not Python's import machinery, not dnasweep's, which only reports it); '' when none, or for a
    SyntaxError, whose text names the file and line already."""
    if isinstance(e, SyntaxError):
        return ""
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not f.filename.startswith("<") and not os.path.abspath(f.filename).startswith(_PACKAGE + os.sep)]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
