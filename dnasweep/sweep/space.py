"""Search-space files: one YAML = one complete, runnable sweep.

    base:        a complete trial config (trainable alone with `dnasweep train`)
    search:      dotted path -> {choice: [...]} | {int: [lo, hi]} | {float: [lo, hi], log: bool}
                 with optional `when: {other.path: [values]}` (active only for those values)
    objectives:  [{metric: val/loss, mode: min}, ...]
    constraints: ["params/total <= 2e7", ...]
    sampler:     {type: tpe | nsga2 | nsga3 | gp | random, seed, startup_trials}
    budget:      {trials, concurrent}
    resources:   {cpu, gpu, memory_gb} (fractions allowed: gpu 0.25 packs four trials per GPU;
                 memory_gb: host memory per trial, reserved in Ray and enforced: over it = OOM failure)
    tracking:    {experiment}
    smoke:       an overlay of this file applied by --smoke

`load_space` reports every problem of the file at once (file, dotted key, rule, value, fix).
This module is Ray-, Optuna- and MLflow-free; the runner adapts it to them.
"""

from __future__ import annotations

import copy
import difflib
import functools
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from dnasweep import metrics as M
from dnasweep.config import (
    TrialConfig,
    _deep_merge,
    _schema_problems,
    build_trial,
    parse_overrides,
    read_yaml,
    trial_problems,
)
from dnasweep.data.config import BYTE_SOURCES
from dnasweep.errors import ConfigError, Problem, raise_if

SAMPLERS = ("tpe", "nsga2", "nsga3", "gp", "random")
SPEC_KEYS = ("choice", "int", "float", "log", "when")  # the keys of one search: entry
SECTIONS = ("base", "search", "objectives", "constraints", "sampler", "budget", "resources", "tracking", "analyze",
            "smoke")
ANALYZE_KEYS = {"front": "analyse the Pareto-front trials when the sweep ends (true/false)",
                "examples": "held-out sequences/images per report (null: the analyzer's default)"}
KNOWN_METRICS = {v for k, v in vars(M).items()
                 if k.isupper() and isinstance(v, str) and "/" in v and k != "ROUTER_LOAD_PREFIX"
                 and not v.startswith(M.SWEEP_PREFIX)}
_CONSTRAINT = re.compile(r"^\s*([\w/.\-]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")
# Metrics the config alone fixes, exactly as trials report them (nominal == the built model,
# tests/test_model.py), so a constraint on them can be judged before any trial. Not params/active
# nor compute/flops_per_token: trials measure those under the learned routing (identity modules,
# thresholds), which can land far below or above the nominal uniform-routing value.
_STATIC = {M.PARAMS_TOTAL: lambda n: n.params_total}


@dataclass
class Param:
    """One searched dimension."""

    path: str  # dotted path into the trial config, e.g. "model.router.top_k"
    kind: str  # choice | int | float
    low: float | None = None
    high: float | None = None
    choices: list | None = None
    log: bool = False
    when: dict[str, list] = field(default_factory=dict)  # active only if these params take these values


@dataclass
class Objective:
    metric: str  # a known metric name (dnasweep.metrics)
    mode: str  # min | max


@dataclass
class Constraint:
    metric: str
    op: str  # <= | >=
    bound: float

    def violation(self, value: float) -> float:
        """Optuna's convention: <= 0 is feasible."""
        return value - self.bound if self.op == "<=" else self.bound - value


@dataclass
class SearchSpace:
    """A parsed, validated search-space file."""

    source: str
    base: dict  # the base trial config as a plain dict (overrides applied)
    params: list[Param]
    objectives: list[Objective]
    constraints: list[Constraint]
    sampler: dict  # {"type", "seed", "startup_trials"}
    trials: int
    concurrent: int
    resources: dict  # {"cpu": float, "gpu": float, "memory_gb": float | None}
    experiment: str
    analyze: dict = field(default_factory=lambda: {"front": True, "examples": None})  # see ANALYZE_KEYS
    retries: int = 2  # restarts of a trial whose worker died (budget.retries)

    def active(self, p: Param, values: dict) -> bool:
        return all(values.get(k) in v for k, v in p.when.items())

    def trial_config(self, values: dict, out_dir: str) -> TrialConfig:
        """The trial config of one point: base + the active sampled values."""
        over = [f"{p.path}={_fmt(values[p.path])}" for p in self.params if p.path in values]
        return build_trial(self.base, [*over, f"out_dir={out_dir}"], source=self.source)


