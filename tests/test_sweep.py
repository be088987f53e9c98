"""A real sweep: a local Ray cluster, Optuna journal storage, real trainings on the embedded data."""

import json
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from dnasweep.errors import ConfigError  # noqa: E402
from dnasweep.space import parse_space  # noqa: E402
from dnasweep.sweep.pareto import pareto_mask  # noqa: E402

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
    "analyze": {"front": True, "examples": 32},
    "reference": {"d_model": [32], "dense_layers": [1, 3]},  # a dense frontier of two rungs
}


def _interval(trial_dir):
    start = os.path.getctime(os.path.join(trial_dir, "config.yaml"))
    return start, os.path.getmtime(os.path.join(trial_dir, "result.json"))


def test_smoke_sweep_end_to_end(ray_cluster, tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from dnasweep.sweep.runner import run_sweep
    from dnasweep.sweep.study import format_front

    space = parse_space(TINY, "tiny.yaml")
    lines = []
    res = run_sweep(space, "tiny", root=str(tmp_path), log=lines.append)
    # progress: one start and one done line per trial, counts reaching the budget
    assert sum(" start " in ln for ln in lines) == 4 and sum(" done " in ln for ln in lines) == 4
    assert any("4/4 finished" in ln for ln in lines), lines
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
    # Tune's CSV and JSON loggers write each trial's results; TensorBoard's (a ~1 s import) is off
    tune_files = {f for _, _, fs in os.walk(os.path.join(res.sweep_dir, "tune")) for f in fs}
    assert {"progress.csv", "result.json"} <= tune_files
    assert not [f for f in tune_files if f.startswith("events.out.tfevents")], tune_files
    # conditional parameter: threshold only where the router is the threshold router
    for t in study.trials:
        assert ("model.router.threshold" in t.params) == (t.params["model.router.type"] == "threshold")
    table = format_front(res, space)
    assert "Pareto front" in table and "dense reference" in table and "compute_gain" in table
    _check_mlflow(res, study)
    _check_pareto_and_ls(res, tmp_path)
    _check_reference(res, space, tmp_path, lines)


def _check_reference(res, space, root, lines):
    """The ladder trained once, beside the trials; its gains are on every trial; a second sweep with
    the same base and a resume of this one reuse it instead of training it again."""
    import csv

    from dnasweep import metrics as M
    from dnasweep.sweep.runner import resume_sweep

    assert any("reference: training 2 dense model(s)" in ln for ln in lines), lines
    with open(os.path.join(res.sweep_dir, "reference.csv")) as f:
        rungs = list(csv.DictReader(f))
    assert [(r["d_model"], r["dense_layers"], r["status"]) for r in rungs] == [("32", "1", "completed"),
                                                                             ("32", "3", "completed")]
    for d in os.listdir(os.path.join(res.sweep_dir, "trials")):
        with open(os.path.join(res.sweep_dir, "trials", d, "result.json")) as f:
            r = json.load(f)
        assert r[M.COMPUTE_GAIN] > 0 and r[M.COMPUTE_GAIN_BOUND] in (-1.0, 0.0, 1.0), r
        assert r[M.SPEED_GAIN] > 0, r  # rungs and trials on this machine's CPU, one thread each: tokens/s compare
    with open(os.path.join(res.sweep_dir, "reference.json")) as f:
        assert all(r["hardware"].startswith("cpu: ") for r in json.load(f))
    cache = sorted(os.listdir(root / "reference-cache"))
    stamps = [os.path.getmtime(root / "reference-cache" / c) for c in cache]
    again = []
    from dnasweep.sweep.runner import run_sweep

    second = run_sweep(parse_space({**TINY, "budget": {"trials": 1, "concurrent": 1}}, "tiny.yaml"), "tiny2",
                       root=str(root), log=again.append, analyze=False)
    assert any("all 2 dense models of the ladder reused" in ln for ln in again), again
    assert not any("reference: training" in ln for ln in again)
    assert [os.path.getmtime(root / "reference-cache" / c) for c in cache] == stamps
    assert len(second.reference) == 2 and all(r["reused"] for r in second.reference)
    resumed = []
    resume_sweep(res.sweep_dir, log=resumed.append, analyze=False)
    assert not any("reference: training" in ln for ln in resumed), resumed
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{os.path.join(res.sweep_dir, 'mlflow.db')}")
    runs = client.search_runs([client.get_experiment_by_name("dnasweep").experiment_id],
                              filter_string="tags.`dnasweep.role` = 'reference'")
    assert len(runs) == 2  # resume added no second run per rung


def _check_pareto_and_ls(res, root):
    import subprocess
    import sys

    cli = [sys.executable, "-m", "dnasweep.cli"]
    out = subprocess.run([*cli, "pareto", res.sweep_dir, "--json"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["front"] == json.loads(json.dumps(res.front))
    rungs = json.loads(out.stdout)["reference"]
    assert len(rungs) == 2 and all(r["status"] == "completed" and r["blocks"] == r["dense_layers"] + 1 for r in rungs)
    assert any(r["frontier"] for r in rungs)
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
    children = [r for r in runs if r.data.tags.get("dnasweep.role") == "trial"]
    dense = [r for r in runs if r.data.tags.get("dnasweep.role") == "reference"]
    assert len(dense) == 2 and all(r.info.status == "FINISHED" and r.data.params["model.kind"] == "dense"
                                   and "val/loss" in r.data.metrics for r in dense)
    assert {r.data.tags["mlflow.parentRunId"] for r in dense} == {parents[0].info.run_id}
    assert len(parents) == 1 and len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    for c in children:
        assert c.info.status == "FINISHED"
        assert "val/loss" in c.data.metrics and "model.router.type" in c.data.params
        # the complete config, not only the sampled values
        assert c.data.params["train.max_steps"] == "30" and c.data.params["model.d_model"] == "32"
        assert "data.source" in c.data.params and c.data.params["out_dir"].endswith(c.info.run_name)
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "train/loss")]
        assert steps == sorted(set(steps)) and steps[-1] == 30  # every logged step once
        assert {a.path for a in client.list_artifacts(c.info.run_id)} >= {"config.yaml", "metrics.jsonl", "result.json"}
    parent = parents[0].info.run_id
    assert not res.tracking_errors
    # the end-of-sweep reports: on every front trial's run (and only there), under analysis/
    front_ids = {r["ray_trial_id"] for r in res.front}
    for c in children:
        arts = {a.path for a in client.list_artifacts(c.info.run_id, "analysis")}
        on_front = c.data.tags["dnasweep.trial"] in front_ids
        assert ("analysis/report.html" in arts and "analysis/summary.json" in arts) == on_front, (c.info.run_name, arts)
    assert {a.path for a in client.list_artifacts(parent)} >= {
        "pareto_front.csv", "trials.csv", "pareto.png", "pareto.html", "hypervolume.png", "reference.csv"}
    hv = [m.value for m in sorted(client.get_metric_history(parent, "sweep/hypervolume"), key=lambda m: m.step)]
    assert len(hv) == 4 and all(b >= a for a, b in zip(hv, hv[1:], strict=False)) and 0 < hv[-1] <= 1  # normalised
    assert len(client.get_metric_history(parent, "sweep/hypervolume_raw")) == 4
    p = parents[0].data.params  # the parent records what was searched, how, and for how long
    assert p["objectives"] == "min val/loss, min compute/flops_per_token" and p["budget.trials"] == "4"
    assert p["sampler.type"] == "tpe" and p["space_file"] == "tiny.yaml"
    numbers = {t.user_attrs["ray_trial_id"]: t.number for t in study.trials}
    front_ids = {r["ray_trial_id"] for r in res.front}
    sweep_start = parents[0].info.start_time / 1000
    for c in children:  # runs are created late: they still carry the trial's own start and end
        tid = c.data.tags["dnasweep.trial"]
        assert c.data.tags["dnasweep.optuna_trial"] == str(numbers[tid])
        with open(os.path.join(res.sweep_dir, "trials", tid, "result.json")) as f:
            collapsed = json.load(f)["router/collapsed"]
        assert c.data.tags["dnasweep.collapsed"] == str(bool(collapsed)).lower()  # the verdict, on the run
        assert c.data.tags["dnasweep.front"] == str(tid in front_ids).lower()
        start, end = _interval(os.path.join(res.sweep_dir, "trials", tid))
        run_start, run_end = c.info.start_time / 1000, c.info.end_time / 1000
        # Ray's start (report's whole-second timestamp less time_total_s) comes before the trial
        # wrote its config by its worker's imports, which took 10 s on a loaded 2-core CI machine:
        # bound it by the sweep's start, not by a guess at that setup time. A run stamped when the
        # driver created it would start after the config was written.
        assert sweep_start - 1 <= run_start <= start + 1 and abs(run_end - end) < 1, (sweep_start, run_start, run_end,
                                                                                        start, end)
    assert study.metric_names == ["val/loss", "compute/flops_per_token"] and study.user_attrs["budget"]["trials"] == 4
    with open(os.path.join(res.sweep_dir, "trials.csv")) as f:
        assert [int(line.split(",")[0]) for line in f.readlines()[1:]] == sorted(numbers.values())
    sizes = {m.step: m.value for m in client.get_metric_history(parent, "sweep/front_size")}
    assert sizes[4] == len(res.front)
    with open(os.path.join(res.sweep_dir, "pareto.html")) as f:
        html = f.read()
    assert "Pareto front" in html and "<script src=\"http" not in html  # plotly.js embedded: opens offline
    assert "dense reference" in html
    assert os.path.isdir(os.path.join(res.sweep_dir, "mlartifacts"))  # artifacts live with the sweep


def test_gpu_request_on_cpu_cluster_refused_before_anything_starts(ray_cluster, tmp_path):
    from dnasweep.sweep.runner import run_sweep

    space = parse_space({**TINY, "resources": {"cpu": 1, "gpu": 1}}, "gpu.yaml")
    with pytest.raises(ConfigError, match="PENDING forever"):
        run_sweep(space, "gpu", root=str(tmp_path), log=lambda *_: None)
    assert not (tmp_path / "gpu").exists()


@pytest.mark.parametrize("path", sorted(str(p) for p in __import__("pathlib").Path("search_spaces").glob("*.yaml")))
def test_every_shipped_search_space_smoke_sweeps(ray_cluster, tmp_path, path):
    """The --smoke sweep of each shipped file, as the README runs it: the full budget completes and
    the printed front is the non-dominated set of what finished."""
    from dnasweep.space import load_space
    from dnasweep.sweep.runner import run_sweep
    from dnasweep.sweep.study import load_sweep

    space = load_space(path, smoke=True)
    assert space.budget.trials >= 8 and space.budget.concurrent >= 2
    res = run_sweep(space, "smoke", root=str(tmp_path), log=lambda *_: None)
    assert res.n_complete == space.budget.trials and res.n_failed == 0 and not res.tracking_errors
    objs = [o.metric for o in space.objectives]
    assert res.front and all(np.isfinite(r[m]) for r in res.front for m in objs)
    again, _ = load_sweep(res.sweep_dir)
    assert again.front == res.front
    for name in ("pareto.png", "pareto.html", "trials.csv", "pareto_front.csv"):
        assert os.path.isfile(os.path.join(res.sweep_dir, name)), name


def test_tracker_leaves_the_environment_alone(tmp_path, monkeypatch):
    """A sweep's store must not leak into the next sweep of the same process (mlflow.set_tracking_uri
    writes MLFLOW_TRACKING_URI into os.environ)."""
    from dnasweep.sweep.tracking import MLflowSweepLogger, default_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    MLflowSweepLogger(parse_space(TINY, "tiny.yaml"), "one", str(tmp_path), default_uri(str(tmp_path)))
    assert "MLFLOW_TRACKING_URI" not in os.environ


POINTS = {
    "base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2, "pool": {"n_identity": 1}},
             "data": {"source": "pystdlib", "max_bytes": 2000000},
             "train": {"max_steps": 20, "batch_size": 4, "eval_every": 10, "eval_batches": 2, "log_every": 5}},
    # hash cannot take identity_bias: those points break a rule of the trial config (hash without it is
    # valid: a value invalid at every point is refused before the sweep starts)
    "search": {"model.router.type": {"choice": ["topk", "hash"]},
               "model.balance.identity_bias": {"choice": [True, False]},
               # text that YAML reads as a bool, a float, null: must reach the trial as sampled
               "data.field": {"choice": ["true", "off", "1e3", "null"]}},  # a field pystdlib does not read
    "objectives": [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}],
    "sampler": {"type": "random", "seed": 0},  # one hash + identity_bias; the valid trials draw all four texts
    "budget": {"trials": 5, "concurrent": 2, "retries": 2},
    "analyze": {"front": False},
}


