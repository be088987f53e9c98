"""The dense reference frontier of a sweep, and how far a trial is from it.

A `reference:` ladder is every (d_model, dense_layers) pair applied to the base as a dense model:
the same data, steps, batch and seed as the trials. Each rung is cached by the hash of its config
(out_dir aside), so a later sweep with the same base reuses it and a resumed sweep never retrains
it. From the rungs' results, the frontier is the non-dominated set in (FLOPs/token, val/loss);
a trial's compute gain is the FLOPs/token a dense model on that frontier would need for the
trial's val/loss (linear in log FLOPs between rungs) over the trial's own; > 1: the DNA beats
dense. Outside the ladder's range the gain is a bound, never an extrapolation. The speed gain
(tokens/s) reads the same way off the rungs not beaten on both tokens/s and val/loss (the fastest
dense model at a loss, which need not be the cheapest), and holds only on the hardware the rungs
trained on: each rung records it (`hardware()`),
and a trial elsewhere (a cached ladder from a CPU machine, trials on a GPU) gets no speed gain.
Ray-free.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import pathlib
from dataclasses import dataclass

from omegaconf import OmegaConf

from dnasweep import metrics as M
from dnasweep.config import TrialConfig
from dnasweep.errors import ConfigError, Problem, raise_if
from dnasweep.space.apply import apply


def ladder(base: TrialConfig, d_model: list[int], dense_layers: list[int]) -> list[TrialConfig]:
    """The dense configs of the ladder; ConfigError naming every rung that is invalid."""
    out, p = [], []
    for w, n in itertools.product(d_model, dense_layers):
        try:
            out.append(apply(base, {"model.kind": "dense", "model.d_model": w, "model.dense_layers": n}))
        except ConfigError as e:
            p += [Problem("reference", f"rung d_model={w}, dense_layers={n}: {q.key}: {q.message}", q.fix)
                  for q in e.problems]
    raise_if(p, "reference")
    return out


TRAINING_CODE = ("config", "data", "model", "train")  # dnasweep's packages whose source trains a rung


@functools.cache
def code_identity(root: str | None = None) -> str:
    """The code a rung trains with: the source of dnasweep's TRAINING_CODE under `root` (the installed
    package when None) and torch's version. dnasweep's version string never moved while the model
    and the loop did (a ViT's position table lost its weight decay, tokens/s stopped counting
    warm-up), so a cache keyed by it kept rungs trained by older code beside newer trials."""
    from importlib.metadata import version

    base = pathlib.Path(root or pathlib.Path(__file__).resolve().parents[1])
    h = hashlib.sha256(f"torch {version('torch')}".encode())
    for pkg in TRAINING_CODE:
        for f in sorted((base / pkg).rglob("*.py")):
            h.update(f.relative_to(base).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def config_hash(cfg: TrialConfig, data: bool = True) -> str:
    """What identifies a rung's training: its whole config but out_dir and, with `data` (the key of
    the cache shared between sweeps), the data it reads (files' location, sizes and mtimes;
    dnasweep.data.config.identity) and the code that trains it (`code_identity`). A sweep finds its
    own rungs by the config alone: a resume on another head, or after the corpus was touched, keeps
    its frontier."""
    from dnasweep.data.config import identity

    d = OmegaConf.to_container(OmegaConf.structured(cfg))
    d.pop("out_dir")
    if data:
        d["_data"], d["_code"] = identity(cfg.data, cfg.model.task), code_identity()
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(d)).encode()).hexdigest()[:16]


def hardware(device) -> str:
    """What a run's tokens/s depend on: the GPU's name, or the CPU's model and torch's threads."""
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    import platform

    return f"{device.type}: {model or platform.machine()} x{torch.get_num_threads()} threads"


@dataclass
class Gain:
    """A ratio against the frontier: exact inside the ladder's range, a bound outside it."""

    value: float
    bound: int = 0  # +1: more than value; -1: less than value; 0: exact

    def __str__(self) -> str:
        return {1: "> ", -1: "< ", 0: ""}[self.bound] + f"{self.value:.3g}"


