"""Data for dnasweep runs: corpora and image sets, their validation, samplers and val batches.

`load_data(cfg, task)` is the one entry point a run uses: it validates the whole DataConfig,
raising one ConfigError with every problem found, and loads everything (downloads included)
before training starts, so bad input never fails a run midway.
"""

from __future__ import annotations

import importlib

from dnasweep.data.config import DataConfig, check_data
from dnasweep.data.lm import LMData
from dnasweep.data.pystdlib import cache_dir
from dnasweep.data.sampler import LMSampler, VisionSampler, lm_val_batches, normalize, vision_val_batches
from dnasweep.data.sources import SOURCES, Source, get_source, register_source, source_names
from dnasweep.data.vision import VisionData
from dnasweep.errors import raise_if

__all__ = [
    "SOURCES", "DataConfig", "LMData", "LMSampler", "Source", "VisionData", "VisionSampler", "cache_dir",
    "check_data", "get_source", "lm_val_batches", "load_data", "normalize", "register_source",
    "source_names", "vision_val_batches",
]


def load_data(cfg: DataConfig, task: str) -> LMData | VisionData:
    """The data of `cfg` for `task` ("lm" | "vision"); ConfigError (source "data") on bad input."""
    raise_if(check_data(cfg, task), "data")
    # Imported now: heavy or optional imports (sklearn, Pillow, datasets) stay inside the loaders.
    module, _, function = get_source(task, cfg.source).loader.partition(":")
    return getattr(importlib.import_module(module), function)(cfg)
