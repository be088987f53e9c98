"""The sweep commands on a sweep directory built by hand (no Ray): `pareto`, `analyze`, `resume` and
`ui` take a sweep's name as `dnasweep ls` prints it as well as its path; a missing folder is named as
missing; trial-id hints are complete or say they are not; `dnasweep ui` serves the MLflow UI and
optuna-dashboard on the sweep, with the objectives' names."""

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import warnings

import pytest

from dnasweep.cli import main
from dnasweep.errors import ConfigError

optuna = pytest.importorskip("optuna", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

SPACE = {"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2}, "train": {"max_steps": 10}},
         "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
         "objectives": [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}]}
METRICS = ["val/loss", "compute/flops_per_token"]
N_TRIAL_DIRS = 11  # more than a hint shows


def make_sweep(root, name: str = "demo", mlflow_run: bool = False):
    """ROOT/NAME as `dnasweep run` leaves it, cheaply: space.json, an Optuna journal with a
    two-objective study (metric names set) of three complete trials, SWEEP/trials/ID folders, and,
    with `mlflow_run`, an MLflow SQLite store holding one run."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from dnasweep.space import parse_space
    from dnasweep.sweep.study import journal

    d = root / name
    (d / "trials").mkdir(parents=True)
    (d / "space.json").write_text(json.dumps(parse_space(SPACE, "space.yaml").to_dict()))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=journal(str(d)), directions=["minimize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(METRICS)  # as the runner does
    for i, (loss, flops) in enumerate([(2.0, 1e5), (1.5, 3e5), (2.5, 2e5)]):
        study.add_trial(create_trial(params={"train.lr": 1e-3 * (i + 2)},
                                     distributions={"train.lr": FloatDistribution(1e-3, 1e-2, log=True)},
                                     values=[loss, flops], user_attrs={"ray_trial_id": f"t_{i:05d}"}))
    for i in range(N_TRIAL_DIRS):
        (d / "trials" / f"t_{i:05d}").mkdir()
    if mlflow_run:
        from mlflow import MlflowClient

        from dnasweep.sweep.study import read_space
        from dnasweep.sweep.tracking import default_uri

        client = MlflowClient(default_uri(str(d)))
        exp = client.create_experiment(read_space(str(d)).tracking.experiment)
        run = client.create_run(exp, run_name="trial-0")
        client.log_metric(run.info.run_id, "val/loss", 2.0)
        client.set_terminated(run.info.run_id)
    return d


# --- names under --root, missing folders, hints ---

def test_pareto_takes_the_name_ls_prints(tmp_path, capsys):
    make_sweep(tmp_path)
    assert main(["ls", "--root", str(tmp_path)]) == 0
    name = capsys.readouterr().out.split()[0]
    assert name == "demo"
    assert main(["pareto", name, "--root", str(tmp_path)]) == 0
    by_name = capsys.readouterr().out
    assert "Pareto front (2 of 3 complete trials" in by_name
    assert main(["pareto", str(tmp_path / "demo")]) == 0  # a path, as before
    assert capsys.readouterr().out == by_name


def test_a_missing_sweep_is_named_missing(tmp_path, capsys):
    for cmd in (["pareto", "nosuch"], ["resume", "nosuch"], ["ui", "nosuch"], ["analyze", "nosuch"]):
        assert main([*cmd, "--root", str(tmp_path)]) == 2, cmd
        err = capsys.readouterr().err
        assert "nosuch does not exist" in err and str(tmp_path / "nosuch") in err, (cmd, err)
        assert "not a sweep directory" not in err
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_analyze_names_a_missing_folder(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "gone" / "trial")]) == 2
    assert f"{tmp_path / 'gone' / 'trial'} does not exist" in capsys.readouterr().err


def test_analyze_by_name_and_trial_hints_are_complete_or_say_so(tmp_path, capsys):
    make_sweep(tmp_path)
    assert main(["analyze", "demo/nosuch", "--root", str(tmp_path)]) == 2  # NAME/TRIAL under --root
    err = capsys.readouterr().err
    assert "has no trial 'nosuch'" in err
    hint = re.search(r"use a trial id \((.*)\) or an Optuna", err).group(1)
    shown = [w for w in hint.split(", ") if w.startswith("t_")]
    assert len(shown) < N_TRIAL_DIRS and f"... ({N_TRIAL_DIRS} in all)" in hint, hint

    for extra in sorted(os.listdir(tmp_path / "demo" / "trials"))[3:]:  # a few ids: all of them, no "..."
        os.rmdir(tmp_path / "demo" / "trials" / extra)
    assert main(["analyze", "demo/nosuch", "--root", str(tmp_path)]) == 2
    hint = re.search(r"use a trial id \((.*)\) or an Optuna", capsys.readouterr().err).group(1)
    assert hint == "t_00000, t_00001, t_00002"


def test_analyze_takes_the_name_ls_prints(tmp_path, monkeypatch, capsys):
    from dnasweep.sweep import analysis

    make_sweep(tmp_path)
    seen = {}

    def fake_analyze(sweep, dirs, **kw):
        seen.update(sweep=sweep, dirs=dirs)
        return []

    monkeypatch.setattr(analysis, "analyze_in_sweep", fake_analyze)
    assert main(["analyze", "demo", "--root", str(tmp_path)]) == 0
    assert seen["sweep"] == str(tmp_path / "demo")
    assert sorted(seen["dirs"]) == [str(tmp_path / "demo" / "trials" / t) for t in ("t_00000", "t_00001")]  # front


def test_resume_takes_the_name_ls_prints(tmp_path, monkeypatch):
    from dnasweep.sweep import runner

    make_sweep(tmp_path)
    seen = {}

    def fake_resume(sweep_dir, **kw):
        seen["dir"] = sweep_dir
        raise KeyboardInterrupt  # stop before any cluster; the CLI maps it to 130

    monkeypatch.setattr(runner, "resume_sweep", fake_resume)
    assert main(["resume", "demo", "--root", str(tmp_path)]) == 130
    assert seen["dir"] == str(tmp_path / "demo")


# --- dnasweep ui ---

def _wait_for_urls(proc, deadline):
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops both" in line:
            return "".join(lines)
    raise AssertionError("".join(lines) + (proc.stderr.read() if proc.poll() is not None else ""))


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


@pytest.mark.slow  # starts the MLflow UI and optuna-dashboard servers (~20 s each)
def test_ui_serves_mlflow_and_optuna_dashboard(tmp_path):
    if not shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable)):
        pytest.skip("optuna-dashboard is not installed (pip install 'dnasweep[sweep]')")
    make_sweep(tmp_path, mlflow_run=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen([sys.executable, "-m", "dnasweep.cli", "ui", "demo", "--root", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        out = _wait_for_urls(proc, time.time() + 240)
        mlflow_url = re.search(r"MLflow UI:\s+(http://127\.0\.0\.1:\d+)", out).group(1)
        study_url = re.search(r"optuna-dashboard:\s+(http://127\.0\.0\.1:\d+/dashboard/studies/(\d+))", out)
        dash, study_id = study_url.group(1).split("/dashboard")[0], study_url.group(2)

        assert _get(mlflow_url + "/")[0] == 200
        assert _get(study_url.group(1))[0] == 200
        # the MLflow UI without MLflow's job runner (8 huey consumer processes nothing here uses)
        tools = [_cmdline(p) for p in _descendants(proc.pid)]
        assert any("mlflow" in c and " ui " in c for c in tools), tools
        assert not [c for c in tools if "huey" in c], tools
        # MLflow's API on the sweep's store: its one run
        with urllib.request.urlopen(urllib.request.Request(
                mlflow_url + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=dnasweep"), timeout=10) as r:
            exp = json.loads(r.read())["experiment"]["experiment_id"]
        req = urllib.request.Request(mlflow_url + "/api/2.0/mlflow/runs/search", method="POST",
                                     data=json.dumps({"experiment_ids": [exp]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert [x["info"]["run_name"] for x in json.loads(r.read())["runs"]] == ["trial-0"]
        # optuna-dashboard renders in the browser from its JSON API: the study's objective names there
        detail = json.loads(_get(f"{dash}/api/studies/{study_id}?after=0")[1])
        assert detail["objective_names"] == METRICS, detail.get("objective_names")
        assert len(detail["trials"]) == 3

        if chromium:  # and on the page itself, rendered by headless Chromium (the names, not "0" and "1")
            dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                  "--virtual-time-budget=15000", "--dump-dom", study_url.group(1)],
                                 capture_output=True, text=True, timeout=120).stdout
            assert "val/loss" in dom and "compute/flops_per_token" in dom, dom[-3000:]
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, proc.stderr.read()
    for url in (mlflow_url, dash):  # both stopped with it
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/", timeout=3)
    if not chromium:
        pytest.skip("headless Chromium is not installed (apt-get install chromium): the rendered page was not "
                    "checked; the HTTP pages and the study's objective names in the JSON API were")


@pytest.mark.slow  # starts the MLflow UI and optuna-dashboard servers (~20 s each)
def test_ui_tools_end_with_dnasweep_even_when_it_is_killed(tmp_path):
    """The guard each UI runs under: when the dnasweep that started it dies without a word (SIGKILL),
    the tool and what the tool started (mlflow's uvicorn workers) end too."""
    from dnasweep.sweep.ui import _GUARD

    tool = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '300']); print(p.pid, flush=True); "
            "time.sleep(300)")
    parent = ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.executable, '-c', "
              "sys.argv[2]], stdin=subprocess.PIPE); import time; time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", parent, _GUARD, tool], stdout=subprocess.PIPE, text=True)
    grandchild = int(proc.stdout.readline())
    try:
        assert _alive(grandchild)
        proc.kill()  # dnasweep ui killed with SIGKILL: no handler runs in it
        proc.wait()
        deadline = time.time() + 15
        while _alive(grandchild) and time.time() < deadline:
            time.sleep(0.2)
        assert not _alive(grandchild)
    finally:
        if _alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name: state, parent pid, ..."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, read from /proc (children by parent pid)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):  # a process gone meanwhile
                parent[int(d)] = int(_stat(int(d))[1])
    out, todo = [], [pid]
    while todo:
        this = todo.pop()
        kids = [p for p, pp in parent.items() if pp == this]
        out += kids
        todo += kids
    return out


