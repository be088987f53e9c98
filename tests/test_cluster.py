"""A real two-node Ray cluster on this machine (jobs/local-cluster.sh: a head and one worker
raylet, token authentication on), a smoke sweep submitted with `ray job submit`, exactly as on a
cloud cluster. Each node has one CPU and one `trial_slot` custom resource, and trials ask for both,
so two concurrent trials must run one per node."""

import contextlib
import json
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest
import yaml

pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
pytestmark = pytest.mark.ray  # starts clusters of its own (jobs/local-cluster.sh)
if not os.path.isdir("/proc"):
    pytest.skip("jobs/local-cluster.sh stops its processes through /proc (Linux only)", allow_module_level=True)

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
SPACE = {
    "base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2},
             "data": {"source": "pystdlib", "max_bytes": 2000000},
             "train": {"max_steps": 40, "batch_size": 4, "eval_every": 20, "eval_batches": 2, "log_every": 5,
                       "warmup_steps": 5}},
    "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}, "loss.compute_weight": {"choice": [0.0, 0.3]}},
    "objectives": [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}],
    "budget": {"trials": 4, "concurrent": 2},
    "resources": {"cpu": 1, "gpu": 0, "custom": {"trial_slot": 1}},
    "analyze": {"front": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _local_cluster(workers: int, head_cpus: int = 1):
    """jobs/local-cluster.sh on free ports with a token file of its own; yields (env, script, dir)."""
    # A short directory: Ray's Unix socket paths must stay under 107 bytes.
    d = pathlib.Path(tempfile.mkdtemp(prefix="dn", dir="/tmp"))
    token = d / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY": str(BIN / "ray"), "RAY_PORT": str(_free_port()), "DASHBOARD_PORT": str(_free_port()),
           "HEAD_CPUS": str(head_cpus), "WORKER_CPUS": "1", "LOCAL_CLUSTER_DIR": str(d / "c"),
           "HEAD_RESOURCES": '{"head": 1, "trial_slot": 1}', "WORKER_RESOURCES": '{"worker_node": 1, "trial_slot": 1}',
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    script = str(REPO / "jobs" / "local-cluster.sh")
    try:
        up = subprocess.run(["bash", script, "start", str(workers)], env=env, capture_output=True, text=True,
                            timeout=240)
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        yield env, script, d
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    with _local_cluster(workers=1) as (env, _, d):
        yield env, f"http://127.0.0.1:{env['DASHBOARD_PORT']}", (d / "token").read_text().strip(), d


def _get(url: str, token: str | None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_sweep_submitted_as_a_ray_job_runs_on_both_nodes(cluster):
    import optuna
    from mlflow import MlflowClient

    env, dash, token, d = cluster
    (d / "space.yaml").write_text(yaml.safe_dump(SPACE))
    root = d / "sweeps"
    sub = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", dash, "--working-dir", str(REPO),
                          "--submission-id", "dnasweep-two-nodes", "--no-wait", "--",
                          sys.executable, "-m", "dnasweep.cli", "run", str(d / "space.yaml"), "--name", "two",
                          "--root", str(root)], env=env, capture_output=True, text=True, timeout=180)
    assert sub.returncode == 0, (sub.stdout + sub.stderr)[-3000:]

    # Token auth is on: the Jobs API answers 401 without the token, and lists the job with it.
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(f"{dash}/api/jobs/", None)
    assert e.value.code == 401
    assert "dnasweep-two-nodes" in {j["submission_id"] for j in _get(f"{dash}/api/jobs/", token)}

    deadline, status = time.time() + 480, None
    while time.time() < deadline:
        status = _get(f"{dash}/api/jobs/dnasweep-two-nodes", token)["status"]
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            break
        time.sleep(2)
    logs = _get(f"{dash}/api/jobs/dnasweep-two-nodes/logs", token)["logs"]
    assert status == "SUCCEEDED", logs[-4000:]
    assert "Pareto front" in logs

    sweep = root / "two"
    nodes = set()
    for t in (sweep / "trials").iterdir():
        nodes |= {ln.split(" node ")[1] for ln in (t / "attempts.log").read_text().splitlines()}
    alive = {n["node_id"] for n in _get(f"{dash}/api/v0/nodes?view=summary", token)["data"]["result"]["result"]}
    assert len(nodes) == 2 and nodes <= alive, (nodes, alive)  # trials ran on both nodes

    study = optuna.load_study(study_name="two", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep / "optuna.log"))))
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 4
    assert (sweep / "pareto_front.csv").read_text().count("\n") >= 2  # header + at least one trial
    client = MlflowClient(f"sqlite:///{sweep / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("dnasweep").experiment_id], max_results=20)
    assert sum(r.info.status == "FINISHED" and "mlflow.parentRunId" in r.data.tags for r in runs) == 4


def test_autoscaling_waits_for_a_node_to_join(tmp_path):
    """A cluster with no node that can hold a trial (a head with 0 CPUs, as `ray up` starts it):
    `dnasweep run --autoscaling` asks Ray's autoscaler for a trial's bundle and waits; a worker that
    joins (here by hand, as the autoscaler would) lets the sweep start and finish."""
    space = {**SPACE, "budget": {"trials": 2, "concurrent": 1}, "resources": {"cpu": 1, "gpu": 0},
             "base": {**SPACE["base"], "train": {**SPACE["base"]["train"], "max_steps": 20}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(space))
    with _local_cluster(workers=0, head_cpus=0) as (env, script, _):
        log = tmp_path / "run.log"
        with open(log, "w") as f:
            run = subprocess.Popen([sys.executable, "-m", "dnasweep.cli", "run", str(tmp_path / "s.yaml"), "--name",
                                    "auto", "--root", str(tmp_path / "root"), "--address",
                                    f"127.0.0.1:{env['RAY_PORT']}", "--autoscaling", "--no-analyze"],
                                   env={**env, "DNASWEEP_AUTOSCALING_WAIT_S": "240"}, stdout=f,
                                   stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while "asking the autoscaler" not in log.read_text() and run.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert "asking the autoscaler" in log.read_text(), log.read_text()[-3000:]
        added = subprocess.run(["bash", script, "add-worker"], env=env, capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, (added.stdout + added.stderr)[-3000:]
        assert run.wait(timeout=400) == 0, log.read_text()[-4000:]
    out = log.read_text()
    assert "a node that holds a trial is up" in out and "2 complete, 0 failed" in out


def test_start_with_the_dashboard_port_taken_never_points_at_it(tmp_path):
    """Port 8265 (the default dashboard port) held by another process, as by another Ray cluster:
    `start` takes a free port for the dashboard and prints that one, whose dashboard is this
    cluster's (it takes this cluster's token, made by the script, mode 600). A GCS port set by the
    user that is taken ends `start` (exit 2) naming it, with nothing started."""
    import re
    import stat

    try:
        holder = socket.create_server(("127.0.0.1", 8265))
    except OSError:
        holder = None  # something holds 8265 already: just as good
    taken = socket.create_server(("0.0.0.0", 0))
    d = pathlib.Path(tempfile.mkdtemp(prefix="dn", dir="/tmp"))  # short: Unix socket paths
    env = {**os.environ, "RAY": str(BIN / "ray"), "HEAD_CPUS": "0", "LOCAL_CLUSTER_DIR": str(d / "c"),
           "RAY_AUTH_TOKEN_PATH": str(d / "token"), "PATH": f"{BIN}:{os.environ['PATH']}"}
    for v in ("DASHBOARD_PORT", "RAY_ADDRESS", "RAY_AUTH_TOKEN"):
        env.pop(v, None)
    script = str(REPO / "jobs" / "local-cluster.sh")
    try:
        refused = subprocess.run(["bash", script, "start", "0"], env={**env, "RAY_PORT": str(taken.getsockname()[1])},
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"RAY_PORT={taken.getsockname()[1]} is taken" in refused.stderr
        assert not (d / "c").exists() and not (d / "token").exists()  # nothing started

        env["RAY_PORT"] = str(_free_port())
        up = subprocess.run(["bash", script, "start", "0"], env=env, capture_output=True, text=True, timeout=240)
        out = up.stdout + up.stderr
        assert up.returncode == 0, out[-3000:]
        assert not re.search(r"(?<!\d)8265(?!\d)", out), out[-3000:]  # never the other cluster's dashboard
        dash = re.search(r"dashboard:\s+(http://127\.0\.0\.1:(\d+))", up.stdout)
        assert dash and f"--address {dash.group(1)} " in up.stdout
        token = d / "token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert isinstance(_get(f"{dash.group(1)}/api/jobs/", token.read_text().strip()), list)  # ours: our token
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(f"{dash.group(1)}/api/jobs/", "0" * 64)
        assert e.value.code in (401, 403)  # another token is refused
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=120)
        taken.close()
        if holder:
            holder.close()
        shutil.rmtree(d, ignore_errors=True)


def test_run_prints_its_own_lines_only(tmp_path):
    """`dnasweep run` without --address: a new local cluster of its own, named on the first line;
    none of Ray's, Tune's or MLflow's boilerplate (the Tune configuration box, the TensorBoard hint,
    "Creating initial MLflow database tables", Ray's own dashboard line) unless --verbose."""
    space = {**SPACE, "budget": {"trials": 2, "concurrent": 1}, "resources": {"cpu": 1, "gpu": 0},
             "base": {**SPACE["base"], "train": {**SPACE["base"]["train"], "max_steps": 20, "eval_every": 10}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(space))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_AIR_NEW_OUTPUT")}
    run = subprocess.run([sys.executable, "-m", "dnasweep.cli", "run", str(tmp_path / "s.yaml"), "--name", "q",
                          "--root", str(tmp_path / "root"), "--no-analyze"], env=env, capture_output=True, text=True,
                         timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert out.splitlines()[0].startswith("Ray cluster: a new local cluster"), out[:500]
    for noise in ("Configuration for experiment", "TensorBoard", "Creating initial", "Started a local Ray instance",
                  "View detailed results", "ExperimentalWarning", "Token authentication is enabled"):
        assert noise not in out, noise
    assert out.count("dashboard: http") == 1 and "Ray dashboard: http://127.0.0.1:" in out  # Ray's URL once
    assert "2 complete, 0 failed" in out and "Pareto front" in out
