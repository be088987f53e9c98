"""The data section of a run config (`DataConfig`) and its cheap validation (`check_data`).

`check_data` owns every check that needs no corpus read: it looks at field values, whether
paths exist and hold any data (file sizes, one matching file in a folder), and whether optional
packages are importable. Checks that need the data itself (token ids, UTF-8, image sizes,
labels) live in the loaders and are raised by `load_data`.
"""

# No `from __future__ import annotations` here: OmegaConf reads these annotations at runtime.
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from dnasweep.errors import Problem

LM_SOURCES = ("pystdlib", "text", "tokens", "hf")
VISION_SOURCES = ("digits", "npz", "folder", "hf")
TASKS = ("lm", "vision")
TOKEN_DTYPES = ("uint16", "uint32")
TOKEN_SUFFIXES = (".bin", ".npy")
# Sources whose corpus is raw UTF-8 bytes: the vocabulary is the 256 byte values.
BYTE_SOURCES = ("pystdlib", "text", "hf")
_NEEDS_PATH = {"text", "tokens", "npz", "folder"}
# Suffixes read from a text folder: anything else (e.g. __pycache__/*.pyc, images) is skipped.
TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst", ".py", ".json", ".jsonl", ".csv", ".tsv",
                 ".html", ".xml", ".tex", ".c", ".h")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
HF_FIX = "pip install 'dnasweep[hf]'"
IMAGES_FIX = "pip install 'dnasweep[images]'"


@dataclass
class DataConfig:
    """Which corpus or image set a run trains on, and how it is split and capped."""

    source: str = "pystdlib"  # lm: pystdlib | text | tokens | hf ; vision: digits | npz | folder | hf
    path: str | None = None  # file or folder for text / tokens / npz / folder
    name: str | None = None  # Hugging Face dataset name, "NAME" or "NAME:CONFIG" (source: hf)
    field: str = "text"  # text field of each record (LM hf)
    image_field: str = "image"  # image field of each record (vision hf)
    label_field: str = "label"  # integer label field of each record (vision hf)
    vocab_size: int | None = None  # required for source: tokens (ids must be < vocab_size)
    dtype: str = "uint16"  # token dtype of a raw .bin file (uint16 | uint32); .npy carries its own
    val_fraction: float = 0.1  # held-out share (by file for pystdlib/text folders; stratified for vision)
    image_size: int | None = None  # resize folder/hf images to this square size (None: must all match)
    max_bytes: int | None = None  # cap on corpus bytes read (fast smoke runs); None = all
    seed: int = 0  # seed of the split and of the batch sampler


def has_module(name: str) -> bool:
    """True when `name` can be imported (already imported counts, even without a spec)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def resolve(path: str) -> Path:
    """The user's path with `~` expanded (relative paths stay relative to the cwd)."""
    return Path(os.path.expanduser(path))


# Field -> accepted Python types. bool is excluded from ints/floats explicitly below, since
# `True` is an int to isinstance and would otherwise pass as vocab_size=1.
_TYPES: dict[str, tuple[type, ...]] = {
    "source": (str,),
    "path": (str, type(None)),
    "name": (str, type(None)),
    "field": (str,),
    "image_field": (str,),
    "label_field": (str,),
    "vocab_size": (int, type(None)),
    "dtype": (str,),
    "val_fraction": (float, int),
    "image_size": (int, type(None)),
    "max_bytes": (int, type(None)),
    "seed": (int,),
}


def _type_problems(cfg) -> tuple[list[Problem], set[str]]:
    """Type checks for a plain dataclass built in code (OmegaConf already enforces types)."""
    problems, bad = [], set()
    for key, types in _TYPES.items():
        value = getattr(cfg, key, None)
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            problems.append(Problem(f"data.{key}", f"must be {names}, got {value!r}"))
            bad.add(key)
    return problems, bad


def _holds_data(root: Path, suffixes: tuple[str, ...]) -> bool:
    """True when `root` holds a non-empty, non-hidden file with one of `suffixes` (as the loaders
    read them). Stops at the first one, so a large folder costs a few stat calls, not a walk."""
    return any(p.suffix.lower() in suffixes and not any(s.startswith(".") for s in p.relative_to(root).parts)
               and p.is_file() and p.stat().st_size > 0 for p in root.rglob("*"))


