"""The command line's own flags, checked before a command starts anything (Ray, a sweep
directory, a download): each check returns the Problems of one flag, and a command raises them all
at once. Values that come from a config file are checked by dnasweep.config instead."""

from __future__ import annotations

import argparse
import os
import re
import socket

from dnasweep.config.sweep import TRACKING_URI_FORMS, tracking_scheme_problem
from dnasweep.errors import Problem, raise_if

_CONNECT_TIMEOUT_S = 5.0  # the --address check: a head that does not accept a TCP connection in 5 s is not there
_DEVICE_FIX = "use one of: cpu, cuda, cuda:N (N: the GPU's index)"


def tracking_problems(flag: str | None) -> list[Problem]:
    """The MLflow tracking URI given (--tracking-uri, else $MLFLOW_TRACKING_URI) against the schemes
    MLflow has a store for: with another one (bogus://x) every write fails, the tracker only reports
    those, and a whole sweep ran with nothing recorded."""
    key, uri = ("--tracking-uri", flag) if flag is not None else ("MLFLOW_TRACKING_URI",
                                                                  os.environ.get("MLFLOW_TRACKING_URI"))
    undo = "leave the flag out" if key.startswith("--") else "unset MLFLOW_TRACKING_URI"
    fix = f"use {TRACKING_URI_FORMS}; or {undo} to log to the sweep's own SWEEP/mlflow.db"
    if uri is None or (not uri.strip() and not key.startswith("--")):  # an empty variable: unset, as resolve_uri has it
        return []
    if not uri.strip():  # the flag given empty was ignored (resolve_uri falls back to the default)
        return [Problem(key, "is empty", fix)]
    why = tracking_scheme_problem(uri)
    return [Problem(key, why, fix)] if why else []


def dir_problem(path: str, key: str, what: str, fix: str) -> Problem | None:
    """`path` must be (or become) a directory: empty, or a file there or above it, fails only once the
    command has started (after Ray, for a sweep)."""
    if not path.strip():
        return Problem(key, f"is empty: it names no {what}", fix)
    here = os.path.abspath(path)
    while not os.path.exists(here):  # the nearest part of it that exists
        if os.path.dirname(here) == here:
            return None
        here = os.path.dirname(here)
    if os.path.isdir(here):
        return None
    where = "not a directory" if here == os.path.abspath(path) else f"so {path} cannot be a directory"
    return Problem(key, f"{here} is a file, {where} (the {what})", fix)


def root_problem(root: str) -> Problem | None:
    return dir_problem(root, "--root", "directory of sweeps", "pass the directory that holds (or is to hold) the "
                        "sweep directories, e.g. --root runs/sweeps")


def address_problem(flag: str | None) -> Problem | None:
    """A Ray address host:port or ray://host:port (--address, else $RAY_ADDRESS) that takes no TCP
    connection within a few seconds: ray.init would retry it for minutes before failing."""
    key, address = ("--address", flag) if flag else ("RAY_ADDRESS", os.environ.get("RAY_ADDRESS"))
    m = re.fullmatch(r"(?:ray://)?(\[[^\]]+\]|[^:/\[\]]+):(\d+)/?", (address or "").strip())
    if m is None:  # unset, auto, local, or a form ray.init judges itself
        return None
    host, port = m.group(1).strip("[]"), int(m.group(2))
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S):
            return None
    except OSError as e:  # refused, timed out, unknown host
        why = e.strerror or str(e) or type(e).__name__
    drop = "drop --address" if key.startswith("--") else "unset RAY_ADDRESS"
    return Problem(key, f"no Ray cluster answers at {address} ({host}:{port}: {why})",
                   f"start the head there (ray start --head, on that machine), or check the address (ray status "
                   f"--address {host}:{port}); or {drop} to run on a new local cluster")


def sweep_flag_problems(args: argparse.Namespace, root: bool) -> list[Problem]:
    """Every problem of `run`'s or `resume`'s flags, judged before anything starts."""
    p = [root_problem(args.root)] if root else []
    p += [*tracking_problems(args.tracking_uri), address_problem(args.address)]  # (last: it may wait 5 s)
    return [q for q in p if q]


def sweep_flags(args: argparse.Namespace, command: str, root: bool) -> None:
    """ConfigError (exit 2) with every problem of `run`'s or `resume`'s flags, before anything starts."""
    raise_if(sweep_flag_problems(args, root), command)


def device_problems(device: str) -> list[Problem]:
    """--device as torch takes it, and there: torch.device('gpu') or a CUDA device this machine lacks
    was a traceback from deep inside the analysis."""
    m = re.fullmatch(r"cpu|cuda(?::(\d+))?", device)
    if device == "cpu":
        return []
    import torch

    if not torch.cuda.is_available():
        no_cuda = "CUDA is not available on this machine"
        return [Problem("--device", f"{device!r}: " + (no_cuda if m else f"unknown device ({no_cuda})"),
                        _DEVICE_FIX.replace("use one of", "use --device cpu here; one of"))]
    if m is None:
        return [Problem("--device", f"unknown device {device!r}", _DEVICE_FIX)]
    n = torch.cuda.device_count()
    if m.group(1) is not None and int(m.group(1)) >= n:
        return [Problem("--device", f"{device!r}: this machine has {n} CUDA device{'s' if n != 1 else ''} "
                        f"(cuda:0 to cuda:{n - 1})", f"use --device cuda:0 to cuda:{n - 1}, or cuda")]
    return []
