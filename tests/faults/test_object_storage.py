"""Storage: a sweep kept in object storage survives losing its head node. The sweep runs with
--storage URI (file:// here: the same pyarrow code path as s3:// and gs://), trials train in
node-local scratch and upload their directories; the driver is SIGKILLed and its whole local
directory deleted; `dnasweep resume URI/NAME` on a fresh root finishes the budget from the store."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from .test_driver_stopped import SPACE, _env  # noqa: E402

pytestmark = pytest.mark.faults


def _store_results(bucket) -> int:
    """Trials the store has seen end: uploaded result.json and, mirrored after it, COMPLETE in the journal."""
    import optuna

    trials = bucket / "trials"
    uploaded = sum((trials / t / "result.json").exists() for t in os.listdir(trials)) if trials.is_dir() else 0
    if not uploaded or not (bucket / "optuna.log").exists():
        return 0
    study = optuna.load_study(study_name="objs", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(bucket / "optuna.log"))))
    return min(uploaded, sum(t.state.name == "COMPLETE" for t in study.trials))


def test_sweep_in_object_storage_resumes_on_a_new_head(ray_cluster, tmp_path):
    from dnasweep.sweep.study import open_study

    address = ray_cluster.get_runtime_context().gcs_address
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SPACE))
    storage = f"file://{tmp_path / 'bucket'}"
    store = tmp_path / "bucket" / "objs"
    cli = [sys.executable, "-m", "dnasweep.cli"]
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen([*cli, "run", str(tmp_path / "s.yaml"), "--name", "objs", "--root",
                                   str(tmp_path / "head1"), "--storage", storage, "--address", address],
                                  stdout=log, stderr=subprocess.STDOUT, env=_env())
    deadline = time.time() + 240
    while time.time() < deadline and driver.poll() is None and _store_results(store) < 1:
        time.sleep(0.2)
    assert _store_results(store) >= 1, (tmp_path / "first.log").read_text()[-3000:]
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=60)
    shutil.rmtree(tmp_path / "head1")  # the head node is gone; only the store is left

    out = subprocess.run([*cli, "resume", f"{storage}/objs", "--root", str(tmp_path / "head2"), "--address", address],
                         capture_output=True, text=True, env=_env(), timeout=400)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    local = tmp_path / "head2" / "objs"
    study = open_study(str(local))
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 3 and not [t for t in study.trials if t.state.name == "RUNNING"], (
        [(t.number, t.state.name, t.user_attrs) for t in study.trials], out.stdout[-3000:], out.stderr[-3000:])
    for t in done:  # each finished trial is in the store and, fetched from it, on the new head
        tid = t.user_attrs["ray_trial_id"]
        saved = json.loads((store / "trials" / tid / "result.json").read_text())
        assert saved["step"] == SPACE["base"]["train"]["max_steps"]
        assert (local / "trials" / tid / "result.json").exists()
    for name in ("optuna.log", "space.json", "pareto_front.csv", "tracking.json", "mlflow.db"):
        assert (store / name).exists(), name
    assert (store / "tune").is_dir()  # Ray Tune's state went straight to the store
