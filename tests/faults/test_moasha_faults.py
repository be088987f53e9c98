"""Faults under MO-ASHA: a worker killed between rungs continues from its checkpoint and is judged
once per rung; a driver SIGKILLed mid-sweep is resumed with its rung decisions standing (pruned
trials stay pruned, at the same rung) and the step budget holds."""

import copy
import json
import signal
import subprocess
import threading
import time

import pytest
import yaml

pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from test_moasha_sweep import MOASHA  # noqa: E402

from dnasweep.space import parse_space  # noqa: E402

from .test_driver_stopped import _cli, _env, _progress  # noqa: E402
from .test_worker_killed import _kill_first_worker_after_checkpoint  # noqa: E402

pytestmark = pytest.mark.faults


def _states(sweep_dir: str) -> dict[int, tuple[str, dict]]:
    from dnasweep.sweep.study import open_study

    return {t.number: (t.state.name, dict(t.user_attrs)) for t in open_study(sweep_dir).trials}


def test_worker_killed_between_rungs_continues_and_is_judged_once_per_rung(ray_cluster, tmp_path):
    from dnasweep.sweep.moasha import RUNG
    from dnasweep.sweep.runner import run_sweep

    spec = copy.deepcopy(MOASHA)
    spec["base"]["train"].update(max_steps=120, eval_every=20)
    spec["scheduler"].update(grace_steps=20)  # rungs 20, 40, 80
    spec["budget"] = {"trials": 3, "concurrent": 2, "retries": 2}
    spec["sampler"]["seed"] = 0
    space = parse_space(spec, "killed.yaml")
    killed: dict = {}

    def training(tid: str) -> bool:  # not pruned: still RUNNING in the study
        try:
            states = _states(str(tmp_path / "k"))
        except Exception:  # the journal is being written
            return False
        return any(s == "RUNNING" and a.get("ray_trial_id") == tid for s, a in states.values())

    killer = threading.Thread(target=_kill_first_worker_after_checkpoint,
                              args=(str(tmp_path / "k"), killed, 30, training), daemon=True)
    killer.start()
    lines: list[str] = []
    res = run_sweep(space, "k", root=str(tmp_path), log=lines.append)
    killer.join(timeout=5)
    assert killed, "no worker was killed: the trials ended before a checkpoint at step 30"
    states = _states(res.sweep_dir)
    assert all(s in ("COMPLETE", "PRUNED") for s, _ in states.values()), states
    attempts = (tmp_path / "k" / "trials" / killed["trial"] / "attempts.log").read_text().splitlines()
    assert len(attempts) == 2 and 10 <= int(attempts[1].split()[3]) <= killed["at_step"], attempts
    state, attrs = next(v for v in states.values() if v[1]["ray_trial_id"] == killed["trial"])
    # judged at rung 20 before the kill; after the restart it reports step 20 no more (its checkpoint
    # is past it) and goes on to the next rungs, each recorded once
    assert RUNG.format(step=20, metric="val/loss") in attrs
    assert state == "COMPLETE" or attrs["pruned_at"] in (40, 80), (state, attrs)
    assert sum("PRUNED" in ln and killed["trial"] in ln for ln in lines) == (state == "PRUNED")


def test_driver_killed_mid_moasha_sweep_resumes_with_its_decisions_standing(ray_cluster, tmp_path):
    from dnasweep.sweep.budget import STEPS

    address = ray_cluster.get_runtime_context().gcs_address
    (tmp_path / "mo.yaml").write_text(yaml.safe_dump(MOASHA))
    sweep = tmp_path / "root" / "mo"
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(_cli("run", str(tmp_path / "mo.yaml"), "--name", "mo", "--root",
                                       str(tmp_path / "root"), "--address", address),
                                  stdout=log, stderr=subprocess.STDOUT, env=_env())
    # Kill it once a trial has been pruned and another is training past its first rung.
    deadline, before = time.time() + 240, {}
    while time.time() < deadline and driver.poll() is None:
        try:
            st = _states(str(sweep))
        except Exception:  # the journal is not there yet
            st = {}
        if any(s == "PRUNED" for s, _ in st.values()) and any(20 <= s and not done
                                                             for s, done in _progress(str(sweep)).values()):
            driver.send_signal(signal.SIGKILL)
            before = _states(str(sweep))
            break
        time.sleep(0.2)
    assert before, f"no trial was pruned in time: {(tmp_path / 'first.log').read_text()[-3000:]}"
    driver.wait(timeout=60)
    resumed = subprocess.run(_cli("resume", str(sweep), "--address", address), capture_output=True, text=True,
                             env=_env(), timeout=400)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    after = _states(str(sweep))
    for n, (state, attrs) in before.items():
        if state == "PRUNED":  # the decisions taken stand
            assert after[n][0] == "PRUNED" and after[n][1]["pruned_at"] == attrs["pruned_at"], (n, after[n])
    assert not any(s == "RUNNING" for s, _ in after.values()), after
    assert sum(a.get(STEPS, 0) for _, a in after.values()) <= MOASHA["budget"]["steps"]
    assert any(s == "COMPLETE" for s, _ in after.values())
    assert "Pareto front" in resumed.stdout and "pruned" in resumed.stdout
    for _, (state, attrs) in after.items():  # a pruned trial is judged at no rung past the one it stopped at
        if state == "PRUNED":
            assert not [k for k in attrs if k.startswith("rung/") and int(k.split("/")[1]) > attrs["pruned_at"]]
            # ... and trained no step it is not booked for: one restarted after the kill trained on to its
            # next report before it was stopped again, unbooked (its checkpoint's evaluation, sent again
            # first on resume, now stops it there)
            rows = (sweep / "trials" / attrs["ray_trial_id"] / "metrics.jsonl").read_text().splitlines()
            assert max(json.loads(r)["step"] for r in rows if r.strip()) <= attrs[STEPS], (attrs, rows[-2:])