def _fmt(v: Any) -> str:
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


def _parse_param(path: str, spec: Any, p: list[Problem]) -> Param | None:
    key = f"search.{path}"
    exists, typ = _schema_leaf(path)
    if not exists:
        p.append(Problem(key, "no such field in the trial config",
                         _did_you_mean(path, _schema_paths()) or "use a dotted path such as model.d_model"))
        return None
    if not isinstance(spec, dict):
        p.append(Problem(key, f"expected {{choice: [...]}}, {{int: [lo, hi]}} or {{float: [lo, hi]}}, got {spec!r}"))
        return None
    for k in spec:
        if k not in SPEC_KEYS:
            p.append(Problem(f"{key}.{k}", "unknown option",
                             _did_you_mean(k, SPEC_KEYS) or f"known options: {', '.join(SPEC_KEYS)}"))
    kinds = [k for k in ("choice", "int", "float") if k in spec]
    if len(kinds) != 1:
        p.append(Problem(key, f"needs exactly one of choice / int / float (got {sorted(map(str, spec))})",
                         "e.g. {float: [1e-4, 1e-2], log: true}"))
        return None
    kind = kinds[0]
    when = _mapping(spec.get("when"), f"{key}.when", p, "map a searched parameter to its values, "
                    "e.g. when: {model.router.type: [threshold]}")
    when = {str(k): v if isinstance(v, list) else [v] for k, v in when.items()}
    if kind == "choice":
        choices = spec["choice"]
        if not isinstance(choices, list) or not choices:
            p.append(Problem(f"{key}.choice", f"must be a non-empty list, got {choices!r}",
                             f"list the values to try, e.g. {{choice: [64, 128]}}; a fixed value belongs "
                             f"in base: ({path})"))
            return None
        for c in choices:  # each choice must type-check against the field
            nested: Any = c
            for part in reversed(path.split(".")):
                nested = {part: nested}
            for q in _schema_problems(nested, TrialConfig, ""):
                p.append(Problem(f"{key}.choice", f"choice {c!r} does not fit {path} ({typ}): {q.message}", q.fix))
        return Param(path, kind, choices=choices, when=when)
    rng = spec[kind]
    if not (isinstance(rng, list) and len(rng) == 2 and all(_is_number(v) for v in rng)):
        p.append(Problem(f"{key}.{kind}", f"must be [low, high], two numbers, got {rng!r}",
                         "e.g. {int: [2, 6]}" if kind == "int" else "e.g. {float: [1.0e-4, 1.0e-2]}"))
        return None
    lo, hi = rng
    p += _range_problems(key, path, kind, typ, lo, hi)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        p.append(Problem(f"{key}.log", f"must be true or false, got {log!r}"))
    elif log and lo <= 0:
        p.append(Problem(f"{key}.log", f"log scale needs low > 0, got {lo}", "raise low, or use choice to include 0"))
    return Param(path, kind, low=lo, high=hi, log=isinstance(log, bool) and log, when=when)


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


def _objectives(raw: Any, base_cfg: TrialConfig | None, searched, p: list[Problem]) -> list[Objective]:
    example = "e.g. [{metric: val/loss, mode: min}, {metric: compute/flops_per_token, mode: min}]"
    if not raw:
        p.append(Problem("objectives", "at least one objective is needed", example))
    out = []
    for i, o in enumerate(_list(raw, "objectives", p, example)):
        if not isinstance(o, dict) or "metric" not in o:
            p.append(Problem(f"objectives[{i}]", f"expected {{metric: ..., mode: min|max}}, got {o!r}"))
            continue
        for k in set(o) - {"metric", "mode"}:
            p.append(Problem(f"objectives[{i}].{k}", "unknown key", _did_you_mean(k, ["metric", "mode"])
                             or "known keys: metric, mode"))
        metric = o["metric"]
        if not isinstance(metric, str):
            p.append(Problem(f"objectives[{i}].metric", f"must be a metric name, got {metric!r}", "e.g. val/loss"))
            continue
        if not _is_known_metric(metric):
            p.append(Problem(f"objectives[{i}].metric", f"unknown metric {metric!r}",
                             _did_you_mean(metric, KNOWN_METRICS) or f"known: {', '.join(sorted(KNOWN_METRICS))}"))
        elif base_cfg is not None and (why := _unreported(metric, base_cfg, searched)):
            p.append(Problem(f"objectives[{i}].metric", f"{metric} {why}: every trial would fail",
                             "use a metric these trials report, e.g. val/loss"))
        if o.get("mode", "min") not in ("min", "max"):
            p.append(Problem(f"objectives[{i}].mode", f"must be min or max, got {o.get('mode')!r}"))
        out.append(Objective(metric, o.get("mode", "min")))
    if len({o.metric for o in out}) != len(out):
        p.append(Problem("objectives", "the same metric appears twice"))
    return out


