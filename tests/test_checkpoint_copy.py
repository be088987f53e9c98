"""Each checkpoint is kept once. A trial reports a pointer to Ray Tune (a few bytes naming its own
checkpoint), not a copy: Tune copied every checkpoint into tune/, which doubled what a sweep wrote.
With object storage the trial's checkpoint is mirrored to the store (keep-last), so a trial
restarted on a node without its scratch directory still continues from it. A finished trial keeps
the weights, not the optimizer state, and `dnasweep train` refuses to continue from that."""

import json
import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch
import yaml

ray = pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from dnasweep.cli import main  # noqa: E402
from dnasweep.sweep import storage  # noqa: E402
from dnasweep.sweep.storage import POINTER, LocalStore, ObjectStore, read_pointer, slim_checkpoint  # noqa: E402
from dnasweep.sweep.trainable import TuneReporter  # noqa: E402
from dnasweep.train import checkpoint  # noqa: E402

TRIAL = {"model": {"kind": "dna", "task": "lm", "d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2,
                   "pool": {"n_transformer": 1, "n_attention": 1, "n_mlp": 1, "n_identity": 1}},
         "data": {"source": "pystdlib", "max_bytes": 200000},
         "train": {"max_steps": 4, "batch_size": 2, "eval_every": 2, "eval_batches": 1, "warmup_steps": 1,
                   "device": "cpu"}}


def _fake_checkpoint(d, step: int) -> str:
    checkpoint.save(str(d), {"model": {"w": torch.full((4,), float(step))}, "optimizer": {"m": torch.ones(4)},
                             "step": step}, f"step: {step}\n")
    return str(d)


@pytest.fixture
def reported(monkeypatch):
    """What each ray.tune.report call got: (metrics, the files of its checkpoint, read at report time)."""
    from ray import tune

    got = []

    def report(metrics, checkpoint=None):
        files = None
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                files = {n: (Path(d) / n).read_bytes() for n in os.listdir(d)}
        got.append((metrics, files))

    monkeypatch.setattr(tune, "report", report)
    return got


def test_a_trial_resumed_at_an_evaluation_sends_it_to_tune_again():
    """test_resume.py::test_an_evaluation_saved_but_never_reported_is_reported_on_resume holds the
    loop to it for any reporter that asks; Tune's asks, the console's does not (it would print an
    old evaluation as a new line)."""
    from dnasweep.train.report import ConsoleReporter

    assert TuneReporter.resend_evaluation and not getattr(ConsoleReporter, "resend_evaluation", False)


def test_tune_gets_a_pointer_to_the_trials_own_checkpoint(tmp_path, reported):
    store = LocalStore(str(tmp_path / "sweep"))
    own = _fake_checkpoint(tmp_path / "sweep" / "trials" / "t1" / "checkpoint", 30)
    rep = TuneReporter(store, "t1")
    rep.report({"step": 30, "val/loss": 2.0}, own)
    rep.report({"step": 31})  # no checkpoint: none reported
    (metrics, files), (_, none) = reported
    assert none is None and list(files) == [POINTER]  # a few bytes, no state.pt
    assert json.loads(files[POINTER]) == {"checkpoint": os.path.join("trials", "t1", "checkpoint"), "step": 30}
    assert not [p for p in os.listdir(tmp_path) if p.startswith("dnasweep-pointer")]  # the temp dir went
    # restoring through it: the pointer names the trial's own directory, which a retry finds in place
    store.restore_checkpoint("t1", json.loads(files[POINTER]), own)
    assert checkpoint.load(own)["step"] == 30


