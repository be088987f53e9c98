"""Which cluster a sweep uses, with a fake `ray.init` (no Ray started): a new local cluster unless
--address or $RAY_ADDRESS names one (never the cluster /tmp/ray/ray_current_cluster names), said on
the first line; a local cluster's token file is created with mode 600; a cluster that refuses the
client's token, or does not answer, is exit 2 with what to export; the libraries' boilerplate is
kept off the console unless --verbose."""

import logging
import os
import stat

import pytest
import yaml

from dnasweep.cli import main

ray = pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from dnasweep.space import parse_space  # noqa: E402
from dnasweep.sweep import cluster  # noqa: E402

SPACE = {"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2},
                  "train": {"max_steps": 10, "warmup_steps": 2}},
         "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
         "objectives": [{"metric": "val/loss", "mode": "min"}]}


class Stop(Exception):
    """Raised by the fake ray.init once it has seen its arguments."""


class Calls(list):
    """The fake ray.init's calls (keyword arguments); `error`: what it raises."""

    error: Exception = Stop()


@pytest.fixture
def fake_init(monkeypatch, tmp_path):
    """ray.init recording its keyword arguments, then raising Stop (or `fake_init.error`); HOME in
    tmp_path (a token written there is the test's), no Ray variables from the environment."""
    calls = Calls()

    def init(**kw):
        calls.append(kw)
        raise calls.error

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for v in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI",
              "RAY_AIR_NEW_OUTPUT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(cluster, "_VERBOSE", True, raising=False)
    return calls


def _space():
    return parse_space(SPACE, "space.yaml")


@pytest.mark.parametrize("flag, env, expected, named", [
    (None, None, "local", "a new local cluster"),
    ("10.0.0.5:6379", None, "10.0.0.5:6379", "10.0.0.5:6379 (from --address)"),
    (None, "10.0.0.7:6379", "10.0.0.7:6379", "10.0.0.7:6379 (from $RAY_ADDRESS)"),
    ("10.0.0.5:6379", "10.0.0.7:6379", "10.0.0.5:6379", "10.0.0.5:6379 (from --address)"),
])
def test_the_address_and_the_first_line(fake_init, monkeypatch, flag, env, expected, named):
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    lines = []
    with pytest.raises(Stop):
        cluster.init_ray(_space(), flag, lines.append)
    assert fake_init[0]["address"] == expected  # never None: that would join ray_current_cluster's cluster
    assert lines[0].startswith("Ray cluster: ") and named in lines[0], lines
    assert fake_init[0]["include_dashboard"] is (expected == "local")


def test_ray_current_cluster_is_not_joined(fake_init, monkeypatch, tmp_path):
    """Someone's `ray start` on this machine (a live GCS named in /tmp/ray/ray_current_cluster): a
    sweep without --address / RAY_ADDRESS still starts its own cluster."""
    import socket
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "ray").mkdir()
    with socket.create_server(("127.0.0.1", 0)) as live:
        (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{live.getsockname()[1]}")
        with pytest.raises(Stop):
            cluster.init_ray(_space(), None, [].append)
    assert fake_init[0]["address"] == "local"


def test_cli_run_says_which_cluster_first(fake_init, tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SPACE))
    with pytest.raises(Stop):
        main(["run", str(tmp_path / "s.yaml"), "--root", str(tmp_path / "root"), "--name", "x"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Ray cluster: a new local cluster"), out
    assert fake_init[0]["address"] == "local"


# --- the token of a local cluster ---

def test_a_local_cluster_token_is_created_private(fake_init, tmp_path):
    lines = []
    with pytest.raises(Stop):
        cluster.init_ray(_space(), None, lines.append)
    token = tmp_path / "home" / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert stat.S_IMODE(token.parent.stat().st_mode) == 0o700
    assert len(token.read_text()) == 64 and int(token.read_text(), 16) >= 0
    assert "RAY_AUTH_MODE" not in os.environ  # left to Ray (it turns token mode on for a new local cluster)
    assert any(str(token) in ln and "mode 600" in ln for ln in lines)


def test_an_existing_token_or_disabled_auth_is_left_alone(fake_init, tmp_path, monkeypatch):
    token = tmp_path / "mine"
    token.write_text("a" * 64)
    token.chmod(0o640)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    lines = []
    with pytest.raises(Stop):
        cluster.init_ray(_space(), None, lines.append)
    assert token.read_text() == "a" * 64 and stat.S_IMODE(token.stat().st_mode) == 0o640
    assert any(f"chmod 600 {token}" in ln for ln in lines), lines  # said, not changed behind the user's back
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(Stop):
        cluster.init_ray(_space(), None, [].append)
    assert not (tmp_path / "home" / ".ray").exists()
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


def test_no_token_is_made_for_a_cluster_named_by_address(fake_init, tmp_path):
    with pytest.raises(Stop):
        cluster.init_ray(_space(), "10.0.0.5:6379", [].append)
    assert not (tmp_path / "home" / ".ray").exists()
    assert "RAY_AUTH_MODE" not in os.environ


# --- a cluster that refuses the token, or does not answer ---

def _refused() -> ConnectionError:
    """What ray.init raises for a token cluster when the client sends no token (Ray 2.60: after
    ~20 s of retries, a ConnectionError whose cause quotes the AuthenticationError)."""
    try:
        try:
            raise RuntimeError("Failed to connect to GCS. Last connection error: Traceback ...\n"
                               "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: Authentication "
                               "token is missing or incorrect. Note: RAY_AUTH_MODE is currently 'disabled'")
        except RuntimeError as e:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379") from e
    except ConnectionError as e:
        return e


def _run(tmp_path, *extra):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SPACE))
    return main(["run", str(tmp_path / "s.yaml"), "--root", str(tmp_path / "root"), "--name", "x", *extra])