def _constraints(raw: Any, base_cfg: TrialConfig | None, searched, p: list[Problem]) -> list[Constraint]:
    out = []
    for i, c in enumerate(_list(raw, "constraints", p, 'e.g. ["params/total <= 2e7"]')):
        m = _CONSTRAINT.match(str(c))
        if not m:
            p.append(Problem(f"constraints[{i}]", f"cannot parse {c!r}", "write 'metric <= number' or '>='"))
            continue
        if not _is_known_metric(m.group(1)):
            p.append(Problem(f"constraints[{i}]", f"unknown metric {m.group(1)!r}",
                             _did_you_mean(m.group(1), KNOWN_METRICS) or f"known: {', '.join(sorted(KNOWN_METRICS))}"))
        elif base_cfg is not None and (why := _unreported(m.group(1), base_cfg, searched)):
            p.append(Problem(f"constraints[{i}]", f"{m.group(1)} {why}: no trial could satisfy {c!r}",
                             "drop the constraint, or use a metric these trials report"))
        out.append(Constraint(m.group(1), m.group(2), float(m.group(3))))
    return out


def parse_space(data: dict, source: str, overrides: list[str] | None = None, smoke: bool = False) -> SearchSpace:
    """A SearchSpace from a file's dict; ConfigError listing every problem."""
    p: list[Problem] = []
    overlay = _mapping(data.get("smoke"), "smoke", p, "an overlay of this file, e.g. smoke: {budget: {trials: 2}}")
    if smoke:
        data = _deep_merge(data, overlay)
    over, bad = parse_overrides(overrides or [])
    p += bad
    data = _deep_merge(data, over)
    for k in data:
        if k not in SECTIONS:
            p.append(Problem(str(k), "unknown section",
                             _did_you_mean(k, SECTIONS) or f"known: {', '.join(SECTIONS)}"))
    base = _mapping(data.get("base"), "base", p, "a complete trial config: base: {model: ..., data: ..., train: ...}")
    if "base" not in data:
        p.append(Problem("base", "missing", "add a complete trial config under base:"))
    base_cfg = None
    try:
        base_cfg = build_trial(base, source=source)
    except ConfigError as e:
        p += [_in_base(q) for q in e.problems]

    search = _mapping(data.get("search"), "search", p, "e.g. search: {model.d_model: {choice: [64, 128]}}")
    params = [q for path, spec in search.items() if (q := _parse_param(str(path), spec, p)) is not None]
    p += _when_problems(params)
    objectives = _objectives(data.get("objectives"), base_cfg, search, p)
    constraints = _constraints(data.get("constraints"), base_cfg, search, p)
    if base_cfg is not None and not any(q.key.startswith(("search", "constraints")) for q in p):
        p += _unsatisfiable(params, constraints, base, base_cfg)

    sampler = _section(data, "sampler", {"type": "tpe", "seed": 0, "startup_trials": 4}, p)
    if sampler["type"] not in SAMPLERS:
        p.append(Problem("sampler.type", f"unknown sampler {sampler['type']!r}", f"use one of: {', '.join(SAMPLERS)}"))
    for k in ("seed", "startup_trials"):
        if not _is_int(sampler[k]) or sampler[k] < 0:
            p.append(Problem(f"sampler.{k}", f"must be an integer >= 0, got {sampler[k]!r}"))
    budget = _section(data, "budget", {"trials": 8, "concurrent": 2, "retries": 2}, p)
    for k in ("trials", "concurrent"):
        if not _is_int(budget[k]) or budget[k] < 1:
            p.append(Problem(f"budget.{k}", f"must be an integer >= 1, got {budget[k]!r}"))
    if not _is_int(budget["retries"]) or budget["retries"] < 0:
        p.append(Problem("budget.retries", f"must be an integer >= 0, got {budget['retries']!r}",
                         "restarts of a trial whose worker process died (from its checkpoint)"))
    resources = _section(data, "resources", {"cpu": 1, "gpu": 0, "memory_gb": None}, p,
                         "e.g. resources: {cpu: 1, gpu: 0.25, memory_gb: 8}")
    if not _is_number(resources["cpu"]) or resources["cpu"] <= 0:
        p.append(Problem("resources.cpu", f"must be a number > 0, got {resources['cpu']!r}"))
    if not _is_number(resources["gpu"]) or resources["gpu"] < 0:
        p.append(Problem("resources.gpu", f"must be a number >= 0, got {resources['gpu']!r}"))
    mem = resources["memory_gb"]
    if mem is not None and (not _is_number(mem) or mem <= 0):
        p.append(Problem("resources.memory_gb", f"must be a number > 0 (GiB of host memory per trial) or null, "
                         f"got {mem!r}", "a trial that allocates more fails as out of memory; null: no limit"))
    experiment = _section(data, "tracking", {"experiment": None}, p)["experiment"] or "dnasweep"
    if not isinstance(experiment, str):
        p.append(Problem("tracking.experiment", f"must be a name, got {experiment!r}", "e.g. dnasweep-lm"))
    analyze = _section(data, "analyze", {"front": True, "examples": None}, p,
                       "; ".join(f"{a}: {d}" for a, d in ANALYZE_KEYS.items()))
    if not isinstance(analyze["front"], bool):
        p.append(Problem("analyze.front", f"must be true or false, got {analyze['front']!r}"))
    if analyze["examples"] is not None and (not _is_int(analyze["examples"]) or analyze["examples"] < 1):
        p.append(Problem("analyze.examples", f"must be an integer >= 1 or null, got {analyze['examples']!r}"))
    raise_if(p, source)
    return SearchSpace(source, base, params, objectives, constraints, sampler, budget["trials"],
                       budget["concurrent"], resources, experiment, analyze, budget["retries"])