def _empty_problems(p: Path, source: str) -> list[Problem]:
    """An existing path of the right kind that holds nothing to train on. Caught here, not by the
    loader, so a sweep refuses it before any trial starts (a loader runs inside each trial)."""
    if p.is_file() and p.stat().st_size == 0:
        return [Problem("data.path", f"{p} is empty (0 bytes; source {source!r})", "give a file with data in it")]
    if source == "text" and p.is_dir() and not _holds_data(p, TEXT_SUFFIXES):
        return [Problem("data.path", f"folder {p} holds no text files with any text in them "
                        f"({', '.join('*' + s for s in TEXT_SUFFIXES)})",
                        "point data.path at a folder of such files, or at one file")]
    if source == "folder" and not _holds_data(p, IMAGE_SUFFIXES):
        return [Problem("data.path", f"folder {p} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                        "lay out images as PATH/<class name>/<image file>")]
    return []


def _path_problems(cfg, source: str) -> list[Problem]:
    """Is the path given, present and of the right kind (file / folder / suffix) for `source`."""
    if source not in _NEEDS_PATH:
        return []
    if not cfg.path:
        return [Problem("data.path", f"source {source!r} needs a path, but none is given",
                        "set data.path to the file or folder to read")]
    p = resolve(cfg.path)
    if not p.exists():
        return [Problem("data.path", f"{p} does not exist (source {source!r})",
                        "check the spelling, or give an absolute path")]
    if source == "folder" and not p.is_dir():
        return [Problem("data.path", f"{p} is not a folder (source 'folder' wants one subfolder "
                        "per class)", "point data.path at the folder that holds the class folders")]
    if source in ("tokens", "npz") and not p.is_file():
        return [Problem("data.path", f"{p} is not a file (source {source!r})", "give the file itself")]
    if source == "tokens" and p.suffix not in TOKEN_SUFFIXES:
        return [Problem("data.path", f"{p} has suffix {p.suffix!r}; source 'tokens' reads "
                        ".bin (raw ids, data.dtype) or .npy", "save the ids as .bin or .npy")]
    if source == "npz" and p.suffix != ".npz":
        return [Problem("data.path", f"{p} has suffix {p.suffix!r}, not .npz",
                        "save with np.savez(path, images=..., labels=...)")]
    return _empty_problems(p, source)


def _vocab_problems(cfg, source: str | None) -> list[Problem]:
    """vocab_size: required for tokens, >= 256 for byte sources, representable in a .bin dtype."""
    v = cfg.vocab_size
    if source == "tokens" and v is None:
        return [Problem("data.vocab_size", "source 'tokens' needs vocab_size (every id must be "
                        "< vocab_size), but none is given", "set it to the tokenizer's vocabulary size")]
    if v is not None and source in BYTE_SOURCES and v < 256:
        return [Problem("data.vocab_size", f"is {v}, below 256 for byte-level source {source!r}",
                        "leave it unset (256)")]
    if v is not None and v < 1:
        return [Problem("data.vocab_size", f"is {v}, must be positive", "use the vocabulary size")]
    if source == "tokens" and cfg.dtype == "uint16" and v > 65536 and str(cfg.path).endswith(".bin"):
        return [Problem("data.dtype", f"is uint16 but vocab_size is {v} (> 65536): ids that large "
                        "do not fit in uint16", "is the file uint32? set data.dtype: uint32")]
    return []


def check_data(cfg: DataConfig, task: str) -> list[Problem]:
    """Every problem of `cfg` for `task` ("lm" | "vision") found without reading the data."""
    problems, bad = _type_problems(cfg)
    if task not in TASKS:
        problems.append(Problem("task", f"unknown task {task!r}", f"use one of: {', '.join(TASKS)}"))
        return problems
    allowed = LM_SOURCES if task == "lm" else VISION_SOURCES
    source = cfg.source if "source" not in bad else None
    if source is not None and source not in allowed:
        problems.append(Problem("data.source", f"unknown source {source!r} for task {task!r}",
                                f"use one of: {', '.join(allowed)}"))
        source = None
    if "path" not in bad and source is not None:
        problems += _path_problems(cfg, source)
    if source == "hf":
        if "name" not in bad and not cfg.name:
            problems.append(Problem("data.name", "source 'hf' needs a dataset name, but none is given",
                                    "set data.name, e.g. 'roneneldan/TinyStories' or 'NAME:CONFIG'"))
        if not has_module("datasets"):
            problems.append(Problem("data.source", "source 'hf' needs the Hugging Face `datasets` "
                                    "package, which is not installed", HF_FIX))
    if task == "vision" and source in ("folder", "hf") and not has_module("PIL"):
        problems.append(Problem("data.source", f"source {source!r} decodes images with Pillow, "
                                "which is not installed", IMAGES_FIX))
    if "vocab_size" not in bad and "dtype" not in bad and task == "lm":
        problems += _vocab_problems(cfg, source)
    if "dtype" not in bad and cfg.dtype not in TOKEN_DTYPES:
        problems.append(Problem("data.dtype", f"unknown token dtype {cfg.dtype!r}",
                                f"use one of: {', '.join(TOKEN_DTYPES)}"))
    if "val_fraction" not in bad and not 0.0 < cfg.val_fraction < 1.0:
        problems.append(Problem("data.val_fraction", f"is {cfg.val_fraction}, outside (0, 1)",
                                "use a held-out share such as 0.1"))
    if "seed" not in bad and cfg.seed < 0:
        problems.append(Problem("data.seed", f"is {cfg.seed}, must be >= 0", "use e.g. 0"))
    for key in ("image_size", "max_bytes"):
        value = getattr(cfg, key)
        if key not in bad and value is not None and value <= 0:
            problems.append(Problem(f"data.{key}", f"is {value}, must be positive",
                                    "use a positive number, or leave it unset (None)"))
    for key in ("field", "image_field", "label_field"):
        if key not in bad and source == "hf" and not getattr(cfg, key):
            problems.append(Problem(f"data.{key}", "is empty", "name the record field to read"))
    return problems
