"""Data for dnasweep runs: corpora and image sets, their validation, samplers and val batches.

`load_data(cfg, task)` is the one entry point a run uses: it validates the whole DataConfig,
raising one ConfigError with every problem found, and loads everything (downloads included)
before training starts, so bad input never fails a run midway.
"""

from __future__ import annotations

from dnasweep.data import images, lm, pystdlib, vision
from dnasweep.data.config import LM_SOURCES, VISION_SOURCES, DataConfig, check_data
from dnasweep.data.lm import LMData
from dnasweep.data.pystdlib import cache_dir
from dnasweep.data.sampler import LMSampler, VisionSampler, lm_val_batches, normalize, vision_val_batches
from dnasweep.data.vision import VisionData
from dnasweep.errors import raise_if

__all__ = [
    "LM_SOURCES", "VISION_SOURCES", "DataConfig", "LMData", "LMSampler", "VisionData",
    "VisionSampler", "cache_dir", "check_data", "lm_val_batches", "load_data", "normalize",
    "vision_val_batches",
]


def load_data(cfg: DataConfig, task: str) -> LMData | VisionData:
    """The data of `cfg` for `task` ("lm" | "vision"); ConfigError (source "data") on bad input."""
    raise_if(check_data(cfg, task), "data")
    # Heavy or optional imports (sklearn, Pillow, datasets) happen inside the loader that needs them.
    if task == "lm":
        loaders = {"pystdlib": pystdlib.load_pystdlib, "text": lm.load_text,
                   "tokens": lm.load_tokens, "hf": lm.load_hf_text}
    else:
        loaders = {"digits": vision.load_digits, "npz": vision.load_npz,
                   "folder": images.load_folder, "hf": images.load_hf_images}
    return loaders[cfg.source](cfg)
