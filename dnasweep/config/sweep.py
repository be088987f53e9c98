"""The typed sweep config: one search-space file = one complete, runnable sweep.

    base:        a complete trial config (trainable alone with `dnasweep train`)
    search:      dotted path -> {choice: [...]} | {int: [lo, hi]} | {float: [lo, hi], log: bool},
                 optional `when: {other.path: [values]}` (parsed by dnasweep.space)
    objectives:  [{metric: val/loss, mode: min}, ...]
    constraints: ["params/total <= 2e7", ...]
    sampler, budget, resources, tracking, analyze, reference, scheduler: the sections below
    smoke:       an overlay of this file applied by --smoke

`sweep_sections` turns a file's dict (smoke overlay and overrides applied) into typed sections,
collecting every problem; the search entries, objectives' metrics and constraints are judged by
dnasweep.space, which knows the trial schema and the metrics.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, is_dataclass
from typing import Any, Literal

from dnasweep import metrics as M
from dnasweep.config.load import (
    build,
    deep_merge,
    did_you_mean,
    leaf_type,
    parse_overrides,
    schema_problems,
    yaml_value,
)
from dnasweep.config.trial import TrialConfig, build_trial
from dnasweep.errors import ConfigError, Problem, field_problems, ge, gt

SEED_MAX = 2**32 - 1  # the largest seed numpy, and so every Optuna sampler, takes

# The Optuna samplers a sweep may use: name -> factory(optuna module, SamplerConfig). Optuna is
# passed in, so this registry (read by validation) never imports it. Constraints reach every
# sampler through trial.set_constraint (Optuna 5), set when a trial is told.
SAMPLERS: dict[str, Callable[[Any, SamplerConfig], Any]] = {
    "tpe": lambda optuna, s: optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.startup_trials,
                                                        multivariate=True, constant_liar=True),
    "nsga2": lambda optuna, s: optuna.samplers.NSGAIISampler(seed=s.seed),
    "nsga3": lambda optuna, s: optuna.samplers.NSGAIIISampler(seed=s.seed),
    "gp": lambda optuna, s: optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=s.startup_trials),
    "random": lambda optuna, s: optuna.samplers.RandomSampler(seed=s.seed),
}


@dataclass
class SamplerConfig:
    """Which Optuna sampler picks the trials."""

    type: str = "tpe"  # one of SAMPLERS: tpe (default) | nsga2 | nsga3 | gp | random
    seed: int = field(default=0, metadata=ge(0))  # seeds the sampler (0 to 2**32 - 1): same file and seed, same trials
    startup_trials: int = field(default=4, metadata=ge(0))  # random trials before tpe / gp start modelling

    def problems(self) -> list[Problem]:
        p = [] if self.type in SAMPLERS else [Problem(
            "sampler.type", f"unknown sampler {self.type!r}", f"use one of: {', '.join(SAMPLERS)}")]
        if self.seed > SEED_MAX:  # (said here: the field bound's message would print 4.29497e+09)
            p.append(Problem("sampler.seed", f"must be <= 2**32 - 1 = {SEED_MAX}, the largest seed Optuna's "
                             f"samplers take, got {self.seed}", f"use a seed from 0 to {SEED_MAX}"))
        return p


# The Ray Tune schedulers a sweep may use: name -> "module:class", imported only by the sweep
# layer (dnasweep.sweep.moasha.make_scheduler), so validation never imports Ray.
SCHEDULERS: dict[str, str] = {
    "fifo": "ray.tune.schedulers:FIFOScheduler",  # every trial trains to train.max_steps
    "moasha": "dnasweep.sweep.moasha:MOASHA",  # multi-objective successive halving at rungs
}


@dataclass
class SchedulerConfig:
    """Whether trials stop early: fifo trains every trial to train.max_steps; moasha ranks the trials
    that reached a rung (grace_steps * reduction_factor^k steps) by non-dominated sorting and stops
    those outside the top 1/reduction_factor (PRUNED in Optuna, never on the front)."""

    type: str = "fifo"  # one of SCHEDULERS: fifo (default) | moasha
    grace_steps: int | None = field(default=None, metadata=gt(0))  # first rung, in steps (null: train.eval_every)
    reduction_factor: int = field(default=3, metadata=ge(2))  # keep the top 1/reduction_factor at each rung
    brackets: int = field(default=1, metadata=ge(1))  # brackets (first rung grace * rf^b); trials round-robin

    def problems(self) -> list[Problem]:
        return [] if self.type in SCHEDULERS else [Problem(
            "scheduler.type", f"unknown scheduler {self.type!r}", f"use one of: {', '.join(SCHEDULERS)}")]


@dataclass
class BudgetConfig:
    """How many trials (or training steps), how many at once, how often a dying worker is restarted."""

    trials: int = field(default=8, metadata=ge(1))  # trials to finish (complete, pruned, failed); with steps: a cap
    steps: int | None = field(default=None, metadata=gt(0))  # training steps summed over all trials (null: none)
    concurrent: int = field(default=2, metadata=ge(1))  # trials running at once
    retries: int = field(default=2, metadata=ge(0))  # restarts (from its checkpoint) of a trial whose worker died


@dataclass
class ResourcesConfig:
    """What one trial reserves on a node (fractions allowed: gpu 0.25 packs four trials per GPU)."""

    cpu: float = field(default=1.0, metadata=gt(0))  # CPUs per trial
    gpu: float = field(default=0.0, metadata=ge(0))  # GPUs per trial
    memory_gb: float | None = field(default=None, metadata=gt(0))  # host GiB per trial, reserved and enforced (OOM)
    custom: dict[str, float] = field(default_factory=dict)  # custom Ray resources, e.g. {a100: 1}: pins trials

    def problems(self) -> list[Problem]:
        out = [] if all(v > 0 for v in self.custom.values()) else [Problem(
            "resources.custom", f"must map Ray resource names to amounts > 0, got {self.custom!r}",
            'e.g. custom: {a100: 1} for nodes started with --resources=\'{"a100": 1}\'')]
        if isinstance(self.gpu, int | float) and self.gpu > 1 and self.gpu != int(self.gpu):
            # Ray shares a GPU between trials (a fraction <= 1), never splits one across trials above 1
            out.append(Problem("resources.gpu", f"must be at most 1 or a whole number, got {self.gpu:g}: Ray "
                               "allocates fractions of one GPU only", f"use {int(self.gpu)} or {int(self.gpu) + 1}, "
                               "or a fraction <= 1 (0.25 packs four trials per GPU)"))
        return out


# Schemes MLflow tracking has a store for (a plain path is a file store too). The databases take a
# driver after a +, as SQLAlchemy URLs do (postgresql+psycopg2://).
TRACKING_SCHEMES = ("file", "sqlite", "http", "https", "databricks")
TRACKING_DATABASES = ("postgresql", "mysql", "mssql")
# What a tracking URI may be, for the fixes of the flag's, the variable's and the file's problems
TRACKING_URI_FORMS = ("a directory (runs/mlruns), file:///PATH, sqlite:///PATH.db, postgresql://, mysql:// or "
                      "mssql:// (+driver allowed), http(s)://HOST:PORT of an MLflow server, or databricks")


def redact(uri: str) -> str:
    """`uri` (or any text quoting one) with passwords replaced by ***, for printing and for files
    in the sweep directory."""
    return re.sub(r"(//[^/:@\s]+):[^/@\s]+@", r"\1:***@", uri)


def tracking_scheme_problem(uri: str) -> str | None:
    """Why MLflow has no tracking store for `uri` (with bogus://x every write fails, the tracker
    only reports those, and a whole sweep ran with nothing recorded); None for a plain path or a
    scheme it has. The one rule for --tracking-uri, $MLFLOW_TRACKING_URI and tracking.uri."""
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", uri)
    if m is None or len(m.group(1)) == 1:  # a plain path (C:\\... is a Windows drive, not a scheme)
        return None
    scheme = m.group(1).lower()
    base, plus, _ = scheme.partition("+")
    if (base in TRACKING_DATABASES) if plus else (scheme in TRACKING_SCHEMES + TRACKING_DATABASES):
        return None
    return f"{redact(uri)!r}: MLflow tracking has no store for the scheme {scheme}:, so nothing would be recorded"


@dataclass
class TrackingConfig:
    """Where MLflow records the sweep."""

    experiment: str = "dnasweep"  # MLflow experiment name
    uri: str | None = None  # tracking URI (http://host:5000, sqlite:///path); null: SWEEP/mlflow.db

    def problems(self) -> list[Problem]:
        # A space file is copied into SWEEP/space.json, MLflow params and git: no secrets in it.
        if self.uri and redact(self.uri) != self.uri:
            return [Problem("tracking.uri", "holds a password (user:password@host); credentials never go in a "
                            "space file", "drop the user:password@ part and export MLFLOW_TRACKING_USERNAME / "
                            "MLFLOW_TRACKING_PASSWORD instead")]
        p = [] if self.experiment else [Problem("tracking.experiment", "must be a name", "e.g. dnasweep-lm")]
        if self.uri and (why := tracking_scheme_problem(self.uri)):
            p.append(Problem("tracking.uri", why, f"use {TRACKING_URI_FORMS}; or null for the sweep's own "
                             "SWEEP/mlflow.db"))
        return p


@dataclass
class AnalyzeConfig:
    """Reports on the Pareto-front trials when the sweep ends."""

    front: bool = True  # analyse the Pareto-front trials when the sweep ends
    examples: int | None = field(default=None, metadata=ge(1))  # held-out examples per report (null: the default)


@dataclass
class ReferenceConfig:
    """Dense models trained beside the trials (the base's data, steps, batch, seed; same cluster and
    resources): the frontier a DNA must beat. The ladder is every width x depth; empty: none."""

    d_model: list[int] = field(default_factory=list)  # widths of the ladder (each divisible by base n_heads)
    dense_layers: list[int] = field(default_factory=list)  # dense blocks after the backbone, per rung
    cache: bool = True  # reuse a rung trained before with the same config (ROOT/reference-cache)

    def problems(self) -> list[Problem]:
        p = [Problem(f"reference.{k}", f"must hold numbers >= 1, got {v}") for k, v in
             (("d_model", self.d_model), ("dense_layers", self.dense_layers)) if any(x < 1 for x in v)]
        if bool(self.d_model) != bool(self.dense_layers):
            p.append(Problem("reference", "needs both d_model and dense_layers (the ladder is every pair), or neither",
                             "e.g. reference: {d_model: [64, 128], dense_layers: [1, 3]}"))
        return p


@dataclass
class ObjectiveConfig:
    """One Pareto objective."""

    metric: str = ""  # a metric name of dnasweep.metrics
    mode: Literal["min", "max"] = "min"  # minimise or maximise it


@dataclass
class SweepConfig:
    """A whole search-space file, typed."""

    base: TrialConfig = field(default_factory=TrialConfig)  # the trial every point starts from
    search: dict[str, Any] = field(default_factory=dict)  # dotted path -> search spec (dnasweep.space)
    objectives: list[ObjectiveConfig] = field(default_factory=list)  # Pareto objectives
    constraints: list[str] = field(default_factory=list)  # "metric <= bound" / ">=": infeasible never on the front
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    smoke: dict[str, Any] = field(default_factory=dict)  # overlay of this file applied by --smoke


SECTIONS = [f for f in SweepConfig.__dataclass_fields__]
_FLAT = {"sampler": SamplerConfig, "budget": BudgetConfig, "resources": ResourcesConfig,
         "tracking": TrackingConfig, "analyze": AnalyzeConfig, "reference": ReferenceConfig,
         "scheduler": SchedulerConfig}


def _in_base(q: Problem) -> Problem:
    """A problem of the base trial config keyed as in the space file, its "did you mean" too."""
    return Problem(f"base.{q.key}", q.message, q.fix.replace("did you mean ", "did you mean base.", 1))


def merge_file(a: dict, b: dict) -> dict:
    """`b` merged into the search-space dict `a` as deep_merge does, except that an entry of search:
    (also of the smoke: overlay's) is replaced whole: {choice: [2, 3]} over {int: [2, 6], when: ...}
    is that choice, not a mix of both."""
    out = dict(a)
    for k, v in b.items():
        old = out.get(k)
        if isinstance(v, dict) and isinstance(old, dict):
            out[k] = {**old, **v} if k == "search" else merge_file(old, v) if k == "smoke" else deep_merge(old, v)
        else:
            out[k] = v
    return out


_SEARCH_KEY = re.compile(r"^((?:smoke\.)?search)\.(.+)$")


def search_entry(rest: str) -> tuple[str, str]:
    """The search: entry and the option below it that the dotted override key `search.REST` names: the
    longest prefix of REST that is a field of the trial config is the entry (its path holds dots too).
    model.d_model.choice -> (model.d_model, choice); no such field: (REST, '')."""
    parts = rest.split(".")
    for n in range(len(parts), 0, -1):
        typ = leaf_type(TrialConfig, ".".join(parts[:n]))
        if typ is not None and not is_dataclass(typ):
            return ".".join(parts[:n]), ".".join(parts[n:])
    return rest, ""


def apply_overrides(data: dict, overrides: list[str]) -> tuple[dict, list[Problem]]:
    """`key=value` overrides applied to a search-space dict in order (later ones win). One on a
    search: entry (`search.model.d_model={choice: [64]}`) replaces the entry; one on an option of it
    (`search.train.lr.float=[1e-4, 1e-3]`, `search.X.when.Y=[a]`) changes that option only."""
    bad: list[Problem] = []
    for o in overrides:
        key, eq, text = o.partition("=")
        m = _SEARCH_KEY.match(key) if eq else None
        if m is None:
            node, q = parse_overrides([o], SweepConfig)
            bad += q
            data = merge_file(data, node) if not q else data
            if not q and key in ("search", "smoke.search") and text.strip() in ("{}", "{ }"):
                # `search={...}` gives entries again (each replaced whole, the others kept); an empty
                # one merged changed nothing at all, while the user meant no search: it clears, as null does
                if key == "search":
                    data = {**data, "search": node["search"]}
                else:
                    smoke = data["smoke"] if isinstance(data.get("smoke"), dict) else {}
                    data = {**data, "smoke": {**smoke, "search": node["smoke"]["search"]}}
            continue
        try:
            value = yaml_value(text)
        except Exception as e:  # OmegaConf's own errors and yaml.YAMLError from a malformed value
            bad.append(Problem(key, f"cannot parse the override {o!r}: {str(e).splitlines()[0]}",
                               "a search entry is a YAML flow mapping, e.g. "
                               "search.model.d_model='{choice: [64, 128]}'"))
            continue
        entry, option = search_entry(m.group(2))
        if option:  # one option of the entry: the rest of it stays
            smoke = data.get("smoke") if isinstance(data.get("smoke"), dict) else {}
            # the overlay's entry if it has one, else the file's: the overlay replaces an entry whole,
            # so one option set there (smoke.search.train.lr.float=...) keeps the file's log and when
            sections = [data.get("search")] if m.group(1) == "search" else [smoke.get("search"), data.get("search")]
            old = next((s[entry] for s in sections if isinstance(s, dict) and isinstance(s.get(entry), dict)), {})
            head, _, below = option.partition(".")
            # when: maps dotted paths; given whole (search.X.when={...}) it replaces the old conditions
            value = ({**old, "when": value} if option == "when" else
                     deep_merge(old, {head: {below: value}} if below and head == "when" else _nested(option, value)))
        node = {"search": {entry: value}}
        data = merge_file(data, node if m.group(1) == "search" else {"smoke": node})
    return data, bad


def _nested(dotted: str, value: Any) -> dict:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


RUNG_KEYS = ("model.kind", "model.d_model", "model.dense_layers")  # what every reference rung sets itself


def drawn_anyway(cfg: SweepConfig, overrides: list[str]) -> tuple[list[Problem], list[str]]:
    """`base.X=v` on the command line where every trial draws X from search: (an entry without when:):
    no trial trains with v. A problem when v reaches nothing at all; a warning when it reaches only the
    dense reference rungs (they train the base as it is). -> (problems, warnings)"""
    p, notes = [], []
    for o in overrides:
        key, eq, text = o.partition("=")
        path = key.removeprefix("base.")
        spec = cfg.search.get(path) if eq and path != key else None
        if not isinstance(spec, dict) or spec.get("when"):
            continue
        try:
            value = yaml_value(text)
        except Exception:  # malformed: parse_overrides has said so
            continue
        if spec.get("choice") == [value]:  # the search draws exactly this value
            continue
        shown = ", ".join(f"{k}: {v}" for k, v in spec.items())
        entry = f"search.{path}='{{choice: [{text}]}}'"
        if cfg.reference.d_model and cfg.reference.dense_layers and path not in RUNG_KEYS:
            notes.append(f"{o}: every trial draws {path} from search: ({{{shown}}}); only the dense reference "
                         f"rungs train with {text}. To train every trial with it too, set its search entry: {entry}")
        else:
            p.append(Problem(key, f"every trial draws {path} from search: ({{{shown}}}): the value given here "
                             "would never be used", f"to fix {path} at {text} in every trial, set its search "
                             f"entry: {entry} (or remove the entry from the file)"))
    return p, notes


def _bare_metrics(objectives: list, p: list[Problem]) -> list:
    """`objectives: [val/loss, ...]`: each bare name is a problem whose fix is that entry written as a
    mapping with that name (the generic wrong-shape fix, built from ObjectiveConfig's defaults, read
    `{metric: '', mode: min}`, an invalid example). The name is kept, as {metric: name}, so that the
    metric checks still judge it (an unknown name is reported in the same run)."""
    out = []
    for i, o in enumerate(objectives):
        if isinstance(o, str) and o.strip():
            # an unknown name is no example to give: its nearest metric is (the metric check names it too)
            known = [m for m in M.TRIAL_METRICS if M.is_trial_metric(m)]
            ex = o if M.is_trial_metric(o) else next(iter(difflib.get_close_matches(o, known, n=1)), M.VAL_LOSS)
            p.append(Problem(f"objectives[{i}]", f"expected a mapping, got str {o!r}",
                             f"e.g. objectives[{i}]: {{metric: {ex}, mode: min}} (mode: max to maximise it)"))
            o = {"metric": o}
        out.append(o)
    return out


def sweep_sections(data: dict, source: str, overrides: list[str] | None = None, smoke: bool = False,
                   check_base: bool = True) -> tuple[SweepConfig, list[Problem]]:
    """A file's dict -> (SweepConfig, problems). Sections with problems keep their defaults in the
    returned config, so later checks still run on the rest; the caller raises if any problem.
    The overrides apply first (`smoke.*` ones change the overlay); with `smoke`, the overlay is then
    applied to the file and the overrides again on top (a `budget.trials=3` beats the overlay's)."""
    p: list[Problem] = []
    full, bad = apply_overrides(data, overrides or [])
    p += bad
    overlay = full.get("smoke")
    if overlay is not None and not isinstance(overlay, dict):
        p.append(Problem("smoke", f"expected a mapping, got {type(overlay).__name__} {overlay!r}",
                         "an overlay of this file, e.g. smoke: {budget: {trials: 2}}"))
    elif smoke and overlay:
        full, _ = apply_overrides(merge_file(data, overlay), overrides or [])
    data = full
    for k in data:
        if k not in SECTIONS:
            fix = (f"trial settings go under base:, e.g. base.{k}..." if k in TrialConfig.__dataclass_fields__
                   else did_you_mean(k, SECTIONS) or f"known: {', '.join(SECTIONS)}")
            p.append(Problem(str(k), "unknown section", fix))
    cfg = SweepConfig()
    if "base" not in data:
        p.append(Problem("base", "missing", "add a complete trial config under base:"))
    elif not isinstance(data["base"], dict):
        p.append(Problem("base", f"expected a mapping, got {type(data['base']).__name__} {data['base']!r}",
                         "a complete trial config: base: {model: ..., data: ..., train: ...}"))
    elif check_base:
        try:
            cfg.base = build_trial(data["base"], source=source)
        except ConfigError as e:
            p += [_in_base(q) for q in e.problems]
    else:
        cfg.base = build(TrialConfig, data["base"])
    for name in ("search", "objectives", "constraints"):
        want, value = (dict, "mapping") if name == "search" else (list, "list"), data.get(name)
        if value is not None and not isinstance(value, want[0]):
            p.append(Problem(name, f"expected a {want[1]}, got {type(value).__name__} {value!r}",
                             {"search": "e.g. search: {model.d_model: {choice: [64, 128]}}",
                              "objectives": "e.g. [{metric: val/loss, mode: min}]",
                              "constraints": 'e.g. ["params/total <= 2e7"]'}[name]))
        elif value is not None:
            if name == "objectives":
                value = _bare_metrics(value, p)
            setattr(cfg, name, value)
    for name, schema in _FLAT.items():
        given = {} if data.get(name) is None else data[name]  # `budget: []` or `sampler: 0` is no default
        q = schema_problems(given, schema, name)
        if isinstance(given, dict):  # the keys that passed keep their values; the rest their defaults
            bad = {x.key for x in q}
            section = build(schema, {k: v for k, v in given.items() if f"{name}.{k}" not in bad})
            # the fields' declared rules, then the section's own (those with rules beyond them). A
            # rule on a dropped key, or on the whole section once one is dropped, would judge a default.
            own = section.problems() if hasattr(section, "problems") else []
            q += field_problems(section, name) + [x for x in own if x.key not in bad and not (bad and x.key == name)]
            setattr(cfg, name, section)
        p += q
    cfg.smoke = overlay if isinstance(overlay, dict) else {}
    said = {q.key for q in p}  # a value already refused is not judged again
    p += [q for q in drawn_anyway(cfg, overrides or [])[0] if q.key not in said]
    return cfg, p