def test_object_store_mirrors_the_last_checkpoint_and_restores_it_elsewhere(tmp_path, reported):
    bucket = tmp_path / "bucket"
    store = ObjectStore(str(tmp_path / "head" / "sw"), f"file://{bucket}/sw")  # STORE = URI/NAME
    scratch = tmp_path / "scratch"
    rep = TuneReporter(store, "t1")
    for step in (30, 60):
        rep.report({"step": step}, _fake_checkpoint(scratch / "checkpoint", step))
    pointers = [json.loads(files[POINTER]) for _, files in reported]
    assert [p["checkpoint"] for p in pointers] == ["trials/t1/checkpoint-30", "trials/t1/checkpoint-60"]
    kept = sorted(os.listdir(bucket / "sw" / "trials" / "t1"))
    assert kept == ["checkpoint-60"]  # keep-last: the older mirror is gone
    assert sorted(os.listdir(bucket / "sw" / "trials" / "t1" / "checkpoint-60")) == ["config.yaml", "state.pt"]

    elsewhere = tmp_path / "other-node" / "checkpoint"  # a node without the scratch directory
    store.restore_checkpoint("t1", pointers[1], str(elsewhere))
    assert checkpoint.load(str(elsewhere))["step"] == 60
    # a pointer Tune recorded before the last report names a replaced mirror: the newest is taken
    shutil.rmtree(elsewhere)
    store.restore_checkpoint("t1", pointers[0], str(elsewhere))
    assert checkpoint.load(str(elsewhere))["step"] == 60
    # no pointer at all (the worker died after mirroring, before Tune took the report): the newest
    # mirror is still this trial's own progress; a local store has nothing to bring
    shutil.rmtree(elsewhere)
    store.restore_checkpoint("t1", None, str(elsewhere))
    assert checkpoint.load(str(elsewhere))["step"] == 60
    LocalStore(str(tmp_path / "local")).restore_checkpoint("t1", None, str(tmp_path / "local" / "none"))
    assert not (tmp_path / "local" / "none").exists()
    # a mirror cut short (no config.yaml, which goes up last) is never restored from
    half = bucket / "sw" / "trials" / "t1" / "checkpoint-90"
    half.mkdir()
    (half / "state.pt").write_bytes(b"truncat")
    shutil.rmtree(elsewhere)
    store.restore_checkpoint("t1", {"checkpoint": "trials/t1/checkpoint-90"}, str(elsewhere))
    assert checkpoint.load(str(elsewhere))["step"] == 60

    # the trial ends: its out_dir goes up (with checkpoint/, slimmed) and the running mirrors go
    _fake_checkpoint(scratch / "checkpoint", 120)
    store.trial_ended("t1", str(scratch))
    assert sorted(os.listdir(bucket / "sw" / "trials" / "t1")) == ["checkpoint"]  # the half mirror too
    assert not scratch.exists()
    final = torch.load(bucket / "sw" / "trials" / "t1" / "checkpoint" / "state.pt", weights_only=True)
    assert final["step"] == 120 and "optimizer" not in final and final["weights_only"]


def _ended_scratch(d: Path) -> Path:
    """A trial's out_dir as it ends: checkpoint, metrics.jsonl, result.json."""
    _fake_checkpoint(d / "checkpoint", 8)
    (d / "metrics.jsonl").write_text('{"step": 8, "val/loss": 2.0}\n')
    (d / "result.json").write_text('{"status": "completed", "val/loss": 2.0}')
    return d


def test_an_ended_trial_uploads_result_json_last(tmp_path, monkeypatch):
    # The driver and a retried trial read result.json in the store as "finished and whole": an
    # upload cut short must never leave it there beside a missing checkpoint or metrics.jsonl.
    bucket = tmp_path / "bucket"
    store = ObjectStore(str(tmp_path / "head" / "sw"), f"file://{bucket}/sw")
    put = ObjectStore.put

    def dies_on_metrics(self, local, rel):
        if rel.endswith("metrics.jsonl"):
            raise OSError("worker killed mid-upload")
        put(self, local, rel)

    monkeypatch.setattr(ObjectStore, "put", dies_on_metrics)
    with pytest.raises(OSError):
        store.trial_ended("t1", str(_ended_scratch(tmp_path / "scratch")))
    assert not (bucket / "sw" / "trials" / "t1" / "result.json").exists()
    monkeypatch.setattr(ObjectStore, "put", put)
    store.trial_ended("t1", str(tmp_path / "scratch"))  # the retry finishes the upload
    assert sorted(os.listdir(bucket / "sw" / "trials" / "t1")) == ["checkpoint", "metrics.jsonl", "result.json"]


