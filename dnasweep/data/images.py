"""Pillow-backed vision sources: an ImageFolder-style folder, and Hugging Face image datasets.

Pillow (extra `images`) and `datasets` (extra `hf`) are imported inside the loaders only, so the
rest of dnasweep runs without them. Every image is decoded here, before training starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dnasweep.data.config import DataConfig, data_files, resolve
from dnasweep.data.sources import IMAGE_SUFFIXES
from dnasweep.data.vision import VisionData, cap_count, label_problems, make_vision
from dnasweep.errors import ConfigError, Problem, raise_if

GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")  # Pillow modes kept as one channel
_MAX_NAMED = 5  # unreadable files named one by one; the rest are counted
_EIGHT_BIT_FIX = "convert the images to 8-bit (mode L or RGB), or save them as a uint8 npz and use source: npz"


class _UnknownRange(Exception):
    """An image whose pixel range dnasweep cannot know, so cannot map to 8 bits; the message says why."""


def _eight_bit(im, image_module):
    """`im` with 16-bit integer pixels scaled exactly to 8 bits (v // 257); other modes as they are.

    Pillow's convert("L") clamps I, I;16 and F pixels at 255 instead of scaling them, which would
    turn a 16-bit image mostly white. A float image, or a 32-bit one beyond 0..65535, has no range
    to scale from, so it is refused rather than guessed.
    """
    if im.mode == "F":
        raise _UnknownRange("has mode F (floating-point pixels), whose range dnasweep cannot know")
    if im.mode != "I" and not im.mode.startswith("I;16"):
        return im
    # What the file declares, read before the pixels load (which clears it): a 16-bit PGM opens as
    # mode I with raw mode I;16B. Judged by its values alone, a dark 16-bit frame (every pixel <= 255)
    # passed as 8-bit and came out up to 257x brighter than the rest of its folder.
    raw = [t.args[0] if isinstance(t.args, tuple) and t.args else t.args for t in getattr(im, "tile", None) or []]
    sixteen = im.mode.startswith("I;16") or any(str(r).startswith("I;16") for r in raw)
    a = np.asarray(im)
    if im.mode == "I" and not sixteen and a.size and 0 <= a.min() and a.max() <= 255:  # 8-bit values held as ints
        return image_module.fromarray(a.astype(np.uint8))
    # Pillow opens 16-bit PNGs as I or I;16 depending on its version: mode I within 16 bits is 16-bit.
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise _UnknownRange(f"has mode {im.mode} pixels {a.min()}..{a.max()}, beyond the 16-bit range "
                           "dnasweep can scale to 8 bits")
    return image_module.fromarray((a // 257).astype(np.uint8))


def _to_array(im, gray: bool, size: int | None, image_module) -> np.ndarray:
    """One PIL image as uint8 [C, H, W]: L or RGB, resized to size x size when size is set.
    Raises _UnknownRange for pixels that do not map to 8 bits (see _eight_bit)."""
    im = _eight_bit(im, image_module).convert("L" if gray else "RGB")
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), image_module.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return a[None] if gray else a.transpose(2, 0, 1)


def _size_problem(key: str, names: list[str], sizes: list[tuple[int, int]]) -> list[Problem]:
    """A problem naming two images of different sizes, when sizes are not all equal."""
    for name, s in zip(names, sizes, strict=True):
        if s != sizes[0]:
            return [Problem(key, f"images differ in size: {names[0]} is {sizes[0][0]}x{sizes[0][1]} "
                            f"but {name} is {s[0]}x{s[1]} (width x height)",
                            "set data.image_size to resize every image to one square size")]
    return []


def _file_problems(bad: list[tuple[Path, str, str]], root: Path) -> list[Problem]:
    """data.path problems for bad images (file, what is wrong, fix): the first few named, the rest counted."""
    out = [Problem("data.path", f"{f} {what}", fix) for f, what, fix in bad[:_MAX_NAMED]]
    if len(bad) > _MAX_NAMED:
        out.append(Problem("data.path", f"... and {len(bad) - _MAX_NAMED} more such images under {root}"))
    return out


_SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}


def _class_files(root: Path) -> tuple[list[str], list[Path], list[int], list[Problem]]:
    """Sorted class names, their image files (sorted, recursive) and labels, and layout problems."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    problems, files, labels = [], [], []
    if len(classes) < 2:
        problems.append(Problem("data.path", f"folder {root} has {len(classes)} class subfolder(s); "
                                "source 'folder' wants one subfolder of images per class (>= 2)",
                                "lay out images as PATH/<class name>/<image file>"))
    if len(classes) >= 2 and all(c.lower() in _SPLIT_NAMES for c in classes):
        # PATH/train/<class>/... read as two classes, 'train' and 'val': the model learnt to tell the
        # splits apart, the real labels unused, and nothing said so
        problems.append(Problem("data.path", f"folder {root}'s subfolders ({', '.join(classes)}) are split names, "
                                "not classes: a split layout (PATH/train/<class>/<image>) would train a model "
                                "to tell the splits apart", f"point data.path at one split's folder, e.g. "
                                f"{root / classes[-1 if 'train' not in classes else classes.index('train')]}; "
                                "data.val_fraction of it is held out"))
    for label, name in enumerate(classes):
        found = sorted(data_files(root / name, IMAGE_SUFFIXES))
        if not found:
            problems.append(Problem("data.path", f"class folder {root / name} holds no images "
                                    f"({', '.join(IMAGE_SUFFIXES)})", "add images or remove the folder"))
        files += found
        labels += [label] * len(found)
    return classes, files, labels, problems


def load_folder(cfg: DataConfig) -> VisionData:
    """PATH/<class>/<image>: RGB, or L when every image is grayscale; resized if image_size is set."""
    from PIL import Image  # optional extra 'images' (check_data refuses the source without it)
    root = resolve(cfg.path)
    classes, files, labels, problems = _class_files(root)
    raise_if(problems, "data")
    modes, sizes, unreadable = [], [], []
    for f in files:  # pass 1: headers only (Image.open does not decode pixels)
        try:
            with Image.open(f) as im:
                modes.append(im.mode)
                sizes.append(im.size)
        except (OSError, ValueError) as e:
            unreadable.append((f, f"is not a readable image: {e}", "remove or re-save it"))
    raise_if(_file_problems(unreadable, root), "data")
    if cfg.image_size is None:
        raise_if(_size_problem("data.image_size", [str(f) for f in files], sizes), "data")
    gray = all(m in GRAY_MODES for m in modes)
    w, h = (cfg.image_size, cfg.image_size) if cfg.image_size else sizes[0]
    keep = cap_count(len(files), (1 if gray else 3) * h * w, cfg.max_bytes, cfg.seed)
    x = np.empty((len(keep), 1 if gray else 3, h, w), dtype=np.uint8)
    bad = []
    for j, i in enumerate(keep.tolist()):  # pass 2: decode
        try:
            with Image.open(files[i]) as im:
                x[j] = _to_array(im, gray, cfg.image_size, Image)
        except _UnknownRange as e:
            bad.append((files[i], str(e), _EIGHT_BIT_FIX))
        except (OSError, ValueError) as e:
            bad.append((files[i], f"could not be decoded: {e}", "remove it"))
    raise_if(_file_problems(bad, root), "data")
    return make_vision(x, np.asarray(labels)[keep], cfg, len(classes),
                       f"{root} ({len(classes)} class folders)", classes)


def _pil(value, image_module):
    """A dataset cell as a PIL image: `datasets` gives PIL images for Image columns, arrays otherwise."""
    return value if isinstance(value, image_module.Image) else image_module.fromarray(np.asarray(value))


def _decode_hf(ds, keep: np.ndarray, gray: bool, wh: tuple[int, int], cfg: DataConfig,
               image_module) -> np.ndarray | None:
    """Records `keep` of `ds` as uint8 [N, C, H, W] (C = 1 if gray else 3); None when gray and a
    record turns out to be colour, so the caller decodes again as RGB."""
    w, h = wh
    x = np.empty((len(keep), 1 if gray else 3, h, w), dtype=np.uint8)
    for j, rec in enumerate(ds.select(keep.tolist())):
        im, where = _pil(rec[cfg.image_field], image_module), f"{cfg.name} record {int(keep[j])}"
        if gray and im.mode not in GRAY_MODES:
            return None
        if cfg.image_size is None and im.size != (w, h):
            raise_if(_size_problem("data.image_size", [f"{cfg.name} record 0", where], [(w, h), im.size]), "data")
        try:
            x[j] = _to_array(im, gray, cfg.image_size, image_module)
        except _UnknownRange as e:
            raise ConfigError([Problem("data.image_field", f"{where} {e}", _EIGHT_BIT_FIX)], "data") from e
    return x


def load_hf_images(cfg: DataConfig) -> VisionData:
    """The train split of a Hugging Face image dataset (image_field, label_field), decoded now."""
    import datasets  # optional extras 'hf' and 'images' (check_data refuses the source without them)
    from PIL import Image
    name, _, conf = cfg.name.partition(":")
    try:
        ds = datasets.load_dataset(name, conf or None, split="train")
    except Exception as e:  # any failure of a remote load is a start-time input problem
        raise ConfigError([Problem("data.name", f"could not load Hugging Face dataset {cfg.name} "
                                   f"(offline?): {type(e).__name__}: {e}",
                                   "check the name and the network; with the dataset cached, set "
                                   "HF_DATASETS_OFFLINE=1; or use source: folder / npz")], "data") from e
    cols = list(ds.column_names)
    problems = [Problem(f"data.{key}", f"Hugging Face dataset {cfg.name} has no column {col!r}",
                        f"use one of: {', '.join(cols)}")
                for key, col in (("image_field", cfg.image_field), ("label_field", cfg.label_field))
                if col not in cols]
    raise_if(problems, "data")
    names = list(getattr(ds.features[cfg.label_field], "names", None) or [])
    y = np.asarray(list(ds[cfg.label_field]))  # list(): newer `datasets` return a lazy Column
    raise_if(label_problems(y, f"Hugging Face dataset {cfg.name}", len(names) or None,
                            "data.label_field"), "data")
    first = _pil(ds[0][cfg.image_field], Image)
    w, h = (cfg.image_size, cfg.image_size) if cfg.image_size else first.size
    # One channel only if every kept record is grayscale, as in the folder source: record 0 alone would
    # drop the colour of every later image. Decode as gray first and restart as RGB at the first colour
    # record, so a gray set is decoded once and a colour one (colour shows up early) about once.
    keep = cap_count(len(ds), h * w, cfg.max_bytes, cfg.seed)
    x = _decode_hf(ds, keep, True, (w, h), cfg, Image)
    if x is None:
        keep = cap_count(len(ds), 3 * h * w, cfg.max_bytes, cfg.seed)
        x = _decode_hf(ds, keep, False, (w, h), cfg, Image)
    n_classes = len(names) or int(y.max()) + 1
    return make_vision(x, y[keep], cfg, n_classes, f"Hugging Face {cfg.name}", names)
