"""Search-space files: one YAML = one complete, runnable sweep.

    base:        a complete trial config (trainable alone with `dnasweep train`)
    search:      dotted path -> {choice: [...]} | {int: [lo, hi]} | {float: [lo, hi], log: bool}
                 with optional `when: {other.path: [values]}` (active only for those values)
    objectives:  [{metric: val/loss, mode: min}, ...]
    constraints: ["params/total <= 2e7", ...]
    sampler:     {type: tpe | nsga2 | nsga3 | gp | random, seed, startup_trials}
    budget:      {trials, concurrent}
    resources:   {cpu, gpu}            (fractions allowed: gpu 0.25 packs four trials per GPU)
    tracking:    {experiment}
    smoke:       an overlay of this file applied by --smoke

`load_space` reports every problem of the file at once (file, dotted key, rule, value, fix).
This module is Ray-, Optuna- and MLflow-free; the runner adapts it to them.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from dnasweep import metrics as M
from dnasweep.config import TrialConfig, _deep_merge, _schema_problems, build_trial, parse_overrides, read_yaml
from dnasweep.errors import ConfigError, Problem

SAMPLERS = ("tpe", "nsga2", "nsga3", "gp", "random")
SECTIONS = ("base", "search", "objectives", "constraints", "sampler", "budget", "resources", "tracking", "analyze",
            "smoke")
ANALYZE_KEYS = {"front": "analyse the Pareto-front trials when the sweep ends (true/false)",
                "examples": "held-out sequences/images per report (null: the analyzer's default)"}
KNOWN_METRICS = {v for k, v in vars(M).items()
                 if k.isupper() and isinstance(v, str) and "/" in v and k != "ROUTER_LOAD_PREFIX"
                 and not v.startswith(M.SWEEP_PREFIX)}
_CONSTRAINT = re.compile(r"^\s*([\w/.\-]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


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
    resources: dict  # {"cpu": float, "gpu": float}
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


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]}?" if close else ""


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
    kinds = [k for k in ("choice", "int", "float") if k in spec]
    extra = set(spec) - {"choice", "int", "float", "log", "when"}
    if len(kinds) != 1 or extra:
        p.append(Problem(key, f"needs exactly one of choice / int / float (got {sorted(spec)})",
                         "e.g. {float: [1e-4, 1e-2], log: true}"))
        return None
    kind = kinds[0]
    when = spec.get("when") or {}
    if not isinstance(when, dict):
        p.append(Problem(f"{key}.when", f"expected a mapping of parameter -> values, got {when!r}"))
        when = {}
    when = {k: v if isinstance(v, list) else [v] for k, v in when.items()}
    if kind == "choice":
        choices = spec["choice"]
        if not isinstance(choices, list) or not choices:
            p.append(Problem(f"{key}.choice", f"must be a non-empty list, got {choices!r}"))
            return None
        for c in choices:  # each choice must type-check against the field
            nested: Any = c
            for part in reversed(path.split(".")):
                nested = {part: nested}
            for q in _schema_problems(nested, TrialConfig, ""):
                p.append(Problem(f"{key}.choice", f"choice {c!r} does not fit {path} ({typ}): {q.message}"))
        return Param(path, kind, choices=choices, when=when)
    rng = spec[kind]
    if not (isinstance(rng, list) and len(rng) == 2 and all(isinstance(v, int | float) for v in rng)):
        p.append(Problem(f"{key}.{kind}", f"must be [low, high], got {rng!r}"))
        return None
    lo, hi = rng
    if "int" in kind and not all(isinstance(v, int) for v in rng):
        p.append(Problem(f"{key}.int", f"bounds must be integers, got {rng!r}"))
    if kind == "int" and "int" not in typ:
        p.append(Problem(key, f"int range on a {typ} field", "use float or choice"))
    if kind == "float" and "float" not in typ:
        p.append(Problem(key, f"float range on a {typ} field", "use int or choice"))
    if lo >= hi:
        p.append(Problem(f"{key}.{kind}", f"empty or inverted range [{lo}, {hi}]", "low must be < high"))
    log = bool(spec.get("log", False))
    if log and lo <= 0:
        p.append(Problem(f"{key}.log", f"log scale needs low > 0, got {lo}", "raise low, or use choice to include 0"))
    return Param(path, kind, low=lo, high=hi, log=log, when=when)


def parse_space(data: dict, source: str, overrides: list[str] | None = None, smoke: bool = False) -> SearchSpace:
    """A SearchSpace from a file's dict; ConfigError listing every problem."""
    p: list[Problem] = []
    if smoke and isinstance(data.get("smoke"), dict):
        data = _deep_merge(data, data["smoke"])
    over, bad = parse_overrides(overrides or [])
    p += bad
    data = _deep_merge(data, over)
    for k in data:
        if k not in SECTIONS:
            p.append(Problem(k, "unknown section", _did_you_mean(k, SECTIONS) or f"known: {', '.join(SECTIONS)}"))
    base = data.get("base") or {}
    if "base" not in data:
        p.append(Problem("base", "missing", "add a complete trial config under base:"))
    try:
        build_trial(base, source=source)
    except ConfigError as e:
        p += [Problem(f"base.{q.key}", q.message, q.fix) for q in e.problems]

    params = [q for path, spec in (data.get("search") or {}).items()
              if (q := _parse_param(str(path), spec, p)) is not None]
    by_path = {q.path: q for q in params}
    for q in params:
        for other, vals in q.when.items():
            if other not in by_path:
                p.append(Problem(f"search.{q.path}.when", f"condition on {other!r}, which is not a searched parameter",
                                 f"searched: {', '.join(by_path) or 'none'}"))
            elif by_path[other].kind == "choice" and not set(map(str, vals)) <= set(map(str, by_path[other].choices)):
                p.append(Problem(f"search.{q.path}.when", f"values {vals} are not among {other}'s choices "
                                 f"{by_path[other].choices}"))

    objectives = []
    raw_obj = data.get("objectives") or []
    if not raw_obj:
        p.append(Problem("objectives", "at least one objective is needed",
                         "e.g. [{metric: val/loss, mode: min}, {metric: compute/flops_per_token, mode: min}]"))
    for i, o in enumerate(raw_obj):
        if not isinstance(o, dict) or "metric" not in o:
            p.append(Problem(f"objectives[{i}]", f"expected {{metric: ..., mode: min|max}}, got {o!r}"))
            continue
        if not _is_known_metric(o["metric"]):
            p.append(Problem(f"objectives[{i}].metric", f"unknown metric {o['metric']!r}",
                             _did_you_mean(o["metric"], KNOWN_METRICS) or f"known: {', '.join(sorted(KNOWN_METRICS))}"))
        if o.get("mode", "min") not in ("min", "max"):
            p.append(Problem(f"objectives[{i}].mode", f"must be min or max, got {o.get('mode')!r}"))
        objectives.append(Objective(o["metric"], o.get("mode", "min")))
    if len({o.metric for o in objectives}) != len(objectives):
        p.append(Problem("objectives", "the same metric appears twice"))

    constraints = []
    for i, c in enumerate(data.get("constraints") or []):
        m = _CONSTRAINT.match(str(c))
        if not m:
            p.append(Problem(f"constraints[{i}]", f"cannot parse {c!r}", "write 'metric <= number' or '>='"))
            continue
        if not _is_known_metric(m.group(1)):
            p.append(Problem(f"constraints[{i}]", f"unknown metric {m.group(1)!r}",
                             _did_you_mean(m.group(1), KNOWN_METRICS) or f"known: {', '.join(sorted(KNOWN_METRICS))}"))
        constraints.append(Constraint(m.group(1), m.group(2), float(m.group(3))))

    sampler = {"type": "tpe", "seed": 0, "startup_trials": 4, **(data.get("sampler") or {})}
    if sampler["type"] not in SAMPLERS:
        p.append(Problem("sampler.type", f"unknown sampler {sampler['type']!r}", f"use one of: {', '.join(SAMPLERS)}"))
    budget = {"trials": 8, "concurrent": 2, "retries": 2, **(data.get("budget") or {})}
    for k in ("trials", "concurrent"):
        if not isinstance(budget[k], int) or budget[k] < 1:
            p.append(Problem(f"budget.{k}", f"must be an integer >= 1, got {budget[k]!r}"))
    if not isinstance(budget["retries"], int) or budget["retries"] < 0:
        p.append(Problem("budget.retries", f"must be an integer >= 0, got {budget['retries']!r}",
                         "restarts of a trial whose worker process died (from its checkpoint)"))
    for k in set(budget) - {"trials", "concurrent", "retries"}:
        p.append(Problem(f"budget.{k}", "unknown key", _did_you_mean(k, ["trials", "concurrent", "retries"])
                         or "known: trials, concurrent, retries"))
    resources = {"cpu": 1, "gpu": 0, **(data.get("resources") or {})}
    if not isinstance(resources["cpu"], int | float) or resources["cpu"] <= 0:
        p.append(Problem("resources.cpu", f"must be > 0, got {resources['cpu']!r}"))
    if not isinstance(resources["gpu"], int | float) or resources["gpu"] < 0:
        p.append(Problem("resources.gpu", f"must be >= 0, got {resources['gpu']!r}"))
    experiment = (data.get("tracking") or {}).get("experiment") or "dnasweep"
    analyze = {"front": True, "examples": None, **(data.get("analyze") or {})}
    for k in analyze:
        if k not in ANALYZE_KEYS:
            p.append(Problem(f"analyze.{k}", "unknown key", _did_you_mean(k, ANALYZE_KEYS)
                             or "; ".join(f"{a}: {d}" for a, d in ANALYZE_KEYS.items())))
    if not isinstance(analyze["front"], bool):
        p.append(Problem("analyze.front", f"must be true or false, got {analyze['front']!r}"))
    if analyze["examples"] is not None and (not isinstance(analyze["examples"], int) or analyze["examples"] < 1):
        p.append(Problem("analyze.examples", f"must be an integer >= 1 or null, got {analyze['examples']!r}"))
    if p:
        raise ConfigError(p, source)
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


def corners(space: SearchSpace, limit: int = 256) -> list[dict]:
    """Extreme points of the space (each range's ends, every choice), at most `limit` of them."""
    import itertools
    import random

    axes = [[(q.path, v) for v in (q.choices if q.kind == "choice" else [q.low, q.high])] for q in space.params]
    n = math.prod(len(a) for a in axes) if axes else 1
    if n <= limit:
        return [dict(c) for c in itertools.product(*axes)]
    rnd = random.Random(0)
    return [dict(rnd.choice(a) for a in axes) for _ in range(limit)]


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
    for point in corners(space):
        try:
            n = nominal(space.trial_config(point, "/tmp/unused").model)
        except ConfigError:
            bad += 1  # a corner can be an invalid combination (e.g. top_k > pool size)
            continue
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