def test_a_retried_trial_replaying_its_result_finishes_an_upload_cut_short(tmp_path, monkeypatch, reported):
    # The retry lands on the node whose scratch still holds the whole trial: it replays result.json,
    # and must upload what the killed worker did not (before, the store never got the checkpoint).
    from types import SimpleNamespace

    from ray import tune

    from dnasweep.sweep import trainable

    bucket = tmp_path / "bucket"
    store = ObjectStore(str(tmp_path / "head" / "sw"), f"file://{bucket}/sw")
    monkeypatch.setattr(storage, "scratch_dir", lambda name, tid: str(tmp_path / "scratch" / tid))
    _ended_scratch(tmp_path / "scratch" / "t1")
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t1"))
    trainable.trial({}, SimpleNamespace(params=[]), store)
    assert reported == [({"val/loss": 2.0}, None)]  # the saved result, not a new training
    assert sorted(os.listdir(bucket / "sw" / "trials" / "t1")) == ["checkpoint", "metrics.jsonl", "result.json"]
    assert not (tmp_path / "scratch" / "t1").exists()


def test_a_failed_trial_replayed_after_a_driver_restart_reports_the_step_it_stopped_at(tmp_path, monkeypatch,
                                                                                        reported):
    """A trial that diverged at step 37 just before the driver died is replayed from its result.json:
    its FAIL report dropped the step, and the searcher booked the last step it had seen (what the
    step budget counts as spent)."""
    from types import SimpleNamespace

    from ray import tune

    from dnasweep.sweep import trainable

    store = ObjectStore(str(tmp_path / "head" / "sw"), f"file://{tmp_path / 'bucket'}/sw")
    monkeypatch.setattr(storage, "scratch_dir", lambda name, tid: str(tmp_path / "scratch" / tid))
    d = tmp_path / "scratch" / "t1"
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({"status": "diverged", "reason": "non-finite loss (nan) at step 37",
                                               "step": 37}))
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t1"))
    trainable.trial({}, SimpleNamespace(params=[]), store)
    ((metrics, _),) = reported
    assert metrics["failed"] == 1.0 and metrics["status"] == "diverged" and metrics["step"] == 37


def test_restoring_from_an_old_whole_checkpoint_still_works(tmp_path):
    """A sweep started before pointers gave Tune whole checkpoints: no pointer in them."""
    whole = _fake_checkpoint(tmp_path / "tune-copy", 30)
    assert read_pointer(whole) is None
    storage.write_pointer(str(tmp_path), "trials/x/checkpoint", 5)
    assert read_pointer(str(tmp_path)) == {"checkpoint": "trials/x/checkpoint", "step": 5}