class Frontier:
    """The dense frontier: rungs not beaten on both FLOPs/token and val/loss, by rising FLOPs."""

    def __init__(self, rungs: list[dict]):
        # the rungs' hardware when they agree and each recorded it (older caches did not): else None
        kinds = {r.get("hardware") for r in rungs}
        self.hardware = kinds.pop() if len(kinds) == 1 else None
        pts = sorted(((r[M.FLOPS_PER_TOKEN], r[M.VAL_LOSS], r.get(M.TOKENS_PER_S)) for r in rungs
                      if M.is_number(r.get(M.FLOPS_PER_TOKEN)) and M.is_number(r.get(M.VAL_LOSS))),
                     key=lambda p: p[:2])  # by FLOPs then loss only: a missing tokens/s does not compare
        self.points: list[tuple[float, float, float | None]] = []
        for f, loss, tps in pts:  # keep a rung only if it lowers the loss of every cheaper one
            if not self.points or loss < self.points[-1][1]:
                self.points.append((f, loss, tps))
        # The speed gain's own frontier: rungs not beaten on both tokens/s and val/loss, fastest first.
        # The FLOPs frontier is not it: a wide rung with a few more FLOPs than a deep one of the same
        # loss can run twice as fast (fewer, larger kernels), and a trial was set against the slower.
        self.timed = all(M.is_number(p[2]) for p in pts)
        self.speed_points: list[tuple[float, float, float | None]] = []
        for f, loss, tps in sorted(pts, key=lambda p: (-p[2], p[1])) if self.timed else []:
            if not self.speed_points or loss < self.speed_points[-1][1]:
                self.speed_points.append((f, loss, tps))

    def __bool__(self) -> bool:
        return bool(self.points)

    def _at(self, loss: float, col: int, pts: list | None = None) -> tuple[float, int]:
        """Column `col` (log-interpolated) of the frontier `pts` (the FLOPs one by default; losses
        falling along it) where its loss equals `loss`; a bound flag of +1 / -1 when `loss` is below /
        above every rung's."""
        pts = pts or self.points
        if loss < pts[-1][1]:
            return pts[-1][col], 1
        if loss > pts[0][1]:
            return pts[0][col], -1
        for lo, hi in itertools.pairwise(pts):  # losses fall along the frontier
            if hi[1] <= loss <= lo[1]:
                t = (lo[1] - loss) / (lo[1] - hi[1])
                return math.exp(math.log(lo[col]) + t * (math.log(hi[col]) - math.log(lo[col]))), 0
        return pts[0][col], 0  # a single rung whose loss equals `loss`

    def compute_gain(self, loss: float, flops: float) -> Gain:
        """Dense FLOPs/token for `loss` over `flops`; a lower bound past the largest rung's quality,
        an upper bound below the smallest's."""
        dense, bound = self._at(loss, 0)
        return Gain(dense / flops, bound)

    def speed_gain(self, loss: float, tokens_per_s: float, hardware: str | None = None) -> Gain | None:
        """`tokens_per_s` over the fastest dense tokens/s at `loss` on the rungs' speed frontier (None
        if a rung lacks tokens/s, or if `hardware` is given and is not the rungs'). A better loss than
        every rung bounds the dense speed from above, so the gain from below."""
        if not self.timed or (hardware is not None and hardware != self.hardware):
            return None
        dense, bound = self._at(loss, 2, self.speed_points)
        return Gain(tokens_per_s / dense, bound)

    def metrics(self, m: dict, hardware: str | None = None) -> dict:
        """The compare/* metrics of one evaluation's metrics `m` (empty if it lacks what they need);
        with `hardware` (the trial's), the speed gain only if the rungs trained on the same."""
        loss, flops, tps = m.get(M.VAL_LOSS), m.get(M.FLOPS_PER_TOKEN), m.get(M.TOKENS_PER_S)
        if not (self and M.is_number(loss) and M.is_number(flops) and flops > 0):
            return {}
        g = self.compute_gain(loss, flops)
        out = {M.COMPUTE_GAIN: g.value, M.COMPUTE_GAIN_BOUND: float(g.bound)}
        if M.is_number(tps) and (s := self.speed_gain(loss, tps, hardware)) is not None:
            out.update({M.SPEED_GAIN: s.value, M.SPEED_GAIN_BOUND: float(s.bound)})
        return out


def gain_text(row: dict, key: str = M.COMPUTE_GAIN) -> str:
    """A gain as shown in tables: '1.8', '> 3.1', '< 0.4', '-' when absent."""
    if not M.is_number(row.get(key)):
        return "-"
    return str(Gain(row[key], int(row.get(M.BOUND_OF[key]) or 0)))
