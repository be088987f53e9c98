"""`dnasweep ui SWEEP`: the MLflow UI on the sweep's tracking store and optuna-dashboard on its Optuna
journal (SWEEP/optuna.log), both bound to 127.0.0.1 on free ports, until Ctrl-C.

Each tool runs under a small guard process that holds the read end of a pipe from dnasweep: when
dnasweep ends, however it ends (Ctrl-C, SIGTERM, kill -9), the pipe closes and the guard ends the
tool's whole process group (`mlflow ui` starts uvicorn workers of its own). Nothing outlives it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from dnasweep.errors import ConfigError, Problem

HOST = "127.0.0.1"  # never another interface: both UIs can change the stores (MLflow deletes runs)
# MLflow 3's server starts a job runner by default (8 huey consumer processes, ~240 MB and ~2 CPU-s
# each, for its GenAI jobs): nothing a sweep's UI uses. Off, the UI is 2 processes (measured: 7
# CPU-s to serve instead of 23).
MLFLOW_UI_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}

# The guard: runs argv[1:] in a process group of its own; ends it when its stdin reaches EOF (the
# dnasweep that started it is gone) or on SIGTERM / SIGINT; exits with the tool's code otherwise.
_GUARD = r"""
import os, signal, subprocess, sys, threading, time

tool = subprocess.Popen(sys.argv[1:], start_new_session=True, stdin=subprocess.DEVNULL)


def end(*_):
    for sig in (signal.SIGTERM, signal.SIGKILL):  # SIGKILL also ends what the tool started in its group
        try:
            os.killpg(tool.pid, sig)
        except ProcessLookupError:
            break
        try:
            tool.wait(5)
        except subprocess.TimeoutExpired:
            pass
    os._exit(0)


signal.signal(signal.SIGTERM, end)
signal.signal(signal.SIGINT, end)
threading.Thread(target=lambda: (sys.stdin.buffer.read(), end()), daemon=True).start()
while tool.poll() is None:  # not tool.wait(): it would hold the lock end() waits with
    time.sleep(0.2)
try:  # the tool ended by itself: so does what it started
    os.killpg(tool.pid, signal.SIGKILL)
except ProcessLookupError:
    pass
os._exit(tool.returncode if tool.returncode >= 0 else 128 - tool.returncode)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class _Tool:
    """One UI under its guard, its output in a log file."""

    def __init__(self, name: str, argv: list[str], port: int, logdir: str, env: dict[str, str] | None = None):
        self.name, self.port, self.url = name, port, f"http://{HOST}:{port}"
        self.log = os.path.join(logdir, f"{name.replace(' ', '-')}.log")
        with open(self.log, "wb") as out:
            self.guard = subprocess.Popen([sys.executable, "-c", _GUARD, *argv], stdin=subprocess.PIPE,
                                          stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def tail(self, n: int = 15) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.guard.poll() is None:
            self.guard.stdin.close()  # EOF: the guard ends the tool's process group
            try:
                self.guard.wait(15)
            except subprocess.TimeoutExpired:
                self.guard.kill()
                self.guard.wait()


def _executable(name: str) -> str:
    """A console script of this Python's environment (the venv's), else from PATH."""
    here = os.path.join(os.path.dirname(sys.executable), name)
    found = here if os.access(here, os.X_OK) else shutil.which(name)
    if not found:
        raise ConfigError([Problem(name, "is not installed", "pip install 'dnasweep[sweep]' (it brings mlflow and "
                                   "optuna-dashboard)")], "ui")
    return found


def serve(sweep_dir: str, out=print, wait_s: float = 180.0) -> int:
    """Start both UIs on the sweep, print their URLs, wait for Ctrl-C (0) or for one to die (1)."""
    from dnasweep.sweep.study import journal, open_study, read_space
    from dnasweep.sweep.tracking_uri import redact, resolve_uri

    sweep_dir = os.path.abspath(sweep_dir)
    study = open_study(sweep_dir, "ui")  # exit 2 for a directory that is not a sweep
    study_id = journal(sweep_dir).get_study_id_from_name(study.study_name)  # optuna-dashboard's page of it
    space = read_space(sweep_dir)
    uri = resolve_uri(None, sweep_dir, space, "ui")
    dashboard = _executable("optuna-dashboard")
    remote = uri.startswith(("http://", "https://"))  # a tracking server is its own UI
    mlflow = None if remote else _executable("mlflow")

    logdir = tempfile.mkdtemp(prefix="dnasweep-ui-")
    tools: list[_Tool] = []
    try:
        port = free_port()
        tools.append(_Tool("optuna-dashboard", [dashboard, os.path.join(sweep_dir, "optuna.log"), "--storage-class",
                                                "JournalFileStorage", "--host", HOST, "--port", str(port)],
                           port, logdir))
        if mlflow:
            port = free_port()
            tools.append(_Tool("MLflow UI", [mlflow, "ui", "--backend-store-uri", uri, "--host", HOST, "--port",
                                             str(port), "--workers", "1"], port, logdir, MLFLOW_UI_ENV))
        deadline = time.time() + wait_s
        waiting = list(tools)
        while waiting:
            for t in list(waiting):
                if t.guard.poll() is not None:
                    return _died(t, out)
                if _answers(t.url + "/"):
                    waiting.remove(t)
            if waiting and time.time() > deadline:
                for t in waiting:
                    out(f"error: {t.name} did not answer at {t.url} within {wait_s:.0f} s; its last lines:\n{t.tail()}",
                        file=sys.stderr)
                return 1
            time.sleep(0.3)
        name = os.path.basename(sweep_dir)
        mlflow_url = uri if remote else tools[1].url
        out(f"sweep {name} ({sweep_dir})\n"
            f"  MLflow UI:         {redact(mlflow_url)}   (store {redact(uri)}, experiment "
            f"{space.tracking.experiment})\n"
            f"  optuna-dashboard:  {tools[0].url}/dashboard/studies/{study_id}   (study {study.study_name})\n"
            "Ctrl-C stops both.", flush=True)
        while True:
            for t in tools:
                if t.guard.poll() is not None:
                    return _died(t, out)
            time.sleep(0.5)
    except KeyboardInterrupt:
        out("\nstopping the UIs", file=sys.stderr)
        return 0
    finally:
        for t in tools:
            t.stop()
        shutil.rmtree(logdir, ignore_errors=True)


def _died(t: _Tool, out) -> int:
    out(f"error: {t.name} ended (exit code {t.guard.returncode}); its last lines:\n{t.tail()}", file=sys.stderr)
    return 1
