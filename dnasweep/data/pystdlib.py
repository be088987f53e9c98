"""The pystdlib source: the running Python's standard-library .py files as a byte corpus.

Owns the file list, the by-file split and an on-disk cache of the two joined arrays. The cache
makes every load after the first a pair of memory maps (well under a second), and parallel
trials building it at once is safe: each write goes to a temporary file renamed into place,
and all builders write identical bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path

import numpy as np

from dnasweep.data.config import DataConfig
from dnasweep.data.lm import LMData, join, split_documents, tail_split
from dnasweep.errors import ConfigError, Problem

_FORMAT = 1  # bump when the corpus construction changes, to invalidate old caches
# Skipped folders: third-party code, and test suites (absent from some distro builds of Python,
# so leaving them out keeps the corpus the same wherever the same version runs; ~12 MB remain).
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "__pycache__", "idle_test"}


def cache_dir() -> Path:
    """Where dnasweep keeps derived data: $XDG_CACHE_HOME/dnasweep or ~/.cache/dnasweep."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dnasweep"


def stdlib_files(root: Path | None = None) -> list[tuple[str, int]]:
    """(relative posix path, size) of every stdlib .py file, sorted by path."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        for f in filenames:
            if f.endswith(".py"):
                p = os.path.join(dirpath, f)
                out.append((Path(p).relative_to(root).as_posix(), os.path.getsize(p)))
    return sorted(out)


def _atomic_save(path: Path, arr: np.ndarray | bytes) -> None:
    """Write `arr` (.npy) or raw bytes to `path` via a temporary file in the same folder + rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(arr, bytes):
                f.write(arr)
            else:
                np.save(f, arr)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _key(cfg: DataConfig, root: Path, listing: list[tuple[str, int]]) -> str:
    """Cache key: Python build, stdlib location and contents (names + sizes), split settings."""
    parts = [_FORMAT, sys.version, str(root), cfg.seed, float(cfg.val_fraction), cfg.max_bytes, listing]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def _read_cache(stem: Path) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """The cached (train, val, meta), memory-mapped, or None when absent or inconsistent."""
    try:
        meta = json.loads(stem.with_name(stem.name + "-meta.json").read_text())
        train = np.load(stem.with_name(stem.name + "-train.npy"), mmap_mode="r")
        val = np.load(stem.with_name(stem.name + "-val.npy"), mmap_mode="r")
    except (OSError, ValueError):
        return None
    if (len(train), len(val)) != (meta.get("n_train"), meta.get("n_val")) or train.dtype != np.uint8:
        return None
    return train, val, meta


def _build(cfg: DataConfig, root: Path, listing: list[tuple[str, int]]):
    """Read the chosen files and join them; returns (train, val, meta)."""
    sizes = [s for _, s in listing]
    train_ix, val_ix, take = split_documents(sizes, cfg.val_fraction, cfg.seed, cfg.max_bytes)
    docs = {}
    for i, n in take.items():
        with open(root / listing[i][0], "rb") as f:
            docs[i] = f.read(n)
    if val_ix:
        train, val = join([docs[i] for i in train_ix]), join([docs[i] for i in val_ix])
    else:  # max_bytes so small that one file is read: split its tail
        train, val = tail_split(join(list(docs.values())), cfg.val_fraction)
    meta = {"n_train": len(train), "n_val": len(val), "files": len(take),
            "train_files": len(train_ix), "val_files": len(val_ix)}
    return train, val, meta


def load_pystdlib(cfg: DataConfig, root: Path | None = None) -> LMData:
    """The stdlib corpus for `cfg` (seed, val_fraction, max_bytes), from the cache when present."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    listing = stdlib_files(root)
    if sum(s for _, s in listing) < 2:
        raise ConfigError([Problem("data.source", f"found no Python source files under {root}",
                                   "this Python lacks its .py stdlib; use source: text")], "data")
    stem = cache_dir() / f"pystdlib-{_key(cfg, root, listing)}"
    cached = _read_cache(stem)
    if cached is None:
        train, val, meta = _build(cfg, root, listing)
        try:
            stem.parent.mkdir(parents=True, exist_ok=True)
            _atomic_save(stem.with_name(stem.name + "-train.npy"), train)
            _atomic_save(stem.with_name(stem.name + "-val.npy"), val)
            # meta last: a reader that finds it also finds both arrays
            _atomic_save(stem.with_name(stem.name + "-meta.json"), json.dumps(meta).encode())
        except OSError as e:  # a read-only home still trains; it just rebuilds each time
            warnings.warn(f"dnasweep: could not cache the pystdlib corpus in {stem.parent}: {e}",
                          stacklevel=2)
    else:
        train, val, meta = cached
    version = ".".join(map(str, sys.version_info[:3]))
    detail = (f"Python {version} stdlib, {meta['files']} .py files "
              f"({meta['train_files']} train / {meta['val_files']} val)")
    return LMData(train, val, cfg.vocab_size or 256, 1.0, "pystdlib", detail)
