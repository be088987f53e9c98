"""The trial config (model + data + train + loss): everything one training run needs, loaded from
YAML with overrides through `dnasweep.config.load`, with every problem reported at once."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass

from omegaconf import OmegaConf

from dnasweep.config.load import (
    build,
    deep_merge,
    from_command_line,
    leaf_type,
    parse_overrides,
    read_yaml,
    schema_problems,
)
from dnasweep.config.train import TrainConfig, train_problems
from dnasweep.data.config import DataConfig, check_data, known_shape
from dnasweep.errors import ConfigError, Problem, field_problems, raise_if
from dnasweep.model.config import ModelConfig
from dnasweep.model.config import problems as model_problems
from dnasweep.model.loss import LossConfig, loss_problems


@dataclass
class TrialConfig:
    """Everything one training run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)  # the architecture (DNA or dense)
    data: DataConfig = field(default_factory=DataConfig)  # corpus or image set
    train: TrainConfig = field(default_factory=TrainConfig)  # optimiser, budget, evaluation, device
    loss: LossConfig = field(default_factory=LossConfig)  # weights of the auxiliary loss terms
    out_dir: str = "runs/trial"  # where metrics.jsonl, checkpoints and the resolved config go


def tokens_per_step(cfg: TrialConfig) -> int:
    """Tokens (or patches) one optimizer step trains on: batch x grad_accum x tokens per example."""
    return cfg.train.batch_size * cfg.train.grad_accum * cfg.model.tokens_per_example


def planned_steps(cfg: TrialConfig) -> int:
    """The optimizer steps `cfg` trains: train.max_steps, or fewer when train.max_tokens ends it first.
    The one rule the training loop stops by and the scheduler's rungs are placed below."""
    t = cfg.train
    return min(t.max_steps, math.ceil(t.max_tokens / tokens_per_step(cfg))) if t.max_tokens else t.max_steps


def fit_problems(m: ModelConfig, vocab: int | None, image_shape: tuple[int, int, int] | None,
                 n_classes: int | None) -> list[Problem]:
    """The data must fit the model's input: its vocabulary, image shape (C, H, W) and classes
    (None: not known yet; the training loop checks again on the loaded data)."""
    p = []
    if m.task == "lm" and vocab is not None and vocab > m.vocab_size:
        p.append(Problem("model.vocab_size", f"the data has token ids up to {vocab - 1} but "
                         f"model.vocab_size={m.vocab_size}", f"set model.vocab_size={vocab}"))
    if m.task == "vision" and image_shape is not None:
        c, h, w = image_shape
        if (c, h, w) != (m.channels, m.image_size, m.image_size):
            p.append(Problem("model.image_size", f"the data's images are {c}x{h}x{w} (CxHxW) but the model "
                             f"expects {m.channels}x{m.image_size}x{m.image_size}",
                             f"set model.channels={c} model.image_size={h}" + (
                                 "" if h == w else " and data.image_size to make them square")))
    if m.task == "vision" and n_classes is not None and n_classes > m.n_classes:
        p.append(Problem("model.n_classes", f"the data has {n_classes} classes but model.n_classes={m.n_classes}",
                         f"set model.n_classes={n_classes}"))
    return p


def trial_problems(cfg: TrialConfig) -> list[Problem]:
    """Every semantic problem of a typed trial config (ranges, combinations, data paths, and the
    model against the data where the source fixes its shape)."""
    data = check_data(cfg.data, cfg.model.task)
    fit = [] if data else fit_problems(cfg.model, *known_shape(cfg.data, cfg.model.task))
    return model_problems(cfg.model) + data + fit + train_problems(cfg.train) + loss_problems(cfg.loss)


def _without(node: dict, keys: set[str], prefix: str = "") -> dict:
    """`node` less the dotted `keys`, so that the rest builds (the dropped keys take their defaults)."""
    return {k: _without(v, keys, f"{prefix}{k}.") if isinstance(v, dict) else v
            for k, v in node.items() if f"{prefix}{k}" not in keys}


