"""Faults inside a trial: a diverged loss (non-finite) and running out of memory (the per-trial
host limit `resources.memory_gb`). Each such trial ends failed with its reason in Optuna and in
MLflow (run FAILED, tag dnasweep.fail_reason), never on the Pareto front, and the sweep goes on."""

import pytest

pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from dnasweep.space import parse_space  # noqa: E402

pytestmark = pytest.mark.faults

# lr 1e6 turns the loss into NaN within a few steps; batch 1024 needs more than 0.5 GiB on the
# first forward pass (measured: it asks for 32 MiB blocks past the limit); batch 4 needs ~50 MiB.
SPACE = {
    "base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2},
             "data": {"source": "pystdlib", "max_bytes": 2000000},
             "train": {"max_steps": 20, "eval_every": 20, "eval_batches": 2, "log_every": 5}},
    "search": {"train.lr": {"choice": [3e-3, 1e6]}, "train.batch_size": {"choice": [4, 1024]}},
    "objectives": [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}],
    "sampler": {"type": "random", "seed": 3},
    "budget": {"trials": 6, "concurrent": 2},
    "resources": {"cpu": 1, "gpu": 0, "memory_gb": 0.5},
    "analyze": {"front": False},
}


def test_diverged_and_oom_trials_fail_with_reasons_and_the_sweep_goes_on(ray_cluster, tmp_path):
    from mlflow import MlflowClient

    from dnasweep.sweep.runner import run_sweep
    from dnasweep.sweep.study import open_study

    lines = []
    res = run_sweep(parse_space(SPACE, "fails.yaml"), "fails", root=str(tmp_path), log=lines.append)
    study = open_study(res.sweep_dir)
    assert len(study.trials) == 6 and res.n_complete + res.n_failed == 6
    client = MlflowClient(f"sqlite:///{tmp_path / 'fails' / 'mlflow.db'}")
    runs = {r.data.tags.get("dnasweep.trial"): r for r in
            client.search_runs([client.get_experiment_by_name("dnasweep").experiment_id], max_results=50)}
    expected = {"oom": 0, "diverged": 0, "completed": 0}
    for t in study.trials:
        run = runs[t.user_attrs["ray_trial_id"]]
        if t.params["train.batch_size"] == 1024:
            kind, words = "oom", "out of memory"
        elif t.params["train.lr"] == 1e6:
            kind, words = "diverged", "non-finite"
        else:
            kind, words = "completed", None
        expected[kind] += 1
        if words:
            assert t.state.name == "FAIL" and words in t.user_attrs["fail_reason"], (t.params, t.user_attrs)
            assert run.info.status == "FAILED" and words in run.data.tags["dnasweep.fail_reason"]
            assert run.data.tags["dnasweep.status"] == kind
            assert any("FAIL" in ln and t.user_attrs["ray_trial_id"] in ln for ln in lines)
        else:
            assert t.state.name == "COMPLETE" and run.info.status == "FINISHED", t.user_attrs
    assert all(expected.values()), f"seed 3 no longer draws every outcome: {expected}"
    assert {r["trial"] for r in res.front} <= {t.number for t in study.trials if t.state.name == "COMPLETE"}
