"""A sweep's life as the user sees it, without Ray: the progress line's verdicts agree with the
searcher's, Ctrl-C before the sweep exists says so (and leaves nothing a rerun trips on), a sweep
with no complete trial exits 1, `run --resume` refuses what it would ignore (another storage, no
--name), `ls` never calls a stopped sweep's trials running, an empty front is explained, and a GPU
share above 1 must be whole."""

import json
import os

import pytest
import yaml

from dnasweep.cli import main
from dnasweep.errors import ConfigError

optuna = pytest.importorskip("optuna", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from test_sweep_cli import SPACE, _stored, make_sweep  # noqa: E402


def _space_file(tmp_path, **extra):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **extra}))
    return str(path)


# --- 1. the progress line judges a trial as the searcher and the tracker do ---

def _progress(space_dict, lines, **kw):
    pytest.importorskip("ray", reason="the sweep extra is not installed")
    from types import SimpleNamespace

    from dnasweep.space import parse_space
    from dnasweep.sweep.progress import Progress

    return Progress(parse_space(space_dict, "s.yaml"), lines.append, **kw), SimpleNamespace


def test_progress_counts_a_trial_stopped_by_its_time_limit_as_failed():
    """Optuna FAIL (time_limit) and MLflow FAILED, but the console said 'done' and counted it complete."""
    from dnasweep.space import parse_space
    from dnasweep.sweep import budget

    space = {**SPACE, "base": {**SPACE["base"], "train": {"max_steps": 10, "time_limit_s": 30}}}
    lines = []
    p, NS = _progress(space, lines)
    res = {"val/loss": 2.5, "compute/flops_per_token": 1e5, "step": 4, "status": "completed",
           "reason": "time limit 30s reached at step 4"}
    t = NS(trial_id="t0", config={"train.lr": 2e-3}, last_result=res)
    p.on_trial_start(0, [], t)
    p.on_trial_complete(0, [], t)
    assert (p.done, p.failed) == (0, 1)
    assert "FAIL  t0 (time_limit)" in lines[-1] and "at step 4 of 10 planned" in lines[-1], lines[-1]
    assert "(0 failed" not in lines[-1] and "1 failed" in lines[-1]
    assert budget.short_of_plan(parse_space(space, "s.yaml"), {"train.lr": 2e-3}, res)  # the searcher's verdict
    # a trial that trained all its planned steps is still done
    ok = NS(trial_id="t1", config={"train.lr": 2e-3}, last_result={**res, "step": 10})
    p.on_trial_start(0, [], ok)
    p.on_trial_complete(0, [], ok)
    assert (p.done, p.failed) == (1, 1) and "done  t1" in lines[-1]


def test_progress_books_a_pruned_trials_steps_as_the_searcher_does():
    """The searcher books max(rung, step judged); the line booked the rung alone (5 of 7 steps)."""
    lines = []
    p, NS = _progress({**SPACE, "budget": {"trials": 5, "steps": 400}}, lines, pruned={"t0": 5})
    t = NS(trial_id="t0", config={}, last_result={"val/loss": 2.0, "compute/flops_per_token": 1e5, "step": 7})
    p.on_trial_start(0, [], t)
    p.on_trial_result(0, [], t, {"step": 7})
    p.on_trial_complete(0, [], t)
    assert p.n_pruned == 1 and "7/400 steps" in lines[-1], lines[-1]


# --- 2. Ctrl-C before the sweep exists ---

def _no_cluster(monkeypatch):
    monkeypatch.setattr("dnasweep.sweep.cluster.init_ray", lambda *a, **k: None)
    monkeypatch.setattr("dnasweep.sweep.storage.check_shared", lambda root: None)
    monkeypatch.setattr("dnasweep.sweep.tracking.check_reachable", lambda *a, **k: None)


