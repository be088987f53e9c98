"""Batch samplers (training) and fixed validation batches, all deterministic and resumable.

The samplers are counter-based: batch k of the LM sampler draws its window starts from a
generator seeded with (seed, k), and epoch e of the vision sampler is the permutation seeded
with (seed, e). Their whole state is therefore a few integers, a checkpoint restores it
exactly, and a batch does not depend on how many were drawn before it in this process.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from dnasweep.data.vision import VisionData
from dnasweep.errors import ConfigError, Problem, raise_if


def _check_sizes(seed: int | None = None, **sizes: int) -> None:
    """Reject non-positive batch shapes and negative seeds (the caller's config values). The batch
    seed is train.seed (the training loop's), never data.seed, which seeds the split only."""
    problems = [Problem(k, f"is {v}, must be a positive integer", "use an integer >= 1")
                for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        problems.append(Problem("train.seed", f"the batch sampler's seed is {seed!r}, must be an integer >= 0",
                                "use e.g. 0"))
    raise_if(problems, "data")


def _windows(tokens: np.ndarray, seq_len: int, name: str) -> np.ndarray:
    """All windows of seq_len + 1 tokens as a strided view [n - seq_len, seq_len + 1] (no copy)."""
    if tokens.ndim != 1 or len(tokens) < seq_len + 1:
        raise ConfigError([Problem("data", f"the {name} split has {len(tokens):,} tokens, fewer than "
                                   f"seq_len + 1 = {seq_len + 1}",
                                   "lower seq_len, or give more data (data.max_bytes, "
                                   "data.val_fraction)")], "data")
    return sliding_window_view(tokens, seq_len + 1)


def _xy(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows [B, T+1] of any integer dtype -> contiguous int64 inputs and next-token targets."""
    return torch.from_numpy(rows[:, :-1].astype(np.int64)), torch.from_numpy(rows[:, 1:].astype(np.int64))


class LMSampler:
    """Random windows of a 1-D token array: next() -> (x, y) int64 [batch_size, seq_len].

    Owns only (seed, step); the token array is read, never copied (memory maps stay on disk).
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int = 0, *,
                 name: str = "train"):
        _check_sizes(seed, batch_size=batch_size, seq_len=seq_len)
        self.batch_size, self.seq_len, self.seed, self.step = batch_size, seq_len, seed, 0
        self._windows = _windows(tokens, seq_len, name)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch for the current step; y is x shifted left by one token."""
        rng = np.random.default_rng([self.seed, self.step])
        starts = rng.integers(0, len(self._windows), size=self.batch_size)
        self.step += 1
        return _xy(self._windows[starts])

    __next__ = next

    def __iter__(self):
        return self

    def state_dict(self) -> dict:
        """Everything needed to continue with the exact same batches."""
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a state_dict(); batch shape and data come from the constructor."""
        self.seed, self.step = int(state["seed"]), int(state["step"])


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """uint8 images [B, C, H, W] -> float32 (x / 255 - mean) / std, per channel."""
    c = x.shape[1]
    m = torch.as_tensor(np.asarray(mean, dtype=np.float32)).view(1, c, 1, 1)
    s = torch.as_tensor(np.asarray(std, dtype=np.float32)).view(1, c, 1, 1)
    return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0).sub_(m).div_(s)


class VisionSampler:
    """Epoch-wise shuffled batches: next() -> (float32 [B, C, H, W] normalized, int64 [B]).

    Owns (seed, epoch, position). Batches are always full: one that crosses the end of an epoch
    continues with the start of the next epoch's permutation.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int = 0,
                 mean: np.ndarray | None = None, std: np.ndarray | None = None):
        _check_sizes(seed, batch_size=batch_size)
        if len(x) == 0 or len(x) != len(y):
            raise ConfigError([Problem("data", f"{len(x)} images and {len(y)} labels: need the same "
                                       "number, at least one", "check the data source")], "data")
        self.x, self.y = x, np.asarray(y, dtype=np.int64)
        c = x.shape[1]
        self.mean = np.zeros(c, np.float32) if mean is None else np.asarray(mean, np.float32)
        self.std = np.ones(c, np.float32) if std is None else np.asarray(std, np.float32)
        self.batch_size, self.seed = batch_size, seed
        self.epoch, self.position = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.y))

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch_size images of the running permutation (wrapping into the next epoch)."""
        parts, need = [], self.batch_size
        while need:
            take = self._perm[self.position: self.position + need]
            parts.append(take)
            need -= len(take)
            self.position += len(take)
            if self.position == len(self._perm):
                self.epoch, self.position = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
        idx = np.concatenate(parts)
        return normalize(self.x[idx], self.mean, self.std), torch.from_numpy(self.y[idx])

    __next__ = next

    def __iter__(self):
        return self

    def state_dict(self) -> dict:
        """Everything needed to continue with the exact same batches."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a state_dict() of a sampler over the same data."""
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._perm = self._permutation(self.epoch)


def lm_val_batches(tokens: np.ndarray, batch_size: int, seq_len: int, n_batches: int,
                   n_windows: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n_windows` (default batch_size x n_batches) evenly spaced windows over the whole val array
    (no randomness), in batches of batch_size (the last may be short): the windows depend on their
    number only, so trials that pin it are scored on the same text whatever their batch size.
    A val split with fewer windows than asked gives each of its windows once (spacing them evenly
    would repeat some and weigh them twice in the mean)."""
    n = n_windows or batch_size * n_batches
    _check_sizes(batch_size=batch_size, seq_len=seq_len, n_batches=n_batches, n_windows=n)
    windows = _windows(tokens, seq_len, "val")
    starts = even_picks(len(windows), n)
    return [_xy(windows[starts[i: i + batch_size]]) for i in range(0, len(starts), batch_size)]


def even_picks(n_total: int, n: int) -> np.ndarray:
    """min(n, n_total) evenly spaced indices of 0..n_total-1, ascending, no repeats (deterministic)."""
    return np.linspace(0, n_total - 1, min(n, n_total)).round().astype(np.int64)


def lm_val_starts(tokens: np.ndarray, seq_len: int, n_windows: int) -> np.ndarray:
    """The val token offsets of the windows `lm_val_batches` gives for `n_windows`, in its order."""
    return even_picks(len(_windows(tokens, seq_len, "val")), n_windows)


def vision_val_batches(data: VisionData, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The whole val set in order, normalized with the train statistics (last batch may be short)."""
    _check_sizes(batch_size=batch_size)
    return [(normalize(data.val_x[s: s + batch_size], data.mean, data.std),
             torch.from_numpy(np.ascontiguousarray(data.val_y[s: s + batch_size])))
            for s in range(0, len(data.val_y), batch_size)]
