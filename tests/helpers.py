"""Small builders shared by tests (imported as `from helpers import ...`; conftest holds fixtures only)."""

import sys
import types

import pytest
import yaml

from dnasweep.data import DataConfig, load_data
from dnasweep.errors import ConfigError
from dnasweep.model import ModelConfig

# Overrides of search_spaces/lm.yaml for a run of a few seconds: a small pool, every module type in it.
TINY_LM = ["model.d_model=32", "model.n_heads=2", "model.seq_len=32", "model.n_steps=2", "model.pool.n_transformer=2",
           "model.pool.n_attention=1", "model.pool.n_mlp=1", "model.pool.n_identity=1", "train.batch_size=4",
           "data.max_bytes=300000", "train.eval_batches=2", "train.warmup_steps=2"]


def tiny_cfg(task: str = "lm", router: str = "topk", **kw) -> ModelConfig:
    """A small, fast model config; keyword args override top-level fields."""
    cfg = ModelConfig(task=task, d_model=32, n_heads=4, seq_len=24, n_steps=3)
    cfg.router.type = router
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def raises(cfg: DataConfig, task: str = "lm") -> ConfigError:
    """The ConfigError that loading `cfg` for `task` raises (from the data layer)."""
    with pytest.raises(ConfigError) as e:
        load_data(cfg, task)
    assert e.value.source == "data"
    return e.value


def fake_datasets(monkeypatch, records=None, error=None):
    """A stand-in `datasets` module: load_dataset returns `records` or raises `error`."""
    def load_dataset(name, config=None, split="train", streaming=False):
        if error:
            raise error
        return records
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))


class FakeImageDataset:
    """Stand-in for a datasets.Dataset of `rows` (dicts of PIL images and int labels) with a
    ClassLabel column `label` named `names`."""

    def __init__(self, rows: list[dict], names: list[str]):
        self.rows, self.column_names = rows, list(rows[0])
        self.features = {"label": types.SimpleNamespace(names=names)}

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, k):
        return [r[k] for r in self.rows] if isinstance(k, str) else self.rows[k]

    def select(self, idx):
        return [self.rows[i] for i in idx]


# A valid search space to break one section at a time (`search:` makes `dnasweep validate` read it as one).
VALID_SPACE = {"base": {"model": {"d_model": 32}}, "search": {"train.lr": {"float": [1.0e-3, 1.0e-2], "log": True}},
               "objectives": [{"metric": "val/loss", "mode": "min"}]}


def write_yaml(tmp_path, content) -> str:
    """`content` (YAML text, or a dict dumped in order) as TMP/space.yaml; its path."""
    f = tmp_path / "space.yaml"
    f.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return str(f)
