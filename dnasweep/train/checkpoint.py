"""Checkpoints: everything needed to continue a trial exactly where it stopped.

Layout: DIR/state.pt (model, optimizer, step, sampler and RNG state) and DIR/config.yaml.
Written to a temporary directory and renamed into place, so a crash mid-write never leaves a
half checkpoint; loaded with `torch.load(weights_only=True)` so a checkpoint cannot run code.
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
    return os.path.isfile(os.path.join(directory, STATE))


def check_same_model(directory: str, cfg) -> None:
    """Refuse to resume a checkpoint written for a different model (or task): list the keys."""
    from omegaconf import OmegaConf

    from dnasweep.config import flatten
    from dnasweep.errors import ConfigError, Problem

    old = OmegaConf.to_container(OmegaConf.load(os.path.join(directory, "config.yaml")))
    new = OmegaConf.to_container(OmegaConf.structured(cfg))
    a, b = flatten({"model": old.get("model", {})}), flatten({"model": new["model"]})
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if diff:
        raise ConfigError([Problem(k, f"the checkpoint in {directory} was written with {a.get(k)!r}, "
                                   f"this config has {b.get(k)!r}",
                                   "train into a new out_dir, or pass --no-resume to start over")
                           for k in diff], source="resume")


def load(directory: str, map_location="cpu") -> dict:
    return torch.load(os.path.join(directory, STATE), map_location=map_location, weights_only=True)