def _stored(tmp_path, name="mine"):
    """A sweep kept in object storage (file:// bucket), as `run --storage` leaves it."""
    import shutil

    from dnasweep.sweep.storage import SETTINGS

    bucket = tmp_path / "bucket"
    make_sweep(bucket, name)
    (bucket / name / SETTINGS).write_text(json.dumps({"storage": f"file://{bucket}"}))
    shutil.rmtree(bucket / name / "trials")
    return f"file://{bucket}/{name}"


def test_resume_from_storage_never_overwrites_the_store_with_another_local_sweep(tmp_path, monkeypatch):
    """ROOT/NAME held an unrelated local sweep of the same name: resume ran it against the store
    and its first mirror replaced the store's journal (3 trials -> 0). Refused now, exit 2."""
    from dnasweep.sweep import runner

    uri = _stored(tmp_path)
    make_sweep(tmp_path / "root", "mine")  # another sweep, same name, its own journal
    before = (tmp_path / "bucket" / "mine" / "optuna.log").read_bytes()
    monkeypatch.setattr(runner, "_drive", lambda *a, **k: pytest.fail("must not start"))
    monkeypatch.setattr("dnasweep.sweep.cluster.init_ray", lambda *a, **k: None)
    with pytest.raises(ConfigError) as e:
        runner.resume_sweep(uri, root=str(tmp_path / "root"))
    assert "another sweep of the same name" in str(e.value)
    assert (tmp_path / "bucket" / "mine" / "optuna.log").read_bytes() == before


