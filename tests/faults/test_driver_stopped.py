"""Fault: the sweep's driver stops mid-sweep: SIGKILL (nothing saved on the way out), Ctrl-C and
SIGTERM (Ray Tune saves its state). `dnasweep resume SWEEP` then finishes the budget: finished
trials are not re-run, running ones continue from their checkpoints, no Optuna trial stays
RUNNING, MLflow has one run per trial and no run left open, and no metric step twice."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

pytestmark = pytest.mark.faults

SPACE = {
    "base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2},
             "data": {"source": "pystdlib", "max_bytes": 2000000},
             "train": {"max_steps": 60, "batch_size": 4, "eval_every": 30, "eval_batches": 2, "log_every": 5,
                       "checkpoint_every": 10}},
    "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
    "objectives": [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}],
    "budget": {"trials": 3, "concurrent": 2},
    "analyze": {"front": False},
}


def _progress(sweep_dir: str) -> dict[str, tuple[int, bool]]:
    """Per trial directory: last logged step, and whether it has finished (result.json)."""
    out = {}
    trials = os.path.join(sweep_dir, "trials")
    for tid in os.listdir(trials) if os.path.isdir(trials) else []:
        d = os.path.join(trials, tid)
        try:
            with open(os.path.join(d, "metrics.jsonl")) as f:
                last = max(json.loads(line).get("step", 0) for line in f)
        except (OSError, ValueError):
            last = 0
        out[tid] = (last, os.path.exists(os.path.join(d, "result.json")))
    return out


def _cli(*args):
    return [sys.executable, "-m", "dnasweep.cli", *args]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["SIGKILL", "SIGINT", "SIGTERM"])
def test_stopped_driver_resumes_to_the_budget(ray_cluster, tmp_path, sig):
    import optuna
    from mlflow import MlflowClient

    from dnasweep.sweep.study import ABANDONED, open_study

    address = ray_cluster.get_runtime_context().gcs_address
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    sweep = tmp_path / "root" / "s"
    with open(tmp_path / "first.log", "w") as log:  # the child keeps its own copy of the descriptor
        driver = subprocess.Popen(_cli("run", str(space), "--name", "s", "--root", str(tmp_path / "root"),
                                       "--address", address), stdout=log, stderr=subprocess.STDOUT, env=_env())
    # Stop it once one trial has finished and another is past a checkpoint, well before its end: two
    # trials started together finish within a step of each other, and one stopped at step 55 finished
    # during the stop (1 attempt, where the test expects a continuation). Past step 40, wait for the
    # third trial.
    deadline, at = time.time() + 240, {}
    while time.time() < deadline and driver.poll() is None:
        p = _progress(str(sweep))
        if any(done for _, done in p.values()) and any(20 <= s <= 40 and not done for s, done in p.values()):
            at = p
            driver.send_signal(sig)
            break
        time.sleep(0.2)
    assert at, f"the sweep never reached a stoppable state: {(tmp_path / 'first.log').read_text()[-3000:]}"
    rc = driver.wait(timeout=120)
    first = (tmp_path / "first.log").read_text()
    if sig == signal.SIGKILL:
        assert rc == -signal.SIGKILL
    else:  # a clean stop: exit 130 and the command to go on
        assert rc == 130, first[-3000:]
        assert f"dnasweep resume {sweep}" in first, first[-3000:]

    resumed = subprocess.run(_cli("resume", str(sweep), "--address", address), capture_output=True, text=True,
                             env=_env(), timeout=400)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert "Pareto front" in resumed.stdout

    study = open_study(str(sweep))
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL and ABANDONED not in t.user_attrs]
    # the budget, no more, no less
    assert len(complete) == 3 and not failed, ([(t.number, t.state.name, t.user_attrs) for t in study.trials],
                                               first[-2000:], resumed.stdout[-3000:])

    for tid, (step, done) in at.items():
        attempts = (sweep / "trials" / tid / "attempts.log").read_text().splitlines()
        if done:  # finished before the stop: never run again
            assert len(attempts) == 1, (tid, attempts)
        elif step >= 20 and tid in {t.user_attrs.get("ray_trial_id") for t in complete}:
            # running at the stop and kept by Ray Tune: continued from a checkpoint, not from 0
            assert len(attempts) == 2 and int(attempts[1].split()[3]) >= 10, (tid, attempts)

    client = MlflowClient(f"sqlite:///{sweep / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dnasweep").experiment_id
    runs = client.search_runs([exp], max_results=100)
    parents = [r for r in runs if "dnasweep.sweep" in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trial_ids = [r.data.tags["dnasweep.trial"] for r in children]
    assert len(trial_ids) == len(set(trial_ids)), "a trial got two MLflow runs"
    assert all(r.info.status in ("FINISHED", "FAILED") for r in children), [r.info.status for r in children]
    for t in complete:
        run = next(r for r in children if r.data.tags["dnasweep.trial"] == t.user_attrs["ray_trial_id"])
        assert run.info.status == "FINISHED"
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
        assert steps == list(range(5, 61, 5)), (t.number, steps)  # each step once, none missing


def test_sigterm_while_the_dense_rungs_train_stops_with_the_resume_line(ray_cluster, tmp_path):
    """SIGTERM before the trials (while the dense reference rungs trained) ended the driver through
    Ray's own handler: a stack dump, exit 134, no `dnasweep resume` line."""
    address = ray_cluster.get_runtime_context().gcs_address
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SPACE))
    script = ("import os, signal, sys, time\n"
              "from dnasweep.sweep import reference\n"
              "def rungs(*a, **k):  # the driver is told to stop while the rungs train\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    time.sleep(30)\n"
              "    raise SystemExit('SIGTERM did not stop the driver')\n"
              "reference.train_reference = rungs\n"
              "from dnasweep.cli import main\n"
              f"sys.exit(main(['run', {str(tmp_path / 's.yaml')!r}, '--name', 'ref', '--root', "
              f"{str(tmp_path / 'root')!r}, '--address', {address!r}]))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode == 130, (out.returncode, out.stderr[-3000:])
    assert f"dnasweep resume {tmp_path / 'root' / 'ref'}" in out.stderr
