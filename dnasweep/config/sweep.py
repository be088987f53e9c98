"""The typed sweep config: one search-space file = one complete, runnable sweep.

    base:        a complete trial config (trainable alone with `dnasweep train`)
    search:      dotted path -> {choice: [...]} | {int: [lo, hi]} | {float: [lo, hi], log: bool},
                 optional `when: {other.path: [values]}` (parsed by dnasweep.space)
    objectives:  [{metric: val/loss, mode: min}, ...]
    constraints: ["params/total <= 2e7", ...]
    sampler, budget, resources, tracking, analyze: the sections below
    smoke:       an overlay of this file applied by --smoke

`sweep_sections` turns a file's dict (smoke overlay and overrides applied) into typed sections,
collecting every problem; the search entries, objectives' metrics and constraints are judged by
dnasweep.space, which knows the trial schema and the metrics.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from dnasweep.config.load import build, deep_merge, did_you_mean, parse_overrides, schema_problems
from dnasweep.config.trial import TrialConfig, build_trial
from dnasweep.errors import ConfigError, Problem

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


def _at_least(p: list[Problem], key: str, value, low, fix: str = "") -> None:
    if value is not None and value < low:
        p.append(Problem(key, f"must be {'an integer' if isinstance(low, int) else 'a number'} >= {low}, "
                         f"got {value!r}", fix))


@dataclass
class SamplerConfig:
    """Which Optuna sampler picks the trials."""

    type: str = "tpe"  # one of SAMPLERS: tpe (default) | nsga2 | nsga3 | gp | random
    seed: int = 0  # seeds the sampler: the same file and seed pick the same trials
    startup_trials: int = 4  # random trials before tpe / gp start modelling

    def problems(self) -> list[Problem]:
        p = [] if self.type in SAMPLERS else [Problem("sampler.type", f"unknown sampler {self.type!r}",
                                                      f"use one of: {', '.join(SAMPLERS)}")]
        _at_least(p, "sampler.seed", self.seed, 0)
        _at_least(p, "sampler.startup_trials", self.startup_trials, 0)
        return p


@dataclass
class BudgetConfig:
    """How many trials, how many at once, how often a dying worker is restarted."""

    trials: int = 8  # trials to finish (complete or failed)
    concurrent: int = 2  # trials running at once
    retries: int = 2  # restarts (from its checkpoint) of a trial whose worker process died

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        _at_least(p, "budget.trials", self.trials, 1)
        _at_least(p, "budget.concurrent", self.concurrent, 1)
        _at_least(p, "budget.retries", self.retries, 0, "restarts of a trial whose worker process died")
        return p


@dataclass
class ResourcesConfig:
    """What one trial reserves on a node (fractions allowed: gpu 0.25 packs four trials per GPU)."""

    cpu: float = 1.0  # CPUs per trial
    gpu: float = 0.0  # GPUs per trial
    memory_gb: float | None = None  # host memory per trial, reserved in Ray and enforced (over it: OOM failure)
    custom: dict[str, float] = field(default_factory=dict)  # custom Ray resources, e.g. {a100: 1}: pins trials

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        if self.cpu <= 0:
            p.append(Problem("resources.cpu", f"must be a number > 0, got {self.cpu!r}"))
        _at_least(p, "resources.gpu", self.gpu, 0.0)
        if self.memory_gb is not None and self.memory_gb <= 0:
            p.append(Problem("resources.memory_gb", f"must be a number > 0 (GiB of host memory per trial) or null, "
                             f"got {self.memory_gb!r}", "a trial that allocates more fails as out of memory; "
                             "null: no limit"))
        if any(v <= 0 for v in self.custom.values()):
            p.append(Problem("resources.custom", f"must map Ray resource names to amounts > 0, got {self.custom!r}",
                             'e.g. custom: {a100: 1} for nodes started with --resources=\'{"a100": 1}\''))
        return p


@dataclass
class TrackingConfig:
    """Where MLflow records the sweep."""

    experiment: str = "dnasweep"  # MLflow experiment name
    uri: str | None = None  # tracking URI (http://host:5000, sqlite:///path); null: SWEEP/mlflow.db

    def problems(self) -> list[Problem]:
        # A space file is copied into SWEEP/space.json, MLflow params and git: no secrets in it.
        if self.uri and re.search(r"//[^/:@\s]+:[^/@\s]+@", self.uri):
            return [Problem("tracking.uri", "holds a password (user:password@host); credentials never go in a "
                            "space file", "drop the user:password@ part and export MLFLOW_TRACKING_USERNAME / "
                            "MLFLOW_TRACKING_PASSWORD instead")]
        return [] if self.experiment else [Problem("tracking.experiment", "must be a name", "e.g. dnasweep-lm")]


@dataclass
class AnalyzeConfig:
    """Reports on the Pareto-front trials when the sweep ends."""

    front: bool = True  # analyse the Pareto-front trials when the sweep ends
    examples: int | None = None  # held-out sequences/images per report (null: the analyzer's default)

    def problems(self) -> list[Problem]:
        p: list[Problem] = []
        _at_least(p, "analyze.examples", self.examples, 1)
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
    smoke: dict[str, Any] = field(default_factory=dict)  # overlay of this file applied by --smoke


SECTIONS = [f for f in SweepConfig.__dataclass_fields__]
_FLAT = {"sampler": SamplerConfig, "budget": BudgetConfig, "resources": ResourcesConfig,
         "tracking": TrackingConfig, "analyze": AnalyzeConfig}


def _in_base(q: Problem) -> Problem:
    """A problem of the base trial config keyed as in the space file, its "did you mean" too."""
    return Problem(f"base.{q.key}", q.message, q.fix.replace("did you mean ", "did you mean base.", 1))


def sweep_sections(data: dict, source: str, overrides: list[str] | None = None, smoke: bool = False,
                   check_base: bool = True) -> tuple[SweepConfig, list[Problem]]:
    """A file's dict -> (SweepConfig, problems). Sections with problems keep their defaults in the
    returned config, so later checks still run on the rest; the caller raises if any problem."""
    p: list[Problem] = []
    overlay = data.get("smoke")
    if overlay is not None and not isinstance(overlay, dict):
        p.append(Problem("smoke", f"expected a mapping, got {type(overlay).__name__} {overlay!r}",
                         "an overlay of this file, e.g. smoke: {budget: {trials: 2}}"))
    elif smoke and overlay:
        data = deep_merge(data, overlay)
    over, bad = parse_overrides(overrides or [])
    p += bad
    data = deep_merge(data, over)
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
            setattr(cfg, name, value)
    for name, schema in _FLAT.items():
        given = data.get(name) or {}
        q = schema_problems(given, schema, name)
        if isinstance(given, dict):  # the keys that passed keep their values; the rest their defaults
            bad = {x.key for x in q}
            section = build(schema, {k: v for k, v in given.items() if f"{name}.{k}" not in bad})
            q += section.problems()
            setattr(cfg, name, section)
        p += q
    cfg.smoke = overlay if isinstance(overlay, dict) else {}
    return cfg, p
