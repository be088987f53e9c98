"""Which MLflow store a sweep tracks to, one rule for run, resume, analyze and ui: the flag, then
$MLFLOW_TRACKING_URI, then what the sweep recorded, then the space file, then SWEEP/mlflow.db; and
whether an http store answers; a sweep's own SQLite store made from a template. Imports neither Ray
nor MLflow at module level."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from dnasweep.config.sweep import redact  # the rule lives beside tracking.uri (config: Ray-free)
from dnasweep.errors import ConfigError, Problem
from dnasweep.space import SearchSpace
from dnasweep.sweep.study import read_json

STATE_FILE = "tracking.json"  # SWEEP/tracking.json: experiment, parent run, Ray trial id -> MLflow run id


def default_uri(sweep_dir: str) -> str:
    return f"sqlite:///{os.path.join(sweep_dir, 'mlflow.db')}"


def resolve_uri(flag: str | None, sweep_dir: str, space: SearchSpace | None = None, source: str = "run") -> str:
    """The MLflow tracking URI of a sweep, the same for run, resume and analyze: --tracking-uri, then
    $MLFLOW_TRACKING_URI, then what the sweep recorded when it started (SWEEP/tracking.json), then the
    space file's tracking.uri, then the sweep's own SQLite store."""
    stored = (read_json(os.path.join(sweep_dir, STATE_FILE)) or {}).get("uri")
    # the first one given, with what to do to not use it (what an error about the URI names)
    given = [(flag, "--tracking-uri", "leave --tracking-uri out (with MLFLOW_TRACKING_URI unset)"),
             (os.environ.get("MLFLOW_TRACKING_URI"), "MLFLOW_TRACKING_URI", "unset MLFLOW_TRACKING_URI"),
             (stored, f"SWEEP/{STATE_FILE}", "pass --tracking-uri of another store"),
             (space and space.tracking.uri, "tracking.uri", f"drop tracking.uri from {space and space.source}"),
             (default_uri(sweep_dir), "", "")]
    uri, key, undo = next(g for g in given if g[0])
    if "***@" in uri:
        raise ConfigError([Problem("MLFLOW_TRACKING_URI", "this sweep logged to a tracking server with a password, "
                                   "which dnasweep does not store", "export MLFLOW_TRACKING_URI with the "
                                   "password first")], source)
    return TrackingURI(uri, key, undo)


class TrackingURI(str):
    """A resolved tracking URI that remembers where it was set (`key`: --tracking-uri,
    MLFLOW_TRACKING_URI, tracking.uri, ...) and how not to use it (`undo`), for `check_reachable`."""

    def __new__(cls, uri: str, key: str = "", undo: str = ""):
        # (defaults: pickle rebuilds a str subclass from the text alone, then restores the attributes)
        self = super().__new__(cls, uri)
        self.key, self.undo = key, undo
        return self


def check_reachable(uri: str, source: str = "tracking") -> None:
    """Fail fast (exit 2, before Ray or any trial starts) when a remote tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return  # file and database stores are created on first use
    _quick_http_failures()
    from mlflow import MlflowClient

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:
        # Named where the URI was set (resolve_uri): a --tracking-uri blamed on MLFLOW_TRACKING_URI
        # sent the user to unset a variable that was never set.
        key = getattr(uri, "key", "") or "MLFLOW_TRACKING_URI"
        undo = getattr(uri, "undo", "") or "unset MLFLOW_TRACKING_URI"
        tail = " to log elsewhere" if key.startswith("SWEEP/") else " to use the sweep's own SQLite store"
        raise ConfigError([Problem(key, f"the MLflow tracking server {redact(uri)} does not answer "
                                   f"({type(e).__name__}: {redact(str(e).splitlines()[0][:200])})",
                                   f"start it (mlflow server --host 127.0.0.1 --port 5000), fix the URI, or {undo}"
                                   f"{tail}")], source) from None


def _quick_http_failures() -> None:
    # MLflow retries a failed HTTP call 7 times with backoff (minutes) by default. Tracking runs on
    # the driver between Tune events, so a down server would stall the whole sweep; we buffer and
    # retry ourselves instead. A user's own setting wins.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def has_run(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
        return True
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise


def new_store_from_template(sweep_dir: str) -> None:
    """A sweep's own SQLite store starts as a copy of an empty store that MLflow built once per
    MLflow version ($XDG_CACHE_HOME/dnasweep): MLflow builds a new store by running every schema
    migration, ~1.6 s of the driver's CPU at each sweep start (bench/orchestration.py), a copy
    takes milliseconds. The copy's Default experiment keeps its artifacts in the sweep, as every
    experiment a sweep creates does. Without a writable cache MLflow builds the store itself."""
    import shutil
    import sqlite3

    import mlflow
    from mlflow import MlflowClient

    from dnasweep.data.pystdlib import cache_dir

    db = os.path.join(sweep_dir, "mlflow.db")
    if os.path.exists(db):
        return
    template = cache_dir() / f"mlflow-{mlflow.__version__}.db"
    try:
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{template}.{os.getpid()}.tmp"
            MlflowClient(f"sqlite:///{tmp}").search_experiments(max_results=1)  # MLflow migrates it
            os.replace(tmp, template)
        shutil.copyfile(template, db + ".tmp")
        with sqlite3.connect(db + ".tmp") as con:
            con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                        (Path(sweep_dir, "mlartifacts", "0").resolve().as_uri(),))
        con.close()
        os.replace(db + ".tmp", db)
    except (OSError, sqlite3.Error):
        return


_WARMING: dict[str, threading.Thread] = {}  # tracking URI -> the thread warming it (a thread does not
# pickle: Tune pickles the tracker with its run config, so the thread is kept here, not on it)


def warm_store(uri: str, sweep_dir: str) -> None:
    """On a thread: MLflow's import and, for a sweep's own SQLite store, the store itself (MLflow
    caches it and its engine per URI), which the tracker's first write would otherwise do on Tune's
    event loop. `warmed(uri)` waits for it. A failure is left to that write, which reports it as
    every tracking failure."""

    def warm() -> None:
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Metric  # noqa: F401 - imported by the first report

            if uri == default_uri(sweep_dir):
                new_store_from_template(sweep_dir)
                MlflowClient(uri).search_experiments(max_results=1)
        except Exception:  # noqa: BLE001 - see the docstring
            pass

    _WARMING[uri] = t = threading.Thread(target=warm, daemon=True, name="dnasweep-mlflow-warm")
    t.start()


def warmed(uri: str) -> None:
    """Wait for `warm_store(uri)`, if one runs."""
    t = _WARMING.pop(uri, None)
    if t is not None:
        t.join()
