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
    tracking:    {experiment, uri} (uri: an MLflow tracking URI such as http://host:5000 or
                 sqlite:///path; null, the default: not set by the file)
    smoke:       an overlay of this file applied by --smoke

`load_space` reports every problem of the file at once (file, dotted key, rule, value, fix).
This module owns the parsed form (Param, Objective, Constraint, SearchSpace), the parsing of the
typed entries (search:, objectives:, constraints:) and the entry points; the rules every section
must follow are in dnasweep.sweep.space_rules, the static feasibility of constraints and the
corners of a space in dnasweep.sweep.feasibility. Both are re-exported here where public.
This module is Ray-, Optuna- and MLflow-free; the runner adapts it to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from dnasweep.config import TrialConfig, _deep_merge, _schema_problems, build_trial, parse_overrides, read_yaml
from dnasweep.errors import ConfigError, Problem, raise_if
from dnasweep.sweep.feasibility import _active, _point_trial, _unsatisfiable, corners
from dnasweep.sweep.space_rules import (
    ANALYZE_KEYS,
    KNOWN_METRICS,
    SAMPLERS,
    SECTIONS,
    SPEC_KEYS,
    _analyze,
    _budget,
    _did_you_mean,
    _fmt,
    _in_base,
    _is_known_metric,
    _is_number,
    _list,
    _mapping,
    _range_problems,
    _resources,
    _sampler,
    _schema_leaf,
    _schema_paths,
    _tracking,
    _unreported,
    _when_problems,
)

__all__ = ["ANALYZE_KEYS", "KNOWN_METRICS", "SAMPLERS", "SECTIONS", "SPEC_KEYS", "Constraint", "Objective", "Param",
           "SearchSpace", "corners", "load_space", "parse_space", "space_warnings", "summarize"]

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
    resources: dict  # {"cpu": float, "gpu": float, "memory_gb": float | None}
    experiment: str
    analyze: dict = field(default_factory=lambda: {"front": True, "examples": None})  # see ANALYZE_KEYS
    retries: int = 2  # restarts of a trial whose worker died (budget.retries)
    # tracking.uri: an MLflow tracking URI; last, with a default, so space.json files written before it still load
    tracking_uri: str | None = None

    def active(self, p: Param, values: dict) -> bool:
        return all(values.get(k) in v for k, v in p.when.items())

    def trial_config(self, values: dict, out_dir: str) -> TrialConfig:
        """The trial config of one point: base + the active sampled values."""
        over = [f"{p.path}={_fmt(values[p.path])}" for p in self.params if p.path in values]
        return build_trial(self.base, [*over, f"out_dir={out_dir}"], source=self.source)


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

    sampler = _sampler(data, p)
    budget = _budget(data, p)
    resources = _resources(data, p)
    tracking = _tracking(data, p)
    analyze = _analyze(data, p)
    raise_if(p, source)
    return SearchSpace(source, base, params, objectives, constraints, sampler, budget["trials"],
                       budget["concurrent"], resources, tracking["experiment"], analyze, budget["retries"],
                       tracking_uri=tracking["uri"])


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