def test_invalid_points_fail_alone_values_arrive_exactly_and_analyze_finds_the_store(ray_cluster, tmp_path,
                                                                                   monkeypatch):
    """Three defects of the old pipeline in one real sweep: an invalid point was retried as a dead
    worker and stalled tracking for every later trial; sampled text changed on its way to the
    trial; `dnasweep analyze` of a sweep that logged elsewhere opened SWEEP/mlflow.db."""
    import optuna
    import yaml
    from mlflow import MlflowClient

    from dnasweep.cli import main
    from dnasweep.sweep.runner import run_sweep
    from dnasweep.sweep.study import open_study

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = f"sqlite:///{tmp_path}/elsewhere/mlflow.db"
    (tmp_path / "elsewhere").mkdir()
    lines = []
    res = run_sweep(parse_space(POINTS, "points.yaml"), "points", root=str(tmp_path), log=lines.append,
                    tracking_uri=store)
    study = open_study(res.sweep_dir)
    trials = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    broken = lambda t: t.params["model.router.type"] == "hash" and t.params["model.balance.identity_bias"]  # noqa: E731
    invalid = [t for t in trials.values() if broken(t)]
    valid = [t for t in trials.values() if not broken(t)]
    assert invalid and valid, "seed 0 must sample both kinds of point; pick another seed"
    assert res.n_complete == len(valid) and res.n_failed == len(invalid) and len(trials) == 5
    for t in invalid:  # one FAIL each, with the rule, and no retry
        assert t.state == optuna.trial.TrialState.FAIL and t.user_attrs["fail_status"] == "invalid"
        assert "identity_bias" in t.user_attrs["fail_reason"] and "hash" in t.user_attrs["fail_reason"]
    assert not any("RETRY" in ln for ln in lines), lines
    assert sum(" FAIL " in ln and "(invalid)" in ln for ln in lines) == len(invalid)
    assert not res.tracking_errors and not (tmp_path / "points" / "mlflow.db").exists()
    for tid, t in trials.items():  # exactly what Optuna recorded, type included
        if t in valid:
            with open(os.path.join(res.sweep_dir, "trials", tid, "config.yaml")) as f:
                name = yaml.safe_load(f)["data"]["field"]
            assert name == t.params["data.field"] and type(name) is type(t.params["data.field"]), (name, t.params)
    client = MlflowClient(store)
    runs = {r.data.tags["dnasweep.trial"]: r for r in client.search_runs(
        [client.get_experiment_by_name("dnasweep").experiment_id]) if "dnasweep.trial" in r.data.tags}
    assert set(runs) == set(trials)  # every trial got its run, the ones after an invalid one too
    for tid, t in trials.items():
        r = runs[tid]
        assert r.data.params["model.router.type"] == t.params["model.router.type"]
        if t in invalid:
            assert r.info.status == "FAILED" and r.data.tags["dnasweep.status"] == "invalid"
        else:
            assert r.info.status == "FINISHED" and "val/loss" in r.data.metrics
    # analyze the sweep without saying where it logged: the reports go to that store's runs
    assert main(["analyze", res.sweep_dir, "--examples", "8"]) == 0
    for r in res.front:
        arts = {a.path for a in client.list_artifacts(runs[r["ray_trial_id"]].info.run_id, "analysis")}
        assert "analysis/report.html" in arts, arts
