"""The data section of a run config (`DataConfig`) and its cheap validation (`check_data`).

`check_data` owns every check that needs no corpus read: it looks at field values, whether
paths exist and hold any data (file sizes, one matching file in a folder), and whether optional
packages are importable. Checks that need the data itself (token ids, UTF-8, image sizes,
labels) live in the loaders and are raised by `load_data`.
"""

# No `from __future__ import annotations` here: OmegaConf reads these annotations at runtime.
# dataclasses.field in full: DataConfig has a field named `field`.
import dataclasses
import importlib.util
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dnasweep.data.sources import TASKS, Source, get_source, source_names
from dnasweep.errors import Problem, field_problems, ge, gt, type_hints

# Optional module a source requires -> (what it is, in messages; how to install it).
_EXTRAS = {"datasets": ("the Hugging Face `datasets` package", "pip install 'dnasweep[hf]'"),
           "PIL": ("Pillow", "pip install 'dnasweep[images]'")}


@dataclass
class DataConfig:
    """Which corpus or image set a run trains on, and how it is split and capped."""

    source: str = "pystdlib"  # a source registered for the task (dnasweep.data.sources)
    path: str | None = None  # file or folder read by sources that need one
    name: str | None = None  # Hugging Face dataset name, "NAME" or "NAME:CONFIG" (source: hf)
    field: str = "text"  # text field of each record (LM hf)
    image_field: str = "image"  # image field of each record (vision hf)
    label_field: str = "label"  # integer label field of each record (vision hf)
    vocab_size: int | None = dataclasses.field(default=None, metadata=gt(0))  # required by source tokens (ids < it)
    dtype: Literal["uint16", "uint32"] = "uint16"  # token dtype of a raw .bin file; .npy carries its own
    val_fraction: float = dataclasses.field(default=0.1, metadata=gt(0, below=1))  # held-out share
    image_size: int | None = dataclasses.field(default=None, metadata=gt(0))  # resize images to this square
    max_bytes: int | None = dataclasses.field(default=None, metadata=gt(0))  # cap on corpus bytes read; None: all
    seed: int = dataclasses.field(default=0, metadata=ge(0))  # seed of the train/val split (batches follow train.seed)


# Optional keys only some sources read (Source.reads) -> what a source that does not "does".
_SOURCE_KEYS = {"path": "reads no path", "name": "reads no dataset name", "image_size": "does not resize its images"}


def has_module(name: str) -> bool:
    """True when `name` can be imported (already imported counts, even without a spec)."""
    try:
        return sys.modules[name] is not None if name in sys.modules else importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def resolve(path: str) -> Path:
    """The user's path with `~` expanded (relative paths stay relative to the cwd)."""
    return Path(os.path.expanduser(path))


# The fields of DataConfig that name a local file or folder the trial reads (data.name is a dataset's
# name on the Hugging Face Hub, not a path).
PATH_FIELDS = ("path",)


def anchor_paths(cfg: DataConfig) -> None:
    """Make the local paths of `cfg` (PATH_FIELDS) absolute against the cwd, in place. A sweep's trials
    run in working directories of Ray's own (/tmp/ray/session_*/working_dirs/...), where a path
    relative to the directory the sweep was started from names nothing: every trial failed `invalid`
    after the driver's checks had passed. A `~` path stays as written (each machine's home)."""
    for name in PATH_FIELDS:
        path = getattr(cfg, name)
        if isinstance(path, str) and path and not path.startswith("~") and not os.path.isabs(path):
            setattr(cfg, name, os.path.abspath(path))


def resume_key(cfg: DataConfig, task: str) -> str:
    """What a checkpoint remembers of its data so a resume can tell it is the same: the data files'
    names and sizes under data.path (the pystdlib corpus: its files' names and sizes), hashed. Not the
    absolute path, the mtimes or the Python version (`identity` keeps those for caches): a run resumed
    on another machine, its data copied there, is the same run. '' when the source has no files."""
    import hashlib

    kept = [e.rsplit(":", 1)[0] if e.count(":") >= 2 else e for e in identity(cfg, task)[2:]]
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:16] + f"/{len(kept)}" if kept else ""


