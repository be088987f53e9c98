"""A real sweep: a local Ray cluster, Optuna journal storage, real trainings on the embedded data."""

import json
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from dnasweep.errors import ConfigError  # noqa: E402
from dnasweep.sweep.pareto import pareto_mask  # noqa: E402
from dnasweep.sweep.space import parse_space  # noqa: E402

TINY = {
    "base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2},
             "data": {"source": "pystdlib", "max_bytes": 2000000},
             "train": {"max_steps": 30, "batch_size": 4, "eval_every": 15, "eval_batches": 2, "log_every": 5}},
    "search": {"model.router.type": {"choice": ["topk", "hash", "threshold"]},
               "model.router.threshold": {"float": [0.05, 0.4], "when": {"model.router.type": ["threshold"]}},
               "loss.compute_weight": {"choice": [0.0, 0.3]},
               "train.lr": {"float": [1e-3, 1e-2], "log": True}},
    "objectives": [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}],
    "constraints": ["params/total <= 1e7"],
    "sampler": {"type": "tpe", "seed": 0, "startup_trials": 2},
    "budget": {"trials": 4, "concurrent": 2},
}


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _interval(trial_dir):
    start = os.path.getctime(os.path.join(trial_dir, "config.yaml"))
    return start, os.path.getmtime(os.path.join(trial_dir, "result.json"))


def test_smoke_sweep_end_to_end(ray_cluster, tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from dnasweep.sweep.runner import format_front, run_sweep

    space = parse_space(TINY, "tiny.yaml")
    res = run_sweep(space, "tiny", root=str(tmp_path), log=lambda *_: None)
    assert res.n_complete == 4 and res.n_failed == 0
    trial_dirs = [os.path.join(res.sweep_dir, "trials", d) for d in os.listdir(os.path.join(res.sweep_dir, "trials"))]
    assert len(trial_dirs) == 4
    for d in trial_dirs:
        with open(os.path.join(d, "result.json")) as f:
            assert json.load(f)["status"] == "completed"
    spans = sorted(_interval(d) for d in trial_dirs)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), f"no two trials overlapped: {spans}"
    study = optuna.load_study(study_name="tiny",
                              storage=JournalStorage(JournalFileBackend(os.path.join(res.sweep_dir, "optuna.log"))))
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert {r["trial"] for r in res.front} == {t.number for t in study.best_trials}
    values = np.array([t.values for t in study.trials])
    on_front = {t.number for t, keep in zip(study.trials, pareto_mask(values, ["min", "min"]), strict=True) if keep}
    assert {r["trial"] for r in res.front} == on_front
    # conditional parameter: threshold only where the router is the threshold router
    for t in study.trials:
        assert ("model.router.threshold" in t.params) == (t.params["model.router.type"] == "threshold")
    assert "Pareto front" in format_front(res, space)
    _check_mlflow(res, study)
    _check_pareto_and_ls(res, tmp_path)


def _check_pareto_and_ls(res, root):
    import subprocess
    import sys

    cli = [sys.executable, "-m", "dnasweep.cli"]
    out = subprocess.run([*cli, "pareto", res.sweep_dir, "--json"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == json.loads(json.dumps(res.front))
    out = subprocess.run([*cli, "ls", "--root", str(root)], capture_output=True, text=True, check=True)
    assert "tiny" in out.stdout and "4/4 complete" in out.stdout
    bad = subprocess.run([*cli, "pareto", str(root)], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a sweep directory" in bad.stderr


def _check_mlflow(res, study):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{os.path.join(res.sweep_dir, 'mlflow.db')}")
    exp = client.get_experiment_by_name("dnasweep")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    for c in children:
        assert c.info.status == "FINISHED"
        assert "val/loss" in c.data.metrics and "model.router.type" in c.data.params
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "train/loss")]
        assert steps == sorted(set(steps)) and steps[-1] == 30  # every logged step once
        assert {a.path for a in client.list_artifacts(c.info.run_id)} >= {"config.yaml", "metrics.jsonl", "result.json"}
    assert "pareto_front.csv" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert os.path.isdir(os.path.join(res.sweep_dir, "mlartifacts"))  # artifacts live with the sweep


def test_gpu_request_on_cpu_cluster_refused_before_anything_starts(ray_cluster, tmp_path):
    from dnasweep.sweep.runner import run_sweep

    space = parse_space({**TINY, "resources": {"cpu": 1, "gpu": 1}}, "gpu.yaml")
    with pytest.raises(ConfigError, match="PENDING forever"):
        run_sweep(space, "gpu", root=str(tmp_path), log=lambda *_: None)
    assert not (tmp_path / "gpu").exists()
