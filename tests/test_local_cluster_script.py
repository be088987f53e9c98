"""jobs/local-cluster.sh without a cluster: a stand-in `ray` (RAY=...) that behaves as Ray 2.60 does
when a port is taken between the script's check and `ray start` (it logs "Failed to bind" and exits
0), and the token the script creates (mode 600). The real cluster is in test_cluster.py."""

import os
import pathlib
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

if not os.path.isdir("/proc"):
    pytest.skip("jobs/local-cluster.sh checks ports through /proc (Linux only)", allow_module_level=True)

SCRIPT = str(pathlib.Path(__file__).resolve().parents[1] / "jobs" / "local-cluster.sh")
BIN = pathlib.Path(sys.executable).parent

# `ray start --head ...`: listens on the GCS, agent and client ports (as a process of the cluster:
# it inherits DNASWEEP_LOCAL_CLUSTER), but another process (without it) takes the dashboard port
# first, and it exits 0 after logging the failed bind, as Ray does.
FAKE_RAY = r'''#!{python}
import os, subprocess, sys
if sys.argv[1] != "start":
    sys.exit(0)
opts = dict(a[2:].split("=", 1) for a in sys.argv[2:] if a.startswith("--") and "=" in a)
hold = "import socket, sys, time; s = [socket.create_server(('', int(p))) for p in sys.argv[1:]]; time.sleep(600)"
foreign = {{k: v for k, v in os.environ.items() if k != "DNASWEEP_LOCAL_CLUSTER"}}
quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
other = subprocess.Popen([sys.executable, "-c", hold, opts["dashboard-port"]], env=foreign, **quiet)
ours = subprocess.Popen([sys.executable, "-c", hold, opts["port"], opts["dashboard-agent-listen-port"],
                         opts["ray-client-server-port"]], **quiet)
open(os.environ["FAKE_PIDS"], "w").write(f"{{other.pid}} {{ours.pid}}")
import time; time.sleep(1)
print(f"ERROR services.py:1500 -- Failed to bind to 127.0.0.1:{{opts['dashboard-port']}} (already occupied)")
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gone(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _env(tmp_path, **kw):
    env = {**os.environ, "LOCAL_CLUSTER_DIR": str(tmp_path / "c"), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "token"),
           "HOME": str(tmp_path / "home"), **kw}
    env.pop("RAY_AUTH_TOKEN", None)
    return env


@pytest.mark.slow  # runs the script (~2 s)
def test_a_port_lost_to_another_process_during_start_fails_and_stops_the_rest(tmp_path):
    fake = tmp_path / "ray"
    fake.write_text(FAKE_RAY.format(python=sys.executable))
    fake.chmod(0o755)
    dash = _free_port()
    env = _env(tmp_path, RAY=str(fake), RAY_PORT=str(_free_port()), DASHBOARD_PORT=str(dash), PORT_WAIT_S="5",
               FAKE_PIDS=str(tmp_path / "pids"))
    try:
        r = subprocess.run(["bash", SCRIPT, "start", "0"], env=env, capture_output=True, text=True, timeout=60)
        other, ours = map(int, (tmp_path / "pids").read_text().split())
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"port {dash} (dashboard) is held by another process, pid {other}" in r.stderr, r.stderr
        assert "Local Ray cluster" not in r.stdout and f"http://127.0.0.1:{dash}" not in r.stdout  # no URL of it
        deadline = time.time() + 10
        while not _gone(ours) and time.time() < deadline:
            time.sleep(0.2)
        assert _gone(ours), "the processes this start began must be stopped again"
        assert not _gone(other), "another cluster's process is never touched"
    finally:
        for pid in map(int, (tmp_path / "pids").read_text().split()) if (tmp_path / "pids").exists() else []:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_port_set_by_the_user_that_is_taken_is_refused_before_anything_starts(tmp_path):
    fake = tmp_path / "ray"
    fake.write_text("#!/bin/sh\necho ray was run >> \"$0.log\"\n")
    fake.chmod(0o755)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        for var in ("RAY_PORT", "DASHBOARD_PORT"):
            env = _env(tmp_path, RAY=str(fake), **{"RAY_PORT": str(_free_port()), var: str(port)})
            r = subprocess.run(["bash", SCRIPT, "start", "0"], env=env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 2, r.stdout + r.stderr
            assert f"{var}={port} is taken" in r.stderr and "nothing was started" in r.stderr
    assert not (tmp_path / "ray.log").exists()  # ray was never started
    assert not (tmp_path / "token").exists() and not (tmp_path / "c").exists()


@pytest.mark.slow  # runs the script (~2 s)
def test_token_created_by_the_script_is_private(tmp_path):
    """Both ways the script makes a token: in the file RAY_AUTH_TOKEN_PATH names, and in
    ~/.ray/auth_token through `ray get-auth-token --generate` (which alone would write it 0644)."""
    r = subprocess.run(["bash", SCRIPT, "token"], env=_env(tmp_path, RAY=str(BIN / "ray")), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    token = tmp_path / "token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64
    assert f"token: {token}" in r.stdout

    env = _env(tmp_path, RAY=str(BIN / "ray"))
    del env["RAY_AUTH_TOKEN_PATH"]
    r = subprocess.run(["bash", SCRIPT, "token"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    home_token = tmp_path / "home" / ".ray" / "auth_token"
    assert stat.S_IMODE(home_token.stat().st_mode) == 0o600 and len(home_token.read_text().strip()) == 64
    assert stat.S_IMODE(home_token.parent.stat().st_mode) == 0o700
    assert home_token.read_text() not in r.stdout + r.stderr  # the token itself is never printed

    before = home_token.read_text()  # an existing token is kept
    assert subprocess.run(["bash", SCRIPT, "token"], env=env, capture_output=True, timeout=60).returncode == 0
    assert home_token.read_text() == before
