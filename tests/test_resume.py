"""Resuming: bad input around sweeps (Ray-free: refused before a cluster starts), and `dnasweep train`
into an out_dir that holds a checkpoint (continued only when it is the same run)."""

import json

import pytest
import torch
import yaml

from dnasweep.cli import main
from dnasweep.train import loop

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


# --- `dnasweep train` into an out_dir that holds a checkpoint: continue only the same run ---
TRIAL = {"model": {"kind": "dna", "task": "lm", "d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2,
                   "pool": {"n_transformer": 1, "n_attention": 1, "n_mlp": 1, "n_identity": 1}},
         "data": {"source": "pystdlib", "max_bytes": 200000},
         "train": {"batch_size": 2, "eval_every": 3, "eval_batches": 2, "warmup_steps": 1, "log_every": 1,
                   "device": "cpu"}}


@pytest.fixture
def trial(tmp_path):
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(TRIAL))
    return str(path)


def _train(trial, out, *args):
    return main(["train", trial, *args, "--out", str(out), "--quiet"])


def _snapshot(out):
    """Everything a refused or already-complete run must leave exactly as it was."""
    state = out / "checkpoint" / "state.pt"
    return (torch.load(state, weights_only=True)["step"], state.stat().st_mtime_ns,
            *((out / n).read_text() for n in ("metrics.jsonl", "config.yaml", "result.json")))