def test_a_finished_trial_keeps_weights_and_train_refuses_to_continue_it(tmp_path, capsys):
    cfg = tmp_path / "trial.yaml"
    cfg.write_text(yaml.safe_dump(TRIAL))
    out = tmp_path / "out"
    assert main(["train", str(cfg), "--out", str(out), "--quiet"]) == 0
    ckpt = str(out / "checkpoint")
    full = checkpoint.load(ckpt)
    before = os.path.getsize(os.path.join(ckpt, "state.pt"))
    LocalStore(str(tmp_path)).trial_ended("t", str(out))  # what a sweep trial does when it ends
    slim = checkpoint.load(ckpt)
    assert "optimizer" not in slim and slim["weights_only"] and slim["step"] == full["step"]
    assert all(torch.equal(slim["model"][k], v) for k, v in full["model"].items())  # analyze reads these
    assert os.path.getsize(os.path.join(ckpt, "state.pt")) < 0.5 * before  # AdamW's moments were 2/3
    slim_checkpoint(ckpt)  # twice: a no-op
    assert checkpoint.load(ckpt)["step"] == full["step"]
    capsys.readouterr()
    assert main(["train", str(cfg), "--out", str(out), "--json"]) == 0  # the same run: complete, nothing trained
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["already_done"] is True
    assert main(["train", str(cfg), "--out", str(out), "--quiet", "train.max_steps=6"]) == 2  # extending it
    err = capsys.readouterr().err
    assert "weights of a finished sweep trial" in err and "--no-resume" in err and "Traceback" not in err
    from dnasweep.config import build_trial
    from dnasweep.errors import ConfigError
    from dnasweep.train.loop import run_trial

    with pytest.raises(ConfigError, match="optimizer state"):  # called directly, not only from the CLI
        run_trial(build_trial(TRIAL, [f"out_dir={out}", "train.max_steps=6"]))
    assert main(["train", str(cfg), "--out", str(out), "--quiet", "--no-resume"]) == 0  # starting over works


# --- end to end: a trial restarted on a node without its scratch directory ---

SPACE = {
    "base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2},
             "data": {"source": "pystdlib", "max_bytes": 2000000},
             "train": {"max_steps": 120, "batch_size": 4, "eval_every": 30, "eval_batches": 2, "log_every": 5}},
    "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
    "objectives": [{"metric": "val/loss", "mode": "min"}, {"metric": "compute/flops_per_token", "mode": "min"}],
    "budget": {"trials": 2, "concurrent": 2, "retries": 2},
    "analyze": {"front": False},
}


