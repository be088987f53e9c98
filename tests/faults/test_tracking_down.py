"""Fault: the MLflow tracking server is unreachable. At start: exit 2 before anything is created.
Mid-sweep: training goes on, results wait on the driver, and once the server answers again every
metric step is written exactly once (nothing lost, nothing doubled).

The outage is real at the network level: the sweep talks to a real `mlflow server` through a TCP
relay that the test closes (connections refused) and reopens on the same port."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

import contextlib

from dnasweep.space import parse_space  # noqa: E402
from dnasweep.sweep.ui import MLFLOW_UI_ENV  # noqa: E402

pytestmark = pytest.mark.faults

SPACE = {
    "base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2},
             "data": {"source": "pystdlib", "max_bytes": 2000000},
             "train": {"max_steps": 100, "batch_size": 4, "eval_every": 50, "eval_batches": 2, "log_every": 5}},
    "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
    "objectives": [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}],
    "budget": {"trials": 2, "concurrent": 2},
    "analyze": {"front": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """127.0.0.1:port -> target. `down()` cuts every open connection and, until `up()`, drops each
    new one as it comes (counted in `dropped`: the test knows the driver tried while it was down)."""

    def __init__(self, port: int, target: int):
        self.port, self.target, self.conns, self.srv = port, target, [], None
        self.is_down, self.dropped = False, 0

    def up(self):
        self.is_down = False
        if self.srv is None:
            self.srv = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
            threading.Thread(target=self._accept, args=(self.srv,), daemon=True).start()

    def down(self):
        self.is_down = True
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        self.conns.clear()

    def _accept(self, srv):
        while True:
            try:
                a, _ = srv.accept()
            except OSError:
                return
            if self.is_down:
                self.dropped += 1
                a.close()
                continue
            b = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    @staticmethod
    def _pipe(x, y):
        try:
            while data := x.recv(65536):
                y.sendall(data)
        except OSError:
            pass
        finally:
            for s in (x, y):
                with contextlib.suppress(OSError):
                    s.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{d / 'm.db'}",
                             "--artifacts-destination", str(d / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **MLFLOW_UI_ENV})  # no job runner: 2 processes, not 10
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start within 180 s")
    yield port
    os.killpg(proc.pid, 9)


def test_unreachable_server_at_start_exits_2_and_creates_nothing(tmp_path, capsys):
    import yaml

    from dnasweep.cli import main

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SPACE))
    uri = f"http://user:secret@127.0.0.1:{_free_port()}"
    assert main(["run", str(tmp_path / "s.yaml"), "--root", str(tmp_path / "root"), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "does not answer" in err and "MLFLOW_TRACKING_URI" in err
    assert "secret" not in err and "user:***@" in err  # the password is never printed
    assert not (tmp_path / "root").exists()


def _trial_steps(sweep_dir: str) -> list[int]:
    out = []
    trials = os.path.join(sweep_dir, "trials")
    for tid in os.listdir(trials) if os.path.isdir(trials) else []:
        try:
            with open(os.path.join(trials, tid, "metrics.jsonl")) as f:
                out.append(max(json.loads(line)["step"] for line in f))
        except (OSError, ValueError):
            pass
    return out


def test_outage_mid_sweep_loses_nothing(ray_cluster, mlflow_server, tmp_path):
    from mlflow import MlflowClient

    from dnasweep.sweep.runner import run_sweep

    relay = Relay(_free_port(), mlflow_server)
    relay.up()
    uri = f"http://127.0.0.1:{relay.port}"
    events = []

    def outage():  # down once a trial is past step 20, up again when one is past step 70 and the
        # driver has tried to write (it flushes every few seconds: a short outage could fall between)
        sweep = str(tmp_path / "down")
        for low, act in ((20, relay.down), (70, relay.up)):
            while not any(s >= low for s in _trial_steps(sweep)) or (act == relay.up and not relay.dropped):
                time.sleep(0.1)
            act()
            events.append((act.__name__, max(_trial_steps(sweep))))

    threading.Thread(target=outage, daemon=True).start()
    lines = []
    res = run_sweep(parse_space(SPACE, "down.yaml"), "down", root=str(tmp_path), log=lines.append, tracking_uri=uri)
    assert [e[0] for e in events] == ["down", "up"], events
    assert res.n_complete == 2 and res.n_failed == 0
    assert res.tracking_errors, "the outage was never noticed: the test did not test anything"

    client = MlflowClient(f"http://127.0.0.1:{mlflow_server}")  # straight to the server
    exp = client.get_experiment_by_name("dnasweep").experiment_id
    runs = client.search_runs([exp], filter_string="tags.`mlflow.parentRunId` != ''", max_results=50)
    mine = [r for r in runs if r.data.tags.get("dnasweep.trial") in os.listdir(tmp_path / "down" / "trials")]
    assert len(mine) == 2 and all(r.info.status == "FINISHED" for r in mine)
    for r in mine:
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "train/loss"))
        assert steps == list(range(5, 101, 5)), steps
        assert "result.json" in {a.path for a in client.list_artifacts(r.info.run_id)}
    relay.down()
    relay.srv.close()
