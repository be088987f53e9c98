"""Checkpoints: everything needed to continue a trial exactly where it stopped.

Layout: DIR/state.pt (model, optimizer, step, sampler and RNG state) and DIR/config.yaml.
Written to a temporary directory and renamed into place, so a crash mid-write never leaves a
half checkpoint; loaded with `torch.load(weights_only=True)` so a checkpoint cannot run code.
DIR/config.yaml is what `check_resumable` holds a resuming config to.
"""

from __future__ import annotations

import os
import shutil

import torch

STATE = "state.pt"


def rng_state() -> dict:
    s = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save(directory: str, state: dict, config_yaml: str) -> str:
    """Atomically write `state` and the config to `directory` (replacing an older one)."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = directory.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    torch.save(state, os.path.join(tmp, STATE))
    with open(os.path.join(tmp, "config.yaml"), "w") as f:
        f.write(config_yaml)
    old = directory.rstrip("/") + ".old"
    if os.path.exists(directory):
        shutil.rmtree(old, ignore_errors=True)
        os.rename(directory, old)
    os.rename(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def exists(directory: str) -> bool:
    """Whether `directory` holds a checkpoint, after finishing a `save` that was killed between its
    two renames (DIR moved to DIR.old, DIR.tmp not yet moved in): without this, a trial killed there
    would start over from step 0 although two complete checkpoints are on disk."""
    d = directory.rstrip("/")
    if not os.path.isfile(os.path.join(d, STATE)):
        for done in (d + ".tmp", d + ".old"):  # .tmp is complete once its config.yaml (written last) is there
            if os.path.isfile(os.path.join(done, STATE)) and os.path.isfile(os.path.join(done, "config.yaml")):
                shutil.rmtree(d, ignore_errors=True)
                os.rename(done, d)
                break
    return os.path.isfile(os.path.join(d, STATE))


# The keys a run may change and still continue from its checkpoint: the budget (how far to train;
# more train.max_steps extends a run), out_dir (a moved directory), and when the loop writes rows
# and checkpoints (train.log_every, train.checkpoint_every: neither touches the weights, the batches
# or the RNG, so the resumed run trains exactly as before). Any other key changes what is trained or
# measured (lr, data, model, batch, seed, device: auto may mean another device and precision, ...):
# resuming with it would report one run's weights under another run's config, so `check_resumable`
# refuses it.
RESUMABLE_CHANGES = ("train.max_steps", "train.max_tokens", "train.time_limit_s", "out_dir", "train.log_every",
                     "train.checkpoint_every")
_MISSING = object()


def check_resumable(directory: str, cfg) -> None:
    """Refuse to continue the checkpoint in `directory` under a config other than the one it was
    written with (its config.yaml), budget keys and out_dir aside: a ConfigError with one problem
    per differing dotted key."""
    from omegaconf import OmegaConf

    from dnasweep.config import flatten
    from dnasweep.errors import ConfigError, Problem

    fix = "pass --no-resume to start over, or train into another out_dir (--out DIR)"
    path = os.path.join(directory, "config.yaml")
    try:
        old = flatten(OmegaConf.to_container(OmegaConf.load(path)) or {})
    except Exception as e:  # missing or unreadable: what it was trained with is unknown
        raise ConfigError([Problem("<checkpoint>", f"cannot read the config the checkpoint in {directory} was "
                                   f"written with ({path}: {str(e).splitlines()[0][:200]})", fix)],
                          source=f"resume from {directory}") from None
    new = flatten(OmegaConf.to_container(OmegaConf.structured(cfg)))

    def show(v) -> str:
        return "nothing (the key is not there)" if v is _MISSING else repr(v)

    keys = sorted(set(old) | set(new))
    diff = [k for k in keys if old.get(k, _MISSING) != new.get(k, _MISSING)]
    problems = [Problem(k, f"the checkpoint in {directory} was written with {show(old.get(k, _MISSING))}, "
                        f"this config has {show(new.get(k, _MISSING))}", fix)
                for k in diff if k not in RESUMABLE_CHANGES]
    if problems:
        raise ConfigError(problems, source=f"resume from {directory}")


def remove(directory: str) -> None:
    """Delete a checkpoint and the leftovers of an interrupted `save` (DIR.tmp, DIR.old)."""
    for d in (directory, directory.rstrip("/") + ".tmp", directory.rstrip("/") + ".old"):
        shutil.rmtree(d, ignore_errors=True)


def load(directory: str, map_location="cpu") -> dict:
    return torch.load(os.path.join(directory, STATE), map_location=map_location, weights_only=True)