def test_resume_from_storage_refreshes_a_stale_local_copy(tmp_path, monkeypatch):
    """A local copy behind the store (resumed elsewhere since): the store's journal wins."""
    import shutil

    from dnasweep.sweep import runner

    uri = _stored(tmp_path)
    local = tmp_path / "root" / "mine"
    shutil.copytree(tmp_path / "bucket" / "mine", local)
    store_log = tmp_path / "bucket" / "mine" / "optuna.log"
    lines = store_log.read_bytes().splitlines(keepends=True)
    (local / "optuna.log").write_bytes(b"".join(lines[:-1]))  # one record behind
    seen = {}
    monkeypatch.setattr(runner, "_drive", lambda space, name, store, *a, **k: seen.update(
        log=pathlib.Path(store.sweep_dir, "optuna.log").read_bytes()))
    monkeypatch.setattr("dnasweep.sweep.cluster.init_ray", lambda *a, **k: None)
    monkeypatch.setattr("dnasweep.sweep.tracking.check_reachable", lambda *a, **k: None)
    runner.resume_sweep(uri, root=str(tmp_path / "root"))
    assert seen["log"] == store_log.read_bytes()


@pytest.mark.parametrize("name", ["exp1/", "team/exp2", "../x", ".", ""])
def test_a_sweep_name_must_be_one_path_component(tmp_path, name):
    """The study was created under the raw name, every reader opened it by the directory's
    basename: 'exp1/' made a sweep that pareto, resume and analyze could not open (KeyError)."""
    from dnasweep.space import parse_space
    from dnasweep.sweep.runner import run_sweep

    with pytest.raises(ConfigError) as e:
        run_sweep(parse_space(SPACE, "space.yaml"), name, root=str(tmp_path / "root"))
    assert e.value.problems[0].key == "--name" and not (tmp_path / "root").exists()


