"""A real MO-ASHA sweep on a local Ray cluster: trials stopped at rungs are PRUNED in Optuna (rung
values in user attrs, never on the front), tagged pruned in MLflow, counted apart on the console
and by `dnasweep ls`; the step budget holds."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from dnasweep.space import parse_space  # noqa: E402

MAX_STEPS = 60
MOASHA = {
    "base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2},
             "data": {"source": "pystdlib", "max_bytes": 2000000},
             "train": {"max_steps": MAX_STEPS, "batch_size": 4, "eval_every": 10, "eval_batches": 2, "log_every": 5,
                       "checkpoint_every": 10}},
    # a wide lr range: the trials differ enough at the first rung for some to be stopped
    "search": {"train.lr": {"float": [1e-4, 3e-2], "log": True},
               "model.router.type": {"choice": ["topk", "hash"]}},
    "objectives": [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}],
    "sampler": {"type": "random", "seed": 3},
    "scheduler": {"type": "moasha", "grace_steps": 10, "reduction_factor": 2},
    "budget": {"trials": 30, "steps": 5 * MAX_STEPS, "concurrent": 2},
    "analyze": {"front": False},
}


def test_moasha_sweep_prunes_trials_and_keeps_them_off_the_front(ray_cluster, tmp_path):
    from mlflow import MlflowClient

    from dnasweep.sweep.budget import STEPS
    from dnasweep.sweep.moasha import RUNG
    from dnasweep.sweep.runner import run_sweep
    from dnasweep.sweep.study import open_study
    from dnasweep.train import checkpoint

    space = parse_space(MOASHA, "moasha.yaml")
    lines: list[str] = []
    res = run_sweep(space, "mo", root=str(tmp_path), log=lines.append)
    study = open_study(res.sweep_dir)
    by_state: dict[str, list] = {}
    for t in study.trials:
        by_state.setdefault(t.state.name, []).append(t)
    pruned, complete = by_state.get("PRUNED", []), by_state.get("COMPLETE", [])
    assert pruned and complete and not by_state.get("RUNNING"), {k: len(v) for k, v in by_state.items()}
    # the step budget: spent steps never pass it, and pruning bought more trials than 5 full ones
    spent = sum(t.user_attrs[STEPS] for t in study.trials)
    assert spent <= MOASHA["budget"]["steps"] and len(study.trials) > 5, (spent, len(study.trials))
    assert all(t.user_attrs[STEPS] == MAX_STEPS for t in complete)
    # the front holds complete trials only
    assert res.front and {r["trial"] for r in res.front} <= {t.number for t in complete}
    assert res.n_pruned == len(pruned)
    runs = {r.data.tags["dnasweep.trial"]: r for r in MlflowClient(f"sqlite:///{res.sweep_dir}/mlflow.db").search_runs(
        [MlflowClient(f"sqlite:///{res.sweep_dir}/mlflow.db").get_experiment_by_name("dnasweep").experiment_id])
        if r.data.tags.get("dnasweep.role") == "trial"}
    for t in pruned:
        at = t.user_attrs["pruned_at"]
        assert at in space.rungs()[0] and t.user_attrs[STEPS] == at
        assert isinstance(t.user_attrs[RUNG.format(step=at, metric="val/loss")], float)
        run = runs[t.user_attrs["ray_trial_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["dnasweep.status"] == "pruned"
        assert run.data.tags["dnasweep.stopped_at_step"] == str(at)
        with open(os.path.join(res.sweep_dir, "trials", t.user_attrs["ray_trial_id"], "metrics.jsonl")) as f:
            steps = [json.loads(line)["step"] for line in f]
        assert max(steps) < MAX_STEPS  # stopped, not trained to the end
        # slimmed at the end of the sweep as a finished trial is: its optimizer state went
        ckpt = os.path.join(res.sweep_dir, "trials", t.user_attrs["ray_trial_id"], "checkpoint")
        assert checkpoint.load(ckpt).get("weights_only"), t.number
    for t in complete:  # a complete trial passed every rung of its bracket and was recorded there
        assert all(RUNG.format(step=r, metric="val/loss") in t.user_attrs for r in space.rungs()[0])
        assert "dnasweep.status" not in runs[t.user_attrs["ray_trial_id"]].data.tags
    assert sum(" PRUNED " in ln for ln in lines) == len(pruned), lines
    # with a step budget the progress line counts steps: the last one says what the study spent
    final = f"{len(study.trials)} finished, {spent}/{MOASHA['budget']['steps']} steps"
    assert any(final in ln for ln in lines), lines[-6:]
    out = subprocess.run([sys.executable, "-m", "dnasweep.cli", "ls", "--root", str(tmp_path)], capture_output=True,
                         text=True, check=True)
    assert f"{len(pruned)} pruned" in out.stdout, out.stdout
    out = subprocess.run([sys.executable, "-m", "dnasweep.cli", "pareto", res.sweep_dir, "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["counts"] == {"complete": len(complete), "pruned": len(pruned), "failed": 0,
                                                "abandoned": 0}
    out = subprocess.run([sys.executable, "-m", "dnasweep.cli", "pareto", res.sweep_dir], capture_output=True,
                         text=True, check=True)
    assert f"{len(pruned)} pruned (never on the front)" in out.stdout, out.stdout