def _kill_and_wipe_scratch(name: str, bucket, killed: dict) -> None:
    """Once a running trial has a checkpoint mirrored to the store, SIGKILL its worker and delete
    its scratch directory: its restart is as if on another node."""
    deadline = time.time() + 300
    while time.time() < deadline and not killed:
        trials = bucket / name / "trials"
        for tid in os.listdir(trials) if trials.is_dir() else []:
            mirrors = [m for m in os.listdir(trials / tid) if m.startswith("checkpoint-")
                       and (trials / tid / m / "config.yaml").exists()]
            scratch = storage.scratch_dir(name, tid)
            try:
                with open(os.path.join(scratch, "attempts.log")) as f:
                    pid = int(f.readline().split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if mirrors and not (trials / tid / "result.json").exists():
                os.kill(pid, signal.SIGKILL)
                shutil.rmtree(scratch, ignore_errors=True)
                killed.update(trial=tid, mirror=int(mirrors[0].split("-")[1]))
                return
        time.sleep(0.1)


@pytest.mark.faults
def test_a_trial_restarted_without_its_scratch_continues_from_the_store(ray_cluster, tmp_path):
    from dnasweep.space import parse_space
    from dnasweep.sweep.runner import run_sweep

    name = f"nocopy-{uuid.uuid4().hex[:8]}"  # scratch is per machine: a name no other test uses
    bucket = tmp_path / "bucket"
    killed: dict = {}
    killer = threading.Thread(target=_kill_and_wipe_scratch, args=(name, bucket, killed), daemon=True)
    killer.start()
    lines = []
    res = run_sweep(parse_space(SPACE, "nocopy.yaml"), name, root=str(tmp_path / "head"),
                    storage=f"file://{bucket}", log=lines.append)
    killer.join(timeout=5)
    assert killed, "no trial was killed after a mirrored checkpoint"
    assert res.n_complete == 2 and res.n_failed == 0, lines[-20:]
    d = bucket / name / "trials" / killed["trial"]
    attempts = (d / "attempts.log").read_text().splitlines()  # the first attempt's went with its scratch
    assert int(attempts[-1].split()[3]) >= killed["mirror"] >= 30, (attempts, killed)  # not from step 0
    assert json.loads((d / "result.json").read_text())["step"] == 120
    for tid in os.listdir(bucket / name / "trials"):  # at the end: one checkpoint per trial, weights only
        assert [m for m in os.listdir(bucket / name / "trials" / tid) if m.startswith("checkpoint")] == ["checkpoint"]
    in_tune = [os.path.join(r, f) for r, _, fs in os.walk(bucket / name / "tune") for f in fs if f == "state.pt"]
    assert not in_tune  # Tune holds pointers, not copies
    # ... and deletes none of them: a saved state may name any (with num_to_keep, a driver killed after
    # a deletion and before its next state snapshot left a state naming a deleted checkpoint, and Tune
    # failed the restored trial: "Could not recover from checkpoint as it does not exist")
    for d in (bucket / name / "tune").iterdir():
        kept = sorted(int(c.name.split("_")[1]) for c in d.iterdir() if c.name.startswith("checkpoint_")) \
            if d.is_dir() else []
        assert kept == list(range(len(kept))) and (not d.name.startswith("trial_") or len(kept) >= 2), (d, kept)
    pointers = [os.path.join(r, f) for r, _, fs in os.walk(bucket / name / "tune") for f in fs if f == POINTER]
    assert pointers


def test_a_file_put_to_a_filesystem_store_replaces_it_whole(tmp_path, monkeypatch):
    # The journal is mirrored at every ask: a copy written in place left it empty for a moment, and a
    # head lost then (or a reader then) found no study in it
    import pyarrow.fs as pafs

    store = ObjectStore(str(tmp_path / "head" / "sw"), f"file://{tmp_path / 'bucket'}/sw")
    src = tmp_path / "optuna.log"
    src.write_text("old\n")
    store.put(str(src), "optuna.log")
    dest = tmp_path / "bucket" / "sw" / "optuna.log"
    seen = []
    copy = pafs.copy_files

    def watching(source, destination, **kw):  # what a reader of the store's journal finds mid-copy
        copy(source, destination, **kw)
        seen.append(dest.read_text())

    monkeypatch.setattr(pafs, "copy_files", watching)
    src.write_text("old\nnew\n")
    store.put(str(src), "optuna.log")
    assert seen == ["old\n"] and dest.read_text() == "old\nnew\n"
    assert os.listdir(dest.parent) == ["optuna.log"]  # no temporary file left


def test_a_trial_restarted_from_the_store_on_another_node_keeps_its_history(tmp_path):
    """A trial restarted from its store mirror on a node without its scratch (head or worker node
    lost) continued from the checkpoint but started metrics.jsonl and attempts.log afresh: its
    MLflow histories and metrics.jsonl lost every row before the checkpoint."""
    from dnasweep.config import build_trial
    from dnasweep.train.loop import run_trial

    store = ObjectStore(str(tmp_path / "head" / "sw"), f"file://{tmp_path / 'bucket'}/sw")
    out = tmp_path / "scratch" / "t1"

    class Mirror:  # the part of TuneReporter that reaches the store
        def report(self, metrics, checkpoint_dir=None):
            if checkpoint_dir:
                store.checkpointed("t1", checkpoint_dir, int(metrics["step"]))

        def close(self):
            pass

    out.mkdir(parents=True)
    (out / "attempts.log").write_text("pid 1 start_step 0\n")  # the trainable writes it before training
    run_trial(build_trial(TRIAL, [f"out_dir={out}"]), Mirror())
    shutil.rmtree(out)  # the node is gone; the store's mirror of step 4 is all that is left
    store.restore_checkpoint("t1", None, str(out / "checkpoint"))
    assert (out / "attempts.log").read_text() == "pid 1 start_step 0\n"
    assert not (out / "checkpoint" / "history").exists()
    run_trial(build_trial(TRIAL, [f"out_dir={out}", "train.max_steps=8"]), Mirror())  # more steps: it goes on
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["step"] for r in rows if "val/loss" in r]
    assert evals == [2, 4, 6, 8], evals
