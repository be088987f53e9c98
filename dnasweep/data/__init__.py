"""Data for dnasweep runs: corpora and image sets, their validation, samplers and val batches.

`load_data(cfg, task)` is the one entry point a run uses: it validates the whole DataConfig,
raising one ConfigError with every problem found, and loads everything (downloads included)
before training starts, so bad input never fails a run midway.

Names load lazily (PEP 562 `__getattr__`): `dnasweep.data.config` is torch-free and importing it
runs this file, so the samplers (torch) load with the first name that needs them, not with every
config check (`dnasweep validate`, `pareto`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dnasweep.data.config import DataConfig, check_data
from dnasweep.data.sources import SOURCES, Source, get_source, register_source, source_names
from dnasweep.errors import raise_if
from dnasweep.lazy import exports

if TYPE_CHECKING:
    from dnasweep.data.lm import LMData
    from dnasweep.data.vision import VisionData

# name -> the module that defines it (the ones that import torch or numpy)
_LAZY = {"LMData": "dnasweep.data.lm", "VisionData": "dnasweep.data.vision", "cache_dir": "dnasweep.data.pystdlib",
         **dict.fromkeys(("LMSampler", "VisionSampler", "lm_val_batches", "normalize", "vision_val_batches"),
                         "dnasweep.data.sampler")}

__all__ = [
    "SOURCES", "DataConfig", "LMData", "LMSampler", "Source", "VisionData", "VisionSampler", "cache_dir",
    "check_data", "get_source", "lm_val_batches", "load_data", "normalize", "register_source",
    "source_names", "vision_val_batches",
]


__getattr__, __dir__ = exports(globals(), _LAZY)


def load_data(cfg: DataConfig, task: str) -> LMData | VisionData:
    """The data of `cfg` for `task` ("lm" | "vision"); ConfigError (source "data") on bad input."""
    raise_if(check_data(cfg, task), "data")
    # Imported now: heavy or optional imports (sklearn, Pillow, datasets) stay inside the loaders.
    module, _, function = get_source(task, cfg.source).loader.partition(":")
    return getattr(importlib.import_module(module), function)(cfg)
