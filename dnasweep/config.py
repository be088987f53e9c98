"""The trial config (model + data + train + loss) and loading it from YAML with overrides.

Loading reports every problem of the file at once, each with the file, the dotted key, the
rule and a fix: unknown keys (with a "did you mean"), wrong types, invalid combinations.
A search-space file (with a `base:` section) loads as its base trial.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dnasweep.data.config import DataConfig, check_data
from dnasweep.errors import ConfigError, Problem
from dnasweep.model.config import ModelConfig
from dnasweep.model.config import problems as model_problems
from dnasweep.model.loss import LossConfig, loss_problems
from dnasweep.train.config import TrainConfig, train_problems


@dataclass
class TrialConfig:
    """Everything one training run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    out_dir: str = "runs/trial"  # where metrics.jsonl, checkpoints and the resolved config go


def _schema_problems(node: Any, schema: Any, prefix: str) -> list[Problem]:
    """Unknown keys and type errors of a plain dict `node` against dataclass `schema`, all of them.

    OmegaConf stops at the first error, so each leaf is merged on its own to collect them all.
    """
    out: list[Problem] = []
    if not isinstance(node, dict):
        return [Problem(prefix or "<root>", f"expected a mapping, got {type(node).__name__} {node!r}")]
    names = {f.name: f for f in fields(schema)}
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            fix = f"did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else \
                f"known keys here: {', '.join(names)}"
            out.append(Problem(dotted, "unknown key", fix))
            continue
        sub = getattr(schema(), key) if isinstance(schema, type) else getattr(schema, key)
        if is_dataclass(sub):
            out += _schema_problems(value, type(sub), dotted)
            continue
        try:
            OmegaConf.merge(OmegaConf.structured(schema), {key: value})
        except OmegaConfBaseException as e:
            msg = str(e).splitlines()[0]
            out.append(Problem(dotted, f"invalid value {value!r}: {msg}",
                               f"expected {names[key].type}".replace("typing.", "")))
    return out


def trial_problems(cfg: TrialConfig) -> list[Problem]:
    """Every semantic problem of a typed trial config (ranges, combinations, data paths)."""
    return (model_problems(cfg.model) + check_data(cfg.data, cfg.model.task)
            + train_problems(cfg.train) + loss_problems(cfg.loss))


def parse_overrides(overrides: list[str]) -> tuple[dict, list[Problem]]:
    """`key=value` strings -> nested dict (values parsed as YAML scalars)."""
    bad = [Problem(o, "override must look like dotted.key=value", "e.g. train.max_steps=200")
           for o in overrides if "=" not in o or o.startswith("=")]
    good = [o for o in overrides if "=" in o and not o.startswith("=")]
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(good)), bad
    except Exception as e:  # OmegaConf's own errors and yaml.YAMLError from a malformed value
        return {}, bad + [Problem("overrides", f"cannot parse {good}: {str(e).splitlines()[0]}",
                                  "values are YAML scalars or flow lists, e.g. key=3e-4 or key=[1,2]")]


def _yaml_message(e: Exception) -> str:
    """'line L, column C: what went wrong' of a YAML error. PyYAML's own first line ("while
    parsing a flow mapping") names no line; its marks do (counted from 0)."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or not problem:  # OmegaConf's own errors (e.g. a bad ${...}) carry no mark
        return str(e).splitlines()[0]
    msg = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    return msg + (f" ({context} from line {start.line + 1})" if context and start else "")


def read_yaml(path: str) -> dict:
    """A YAML file as a plain dict; a missing file or malformed YAML is a ConfigError."""
    if not os.path.isfile(path):
        raise ConfigError([Problem("<file>", f"no such file: {path}", "check the path")], source=path)
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as e:  # yaml.YAMLError and OmegaConf's own: both mean "not valid YAML"
        raise ConfigError([Problem("<file>", f"not valid YAML: {_yaml_message(e)}",
                                   "fix the syntax there (indent with spaces, not tabs; a colon after "
                                   "each key; close brackets and quotes)")], source=path) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem("<root>", f"expected a mapping, got {type(data).__name__}")], source=path)
    return data


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dict -> {"a.b.c": leaf}."""
    out = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_trial(data: dict, overrides: list[str] | None = None, source: str = "config") -> TrialConfig:
    """Plain dict (+ dotted overrides) -> validated TrialConfig, or ConfigError with every problem."""
    over, problems = parse_overrides(overrides or [])
    merged = _deep_merge(data, over)
    problems += _schema_problems(merged, TrialConfig, "")
    if problems:
        raise ConfigError(problems, source)
    cfg: TrialConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrialConfig), merged))
    problems = trial_problems(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def load_trial(path: str, overrides: list[str] | None = None) -> TrialConfig:
    """A trial config from a trial YAML or a search-space YAML (its `base:`), with overrides."""
    data = read_yaml(path)
    if "base" in data or "search" in data:
        data = data.get("base") or {}
    return build_trial(data, overrides, source=path)


def to_yaml(cfg: TrialConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