def test_refused_token_says_what_to_export(fake_init, tmp_path, capsys):
    fake_init.error = _refused()
    assert _run(tmp_path, "--address", "10.0.0.5:6379") == 2
    err = capsys.readouterr().err
    fix = [ln for ln in err.splitlines() if "export RAY_AUTH_MODE=token" in ln]
    assert len(fix) == 1, err
    assert f"RAY_AUTH_TOKEN_PATH={tmp_path / 'home' / '.ray' / 'auth_token'}" in fix[0]
    assert "Traceback" not in err and "10.0.0.5:6379" in err
    assert not (tmp_path / "root").exists()  # nothing half-started


def test_ray_authentication_error_itself_is_caught(fake_init, tmp_path, capsys, monkeypatch):
    """RAY_AUTH_MODE=token but no token anywhere: Ray raises AuthenticationError at once."""
    from ray.exceptions import AuthenticationError

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "nosuch"))
    fake_init.error = AuthenticationError("Token authentication is enabled but no authentication token was found")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert _run(tmp_path) == 2
    err = capsys.readouterr().err
    assert "RAY_AUTH_TOKEN_PATH" in err and str(tmp_path / "nosuch") in err and "Traceback" not in err


def test_an_address_nobody_answers_is_bad_input(fake_init, tmp_path, capsys):
    fake_init.error = ConnectionError("Failed to connect to Ray cluster at 10.0.0.9:6379")
    assert _run(tmp_path, "--address", "10.0.0.9:6379") == 2
    err = capsys.readouterr().err
    assert "--address: no Ray cluster answers at 10.0.0.9:6379" in err and "RAY_AUTH_MODE" not in err


def test_other_errors_are_not_disguised(fake_init, tmp_path):
    fake_init.error = ValueError("something else")
    with pytest.raises(ValueError, match="something else"):
        _run(tmp_path, "--address", "10.0.0.9:6379")


# --- the libraries' boilerplate ---

@pytest.fixture
def mlflow_db_logger():
    log = logging.getLogger("mlflow.store.db.utils")
    old = log.level
    log.setLevel(logging.NOTSET)
    yield log
    log.setLevel(old)


def test_quiet_unless_verbose(fake_init, tmp_path, monkeypatch, mlflow_db_logger):
    with pytest.raises(Stop):
        _run(tmp_path, "--verbose")
    assert fake_init[-1]["logging_level"] == logging.INFO
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ
    assert mlflow_db_logger.level == logging.NOTSET

    with pytest.raises(Stop):
        _run(tmp_path)
    assert fake_init[-1]["logging_level"] == logging.WARNING  # Ray's "Started a local Ray instance ..." line
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"  # Tune's configuration box and TensorBoard hint
    assert mlflow_db_logger.level == logging.WARNING  # "Creating initial MLflow database tables..."