def test_ls_lists_every_sweep_when_one_cannot_be_read(tmp_path, capsys):
    """One unreadable sweep (its study under another name, or a journal still empty) made ls
    crash with a KeyError and list none of the others."""
    make_sweep(tmp_path, "good")
    make_sweep(tmp_path, "renamed")
    (tmp_path / "renamed").rename(tmp_path / "moved")  # its study is still named 'renamed'
    assert main(["ls", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "3/" in out and "moved" in out and "unreadable" in out


def test_a_sweep_stopped_as_it_starts_can_be_resumed(tmp_path, monkeypatch):
    """Ctrl-C in the second between the sweep's files and its Optuna journal left a directory that
    resume called 'not a sweep directory' and run called 'already exists': usable by neither."""
    from dnasweep.space import parse_space
    from dnasweep.sweep import runner
    from dnasweep.sweep.study import is_sweep_dir

    monkeypatch.setattr("dnasweep.sweep.cluster.init_ray", lambda *a, **k: None)
    monkeypatch.setattr("dnasweep.sweep.storage.check_shared", lambda root: None)
    monkeypatch.setattr("dnasweep.sweep.storage.LocalStore.mirror", lambda self: (_ for _ in ()).throw(
        KeyboardInterrupt))  # the first thing after the files are written
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(parse_space(SPACE, "space.yaml"), "early", root=str(tmp_path))
    assert is_sweep_dir(str(tmp_path / "early"))


def test_run_resume_refuses_a_space_other_than_the_sweeps(tmp_path, monkeypatch, capsys):
    """`run SPACE --name N --resume` continued N with the space it was started with and said only
    that: an edited file or new overrides (budget, lr range) were dropped without a word."""
    import yaml

    from dnasweep.sweep import runner

    make_sweep(tmp_path)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    resumed = []
    monkeypatch.setattr(runner, "resume_sweep", lambda sweep_dir, **kw: resumed.append(sweep_dir) or (
        _ for _ in ()).throw(KeyboardInterrupt))
    args = ["run", str(tmp_path / "space.yaml"), "--name", "demo", "--root", str(tmp_path), "--resume"]
    assert main([*args, "budget.trials=50", "sampler.seed=5"]) == 2
    err = capsys.readouterr().err
    assert "budget.trials" in err and "sampler.seed" in err and not resumed
    assert main(args) == 130 and resumed  # the same space: resumed


def test_resume_from_storage_without_a_journal_there_goes_on_from_the_local_copy(tmp_path, monkeypatch):
    """A sweep stopped before its journal was first copied up: the store has none, the local copy
    is the sweep (the journal comparison opened a file that was never downloaded)."""
    import shutil

    from dnasweep.sweep import runner

    uri = _stored(tmp_path)
    shutil.copytree(tmp_path / "bucket" / "mine", tmp_path / "root" / "mine")
    (tmp_path / "bucket" / "mine" / "optuna.log").unlink()
    seen = []
    monkeypatch.setattr(runner, "_drive", lambda space, name, store, *a, **k: seen.append(store.sweep_dir))
    monkeypatch.setattr("dnasweep.sweep.cluster.init_ray", lambda *a, **k: None)
    monkeypatch.setattr("dnasweep.sweep.tracking.check_reachable", lambda *a, **k: None)
    runner.resume_sweep(uri, root=str(tmp_path / "root"))
    assert seen == [str(tmp_path / "root" / "mine")]
