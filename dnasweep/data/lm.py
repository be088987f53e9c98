"""Language-model corpora: `LMData` and the loaders of the text, tokens and hf sources.

A corpus is two flat 1-D arrays of token ids (train, val). Byte-level sources (pystdlib, text,
hf) hold uint8 bytes with documents joined by one SEP byte; the tokens source memory-maps a
pre-tokenized file so a corpus larger than RAM is never read in whole. The pystdlib source,
with its on-disk cache, lives in `pystdlib.py`; the split rule shared by all lives here.
"""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnasweep.data.config import DataConfig, data_files, resolve
from dnasweep.data.sources import TEXT_SUFFIXES
from dnasweep.errors import ConfigError, Problem, raise_if

SEP = 0  # byte placed between two documents (NUL: valid UTF-8 but next to absent from text; counted in bits/byte)
HF_DEFAULT_BYTES = 50_000_000  # bytes streamed from a Hugging Face dataset when max_bytes is unset
_CHUNK = 1 << 24  # elements per chunk of the token-id range check (64 MiB of uint32 at most)


@dataclass
class LMData:
    """A tokenized corpus split into train and val; owns nothing but the two arrays and facts."""

    train: np.ndarray  # 1-D token ids (uint8 bytes, or the token file's dtype, memory-mapped)
    val: np.ndarray  # 1-D token ids, held out (never sampled for training)
    vocab_size: int  # every id is < vocab_size
    bytes_per_token: float | None  # 1.0 for byte-level sources (bits/byte = nats/token / ln 2)
    source: str  # the DataConfig.source that produced it
    detail: str = ""  # where it came from and how it was split, for describe()

    def describe(self) -> str:
        """One line: source, origin, split sizes and vocabulary."""
        kind = "bytes" if self.bytes_per_token == 1.0 else "tokens"
        return (f"{self.source}: {self.detail}; train {len(self.train):,} {kind}, "
                f"val {len(self.val):,} {kind}, vocab {self.vocab_size}")


def split_documents(sizes: list[int], val_fraction: float, seed: int,
                    max_bytes: int | None) -> tuple[list[int], list[int], dict[int, int]]:
    """Choose which documents are read (under `max_bytes`) and which of them are held out.

    Documents are visited in a seeded random order; the first ones make up the val share (by
    bytes, at least one document, at least one left for train). A document too large for what is
    left of the share is passed over when taking it would hold out more than 1.5x val_fraction
    (a big file drawn early made the val set 90% of the corpus). Returns sorted train and val
    indices and how many bytes to take of each chosen document (only the last may be cut).
    Both index lists are empty with fewer than two non-empty documents, or when whole documents
    cannot hold out at least half the share: callers then split a contiguous tail instead.
    """
    budget = max_bytes if max_bytes is not None else sum(sizes)
    take: dict[int, int] = {}
    for i in np.random.default_rng(seed).permutation(len(sizes)).tolist():
        if budget <= 0:
            break
        if sizes[i] > 0:
            take[i] = min(sizes[i], budget)
            budget -= take[i]
    if len(take) < 2:
        return [], [], take
    target = val_fraction * sum(take.values())
    val = _held_out(take, target, math.inf)
    if sum(take[i] for i in val) > 1.5 * target:
        val = _held_out(take, target, 1.5 * target)
    if sum(take[i] for i in val) < 0.5 * target:  # e.g. 800 B of README beside a 1 MB file
        return [], [], take
    train = sorted(set(take) - set(val))
    return train, sorted(val), take


def _held_out(take: dict[int, int], target: float, most: float) -> list[int]:
    """Documents in visiting order (`take`'s) until `target` bytes are held out, passing over any
    that would take the total past `most`; at least one document stays for train."""
    held, val = 0, []
    for i in take:  # dicts keep insertion order: the seeded visiting order
        if held >= target or len(val) == len(take) - 1:
            break
        if held + take[i] <= most:
            val.append(i)
            held += take[i]
    return val


def join(docs: list[bytes]) -> np.ndarray:
    """Documents as one read-only uint8 array, SEP between neighbours."""
    return np.frombuffer(bytes([SEP]).join(docs), dtype=np.uint8)