def _rows(out):
    with open(out / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def _train_steps(out):
    return [r["step"] for r in _rows(out) if "train/loss" in r]


def _interrupt_at_eval(monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "evaluate", boom)  # before the checkpoint of that evaluation


def test_changed_lr_is_refused_and_the_checkpoint_left_alone(tmp_path, trial, capsys):
    out = tmp_path / "run"
    assert _train(trial, out, "train.max_steps=6") == 0
    before = _snapshot(out)
    capsys.readouterr()
    # more steps too: only the lr is a problem (the budget may change)
    assert _train(trial, out, "train.max_steps=9", "train.lr=0.001") == 2
    err = capsys.readouterr().err
    assert "1 problem" in err and "train.lr" in err and "0.003" in err and "0.001" in err
    assert "--no-resume" in err and "train.max_steps" not in err and "Traceback" not in err
    assert _snapshot(out) == before


def test_other_data_is_refused(tmp_path, trial, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog, again and again.\n" * 2000)
    out = tmp_path / "run"
    assert _train(trial, out, "train.max_steps=6", "data.source=text", f"data.path={corpus}") == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert _train(trial, out, "train.max_steps=6") == 2  # the embedded corpus
    err = capsys.readouterr().err
    assert "data.source" in err and "'text'" in err and "'pystdlib'" in err
    assert "data.path" in err and str(corpus) in err
    assert _snapshot(out) == before


def test_the_same_config_over_edited_data_files_is_refused(tmp_path, trial, capsys):
    """The resume check compared the config only: with a file added under data.path between the
    interrupt and the resume, the run went on over other data and said nothing."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a.txt", "b.txt"):
        (corpus / name).write_text(f"{name}: the quick brown fox jumps over the lazy dog.\n" * 1500)
    out = tmp_path / "run"
    data = ["data.source=text", f"data.path={corpus}"]
    assert _train(trial, out, "train.max_steps=6", *data) == 0
    before = _snapshot(out)
    (corpus / "c.txt").write_text("more text, added between the two runs.\n" * 1500)
    capsys.readouterr()
    assert _train(trial, out, "train.max_steps=9", *data) == 2
    err = capsys.readouterr().err
    assert "data files changed" in err and "2 then, 3 now" in err and "--no-resume" in err
    assert _snapshot(out) == before
    (corpus / "c.txt").unlink()  # put back as it was: the run goes on
    assert _train(trial, out, "train.max_steps=9", *data) == 0


def test_identical_rerun_says_already_complete_and_trains_nothing(tmp_path, trial, capsys):
    out = tmp_path / "run"
    assert _train(trial, out, "train.max_steps=6") == 0
    assert json.loads((out / "result.json").read_text())["already_done"] is False
    before = _snapshot(out)
    capsys.readouterr()
    assert _train(trial, out, "train.max_steps=6", "--json") == 0
    cap = capsys.readouterr()
    assert "already complete" in cap.err and "step 6" in cap.err and "nothing trained" in cap.err
    res = json.loads(cap.out.strip().splitlines()[-1])
    assert res["already_done"] is True and res["step"] == 6 and "already complete" in res["reason"]
    assert _snapshot(out) == before  # no metrics row added, the earlier result.json kept
    # a smaller budget than the checkpoint's step: still nothing trained, and said so
    assert _train(trial, out, "train.max_steps=3", "--json") == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out.strip().splitlines()[-1])
    assert res["already_done"] is True and res["step"] == 6 and "already complete" in cap.err
    assert _snapshot(out) == before  # config.yaml still says the 6 steps it was trained with


def test_more_max_steps_extends_the_run(tmp_path, trial, capsys):
    out = tmp_path / "run"
    assert _train(trial, out, "train.max_steps=6") == 0
    first = _rows(out)
    capsys.readouterr()
    assert _train(trial, out, "train.max_steps=9", "--json") == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["step"] == 9 and res["already_done"] is False
    assert "continued from step 6" in res["reason"]
    saved = json.loads((out / "result.json").read_text())
    assert saved["step"] == 9 and saved["reason"] == res["reason"]
    rows = _rows(out)
    assert rows[:len(first)] == first  # the first 6 steps are the old run's: resumed, not retrained
    assert _train_steps(out) == list(range(1, 10))  # no duplicated steps
    assert [r["step"] for r in rows if "val/loss" in r] == [3, 6, 9]
    assert torch.load(out / "checkpoint" / "state.pt", weights_only=True)["step"] == 9
    # the cosine was planned for 6 steps, then re-planned to 9: said, not filed as one 9-step schedule
    assert "LR schedule re-planned" in res["reason"] and saved["reason"] == res["reason"]
    lrs = {r["step"]: r["train/lr"] for r in rows if "train/lr" in r}
    assert lrs[7] > lrs[6]  # the LR rose again at the extension: why it is said


def test_a_run_trained_to_its_budget_in_one_go_says_no_replan(tmp_path, trial, monkeypatch):
    out = tmp_path / "run"
    real = loop.evaluate

    def second_eval_interrupts(*a, **k):  # after the checkpoint at step 3, before the one at step 6
        second_eval_interrupts.n += 1
        if second_eval_interrupts.n == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    second_eval_interrupts.n = 0
    with monkeypatch.context() as m:
        m.setattr(loop, "evaluate", second_eval_interrupts)
        assert _train(trial, out, "train.max_steps=9") == 130
    assert _train(trial, out, "train.max_steps=9") == 0
    reason = json.loads((out / "result.json").read_text())["reason"]
    assert "continued from" in reason and "re-planned" not in reason


def test_no_resume_starts_over_even_when_interrupted(tmp_path, trial, monkeypatch):
    out = tmp_path / "run"
    assert _train(trial, out, "train.max_steps=6") == 0
    # interrupted at its first evaluation, before it wrote any checkpoint: nothing of the old run may
    # remain for a later command to resume or report as its own
    with monkeypatch.context() as m:
        _interrupt_at_eval(m)
        assert _train(trial, out, "train.max_steps=6", "train.lr=0.001", "--no-resume") == 130
    assert not (out / "checkpoint").exists() and not (out / "result.json").exists()
    assert _train_steps(out) == [1, 2, 3]  # only the new run's rows
    assert _train(trial, out, "train.max_steps=6", "train.lr=0.001", "--no-resume") == 0
    assert _train_steps(out) == list(range(1, 7))
    res = json.loads((out / "result.json").read_text())
    assert res["step"] == 6 and res["already_done"] is False and "continued" not in res["reason"]
    assert yaml.safe_load((out / "checkpoint" / "config.yaml").read_text())["train"]["lr"] == 0.001


def test_an_old_result_does_not_outlive_a_crashed_extension(tmp_path, trial, monkeypatch, capsys):
    out = tmp_path / "run"
    assert _train(trial, out, "train.max_steps=6") == 0
    with monkeypatch.context() as m:
        _interrupt_at_eval(m)  # at step 9, before its checkpoint and result
        assert _train(trial, out, "train.max_steps=9") == 130
    assert not (out / "result.json").exists()  # the 6-step result is not this 9-step run's
    assert _train_steps(out) == list(range(1, 10))
    assert _train(trial, out, "train.max_steps=9") == 0  # resumes from step 6 again
    assert json.loads((out / "result.json").read_text())["step"] == 9
    assert _train_steps(out) == list(range(1, 10))


def test_a_run_stopped_by_its_time_limit_is_complete(tmp_path, trial, capsys):
    out = tmp_path / "run"
    assert _train(trial, out, "train.max_steps=1000", "train.time_limit_s=0.001") == 0
    step = json.loads((out / "result.json").read_text())["step"]
    assert step < 1000
    before = _snapshot(out)
    capsys.readouterr()
    assert _train(trial, out, "train.max_steps=1000", "train.time_limit_s=0.001", "--json") == 0
    cap = capsys.readouterr()
    assert "already complete" in cap.err and json.loads(cap.out.strip().splitlines()[-1])["step"] == step
    assert _snapshot(out) == before  # not one more step per rerun


@pytest.mark.parametrize("killed_after", ["first rename", "tmp written"])
def test_a_save_killed_between_its_renames_still_resumes(tmp_path, trial, killed_after, capsys):
    """`checkpoint.save` moves DIR to DIR.old, then DIR.tmp to DIR: a process killed in between left no
    DIR, and the run started over from step 0 although complete checkpoints were on disk."""
    import os

    out = tmp_path / "run"
    assert _train(trial, out, "train.max_steps=6") == 0
    ckpt = out / "checkpoint"
    os.remove(out / "result.json")  # as if killed before the end
    if killed_after == "first rename":  # DIR -> DIR.old done, DIR.tmp -> DIR not
        os.rename(ckpt, str(ckpt) + ".old")
    else:  # the new checkpoint complete in DIR.tmp, the old one in DIR.old
        os.rename(ckpt, str(ckpt) + ".tmp")
    capsys.readouterr()
    assert _train(trial, out, "train.max_steps=9", "--json") == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "continued from step 6" in res["reason"], res
    assert _train_steps(out) == list(range(1, 10))


@pytest.mark.parametrize("name", ["exp #2", "off", "1e3"])
def test_out_is_the_directory_given_not_a_yaml_value(tmp_path, trial, name, monkeypatch):
    """--out went through YAML as `out_dir=VALUE`: 'exp #2' became 'exp' (a comment), 'off' and '1e3'
    a bool and a float (refused). Into 'exp' a run could silently resume another's checkpoint."""
    seen = []
    monkeypatch.setattr(loop, "run_trial", lambda cfg, *a, **k: seen.append(cfg) or loop.TrialResult(
        "completed", "stub", 0, out_dir=cfg.out_dir))
    monkeypatch.chdir(tmp_path)
    assert main(["train", trial, "--out", name, "--quiet"]) == 0
    assert seen[0].out_dir == name


def test_an_evaluation_saved_but_never_reported_is_reported_on_resume(tmp_path, trial):
    """A sweep trial's worker killed between the checkpoint of an evaluation and its report: the run
    resumed from that checkpoint, past the evaluation, so the sweep never got it (a missing point in
    its history; MO-ASHA judged that rung by a later report). The resumed run reports it first, with
    the values it had; metrics.jsonl keeps one copy."""
    from dnasweep.config import load_trial

    cfg = load_trial(trial, [f"out_dir={tmp_path / 'out'}", "train.max_steps=6"])

    class Killed(Exception):
        pass

    class Dies:  # the worker dies as the evaluation at step 3 goes to Tune (its checkpoint is saved)
        def report(self, metrics, checkpoint_dir=None):
            if "val/loss" in metrics:
                self.eval = dict(metrics)
                raise Killed

        def close(self):
            pass

    dies = Dies()
    with pytest.raises(Killed):
        loop.run_trial(cfg, dies)
    assert torch.load(tmp_path / "out" / "checkpoint" / "state.pt", weights_only=True)["step"] == 3

    class Records:  # as a sweep's reporter (TuneReporter): it takes the evaluation again
        resend_evaluation = True

        def __init__(self):
            self.rows = []

        def report(self, metrics, checkpoint_dir=None):
            self.rows.append(dict(metrics))

        def close(self):
            pass

    rec = Records()
    res = loop.run_trial(cfg, rec)
    assert res.status == "completed" and res.step == 6
    evals = [r for r in rec.rows if "val/loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert rec.rows[0] == dies.eval  # first, as it was measured
    assert [r["step"] for r in _rows(tmp_path / "out") if "val/loss" in r] == [3, 6]
