"""Image-classification data: `VisionData`, the stratified split, and the digits and npz sources.

Images stay uint8 [N, C, H, W] in memory (4x smaller than float); the sampler normalizes each
batch with the per-channel mean/std measured on the train split. Pillow-backed sources (folder,
hf) live in `images.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dnasweep.data.config import DataConfig, resolve
from dnasweep.errors import ConfigError, Problem, raise_if


@dataclass
class VisionData:
    """Train/val images and labels plus the normalization statistics of the train split."""

    train_x: np.ndarray  # uint8 [N, C, H, W]
    train_y: np.ndarray  # int64 [N], in [0, n_classes)
    val_x: np.ndarray  # uint8 [M, C, H, W], held out (stratified)
    val_y: np.ndarray  # int64 [M]
    n_classes: int  # labels are 0 .. n_classes - 1
    mean: np.ndarray  # float32 [C], per-channel mean of train_x / 255
    std: np.ndarray  # float32 [C], per-channel std of train_x / 255 (1.0 where a channel is flat)
    source: str  # the DataConfig.source that produced it
    detail: str = ""  # where it came from, for describe()
    class_names: list[str] = field(default_factory=list)  # folder names / hf label names, if known

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_x.shape[1:])

    def describe(self) -> str:
        """One line: source, origin, split sizes, image shape and classes."""
        c, h, w = self.image_shape
        return (f"{self.source}: {self.detail}; train {len(self.train_y):,} images, "
                f"val {len(self.val_y):,} images, {c}x{h}x{w}, {self.n_classes} classes")


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices holding out `val_fraction` of every class (seeded).

    A class with >= 2 images keeps at least one on each side; a single-image class goes to train.
    """
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = round(len(idx) * val_fraction)
        n_val = min(max(n_val, 1), len(idx) - 1) if len(idx) >= 2 else 0
        val.append(idx[:n_val])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(y)), val)
    return train, val


