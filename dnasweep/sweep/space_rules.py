"""The rules a search-space file must follow, as problems (file format: dnasweep.sweep.space).

Owns the file's vocabulary (sections, samplers, metric names), the shape checks every section
shares (a mapping, a list, known keys with "did you mean"), look-ups in the trial schema, the
cross-entry rules (`when:` ordering, metrics the base's trials never report) and the checks of
the flat settings sections (sampler, budget, resources, tracking, analyze). Each check appends
to a problem list and never raises, so `load_space` can report every problem at once.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any

from dnasweep import metrics as M
from dnasweep.config import TrialConfig
from dnasweep.data.config import BYTE_SOURCES
from dnasweep.errors import Problem

if TYPE_CHECKING:
    from dnasweep.sweep.space import Param

SAMPLERS = ("tpe", "nsga2", "nsga3", "gp", "random")
SPEC_KEYS = ("choice", "int", "float", "log", "when")  # the keys of one search: entry
SECTIONS = ("base", "search", "objectives", "constraints", "sampler", "budget", "resources", "tracking", "analyze",
            "smoke")
ANALYZE_KEYS = {"front": "analyse the Pareto-front trials when the sweep ends (true/false)",
                "examples": "held-out sequences/images per report (null: the analyzer's default)"}
KNOWN_METRICS = {v for k, v in vars(M).items()
                 if k.isupper() and isinstance(v, str) and "/" in v and k != "ROUTER_LOAD_PREFIX"
                 and not v.startswith(M.SWEEP_PREFIX)}


def _fmt(v: Any) -> str:
    """`v` as the value of a `path=value` override."""
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _schema_leaf(path: str) -> tuple[bool, str]:
    """(exists, type name) of a dotted path in the trial schema."""
    node: Any = TrialConfig()
    for part in path.split("."):
        names = {f.name: f for f in fields(node)} if is_dataclass(node) else {}
        if part not in names:
            return False, ""
        typ, node = names[part].type, getattr(node, part)
    return not is_dataclass(node), str(typ)


def _is_known_metric(name: str) -> bool:
    return name in KNOWN_METRICS or name.startswith(M.ROUTER_LOAD_PREFIX)


def _schema_paths(node: Any = None, prefix: str = "") -> list[str]:
    node = TrialConfig() if node is None else node
    out = []
    for f in fields(node):
        sub = getattr(node, f.name)
        out += _schema_paths(sub, f"{prefix}{f.name}.") if is_dataclass(sub) else [f"{prefix}{f.name}"]
    return out


def _did_you_mean(name: Any, known) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f"did you mean {close[0]}?" if close else ""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML's `true` is an int to isinstance


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _mapping(value: Any, key: str, p: list[Problem], example: str = "") -> dict:
    """`value` if it is a mapping ({} when absent). Anything else is a problem, and the checks
    after it see an empty section instead of crashing on a list or a scalar."""
    if value is None or isinstance(value, dict):
        return value or {}
    p.append(Problem(key, f"expected a mapping, got {type(value).__name__} {value!r}", example))
    return {}


def _list(value: Any, key: str, p: list[Problem], example: str = "") -> list:
    """`value` if it is a list ([] when absent); anything else (a string is iterable too) is a problem."""
    if value is None or isinstance(value, list):
        return value or []
    p.append(Problem(key, f"expected a list, got {type(value).__name__} {value!r}", example))
    return []


def _section(data: dict, name: str, defaults: dict, p: list[Problem], example: str = "") -> dict:
    """Flat section `name` over its defaults; a key it does not know is a problem with a suggestion."""
    given = _mapping(data.get(name), name, p, example)
    for k in given:
        if k not in defaults:
            p.append(Problem(f"{name}.{k}", "unknown key",
                             _did_you_mean(k, defaults) or f"known keys: {', '.join(defaults)}"))
    return {**defaults, **{k: v for k, v in given.items() if k in defaults}}


def _in_base(q: Problem) -> Problem:
    """A problem of the base trial config keyed as in the space file, its "did you mean" too."""
    return Problem(f"base.{q.key}", q.message, q.fix.replace("did you mean ", "did you mean base.", 1))


def _range_problems(key: str, path: str, kind: str, typ: str, lo: float, hi: float) -> list[Problem]:
    """An int / float range [lo, hi] of numbers: low < high, of the field's type."""
    out = []
    if kind == "int" and not (_is_int(lo) and _is_int(hi)):
        out.append(Problem(f"{key}.int", f"bounds must be integers, got {[lo, hi]!r}"))
    if kind not in typ:
        other = "float" if kind == "int" else "int"
        out.append(Problem(key, f"{kind} range on a {typ} field", f"use {other} or choice"))
    # A zero-width range searches nothing (Optuna would draw the one value every time): almost
    # certainly a typo, and a fixed value belongs in base:.
    if lo > hi:
        out.append(Problem(f"{key}.{kind}", f"inverted range [{lo}, {hi}]: low is above high",
                           f"swap them: [{hi}, {lo}]"))
    elif lo == hi:
        out.append(Problem(f"{key}.{kind}", f"empty range [{lo}, {hi}]: low equals high, so nothing is searched",
                           f"set {path}: {lo} under base: instead, or widen the range"))
    return out