def space_warnings(space: SearchSpace) -> list[str]:
    """Valid but probably unintended settings, printed by validate and run."""
    out = []
    if space.sampler["type"] == "gp" and space.trials > 100:
        out.append(f"sampler.type=gp with budget.trials={space.trials}: Optuna's GPSampler took ~1 s per suggestion "
                   "at 100 finished trials and ~5 s at 500 on 2 CPU cores (bench/suggest.py), blocking the driver "
                   "meanwhile; tpe stays under 60 ms there")
    return out


def load_space(path: str, overrides: list[str] | None = None, smoke: bool = False) -> SearchSpace:
    return parse_space(read_yaml(path), path, overrides, smoke)


def _ends(q: Param) -> list:
    """The extreme values of one dimension: every choice, or a range's two ends."""
    return q.choices if q.kind == "choice" else [q.low, q.high]


def _corners(params: list[Param], limit: int = 256) -> list[dict]:
    import itertools
    import random

    axes = [[(q.path, v) for v in _ends(q)] for q in params]
    n = math.prod(len(a) for a in axes) if axes else 1
    if n <= limit:
        return [dict(c) for c in itertools.product(*axes)]
    rnd = random.Random(0)
    return [dict(rnd.choice(a) for a in axes) for _ in range(limit)]


def corners(space: SearchSpace, limit: int = 256) -> list[dict]:
    """Extreme points of the space (each range's ends, every choice), at most `limit` of them."""
    return _corners(space.params, limit)


def _active(params: list[Param], point: dict) -> dict:
    """The values a trial at `point` gets: a conditional parameter only where its `when:` holds,
    decided in file order as DefineByRun does (an inactive one keeps the base value)."""
    values: dict = {}
    for q in params:
        if q.path in point and all(values.get(k) in v for k, v in q.when.items()):
            values[q.path] = point[q.path]
    return values


def _point_trial(base: dict, base_cfg: TrialConfig, values: dict) -> TrialConfig | None:
    """The trial config of base + `values`, None when that combination is invalid (e.g. top_k
    above the pool size). Sets the values on a copy of the parsed base: build_trial's per-leaf
    schema checks cost ~0.2 s a point, and each value was type-checked when the space was parsed.
    A value of another type than its field (a quoted number OmegaConf converts) goes through
    build_trial, the exact way."""
    cfg = copy.deepcopy(base_cfg)
    for path, v in values.items():
        *parents, leaf = path.split(".")
        node = functools.reduce(getattr, parents, cfg)
        now = getattr(node, leaf)
        if not (now is None or v is None or isinstance(v, type(now)) or isinstance(now, float) and _is_number(v)):
            try:
                return build_trial(base, [f"{k}={_fmt(x)}" for k, x in values.items()])
            except ConfigError:
                return None
        setattr(node, leaf, v)
    return None if trial_problems(cfg) else cfg


