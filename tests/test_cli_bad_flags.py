"""Bad flags and files given to the CLI are refused before anything starts: exit code 2, the flag
(or environment variable, or key) named, what is allowed and how to fix it; no Ray, no trial, no
sweep directory. Ray-free: the runner's entry points and `init_ray` fail the test when reached."""

from __future__ import annotations

import socket

import pytest
from helpers import VALID_SPACE, write_yaml

from dnasweep.cli import main

optuna = pytest.importorskip("optuna", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from test_sweep_cli import make_sweep  # noqa: E402

TRIAL = {"model": {"d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2}, "train": {"max_steps": 1}}


def _fail(*a, **k):
    pytest.fail("a sweep, Ray, training or an analysis was started: the bad input should have been refused first")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    # the user's own cluster and tracking store must not leak into what is checked
    for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "DNASWEEP_STORAGE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def nothing_starts(monkeypatch):
    """Starting a sweep, Ray, a training run or an analysis fails the test."""
    for target in ("dnasweep.sweep.runner.run_sweep", "dnasweep.sweep.runner.resume_sweep",
                   "dnasweep.sweep.cluster.init_ray", "dnasweep.train.loop.run_trial",
                   "dnasweep.analyze.trial.analyze_trial", "dnasweep.sweep.analysis.analyze_in_sweep"):
        monkeypatch.setattr(target, _fail)


@pytest.fixture
def started(monkeypatch) -> list:
    """The runner's entry points record their call and stop at once (Ctrl-C: exit 130): the flags
    were accepted."""
    calls = []

    def stop(*a, **k):
        calls.append((a, k))
        raise KeyboardInterrupt

    monkeypatch.setattr("dnasweep.sweep.runner.run_sweep", stop)
    monkeypatch.setattr("dnasweep.sweep.runner.resume_sweep", stop)
    return calls


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# 1. --tracking-uri / $MLFLOW_TRACKING_URI with a scheme MLflow has no store for

def test_run_refuses_a_tracking_uri_mlflow_cannot_store_to(tmp_path, capsys, nothing_starts):
    """`--tracking-uri bogus://x` ran the whole sweep with nothing recorded, exit 0."""
    root = tmp_path / "root"
    assert main(["run", write_yaml(tmp_path, VALID_SPACE), "--root", str(root),
                 "--tracking-uri", "bogus://x"]) == 2
    err = _err(capsys)
    assert "  --tracking-uri: " in err and "bogus" in err and "sqlite:" in err and "fix: " in err
    assert not root.exists()


@pytest.mark.parametrize("command", ["run", "resume", "analyze"])
def test_a_bogus_tracking_uri_from_the_environment_is_named_there(tmp_path, capsys, monkeypatch, nothing_starts,
                                                                   command):
    make_sweep(tmp_path, "demo")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://x")
    args = {"run": ["run", write_yaml(tmp_path, VALID_SPACE), "--name", "new"], "resume": ["resume", "demo"],
            "analyze": ["analyze", "demo"]}[command]
    assert main([*args, "--root", str(tmp_path)]) == 2
    err = _err(capsys)
    assert "  MLFLOW_TRACKING_URI: " in err and "--tracking-uri:" not in err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", ["resume", "analyze"])
def test_resume_and_analyze_refuse_a_bogus_tracking_uri_flag(tmp_path, capsys, nothing_starts, command):
    make_sweep(tmp_path, "demo")
    assert main([command, "demo", "--root", str(tmp_path), "--tracking-uri", "mlfow://typo"]) == 2
    assert "  --tracking-uri: " in _err(capsys)


@pytest.mark.parametrize("uri", ["runs/mlflow", "/abs/mlruns", "file:///tmp/mlruns", "sqlite:///tmp/x.db",
                                 "postgresql://u@db/mlflow", "postgresql+psycopg2://u@db/mlflow",
                                 "mysql+pymysql://u@db/m", "mssql+pyodbc://u@db/m", "http://127.0.0.1:5000",
                                 "https://mlflow.example", "databricks", "databricks://profile"])
def test_tracking_uris_mlflow_supports_are_accepted(tmp_path, started, uri):
    assert main(["run", write_yaml(tmp_path, VALID_SPACE), "--root", str(tmp_path / "root"),
                 "--tracking-uri", uri]) == 130
    assert started[0][1]["tracking_uri"] == uri


# 2. a sweep directory that was renamed, or whose Optuna journal is empty

def test_pareto_and_resume_of_a_renamed_sweep_say_to_rename_it_back(tmp_path, capsys, monkeypatch):
    """A KeyError traceback (exit 1): the study keeps the name the sweep was started with."""
    monkeypatch.setattr("dnasweep.sweep.cluster.init_ray", _fail)
    make_sweep(tmp_path, "exp1").rename(tmp_path / "exp1-old")
    for command in ("pareto", "resume"):
        assert main([command, "exp1-old", "--root", str(tmp_path)]) == 2
        err = _err(capsys)
        assert "'exp1'" in err and "renamed" in err and f"mv {tmp_path / 'exp1-old'} {tmp_path / 'exp1'}" in err
    assert main(["ls", "--root", str(tmp_path)]) == 0  # ls says the same, on the sweep's line
    out = capsys.readouterr().out
    assert "exp1-old" in out and "unreadable" in out and "'exp1'" in out


def test_pareto_and_resume_of_a_sweep_with_an_empty_journal(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("dnasweep.sweep.cluster.init_ray", _fail)
    (make_sweep(tmp_path, "demo") / "optuna.log").write_text("")
    for command in ("pareto", "resume"):
        assert main([command, "demo", "--root", str(tmp_path)]) == 2
        err = _err(capsys)
        assert "optuna.log is empty" in err and "fix: " in err


# 3. --root naming a file

@pytest.mark.parametrize("below", [False, True])
def test_run_refuses_a_root_that_is_a_file(tmp_path, capsys, nothing_starts, below):
    """A traceback once Ray had started (os.makedirs under a file)."""
    f = tmp_path / "notes.txt"
    f.write_text("x")
    root = f / "sweeps" if below else f
    assert main(["run", write_yaml(tmp_path, VALID_SPACE), "--root", str(root)]) == 2
    err = _err(capsys)
    assert "  --root: " in err and f"{f} is a file" in err


@pytest.mark.parametrize("command", ["resume", "pareto", "analyze", "ui"])
def test_sweep_commands_refuse_a_root_that_is_a_file(tmp_path, capsys, nothing_starts, command):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    assert main([command, "demo", "--root", str(f)]) == 2
    err = _err(capsys)
    assert "  --root: " in err and f"{f} is a file" in err


def test_resume_from_a_uri_refuses_a_root_that_is_a_file(tmp_path, capsys, nothing_starts):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    assert main(["resume", "s3://bucket/sweeps/demo", "--root", str(f)]) == 2
    assert "  --root: " in _err(capsys)


# 4. --out / out_dir: empty, or a file

@pytest.mark.parametrize("args,key", [(["--out", ""], "--out"), (["out_dir="], "out_dir"),
                                      (["--out", "FILE"], "--out"), (["out_dir=FILE"], "out_dir")])
def test_train_refuses_an_empty_out_dir_or_a_file(tmp_path, capsys, nothing_starts, args, key):
    """`--out ''` was ignored (the trial went to runs/trial); `out_dir=''` or a file: a traceback."""
    f = tmp_path / "notes.txt"
    f.write_text("x")
    args = [a.replace("FILE", str(f)) for a in args]
    assert main(["train", write_yaml(tmp_path, TRIAL), *args]) == 2
    err = _err(capsys)
    assert f"  {key}: " in err and ("is empty" in err or f"{f} is a file" in err)


@pytest.mark.parametrize("out", ["", "FILE"])
def test_analyze_refuses_an_empty_out_or_a_file(tmp_path, capsys, nothing_starts, out):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    assert main(["analyze", str(tmp_path), "--out", out.replace("FILE", str(f))]) == 2
    assert "  --out: " in _err(capsys)


# 5. analyze --device and --examples

@pytest.mark.parametrize("device", ["gpu", "cuda0", "CPU", "cuda:x"])
def test_analyze_refuses_an_unknown_device(tmp_path, capsys, nothing_starts, device):
    """A traceback from torch.device."""
    assert main(["analyze", str(tmp_path), "--device", device]) == 2
    err = _err(capsys)
    assert "  --device: " in err and "cpu, cuda, cuda:N" in err


@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:0"])
def test_analyze_on_cuda_without_cuda_says_so(tmp_path, capsys, monkeypatch, nothing_starts, device):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["analyze", str(tmp_path), "--device", device]) == 2
    err = _err(capsys)
    assert "  --device: " in err and "CUDA is not available" in err and "--device cpu" in err


def test_analyze_on_a_gpu_this_machine_does_not_have(tmp_path, capsys, monkeypatch, nothing_starts):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["analyze", str(tmp_path), "--device", "cuda:3"]) == 2
    err = _err(capsys)
    assert "  --device: " in err and "cuda:0" in err


@pytest.mark.parametrize("n", ["0", "-5"])
def test_analyze_refuses_fewer_than_one_example(tmp_path, capsys, nothing_starts, n):
    """-5 was an error about other keys; 0 silently meant the default."""
    assert main(["analyze", str(tmp_path), "--examples", n]) == 2
    err = _err(capsys)
    assert "  --examples: " in err and ">= 1" in err


def test_analyze_reports_every_bad_flag_at_once(tmp_path, capsys, nothing_starts):
    assert main(["analyze", str(tmp_path), "--examples", "0", "--device", "gpu", "--tracking-uri", "mlfow://y"]) == 2
    err = _err(capsys)
    assert "3 problems" in err and "--examples" in err and "--device" in err and "--tracking-uri" in err


# 6. --address / $RAY_ADDRESS that nothing answers

@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_run_refuses_an_address_nothing_listens_on(tmp_path, capsys, nothing_starts, scheme):
    """ray.init hung for more than 100 s on it."""
    address = f"{scheme}127.0.0.1:{_closed_port()}"
    assert main(["run", write_yaml(tmp_path, VALID_SPACE), "--root", str(tmp_path / "root"),
                 "--address", address]) == 2
    err = _err(capsys)
    assert "  --address: " in err and address in err and "ray start --head" in err and "drop --address" in err
    assert not (tmp_path / "root").exists()


def test_an_address_from_the_environment_is_named_there(tmp_path, capsys, monkeypatch, nothing_starts):
    make_sweep(tmp_path, "demo")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_closed_port()}")
    assert main(["resume", "demo", "--root", str(tmp_path)]) == 2
    err = _err(capsys)
    assert "  RAY_ADDRESS: " in err and "unset RAY_ADDRESS" in err


def test_the_address_check_gives_up_after_a_few_seconds(tmp_path, capsys, monkeypatch, nothing_starts):
    timeouts = []

    def silent(addr, timeout=None):  # a firewall that drops the packets
        timeouts.append(timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", silent)
    assert main(["run", write_yaml(tmp_path, VALID_SPACE), "--address", "10.1.2.3:6379"]) == 2
    assert "  --address: " in _err(capsys) and timeouts and 0 < timeouts[0] <= 5


@pytest.mark.parametrize("address", ["auto", "local", "LISTENING", "ray://LISTENING"])
def test_addresses_that_answer_or_are_not_host_port_go_on(tmp_path, monkeypatch, started, address):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = address.replace("LISTENING", f"127.0.0.1:{server.getsockname()[1]}")
        if "127.0.0.1" not in address:  # auto / local: no connection is tried
            monkeypatch.setattr(socket, "create_connection", _fail)
        assert main(["run", write_yaml(tmp_path, VALID_SPACE), "--root", str(tmp_path / "root"),
                     "--address", address]) == 130
    assert started[0][1]["address"] == address


# 7. ls --root that does not exist, or is a file

def test_ls_of_a_root_that_does_not_exist(tmp_path, capsys):
    """It said 'no sweeps under nosuch', exit 0: a typo looked like an empty root."""
    assert main(["ls", "--root", str(tmp_path / "nosuch")]) == 2
    err = _err(capsys)
    assert "  --root: " in err and "does not exist" in err


def test_ls_of_a_root_that_is_a_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["ls", "--root", str(tmp_path / "notes.txt")]) == 2
    assert "is a file" in _err(capsys)


def test_ls_of_an_empty_root_is_no_error(tmp_path, capsys):
    assert main(["ls", "--root", str(tmp_path)]) == 0
    assert "no sweeps under" in capsys.readouterr().out


def test_ls_before_any_sweep_in_a_new_checkout_is_no_error(tmp_path, capsys, monkeypatch):
    """The default root does not exist until the first sweep: `dnasweep ls` there is a question,
    not a typo."""
    monkeypatch.chdir(tmp_path)
    assert main(["ls"]) == 0
    assert "no sweeps under runs/sweeps" in capsys.readouterr().out


# 8. --smoke without a smoke: section; an empty file; a file that is not a mapping

@pytest.mark.parametrize("command", ["run", "validate"])
def test_smoke_on_a_file_without_a_smoke_section(tmp_path, capsys, nothing_starts, command):
    """--smoke silently ran the full sweep."""
    assert main([command, write_yaml(tmp_path, VALID_SPACE), "--smoke", "--root", str(tmp_path / "root")]
                if command == "run" else [command, write_yaml(tmp_path, VALID_SPACE), "--smoke"]) == 2
    err = _err(capsys)
    assert "  --smoke: " in err and "no smoke: section" in err and not (tmp_path / "root").exists()


def test_smoke_on_a_trial_config(tmp_path, capsys):
    assert main(["validate", write_yaml(tmp_path, TRIAL), "--smoke"]) == 2
    assert "  --smoke: " in _err(capsys)


@pytest.mark.parametrize("smoke", [["smoke.budget.trials=2"], []])
def test_smoke_with_an_overlay_in_the_file_or_given_as_override_passes(tmp_path, capsys, smoke):
    space = {**VALID_SPACE, **({} if smoke else {"smoke": {"budget": {"trials": 2}}})}
    assert main(["validate", write_yaml(tmp_path, space), "--smoke", *smoke]) == 0


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
@pytest.mark.parametrize("command", ["train", "validate"])
def test_an_empty_file_is_refused(tmp_path, capsys, nothing_starts, command, text):
    """It was a valid trial config of every default (and `train` trained it)."""
    path = write_yaml(tmp_path, text)
    assert main([command, path]) == 2
    assert f"{path} is empty" in _err(capsys)


def test_a_plain_text_file_is_not_a_mapping(tmp_path, capsys):
    """`validate` printed the whole text as one unknown key."""
    path = write_yaml(tmp_path, "train the model\nfor ten steps please\n")
    assert main(["validate", path]) == 2
    err = _err(capsys)
    assert f"{path} is not a YAML mapping" in err and "unknown key" not in err


def test_smoke_without_an_overlay_is_reported_with_the_files_other_problems(tmp_path, capsys):
    path = write_yaml(tmp_path, {**VALID_SPACE, "budgett": {"trials": 2}})
    assert main(["validate", path, "--smoke"]) == 2
    err = _err(capsys)
    assert "2 problems" in err and "  budgett: " in err and "  --smoke: " in err


def test_an_empty_smoke_overlay_given_as_override_is_no_overlay(tmp_path, capsys):
    assert main(["validate", write_yaml(tmp_path, VALID_SPACE), "--smoke", "smoke={}"]) == 2
    assert "  --smoke: " in _err(capsys)


def test_a_commands_flag_problems_come_with_its_files(tmp_path, capsys, nothing_starts):
    """A bad flag and a bad file were reported one at a time: fix the flag, run again, learn of
    the file's problem."""
    space = write_yaml(tmp_path, {**VALID_SPACE, "budget": {"trials": 0}})
    (tmp_path / "f").write_text("x")
    assert main(["run", space, "--root", str(tmp_path / "f")]) == 2
    err = _err(capsys)
    assert "--root: " in err and "budget.trials" in err
    assert main(["validate", space, "--samples", "0"]) == 2
    err = _err(capsys)
    assert "--samples: " in err and "budget.trials" in err