def tail_split(arr: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Train = the head, val = the last `val_fraction` (at least one element each; views, no copy)."""
    n_val = min(max(1, round(len(arr) * val_fraction)), len(arr) - 1)
    return arr[: len(arr) - n_val], arr[len(arr) - n_val:]


def _utf8_problem(path: Path, data: bytes, complete: bool) -> Problem | None:
    """A problem naming `path` when `data` is not UTF-8 (a cut-off last character is fine)."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=complete)
    except UnicodeDecodeError as e:
        return Problem("data.path", f"{path} is not UTF-8 text (byte {e.start}: {e.reason})",
                       "convert it to UTF-8, or remove it from the folder")
    return None


def text_files(root: Path) -> list[Path]:
    """The text files under `root`, recursive, hidden files/folders skipped, sorted by path."""
    return sorted(data_files(root, TEXT_SUFFIXES), key=lambda p: p.relative_to(root).as_posix())


def load_text(cfg: DataConfig) -> LMData:
    """A UTF-8 file (tail split) or a folder of text files (split by file when >= 2 files)."""
    root = resolve(cfg.path)
    files = [root] if root.is_file() else text_files(root)
    if not files:
        raise ConfigError([Problem("data.path", f"folder {root} holds no text files "
                                   f"({', '.join('*' + s for s in TEXT_SUFFIXES)})",
                                   "point data.path at a folder of such files, or at one file")], "data")
    sizes = [f.stat().st_size for f in files]
    if sum(sizes) == 0:
        what = f"{root} is empty" if root.is_file() else f"all {len(files)} text files in {root} are empty"
        raise ConfigError([Problem("data.path", what, "give a file with text in it")], "data")
    train_ix, val_ix, take = split_documents(sizes, cfg.val_fraction, cfg.seed, cfg.max_bytes)
    docs, problems = {}, []
    for i, n in take.items():
        with open(files[i], "rb") as f:
            docs[i] = f.read(n)
        bad = _utf8_problem(files[i], docs[i], complete=n == sizes[i])
        if bad:
            problems.append(bad)
    raise_if(problems, "data")
    vocab = cfg.vocab_size or 256
    if not val_ix:  # one document, or whole ones cannot make the val share: contiguous tail split
        data = join(list(docs.values()))
        if len(data) < 2:
            raise ConfigError([Problem("data.path", f"{files[next(iter(docs))]} has {len(data)} byte(s), too "
                                       "few to split into train and val", "give more text")], "data")
        train, val = tail_split(data, cfg.val_fraction)
        what = f"1 file ({files[next(iter(docs))]})" if len(docs) == 1 else f"{len(docs)} files under {root}"
        return LMData(train, val, vocab, 1.0, "text", f"{what}, tail split")
    detail = f"{len(take)} files under {root} ({len(train_ix)} train / {len(val_ix)} val)"
    return LMData(join([docs[i] for i in train_ix]), join([docs[i] for i in val_ix]), vocab, 1.0,
                  "text", detail)


def _open_tokens(p: Path, cfg: DataConfig) -> tuple[np.ndarray | None, list[Problem]]:
    """Memory-map a .bin (raw ids of cfg.dtype) or .npy file; problems name the file."""
    fix = "write the ids with np.save(path, ids) or ids.astype(np.uint16).tofile(path)"
    if p.suffix == ".bin":
        dtype, size = np.dtype(cfg.dtype), p.stat().st_size
        if size == 0:
            return None, [Problem("data.path", f"{p} is empty (0 bytes)", fix)]
        if size % dtype.itemsize:
            return None, [Problem("data.path", f"{p} has {size} bytes, not a multiple of "
                                  f"{dtype.itemsize} (data.dtype {cfg.dtype})", "check data.dtype")]
        arr = np.memmap(p, dtype=dtype, mode="r")
        if dtype == np.uint16 and size % 4 == 0 and _wide_ids(arr):
            return None, [Problem("data.path", f"{p} reads as uint16 ids of which every second one is 0: it "
                                  "looks like uint32 ids (their high halves), which would train on the ids "
                                  "interleaved with token 0", "set data.dtype: uint32")]
        return arr, []
    try:
        arr = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        return None, [Problem("data.path", f"could not read {p} as .npy: {e}", fix)]
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        return None, [Problem("data.path", f"{p} holds a {arr.ndim}-D {arr.dtype} array; source "
                              "'tokens' wants 1-D integer ids", "save ids.ravel() as an integer array")]
    if arr.size == 0:
        return None, [Problem("data.path", f"{p} is empty (0 token ids)", fix)]
    return arr, []


def _wide_ids(arr: np.ndarray, n: int = 1 << 16) -> bool:
    """Whether uint16 `arr` looks like little-endian uint32 ids: in its first n pairs every odd
    element (a high half) is 0 and most even ones (the ids) are not. A real uint16 corpus is 0 at
    every second position only if it is mostly token 0."""
    head = np.asarray(arr[: 2 * n])
    odd, even = head[1::2], head[0::2]
    return len(odd) >= 8 and not odd.any() and np.count_nonzero(even) >= len(even) / 2


def id_range(arr: np.ndarray) -> tuple[int, int]:
    """(min, max) of `arr`, read in fixed chunks so a memory-mapped corpus is never held whole."""
    lo, hi = None, None
    for s in range(0, len(arr), _CHUNK):
        part = arr[s: s + _CHUNK]
        a, b = int(part.min()), int(part.max())
        lo, hi = a if lo is None else min(lo, a), b if hi is None else max(hi, b)
    return lo, hi


def load_tokens(cfg: DataConfig) -> LMData:
    """Pre-tokenized ids, memory-mapped, checked against vocab_size, contiguous tail as val."""
    p = resolve(cfg.path)
    arr, problems = _open_tokens(p, cfg)
    raise_if(problems, "data")
    if cfg.max_bytes is not None:
        arr = arr[: max(2, cfg.max_bytes // arr.dtype.itemsize)]
    lo, hi = id_range(arr)
    if hi >= cfg.vocab_size:
        problems.append(Problem("data.vocab_size", f"{p} holds token id {hi}, but vocab_size is "
                                f"{cfg.vocab_size} (ids must be < vocab_size)",
                                f"set data.vocab_size to at least {hi + 1}, or check data.dtype "
                                "(a uint32 file read as uint16 gives wrong ids)"))
    if lo < 0:
        problems.append(Problem("data.path", f"{p} holds a negative token id ({lo})",
                                "token ids must be >= 0"))
    if len(arr) < 2:
        problems.append(Problem("data.path", f"{p} holds {len(arr)} token id, too few to split",
                                "give a longer corpus"))
    raise_if(problems, "data")
    train, val = tail_split(arr, cfg.val_fraction)
    return LMData(train, val, cfg.vocab_size, None, "tokens",
                  f"{p} ({arr.dtype}, memory-mapped), tail split")


def load_hf_text(cfg: DataConfig) -> LMData:
    """Stream `cfg.field` of a Hugging Face dataset as UTF-8 bytes, up to max_bytes (50 MB).

    Everything is fetched here, before training: a network failure mid-run cannot happen.
    """
    import datasets  # optional extra 'hf' (check_data refuses the source without it): only imported here
    name, _, conf = cfg.name.partition(":")
    cap = cfg.max_bytes or HF_DEFAULT_BYTES
    docs: list[bytes] = []
    total = 0
    try:
        for i, rec in enumerate(datasets.load_dataset(name, conf or None, split="train", streaming=True)):
            if cfg.field not in rec:
                raise ConfigError([Problem("data.field", f"Hugging Face dataset {cfg.name} has no "
                                           f"field {cfg.field!r}", f"use one of: {', '.join(rec)}")],
                                  "data")
            text = rec[cfg.field]
            if text is None:  # a missing value: str() would put the bytes "None" into the corpus
                continue
            if not isinstance(text, str):  # str() of a list or number is its Python repr, not text
                raise ConfigError([Problem("data.field", f"field {cfg.field!r} of Hugging Face dataset "
                                           f"{cfg.name} must hold text, but record {i} holds a "
                                           f"{type(text).__name__}", "set data.field to a text column")],
                                  "data")
            b = text.encode("utf-8")[: cap - total]
            if b:
                docs.append(b)
                total += len(b)
            if total >= cap:
                break
    except ConfigError:
        raise
    except Exception as e:  # any failure of a remote load is a start-time input problem
        raise ConfigError([Problem("data.name", f"could not load Hugging Face dataset {cfg.name} "
                                   f"(offline?): {type(e).__name__}: {e}",
                                   "check the name and the network; with the dataset cached, set "
                                   "HF_DATASETS_OFFLINE=1; or use source: text with a local file")],
                          "data") from e
    if total < 2:
        raise ConfigError([Problem("data.name", f"Hugging Face dataset {cfg.name} gave {total} "
                                   f"bytes of field {cfg.field!r}", "check data.field")], "data")
    train_ix, val_ix, _ = split_documents([len(d) for d in docs], cfg.val_fraction, cfg.seed, None)
    vocab, detail = cfg.vocab_size or 256, f"{cfg.name} field {cfg.field!r}, {len(docs)} records"
    if not val_ix:
        train, val = tail_split(join(docs), cfg.val_fraction)
        return LMData(train, val, vocab, 1.0, "hf", detail + ", tail split")
    return LMData(join([docs[i] for i in train_ix]), join([docs[i] for i in val_ix]), vocab, 1.0, "hf",
                  f"{detail} ({len(train_ix)} train / {len(val_ix)} val)")