def _descend(params: list[Param], point: dict, f) -> tuple[float, dict]:
    """Lower f(point) greedily, one dimension at a time over its extreme values, until no move helps.
    f returns None at an invalid point, which is never moved to."""
    best, moved = f(point), True
    while moved:
        moved = False
        for q in params:
            for v in _ends(q):
                y = f({**point, q.path: v})
                if y is not None and y < best:
                    best, point, moved = y, {**point, q.path: v}, True
    return best, point


def _closest(c: Constraint, params: list[Param], base: dict, base_cfg: TrialConfig) -> tuple[float, dict] | None:
    """(violation, point) of the point of the space that comes closest to satisfying `c` (a
    constraint on a _STATIC metric); None when no corner is a valid combination."""
    from dnasweep.model import nominal

    def violation(point: dict) -> float | None:
        cfg = _point_trial(base, base_cfg, _active(params, point))
        return None if cfg is None else c.violation(_STATIC[c.metric](nominal(cfg.model)))

    scored = [(v, pt) for pt in _corners(params) if (v := violation(pt)) is not None]
    return _descend(params, min(scored, key=lambda s: s[0])[1], violation) if scored else None


def _unsatisfiable(params: list[Param], constraints: list[Constraint], base: dict,
                   base_cfg: TrialConfig) -> list[Problem]:
    """Constraints on static metrics (_STATIC) that no point of the space satisfies, so every
    trial would be infeasible. Such a metric (a parameter count) moves one way along each
    dimension, so its extremes lie at corners: the best corner is refined by a descent over the
    dimensions, which matters when there are too many corners to try them all."""
    out = []
    for i, c in enumerate(constraints):
        found = _closest(c, params, base, base_cfg) if c.metric in _STATIC else None
        if found is None or found[0] <= 0:
            continue  # satisfiable, not judged statically, or no valid corner to judge from
        point = _active(params, found[1])
        v = c.bound + found[0] if c.op == "<=" else c.bound - found[0]
        where = ", ".join(f"{k}={x}" for k, x in point.items() if k.startswith("model.")) or "the base model"
        least, fewer = ("smallest", "smaller") if c.op == "<=" else ("largest", "larger")
        out.append(Problem(f"constraints[{i}]", f"{c.metric} {c.op} {c.bound:g} holds at no point of the search "
                           f"space: its {least} {c.metric} is {v:,.0f} ({where})",
                           f"{'raise' if c.op == '<=' else 'lower'} the bound past {v:,.0f}, or search {fewer} models"))
    return out


def summarize(space: SearchSpace) -> str:
    """What `dnasweep validate` prints: dimensions, budget, and the parameter/FLOP range of the
    space computed from the config alone (over its corners)."""
    from dnasweep.model import nominal

    lines = [f"{space.source}: valid search space", f"  {len(space.params)} dimensions:"]
    for q in space.params:
        rng = q.choices if q.kind == "choice" else f"[{q.low}, {q.high}]" + (" log" if q.log else "")
        cond = f"  when {q.when}" if q.when else ""
        lines.append(f"    {q.path:<32} {q.kind:<6} {rng}{cond}")
    totals, flops, bad = [], [], 0
    base_cfg = build_trial(space.base, source=space.source)
    for point in corners(space):
        cfg = _point_trial(space.base, base_cfg, _active(space.params, point))
        if cfg is None:
            bad += 1  # a corner can be an invalid combination (e.g. top_k > pool size)
            continue
        n = nominal(cfg.model)
        totals.append(n.params_total)
        flops.append(n.flops_per_token)
    objs = ", ".join(f"{o.mode} {o.metric}" for o in space.objectives)
    lines += [f"  objectives: {objs}",
              f"  constraints: {', '.join(f'{c.metric} {c.op} {c.bound:g}' for c in space.constraints) or 'none'}",
              f"  sampler: {space.sampler['type']} (seed {space.sampler['seed']}), "
              f"{space.trials} trials, {space.concurrent} at a time, {space.resources} per trial"]
    if totals:
        lines.append(f"  parameters: {min(totals):,} to {max(totals):,}; nominal forward FLOPs/token: "
                     f"{min(flops):,.0f} to {max(flops):,.0f} (over {len(totals)} corners"
                     + (f"; {bad} corner combinations invalid)" if bad else ")"))
    return "\n".join(lines)
