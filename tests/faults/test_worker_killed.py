"""Fault: a trial's worker process is SIGKILLed mid-training. Ray restarts the trial (FailureConfig),
which continues from its last checkpoint, not from step 0; the sweep finishes its budget and the
trial's metric history (metrics.jsonl and MLflow) has every step exactly once."""

import json
import os
import signal
import threading
import time

import pytest

ray = pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from dnasweep.space import parse_space  # noqa: E402

pytestmark = pytest.mark.faults

SPACE = {
    "base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2},
             "data": {"source": "pystdlib", "max_bytes": 2000000},
             "train": {"max_steps": 120, "batch_size": 4, "eval_every": 60, "eval_batches": 2, "log_every": 5,
                       "checkpoint_every": 10}},
    "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
    "objectives": [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}],
    "budget": {"trials": 2, "concurrent": 2, "retries": 2},
    "analyze": {"front": False},
}


def _kill_first_worker_after_checkpoint(sweep_dir: str, killed: dict, min_step: int = 30, training=None) -> None:
    """Wait until some trial has a checkpoint at >= min_step, then SIGKILL its worker process.
    `training(trial_id)`, if given, must also hold: a trial stopped by a scheduler has no
    result.json either, and its worker may be training another trial by then (reuse_actors)."""
    deadline = time.time() + 300
    while time.time() < deadline and not killed:
        trials = os.path.join(sweep_dir, "trials")
        for tid in os.listdir(trials) if os.path.isdir(trials) else []:
            d = os.path.join(trials, tid)
            try:
                with open(os.path.join(d, "attempts.log")) as f:
                    pid = int(f.readline().split()[1])
                with open(os.path.join(d, "metrics.jsonl")) as f:
                    last = max(json.loads(line).get("step", 0) for line in f)
            except (OSError, ValueError, IndexError):
                continue
            if (last >= min_step and not os.path.exists(os.path.join(d, "result.json"))
                    and (training is None or training(tid))):
                os.kill(pid, signal.SIGKILL)
                killed.update(trial=tid, pid=pid, at_step=last)
                return
        time.sleep(0.2)


def test_killed_worker_resumes_from_checkpoint_and_nothing_is_duplicated(ray_cluster, tmp_path):
    from mlflow import MlflowClient

    from dnasweep.sweep.runner import run_sweep

    space = parse_space(SPACE, "faults.yaml")
    killed: dict = {}
    killer = threading.Thread(target=_kill_first_worker_after_checkpoint,
                              args=(str(tmp_path / "kill"), killed), daemon=True)
    killer.start()
    lines = []
    res = run_sweep(space, "kill", root=str(tmp_path), log=lines.append)
    killer.join(timeout=5)
    assert killed, "no worker was killed: the trials ended before a checkpoint at step 30"
    assert res.n_complete == 2 and res.n_failed == 0, lines
    retry = [ln for ln in lines if "RETRY" in ln and killed["trial"] in ln]
    assert len(retry) == 1 and "1 restarts" in retry[0], lines
    # a restart is not a second start: never more running than trials
    assert not any(" 3 running" in ln for ln in lines) and sum(" start " in ln for ln in lines) == 2, lines

    d = tmp_path / "kill" / "trials" / killed["trial"]
    attempts = (d / "attempts.log").read_text().splitlines()
    assert len(attempts) == 2, attempts
    resumed_from = int(attempts[1].split()[3])
    assert 10 <= resumed_from <= killed["at_step"], (attempts, killed)  # from a checkpoint, not step 0
    assert json.loads((d / "result.json").read_text())["step"] == 120

    steps = [json.loads(line)["step"] for line in (d / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in json.loads(line)]
    assert steps == list(range(5, 121, 5))  # every logged step once, none missing
    client = MlflowClient(f"sqlite:///{tmp_path / 'kill' / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("dnasweep").experiment_id],
                             filter_string=f"tags.`dnasweep.trial` = '{killed['trial']}'")[0]
    history = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert history == list(range(5, 121, 5))
    assert run.info.status == "FINISHED"


def test_idle_reused_worker_killed_the_next_trial_is_retried(ray_cluster, tmp_path, monkeypatch):
    """A finished trial's worker waits, idle, for the next trial (reuse_actors). If it dies there,
    Ray Tune's reset of it fails while the next trial is still PENDING, and Tune errored that trial
    outright, with its retries unspent (seen once in CI under MO-ASHA: a trial FAILed at step 0)."""
    from dnasweep.sweep import searcher as searcher_mod
    from dnasweep.sweep.runner import run_sweep

    spec = {**SPACE, "budget": {"trials": 2, "concurrent": 1, "retries": 1}}
    spec["base"] = {**SPACE["base"], "train": {**SPACE["base"]["train"], "max_steps": 20, "eval_every": 20}}
    space = parse_space(spec, "idle.yaml")
    trials_dir, killed = tmp_path / "idle" / "trials", {}
    suggest = searcher_mod.ParetoOptunaSearch.suggest

    def suggest_after_killing_the_idle_worker(self, trial_id):
        # Tune asks for the second trial only once the first has ended (one slot): its worker is
        # then idle, kept for reuse. Kill it before the second trial is handed to it.
        done = [d for d in trials_dir.iterdir() if (d / "result.json").exists()] if trials_dir.exists() else []
        if done and not killed:
            pid = int((done[0] / "attempts.log").read_text().split()[1])
            os.kill(pid, signal.SIGKILL)
            for _ in range(100):  # until the process is gone
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            killed.update(trial=done[0].name, pid=pid)
        return suggest(self, trial_id)

    monkeypatch.setattr(searcher_mod.ParetoOptunaSearch, "suggest", suggest_after_killing_the_idle_worker)
    lines: list[str] = []
    res = run_sweep(space, "idle", root=str(tmp_path), log=lines.append)
    assert killed, "the first trial's worker was never killed"
    assert res.n_complete == 2 and res.n_failed == 0, lines
    second = next(d for d in trials_dir.iterdir() if d.name != killed["trial"])
    assert sum("RETRY" in ln and second.name in ln for ln in lines) == 1, lines  # one death, one retry
    pids = [int(ln.split()[1]) for ln in (second / "attempts.log").read_text().splitlines()]
    assert pids and killed["pid"] not in pids, pids  # it ran on a live worker, once
