"""The trial config (model + data + train + loss): everything one training run needs, loaded from
YAML with overrides through `dnasweep.config.load`, with every problem reported at once."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf

from dnasweep.config.load import build, deep_merge, parse_overrides, read_yaml, schema_problems
from dnasweep.config.train import TrainConfig, train_problems
from dnasweep.data.config import DataConfig, check_data
from dnasweep.errors import Problem, raise_if
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


def trial_problems(cfg: TrialConfig) -> list[Problem]:
    """Every semantic problem of a typed trial config (ranges, combinations, data paths)."""
    return (model_problems(cfg.model) + check_data(cfg.data, cfg.model.task)
            + train_problems(cfg.train) + loss_problems(cfg.loss))


def build_trial(data: dict, overrides: list[str] | None = None, source: str = "config") -> TrialConfig:
    """Plain dict (+ dotted overrides) -> validated TrialConfig, or ConfigError with every problem."""
    over, problems = parse_overrides(overrides or [])
    merged = deep_merge(data, over)
    raise_if(problems + schema_problems(merged, TrialConfig, ""), source)
    cfg: TrialConfig = build(TrialConfig, merged)
    raise_if(trial_problems(cfg), source)
    return cfg


def load_trial(path: str, overrides: list[str] | None = None) -> TrialConfig:
    """A trial config from a trial YAML or a search-space YAML (its `base:`), with overrides."""
    data = read_yaml(path)
    if "base" in data or "search" in data:
        data = data.get("base") or {}
    return build_trial(data, overrides, source=path)


def to_dict(cfg: TrialConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def to_yaml(cfg: TrialConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