def data_files(root: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """The files under `root` with one of `suffixes`, hidden files and folders skipped, as the loaders
    read them; lazily, so checking for one costs a few stat calls, not a walk."""
    return (p for p in root.rglob("*") if p.suffix.lower() in suffixes
            and not any(s.startswith(".") for s in p.relative_to(root).parts) and p.is_file())


def known_shape(cfg: DataConfig, task: str) -> tuple[int | None, tuple[int, int, int] | None, int | None]:
    """(vocabulary, image shape C x H x W, classes) of the data `cfg` loads, each where the source
    fixes it without loading anything (None otherwise): byte-level corpora have 256 symbols, a
    token file the declared vocab_size, digits are 1 x 8 x 8 in 10 classes."""
    src = get_source(task, cfg.source)
    if src is None:
        return None, None, None
    vocab = 256 if src.byte_level else cfg.vocab_size if task == "lm" else None
    return vocab, src.image_shape, src.n_classes


def identity(cfg: DataConfig, task: str) -> list[str]:
    """What the data of `cfg` is beyond its fields, for caches of results trained on it: the path's
    absolute location and every data file's size and mtime under it (an edited corpus, or another
    one at the same relative path, is other data), and the Python version; for pystdlib, the
    standard library's location and its files' names and sizes (two installs of one version can
    hold other files, and the split is by file). Stat calls only: nothing is read."""
    import platform

    out = [platform.python_version()]
    if task == "lm" and cfg.source == "pystdlib":  # installs of one version differ (distro-split tkinter, ...)
        import hashlib
        import sysconfig

        from dnasweep.data.pystdlib import stdlib_files

        root = sysconfig.get_paths()["stdlib"]
        return [*out, root, hashlib.sha256(repr(stdlib_files(root)).encode()).hexdigest()[:16]]
    src = get_source(task, cfg.source)
    if src is None or not src.needs_path or not cfg.path:
        return out
    p = resolve(cfg.path).absolute()
    files = [p] if p.is_file() else sorted(data_files(p, src.suffixes)) if src.suffixes and p.is_dir() else []
    out.append(str(p))
    for f in files:
        st = f.stat()
        out.append(f"{f.relative_to(p) if f != p else f.name}:{st.st_size}:{st.st_mtime_ns}")
    return out


def _path_problems(cfg, src: Source) -> list[Problem]:
    """Is the path given, present, of the right kind (file / folder / suffix) and holding data.
    Emptiness is caught here, not by the loader, so a sweep refuses it before any trial starts."""
    name, wants = src.name, f"source {src.name!r} reads {src.doc}"
    if not cfg.path:
        return [Problem("data.path", f"source {name!r} needs a path, but none is given", f"set data.path to {src.doc}")]
    p = resolve(cfg.path)
    if not p.exists():
        return [Problem("data.path", f"{p} does not exist (source {name!r})",
                        "check the spelling, or give an absolute path")]
    if src.path_kind != "any" and not (p.is_dir() if src.path_kind == "dir" else p.is_file()):
        kind = "folder" if src.path_kind == "dir" else "file"
        return [Problem("data.path", f"{p} is not a {kind} (source {name!r})", wants)]
    if src.path_kind == "file" and src.suffixes and p.suffix not in src.suffixes:
        return [Problem("data.path", f"{p} has suffix {p.suffix!r}; source {name!r} reads "
                        f"{' or '.join(src.suffixes)}", wants)]
    if p.is_file() and p.stat().st_size == 0:
        return [Problem("data.path", f"{p} is empty (0 bytes; source {name!r})", "give a file with data in it")]
    if p.is_dir() and src.suffixes and not any(f.stat().st_size for f in data_files(p, src.suffixes)):
        return [Problem("data.path", f"folder {p} holds no {src.files} with data in them "
                        f"({', '.join('*' + s for s in src.suffixes)})", wants)]
    return []


def _vocab_problems(cfg, src: Source | None) -> list[Problem]:
    """vocab_size: required for tokens, >= 256 for byte sources, representable in a .bin dtype."""
    v, source = cfg.vocab_size, src and src.name
    if source == "tokens" and v is None:
        return [Problem("data.vocab_size", "source 'tokens' needs vocab_size (every id must be "
                        "< vocab_size), but none is given", "set it to the tokenizer's vocabulary size")]
    if v is not None and src and src.byte_level and v < 256:
        return [Problem("data.vocab_size", f"is {v}, below 256 for byte-level source {source!r}",
                        "leave it unset (256)")]
    if source == "tokens" and cfg.dtype == "uint16" and v > 65536 and str(cfg.path).endswith(".bin"):
        return [Problem("data.dtype", f"is uint16 but vocab_size is {v} (> 65536): ids that large "
                        "do not fit in uint16", "is the file uint32? set data.dtype: uint32")]
    return []


def check_data(cfg: DataConfig, task: str) -> list[Problem]:
    """Every problem of `cfg` for `task` ("lm" | "vision") found without reading the data."""
    from dnasweep.config.load import fits, type_name  # not at the top: dnasweep.config imports this module

    # Field types matter for configs built in code (the config pipeline refuses wrong types itself).
    # (type_hints: cached; a space's load checks the data of every corner it judges)
    bad = {k: t for k, t in type_hints(DataConfig).items() if not fits(getattr(cfg, k, None), t)}
    problems = [Problem(f"data.{k}", f"must be {type_name(t)}, got {getattr(cfg, k, None)!r}") for k, t in bad.items()]
    if task not in TASKS:
        problems.append(Problem("task", f"unknown task {task!r}", f"use one of: {', '.join(TASKS)}"))
        return problems
    src = get_source(task, cfg.source) if "source" not in bad else None
    if "source" not in bad and src is None:
        problems.append(Problem("data.source", f"unknown source {cfg.source!r} for task {task!r}",
                                f"use one of: {', '.join(source_names(task))}"))
    if "path" not in bad and src and src.needs_path:
        problems += _path_problems(cfg, src)
    for key, what in _SOURCE_KEYS.items():  # ignored, the run would train on other data than asked
        if src and src.reads is not None and key not in bad and getattr(cfg, key) is not None and key not in src.reads:
            users = [n for n in source_names(task) if key in (get_source(task, n).reads or ())]
            problems.append(Problem(f"data.{key}", f"is set, but source {src.name!r} {what}: it would be ignored",
                                    f"remove data.{key}, or pick a source that uses it"
                                    + (f" ({', '.join(users)})" if users else "")))
    if "name" not in bad and src and src.name == "hf" and not cfg.name:
        problems.append(Problem("data.name", "source 'hf' needs a dataset name, but none is given",
                                "set data.name, e.g. 'roneneldan/TinyStories' or 'NAME:CONFIG'"))
    for module in src.requires if src else ():
        what, fix = _EXTRAS.get(module, (f"the `{module}` package", f"pip install {module}"))
        if not has_module(module):
            problems.append(Problem("data.source", f"source {src.name!r} needs {what}, which is not installed", fix))
    if "vocab_size" not in bad and "dtype" not in bad and task == "lm":
        problems += _vocab_problems(cfg, src)
    problems += [q for q in field_problems(cfg, "data", DataConfig) if q.key.split(".")[1] not in bad]
    for key in ("field", "image_field", "label_field"):
        if key not in bad and src and src.name == "hf" and not getattr(cfg, key):
            problems.append(Problem(f"data.{key}", "is empty", "name the record field to read"))
    return problems