def _bounds(cfg, prefix: str) -> list[Problem]:
    """The per-field rules of `cfg` and of every config nested in it: they judge one value each."""
    out = field_problems(cfg, prefix)
    for f in fields(cfg):
        if is_dataclass(v := getattr(cfg, f.name)):
            out += _bounds(v, f"{prefix}.{f.name}")
    return out


def _rule_problems(cfg: TrialConfig, dropped: set[str]) -> list[Problem]:
    """trial_problems of a config built without the `dropped` keys. A section that lost the value of
    a field keeps only its per-field rules: its other rules would judge a default the user never
    wrote (an unknown key changes no value). The data rules depend on model.task, so a dropped
    model.task (or model) silences them too."""
    lost = {k for k in dropped if leaf_type(TrialConfig, k) is not None}
    broken = {k.split(".")[0] for k in lost} | ({"data"} if {"model", "model.task"} & lost else set())
    bounds = [q for f in fields(cfg) if f.name in broken and is_dataclass(v := getattr(cfg, f.name))
              for q in _bounds(v, f.name)]
    return [q for q in trial_problems(cfg) if q.key.split(".")[0] not in broken or q in bounds]


def build_trial(data: dict, overrides: list[str] | None = None, source: str = "config") -> TrialConfig:
    """Plain dict (+ dotted overrides) -> validated TrialConfig, or ConfigError with every problem:
    the schema's (unknown keys, wrong types) and, on the rest, the rules' at once."""
    over, problems = parse_overrides(overrides or [], TrialConfig)
    merged = deep_merge(data, over)
    schema = schema_problems(merged, TrialConfig, "")
    dropped = {q.key for q in schema}
    cfg: TrialConfig = build(TrialConfig, _without(merged, dropped))
    raise_if(from_command_line(problems + schema + _rule_problems(cfg, dropped), overrides), source)
    return cfg


def load_trial(path: str, overrides: list[str] | None = None) -> TrialConfig:
    """A trial config from a trial YAML or a search-space YAML (its `base:`), with overrides."""
    data = read_yaml(path)
    if "base" not in data and "search" not in data:
        return build_trial(data, overrides, source=path)
    # A space's trial is its base: only. Trial settings beside it (model: at the top level) were
    # ignored, and the defaults trained with exit 0 while `validate` refused the file: the same
    # problem as the space's own section check (dnasweep.config.sweep.sweep_sections), at once.
    outside = [Problem(str(k), "unknown section", f"trial settings go under base:, e.g. base.{k}...")
               for k in data if k in TrialConfig.__dataclass_fields__]
    data = {} if data.get("base") is None else data["base"]  # `base:` left empty: the defaults
    if not isinstance(data, dict):
        raise ConfigError([*outside, Problem("base", f"expected a mapping, got {type(data).__name__} {data!r}",
                                   "a complete trial config: base: {model: ..., data: ..., train: ...}")], path)
    # The trial is the base itself, so its overrides are keyed below base: (train.max_steps=3). One
    # written as in the space file (base.train.max_steps=3) named an unknown key 'base' instead.
    prefixed = [o for o in overrides or [] if o.partition("=")[0].startswith("base.")]
    p = outside + [Problem(o.partition("=")[0], f"{path} is a search space, and its base: is the trial trained "
                           f"here, so override keys are relative to base: (set on the command line: {o})",
                           f"drop the base. prefix: {o.removeprefix('base.')}") for o in prefixed]
    try:
        cfg = build_trial(data, [o for o in overrides or [] if o not in prefixed], source=path)
    except ConfigError as e:
        raise ConfigError(p + e.problems, path) from None
    raise_if(p, path)
    return cfg


def to_dict(cfg: TrialConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def to_yaml(cfg: TrialConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