def test_ctrl_c_before_the_sweep_exists_does_not_point_to_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C while Ray started: 'continue with: dnasweep resume ROOT/NAME', which then failed."""
    from dnasweep.sweep import runner

    monkeypatch.setattr(runner, "run_sweep", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["run", _space_file(tmp_path), "--name", "early", "--root", str(tmp_path / "root")]) == 130
    err = capsys.readouterr().err
    assert "dnasweep resume" not in err and "run the same command again" in err, err


def test_ctrl_c_before_the_study_leaves_nothing_a_rerun_trips_on(tmp_path, monkeypatch, capsys):
    """Ctrl-C between the sweep's folder and its Optuna study left ROOT/NAME without a journal:
    resume called it 'not a sweep directory', run said it 'already exists'."""
    from dnasweep.sweep import runner
    from dnasweep.sweep.study import is_sweep_dir

    _no_cluster(monkeypatch)
    real = runner._create_study
    monkeypatch.setattr(runner, "_create_study", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    args = ["run", _space_file(tmp_path), "--name", "early", "--root", str(tmp_path / "root")]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert not (tmp_path / "root" / "early").exists()
    assert "dnasweep resume" not in err and "run the same command again" in err, err
    # the same command again gets past the name check and makes a sweep (stopped here, after its study)
    monkeypatch.setattr(runner, "_create_study", real)
    monkeypatch.setattr("dnasweep.sweep.storage.LocalStore.mirror", lambda self: (_ for _ in ()).throw(
        KeyboardInterrupt))
    assert main(args) == 130
    assert is_sweep_dir(str(tmp_path / "root" / "early"))
    assert f"dnasweep resume {tmp_path / 'root' / 'early'}" in capsys.readouterr().err


def test_the_runner_keeps_a_directory_with_trial_results(tmp_path):
    from dnasweep.sweep.runner import _remove_unstarted

    d = tmp_path / "s"
    (d / "trials" / "t1").mkdir(parents=True)
    (d / "space.json").write_text("{}")
    _remove_unstarted(str(d))
    assert (d / "trials" / "t1").is_dir()
    (d / "trials" / "t1").rmdir()
    (d / "notes.txt").write_text("mine")
    _remove_unstarted(str(d))
    assert (d / "notes.txt").exists()
    (d / "notes.txt").unlink()
    _remove_unstarted(str(d))
    assert not d.exists()


# --- 3. a sweep in which no trial completed ---

def test_a_sweep_with_no_complete_trial_exits_1(tmp_path, monkeypatch, capsys):
    from dnasweep.sweep import runner
    from dnasweep.sweep.study import SweepResult

    d = make_sweep(tmp_path / "root", "none")
    monkeypatch.setattr(runner, "run_sweep", lambda *a, **k: SweepResult(str(d), 0, 3, []))
    assert main(["run", _space_file(tmp_path), "--name", "none", "--root", str(tmp_path / "root")]) == 1
    out, err = capsys.readouterr()
    assert "Pareto front (0 of 0" in out and "no trial completed (3 failed" in err, (out, err)


# --- 4. run --resume with another storage, or a sweep kept only in a store ---

def test_run_resume_refuses_a_storage_other_than_the_sweeps(tmp_path, monkeypatch, capsys):
    """--storage / $DNASWEEP_STORAGE were ignored by `run --resume`: the sweep went on where it was."""
    from dnasweep.sweep import runner

    make_sweep(tmp_path)  # started without --storage
    resumed = []
    monkeypatch.setattr(runner, "resume_sweep", lambda sweep_dir, **kw: resumed.append(sweep_dir) or (
        _ for _ in ()).throw(KeyboardInterrupt))
    monkeypatch.delenv("DNASWEEP_STORAGE", raising=False)
    args = ["run", _space_file(tmp_path), "--name", "demo", "--root", str(tmp_path), "--resume"]
    assert main([*args, "--storage", "file:///elsewhere"]) == 2
    err = capsys.readouterr().err
    assert "--storage" in err and "file:///elsewhere" in err and "no --storage" in err and not resumed, err
    monkeypatch.setenv("DNASWEEP_STORAGE", "file:///elsewhere")
    assert main(args) == 2
    assert "DNASWEEP_STORAGE" in capsys.readouterr().err and not resumed
    monkeypatch.delenv("DNASWEEP_STORAGE")
    assert main(args) == 130 and resumed  # the sweep's own (none): resumed


def test_run_resume_of_a_sweep_kept_only_in_storage_points_to_resume_its_uri(tmp_path, monkeypatch, capsys):
    """The local copy is absent: 'already exists ... (or add --resume)' when --resume was given."""
    uri = _stored(tmp_path)  # file://BUCKET/mine
    monkeypatch.delenv("DNASWEEP_STORAGE", raising=False)
    assert main(["run", _space_file(tmp_path), "--name", "mine", "--root", str(tmp_path / "root"), "--resume",
                 "--storage", f"file://{tmp_path / 'bucket'}"]) == 2
    err = capsys.readouterr().err
    assert f"dnasweep resume {uri}" in err and "add --resume" not in err, err
    assert not (tmp_path / "root" / "mine").exists()


# --- 5. run --resume without --name ---

def test_run_resume_without_a_name_is_refused(tmp_path, monkeypatch, capsys):
    """The name defaulted to SPACE-DATE-TIME: --resume silently started a new sweep."""
    from dnasweep.sweep import runner

    started = []
    monkeypatch.setattr(runner, "run_sweep", lambda *a, **k: started.append(a) or (_ for _ in ()).throw(
        KeyboardInterrupt))
    assert main(["run", _space_file(tmp_path), "--root", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--name" in err and "dnasweep resume NAME" in err and "dnasweep ls" in err and not started, err


# --- 6. ls and the trials a stopped driver left RUNNING ---

def test_ls_never_calls_a_stopped_sweeps_trials_running(tmp_path, capsys):
    from dnasweep.sweep.study import open_study

    STOPPED = "stopped_at"  # study.STOPPED: what the runner writes on Ctrl-C / SIGTERM

    d = make_sweep(tmp_path)
    study = open_study(str(d))
    study.ask()  # a trial the driver asked for and never told: RUNNING, whether the driver lives or not
    assert main(["ls", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 running or stopped" in out, out
    study.set_user_attr(STOPPED, "2026-01-01 00:00:00")  # what the runner writes on Ctrl-C / SIGTERM
    assert main(["ls", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 stopped (resume to continue)" in out and " running" not in out, out
    study.set_user_attr(STOPPED, None)  # resumed: running again
    assert main(["ls", "--root", str(tmp_path)]) == 0
    assert "1 running or stopped" in capsys.readouterr().out


# --- 7. an empty front: every complete trial breaks a constraint ---

def test_pareto_explains_a_front_emptied_by_a_constraint(tmp_path, capsys):
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from dnasweep.space import parse_space
    from dnasweep.sweep.study import journal

    d = tmp_path / "tight"
    (d / "trials").mkdir(parents=True)
    (d / "space.json").write_text(json.dumps(parse_space({**SPACE, "constraints": ["val/loss <= 1"]},
                                                         "s.yaml").to_dict()))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="tight", storage=journal(str(d)), directions=["minimize", "minimize"])
    for i, loss in enumerate((2.0, 1.5)):
        study.add_trial(create_trial(params={"train.lr": 1e-3 * (i + 2)},
                                     distributions={"train.lr": FloatDistribution(1e-3, 1e-2, log=True)},
                                     values=[loss, 1e5], constraints={"val/loss <= 1": loss - 1}))
    assert main(["pareto", "tight", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Pareto front (0 of 2 complete trials, 2 infeasible (constraint val/loss <= 1 broken by 2)" in out, out
    assert "same on the whole front" not in out and "every complete trial breaks a constraint" in out, out


# --- 8. resources.gpu above 1 must be whole ---

@pytest.mark.parametrize("gpu, ok", [(0.25, True), (1, True), (2, True), (1.5, False), (2.25, False)])
def test_a_gpu_share_above_one_must_be_whole(gpu, ok):
    """Ray allocates a fraction of one GPU (<= 1) but whole GPUs above 1: 1.5 passed validation."""
    from dnasweep.space import parse_space

    space = {**SPACE, "resources": {"gpu": gpu}}
    if ok:
        assert parse_space(space, "s.yaml").config.resources.gpu == gpu
        return
    with pytest.raises(ConfigError) as e:
        parse_space(space, "s.yaml")
    (p,) = [q for q in e.value.problems if q.key == "resources.gpu"]
    assert "whole number" in p.message and str(int(gpu)) in p.fix


@pytest.mark.parametrize("which", ["one", "front"])
def test_analyze_in_a_sweep_honours_out_and_device(tmp_path, monkeypatch, which):
    # `dnasweep analyze SWEEP/TRIAL --out X --device D` wrote to TRIAL/analysis on the CPU, silently
    from dnasweep.analyze import trial as trial_mod
    from dnasweep.cli import main
    from dnasweep.sweep import analysis

    sweep = tmp_path / "sw"
    for tid in ("t1", "t2"):
        (sweep / "trials" / tid).mkdir(parents=True)
    (sweep / "optuna.log").write_text("")
    (sweep / "space.json").write_text("{}")
    calls = []

    def fake(path, out_dir=None, max_examples=None, device="cpu"):
        calls.append((os.path.basename(path), out_dir, device))
        return {"text": "ok"}, out_dir or os.path.join(path, "analysis")

    monkeypatch.setattr(trial_mod, "analyze_trial", fake)
    monkeypatch.setattr(analysis, "_mlflow_run", lambda *a: (None, None))
    import torch  # --device cuda is refused on a machine without CUDA: this one passes for one with it

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(analysis, "front_dirs", lambda s: [str(sweep / "trials" / t) for t in ("t1", "t2")])
    target = str(sweep / "trials" / "t1") if which == "one" else str(sweep)
    assert main(["analyze", target, "--out", str(tmp_path / "rep"), "--device", "cuda"]) == 0
    if which == "one":
        assert calls == [("t1", str(tmp_path / "rep"), "cuda")]
    else:
        assert calls == [(t, str(tmp_path / "rep" / t), "cuda") for t in ("t1", "t2")]