def _when_fix(other: str, searched: dict, listed: str) -> str:
    """What to do about a condition on `other`, which is not searched: search it, or fix a typo."""
    close = [other] if _schema_leaf(other)[0] else difflib.get_close_matches(other, _schema_paths(), n=1)
    if not close:
        return f"condition on a parameter under search: (now: {listed})"
    guess = "" if close[0] == other else f"did you mean {close[0]}?"
    unsearched = "" if close[0] in searched else f"{close[0]} must be under search: too (now: {listed})"
    return " ".join(filter(None, [guess, unsearched]))


def _when_problems(params: list[Param]) -> list[Problem]:
    """Each `when:` names a parameter searched before it, and values that parameter can take."""
    out = []
    order = {q.path: i for i, q in enumerate(params)}
    searched = ", ".join(order) or "none"
    for q in params:
        key = f"search.{q.path}.when"
        for other, vals in q.when.items():
            if other not in order:
                out.append(Problem(key, f"condition on {other!r}, which is not a searched parameter",
                                   _when_fix(other, order, searched)))
            elif order[other] >= order[q.path]:
                # Parameters are drawn in file order (DefineByRun), so a later one is unset here.
                out.append(Problem(key, f"condition on {other!r}, which is not listed before {q.path} under "
                                   "search: parameters are drawn in that order, so the condition never holds",
                                   f"move {other} above {q.path}"))
            elif (choices := params[order[other]].choices) is not None and not set(map(str, vals)) <= set(
                    map(str, choices)):
                out.append(Problem(key, f"values {vals} are not among {other}'s choices {choices}"))
    return out


def _unreported(metric: str, cfg: TrialConfig, searched) -> str:
    """Why no trial of base `cfg` reports `metric` ("" when trials may): a task- or source-only metric.
    Every trial would then fail (objective) or be infeasible (constraint)."""
    if set(searched) & {"model.task", "model.kind", "data.source"}:
        return ""  # the search decides
    m, source = cfg.model, cfg.data.source
    if metric == M.VAL_ACC and m.task != "vision":
        return f"is reported by vision trials only (base.model.task is {m.task!r})"
    if metric == M.VAL_BPB and (m.task != "lm" or source not in BYTE_SOURCES):
        return (f"is reported by byte-level LM trials only (data.source {' / '.join(BYTE_SOURCES)}; the base has "
                f"model.task {m.task!r}, data.source {source!r})")
    if metric.startswith("router/") and m.kind == "dense":
        return "is reported by routed models only (base.model.kind is 'dense')"
    return ""


# The flat settings sections, in the order parse_space checks them (the order problems are listed in).

def _sampler(data: dict, p: list[Problem]) -> dict:
    sampler = _section(data, "sampler", {"type": "tpe", "seed": 0, "startup_trials": 4}, p)
    if sampler["type"] not in SAMPLERS:
        p.append(Problem("sampler.type", f"unknown sampler {sampler['type']!r}", f"use one of: {', '.join(SAMPLERS)}"))
    for k in ("seed", "startup_trials"):
        if not _is_int(sampler[k]) or sampler[k] < 0:
            p.append(Problem(f"sampler.{k}", f"must be an integer >= 0, got {sampler[k]!r}"))
    return sampler


