"""Bad input around resuming (Ray-free: both are refused before a cluster starts)."""

import json

import pytest
import yaml

from dnasweep.cli import main

SPACE = {"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2},
                  "train": {"max_steps": 10}},
         "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
         "objectives": [{"metric": "val/loss", "mode": "min"}]}


def test_resume_refuses_a_non_sweep_dir(tmp_path, capsys):
    pytest.importorskip("optuna", reason="the sweep extra is not installed")
    (tmp_path / "notes.txt").write_text("not a sweep")
    assert main(["resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a sweep directory" in err and "dnasweep ls" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing created


def test_existing_name_is_refused(tmp_path, capsys):
    pytest.importorskip("optuna", reason="the sweep extra is not installed")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SPACE))
    old = tmp_path / "root" / "taken"
    old.mkdir(parents=True)
    (old / "space.json").write_text(json.dumps({"keep": "me"}))
    assert main(["run", str(tmp_path / "s.yaml"), "--root", str(tmp_path / "root"), "--name", "taken"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "dnasweep resume" in err and "--resume" in err
    assert json.loads((old / "space.json").read_text()) == {"keep": "me"}  # nothing lost
    assert sorted(p.name for p in old.iterdir()) == ["space.json"]


def test_a_dead_cluster_left_by_ray_start_is_not_joined(tmp_path, monkeypatch):
    import socket
    import tempfile

    from dnasweep.sweep.runner import _stale_cluster_guard

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    lines = []
    assert _stale_cluster_guard(lines.append) is None  # no `ray start` cluster: ray.init decides
    (tmp_path / "ray").mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed again when the block ends: nobody listens there
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{dead}")
    assert _stale_cluster_guard(lines.append) == "local" and "does not answer" in lines[-1]
    with socket.create_server(("127.0.0.1", 0)) as live:
        (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{live.getsockname()[1]}")
        assert _stale_cluster_guard(lines.append) is None  # a live cluster is joined
