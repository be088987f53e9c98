"""The input contract of `dnasweep analyze`: how a trained model routed held-out tokens.

The caller (which runs the model; torch lives there, not here) fills a `Routed`; everything in
dnasweep.analyze reads only numpy arrays from it.

Shape legend: N tokens (LM) or patches (vision), S steps, K slots per step, M modules,
G groups (documents / images), C attribute classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Routed:
    """Routing of N tokens (LM) or patches (vision) through S steps with up to K modules per step."""

    paths_NSK: np.ndarray  # int, module id per (token, step, slot); -1 = unused slot
    module_names: list[str]  # M names, e.g. ["T0","T1","A0","M0","I0"]; identity modules start with "I"
    flops_N: np.ndarray  # float, forward FLOPs spent on each token (by its path)
    attr_N: np.ndarray  # int, a token attribute class (LM: byte class; vision: image label)
    attr_names: list[str]  # names of the attribute classes
    group_N: np.ndarray  # int, document / image id of each token
    position_N: np.ndarray  # int, position of the token in its sequence / patch index
    group_loss_G: np.ndarray  # float, mean loss of each group id 0..G-1
    context_N: list[str] | None = None  # short printable context per token (LM: ~12 chars with the token marked)
    # each group's place in the held-out split (LM: token offset of its window; vision: image index), which
    # names it in the report: group ids count the analysed subset only
    val_index_G: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Checked once here so every analysis below can index without re-validating.
        p = np.asarray(self.paths_NSK)
        if p.ndim != 3 or p.shape[0] == 0 or p.shape[1] == 0 or p.shape[2] == 0:
            raise ValueError(f"paths_NSK must be a non-empty [N, S, K] array, got shape {p.shape}")
        if not np.issubdtype(p.dtype, np.integer):
            raise ValueError(f"paths_NSK must hold integer module ids, got dtype {p.dtype}")
        M = len(self.module_names)
        if M == 0:
            raise ValueError("module_names must name at least one module, got []")
        lo, hi = int(p.min()), int(p.max())
        if lo < -1 or hi >= M:
            raise ValueError(f"paths_NSK ids must lie in [-1, {M - 1}] (-1 = unused slot), got range [{lo}, {hi}]")
        self.paths_NSK = p
        N = p.shape[0]
        for name in ("flops_N", "attr_N", "group_N", "position_N"):
            a = np.asarray(getattr(self, name))
            if a.shape != (N,):
                raise ValueError(f"{name} must have shape ({N},) like paths_NSK's first axis, got {a.shape}")
            setattr(self, name, a)
        for name in ("attr_N", "group_N", "position_N"):
            a = getattr(self, name)
            if not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"{name} must be integer, got dtype {a.dtype}")
            if a.min() < 0:
                raise ValueError(f"{name} must be >= 0, got minimum {int(a.min())}")
        if self.attr_N.max() >= len(self.attr_names):
            raise ValueError(f"attr_N must index attr_names (len {len(self.attr_names)}), got max "
                             f"{int(self.attr_N.max())}")
        self.group_loss_G = np.asarray(self.group_loss_G, dtype=float)
        if self.group_loss_G.ndim != 1 or self.group_N.max() >= len(self.group_loss_G):
            raise ValueError(f"group_loss_G must be 1-D with an entry per group id 0..{int(self.group_N.max())}, "
                             f"got shape {self.group_loss_G.shape}")
        if self.context_N is not None and len(self.context_N) != N:
            raise ValueError(f"context_N must have one string per token ({N}), got {len(self.context_N)}")
        if self.val_index_G is not None:
            self.val_index_G = np.asarray(self.val_index_G)
            if self.val_index_G.shape != self.group_loss_G.shape:
                raise ValueError(f"val_index_G must have one index per group ({len(self.group_loss_G)}), got "
                                 f"shape {self.val_index_G.shape}")

    n_tokens = property(lambda self: int(self.paths_NSK.shape[0]))
    n_steps = property(lambda self: int(self.paths_NSK.shape[1]))
    n_modules = property(lambda self: len(self.module_names))
    n_groups = property(lambda self: int(len(self.group_loss_G)))