def _budget(data: dict, p: list[Problem]) -> dict:
    budget = _section(data, "budget", {"trials": 8, "concurrent": 2, "retries": 2}, p)
    for k in ("trials", "concurrent"):
        if not _is_int(budget[k]) or budget[k] < 1:
            p.append(Problem(f"budget.{k}", f"must be an integer >= 1, got {budget[k]!r}"))
    if not _is_int(budget["retries"]) or budget["retries"] < 0:
        p.append(Problem("budget.retries", f"must be an integer >= 0, got {budget['retries']!r}",
                         "restarts of a trial whose worker process died (from its checkpoint)"))
    return budget


def _resources(data: dict, p: list[Problem]) -> dict:
    resources = _section(data, "resources", {"cpu": 1, "gpu": 0, "memory_gb": None, "custom": {}}, p,
                         "e.g. resources: {cpu: 1, gpu: 0.25, memory_gb: 8, custom: {a100: 1}}")
    if not _is_number(resources["cpu"]) or resources["cpu"] <= 0:
        p.append(Problem("resources.cpu", f"must be a number > 0, got {resources['cpu']!r}"))
    if not _is_number(resources["gpu"]) or resources["gpu"] < 0:
        p.append(Problem("resources.gpu", f"must be a number >= 0, got {resources['gpu']!r}"))
    mem = resources["memory_gb"]
    if mem is not None and (not _is_number(mem) or mem <= 0):
        p.append(Problem("resources.memory_gb", f"must be a number > 0 (GiB of host memory per trial) or null, "
                         f"got {mem!r}", "a trial that allocates more fails as out of memory; null: no limit"))
    custom = resources["custom"]
    # Custom Ray resources (`ray start --resources='{"a100": 1}'`) pin trials to the nodes that have them.
    if not isinstance(custom, dict) or not all(isinstance(k, str) and _is_number(v) and v > 0
                                               for k, v in custom.items()):
        p.append(Problem("resources.custom", f"must map Ray resource names to amounts > 0, got {custom!r}",
                         'e.g. custom: {a100: 1} for nodes started with --resources=\'{"a100": 1}\''))
        resources["custom"] = {}
    return resources


def _tracking(data: dict, p: list[Problem]) -> dict:
    """{"experiment": name (default dnasweep), "uri": MLflow tracking URI or None}."""
    tracking = _section(data, "tracking", {"experiment": None, "uri": None}, p)
    experiment = tracking["experiment"] or "dnasweep"
    if not isinstance(experiment, str):
        p.append(Problem("tracking.experiment", f"must be a name, got {experiment!r}", "e.g. dnasweep-lm"))
    uri = tracking["uri"]
    if uri is not None and not isinstance(uri, str):
        p.append(Problem("tracking.uri", f"must be an MLflow tracking URI (a string) or null, got {uri!r}",
                         "e.g. http://mlflow-host:5000 or sqlite:///path/to/mlflow.db"))
    elif uri is not None and re.search(r"//[^/:@\s]+:[^/@\s]+@", uri):
        # A space file is copied into SWEEP/space.json, MLflow params and git: no secrets in it.
        p.append(Problem("tracking.uri", "holds a password (user:password@host); credentials never go in a "
                         "space file", "drop the user:password@ part and export MLFLOW_TRACKING_USERNAME / "
                         "MLFLOW_TRACKING_PASSWORD instead"))
    return {"experiment": experiment, "uri": uri or None}


def _analyze(data: dict, p: list[Problem]) -> dict:
    analyze = _section(data, "analyze", {"front": True, "examples": None}, p,
                       "; ".join(f"{a}: {d}" for a, d in ANALYZE_KEYS.items()))
    if not isinstance(analyze["front"], bool):
        p.append(Problem("analyze.front", f"must be true or false, got {analyze['front']!r}"))
    if analyze["examples"] is not None and (not _is_int(analyze["examples"]) or analyze["examples"] < 1):
        p.append(Problem("analyze.examples", f"must be an integer >= 1 or null, got {analyze['examples']!r}"))
    return analyze