def cap_count(n: int, bytes_per_image: int, max_bytes: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of n images whose pixels fit in max_bytes (all if None)."""
    if max_bytes is None or n * bytes_per_image <= max_bytes:
        return np.arange(n)
    keep = max(2, max_bytes // max(bytes_per_image, 1))
    return np.sort(np.random.default_rng(seed).permutation(n)[:keep])


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images [N, C, H, W] on the 0..1 scale (float32)."""
    xf = x.reshape(x.shape[0], x.shape[1], -1)
    s1, s2 = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for s in range(0, len(xf), 1024):  # float64 blocks: exact sums without a float copy of the set
        b = xf[s: s + 1024].astype(np.float64) / 255.0
        s1 += b.sum(axis=(0, 2))
        s2 += np.square(b).sum(axis=(0, 2))
    count = max(xf.shape[0] * xf.shape[2], 1)
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean**2, 0.0))
    std = np.where(std < 1e-6, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def label_problems(y: np.ndarray, where: str, n_classes: int | None, key: str) -> list[Problem]:
    """Problems with integer labels `y` read from `where` (a file or dataset name)."""
    if y.ndim != 1 or y.dtype.kind not in "iu":
        return [Problem(key, f"{where}: labels must be a 1-D integer array, got {y.ndim}-D {y.dtype}",
                        "store class indices 0 .. n_classes-1 as integers")]
    problems = []
    if len(y) and y.min() < 0:
        problems.append(Problem(key, f"{where}: negative label {int(y.min())}",
                                "labels must be class indices 0 .. n_classes-1"))
    if n_classes is not None and len(y) and y.max() >= n_classes:
        problems.append(Problem(key, f"{where}: label {int(y.max())} is out of range for "
                                f"n_classes {n_classes}", "labels must be < n_classes"))
    return problems


def make_vision(x: np.ndarray, y: np.ndarray, cfg: DataConfig, n_classes: int, detail: str,
                class_names: list[str] | None = None) -> VisionData:
    """Split uint8 [N,C,H,W] images and labels (stratified), measure train mean/std."""
    y = y.astype(np.int64)
    train, val = stratified_split(y, cfg.val_fraction, cfg.seed)
    if len(val) == 0 or len(train) == 0:
        raise ConfigError([Problem("data.val_fraction", f"{detail}: {len(y)} images give an empty "
                                   f"{'val' if len(val) == 0 else 'train'} split",
                                   "use more images per class (>= 2), or another val_fraction")], "data")
    mean, std = channel_stats(x[train])
    return VisionData(x[train], y[train], x[val], y[val], n_classes, mean, std, cfg.source, detail,
                      list(class_names or []))


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images float [1797, 8, 8] in 0..16, labels int64 [1797]).

    Read from the CSV that scikit-learn ships, found without importing scikit-learn: that import
    took 1.3-2.4 s of each vision trial's start, the read takes 0.02 s. Falls back to
    `sklearn.datasets.load_digits` if the file is not where scikit-learn keeps it."""
    import importlib.util
    import pathlib

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        csv = pathlib.Path(root, "datasets", "data", "digits.csv.gz")
        if csv.is_file():
            a = np.loadtxt(csv, delimiter=",")
            return a[:, :-1].reshape(-1, 8, 8), a[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as _sk_digits

    d = _sk_digits()
    return d.images, d.target


def load_digits(cfg: DataConfig) -> VisionData:
    """scikit-learn's 1,797 8x8 handwritten digits, 0..16 rescaled to uint8 0..255, C = 1."""
    images, target = digits_arrays()
    x = np.round(images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    keep = cap_count(len(x), x[0].size, cfg.max_bytes, cfg.seed)
    return make_vision(x[keep], target[keep], cfg, 10, "scikit-learn digits",
                       [str(i) for i in range(10)])


def load_npz(cfg: DataConfig) -> VisionData:
    """An .npz with `images` (uint8, N x H x W or N x H x W x C) and `labels` (N integers).

    An optional scalar `n_classes` entry bounds the labels; otherwise n_classes = max label + 1.
    """
    p = resolve(cfg.path)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise ConfigError([Problem("data.path", f"could not read {p} as .npz: {e}",
                                   "save with np.savez(path, images=..., labels=...)")], "data") from e
    problems = [Problem("data.path", f"{p} has no {k!r} array (it holds: {', '.join(arrays) or 'nothing'})",
                        "save with np.savez(path, images=..., labels=...)")
                for k in ("images", "labels") if k not in arrays]
    raise_if(problems, "data")
    x, y = arrays["images"], arrays["labels"]
    n_classes = arrays.get("n_classes")
    if n_classes is not None and (n_classes.size != 1 or n_classes.dtype.kind not in "iu"):
        problems.append(Problem("data.path", f"{p}: 'n_classes' must be one integer, got "
                                f"{n_classes.dtype} {n_classes.shape}", "store n_classes=np.int64(k)"))
    n_classes = int(n_classes.reshape(())) if not problems and n_classes is not None else None
    nx = x.shape[0] if x.ndim else 0
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3, 4)):
        problems.append(Problem("data.path", f"{p}: images are {x.dtype} {x.shape}; want uint8 "
                                "N x H x W or N x H x W x C (C in 1, 3, 4)",
                                "convert with (x * 255).round().astype(np.uint8), channels last"))
    problems += label_problems(y, str(p), n_classes, "data.path")
    if y.ndim == 1 and len(y) != nx:
        problems.append(Problem("data.path", f"{p}: {nx} images but {len(y)} labels",
                                "store one label per image"))
    if nx == 0:
        problems.append(Problem("data.path", f"{p} holds no images", "store at least 2 per class"))
    raise_if(problems, "data")
    x = x[:, None] if x.ndim == 3 else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    keep = cap_count(len(x), x[0].size, cfg.max_bytes, cfg.seed)
    n_classes = n_classes if n_classes is not None else int(y.max()) + 1
    return make_vision(x[keep], y[keep], cfg, n_classes, str(p))
