"""The MLflow tracker without Ray running (fake Tune trials, a real SQLite MLflow store): a driver
killed with metrics still in its buffer loses none of them once the sweep is resumed."""

import json
from types import SimpleNamespace

import pytest

pytest.importorskip("mlflow", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from dnasweep import metrics as M  # noqa: E402
from dnasweep.space import parse_space  # noqa: E402

SPACE = {"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 32, "n_steps": 2}, "train": {"max_steps": 50}},
         "search": {"train.lr": {"float": [1e-3, 1e-2], "log": True}},
         "objectives": [{"metric": "val/loss", "mode": "min"}]}


def _trial(tid, last=None):
    return SimpleNamespace(trial_id=tid, config={"train.lr": 3e-3}, last_result=last or {}, local_path=None)


def _report(tracker, trial, step):
    tracker.on_trial_result(0, [], trial, {"step": step, "train/loss": 10.0 - step / 10, "timestamp": 1})


def _one_trial_sweep(tmp_path, monkeypatch):
    """(space, sweep dir, store uri, a tracker, trial t1) of a new sweep whose tracker writes only when flushed."""
    from dnasweep.sweep import tracking

    monkeypatch.setattr(tracking, "FLUSH_EVERY_S", 1e9)  # only explicit flushes write
    space = parse_space(SPACE, "s.yaml")
    sweep = tmp_path / "s"
    (sweep / "trials" / "t1").mkdir(parents=True)
    uri = tracking.default_uri(str(sweep))
    return space, sweep, uri, tracking.MLflowSweepLogger(space, "s", str(sweep), uri), _trial("t1")


def test_steps_buffered_by_a_killed_driver_come_back_from_metrics_jsonl(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space, sweep, uri, first, t = _one_trial_sweep(tmp_path, monkeypatch)
    for step in (5, 10, 15, 20):
        _report(first, t, step)
    first.flush()  # steps 5..20 reach the store
    for step in (25, 30, 35, 40):
        _report(first, t, step)  # buffered only: the driver is killed now (never flushed)
    # The trial itself wrote every step to its metrics.jsonl, and resumes after its step-40 checkpoint.
    with open(sweep / "trials" / "t1" / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps({"step": s, "train/loss": 10.0 - s / 10}) + "\n" for s in range(5, 45, 5))

    second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True)
    assert second.runs == first.runs and second.parent_id == first.parent_id  # no second run for t1
    for step in (45, 50):
        _report(second, t, step)
        with open(sweep / "trials" / "t1" / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "train/loss": 10.0 - step / 10}) + "\n")
    _report(second, t, 20)  # a re-reported step is not written twice
    second.on_trial_complete(0, [], _trial("t1", {"val/loss": 1.0}))

    client = MlflowClient(uri)
    rid = first.runs["t1"]
    steps = sorted(m.step for m in client.get_metric_history(rid, "train/loss"))
    assert steps == list(range(5, 55, 5))
    assert client.get_run(rid).info.status == "FINISHED"
    assert json.loads((sweep / "tracking.json").read_text())["uri"] is None  # default store: not pinned


@pytest.mark.slow  # two MLflow stores (~3 s)
def test_resume_against_a_store_without_the_runs_recreates_them(tmp_path):
    """A lost head took its MLflow server's database: the resumed sweep's new store gets a parent
    run and, from the trial directories, the runs of the trials that had already ended."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space = parse_space(SPACE, "s.yaml")
    sweep = tmp_path / "s"
    d = sweep / "trials" / "t1"
    d.mkdir(parents=True)
    old = tracking.MLflowSweepLogger(space, "s", str(sweep), f"sqlite:///{tmp_path / 'old.db'}")
    t = _trial("t1")
    for step in (5, 10):
        _report(old, t, step)
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "train/loss": 1.0 * s}) + "\n" for s in (5, 10)))
    (d / "result.json").write_text(json.dumps({"status": "completed", "step": 10, "val/loss": 2.0}))
    (d / "config.yaml").write_text("train:\n  lr: 0.003\nmodel:\n  d_model: 32\n")
    old.on_trial_complete(0, [], _trial("t1", {"val/loss": 2.0}))

    new_uri = f"sqlite:///{tmp_path / 'new.db'}"
    new = tracking.MLflowSweepLogger(space, "s", str(sweep), new_uri, resume=True)
    assert new.parent_id != old.parent_id and not new.errors
    client = MlflowClient(new_uri)
    run = client.get_run(new.runs["t1"])
    assert run.info.status == "FINISHED" and run.data.params["train.lr"] == "0.003"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [5, 10]


def _schema(db) -> tuple:
    import sqlite3

    with sqlite3.connect(db) as con:
        tables = sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        revision = con.execute("SELECT version_num FROM alembic_version").fetchall()
    con.close()
    return tables, revision


@pytest.mark.slow  # builds the MLflow schema (~3 s)
def test_a_new_sweep_store_is_a_copy_of_the_cached_empty_store(tmp_path, monkeypatch):
    """A sweep's own SQLite store starts as a copy of an empty store MLflow built once (its schema
    migrations cost ~1.6 s per sweep start): same schema as one MLflow builds itself, the Default
    experiment's artifacts in the sweep, the template built once, and a sweep that logs into it."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fresh = tmp_path / "fresh.db"
    MlflowClient(f"sqlite:///{fresh}").search_experiments()
    space = parse_space(SPACE, "s.yaml")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        t = tracking.MLflowSweepLogger(space, name, str(tmp_path / name), tracking.default_uri(str(tmp_path / name)))
        _report(t, _trial("t1"), 5)
        t.on_trial_complete(0, [], _trial("t1", {"val/loss": 1.0}))
        if name == "a":
            template = next((tmp_path / "cache" / "dnasweep").glob("mlflow-*.db"))
            built = template.stat().st_mtime_ns
        assert MlflowClient(t.uri).get_run(t.runs["t1"]).info.status == "FINISHED"
        assert _schema(tmp_path / name / "mlflow.db") == _schema(fresh)
        default = MlflowClient(t.uri).get_experiment("0")
        assert default.artifact_location == (tmp_path / name / "mlartifacts" / "0").resolve().as_uri()
    assert template.stat().st_mtime_ns == built  # the second sweep copied it, nothing rebuilt
    assert [p.name for p in (tmp_path / "cache" / "dnasweep").iterdir()] == [template.name]  # no temp left


def test_without_a_writable_cache_mlflow_builds_the_store_itself(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    (tmp_path / "cache").write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "s").mkdir()
    t = tracking.MLflowSweepLogger(parse_space(SPACE, "s.yaml"), "s", str(tmp_path / "s"),
                                   tracking.default_uri(str(tmp_path / "s")))
    assert MlflowClient(t.uri).get_run(t.parent_id).info.status == "RUNNING"
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["mlflow.db", "tracking.json"]


def test_a_new_sweep_opens_its_store_at_the_first_write_with_the_sweeps_start_time(tmp_path, monkeypatch):
    """The parent run is off the start of a sweep (it comes with the first write, while trials
    train), and still starts when the sweep did. MLflow's import and the store are warmed on a
    thread before that write: done by the write, they held Tune's event loop (~3 s), and every
    trial's report waits for that loop."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "s").mkdir()
    t = tracking.MLflowSweepLogger(parse_space(SPACE, "s.yaml"), "s", str(tmp_path / "s"),
                                   tracking.default_uri(str(tmp_path / "s")))
    tracking.warmed(t.uri)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["mlflow.db"]  # the store, warmed
    assert MlflowClient(t.uri).search_runs(["0"]) == []
    assert "client" not in vars(t)  # no run yet: the parent comes with the first write
    _report(t, _trial("t1"), 5)
    t.flush()
    parent = MlflowClient(t.uri).get_run(t.parent_id)
    assert parent.info.start_time == t.started_ms and parent.info.run_name == "s"
    assert MlflowClient(t.uri).get_run(t.runs["t1"]).data.tags["mlflow.parentRunId"] == t.parent_id


@pytest.mark.parametrize("finished", [None, {"t1": ("COMPLETE", {})}])
def test_a_backlog_written_on_resume_logs_each_step_once(tmp_path, monkeypatch, finished):
    """The store was down at the end: the buffered steps went to tracking_backlog.json. On resume they
    were queued again from metrics.jsonl too (the backlog's steps were not marked as queued, or, for a
    trial the study holds as finished, its run was closed and backfilled before the backlog was read),
    and MLflow kept both copies (their timestamps differ): every such step twice in the history."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space, sweep, uri, first, t = _one_trial_sweep(tmp_path, monkeypatch)
    for step in (5, 10):
        _report(first, t, step)
    first.flush()
    for step in (15, 20):
        _report(first, t, step)  # the store is down from here to the end of the sweep
    first.ended["t1"] = ("FINISHED", {})
    first._save_backlog()
    with open(sweep / "trials" / "t1" / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps({"step": s, "train/loss": 10.0 - s / 10}) + "\n" for s in range(5, 25, 5))
    (sweep / "trials" / "t1" / "result.json").write_text(json.dumps({"status": "completed", "step": 20,
                                                                     "val/loss": 1.0}))

    second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True, finished=finished)
    assert second.drain(wait_s=5)
    rid = first.runs["t1"]
    client = MlflowClient(uri)
    history = client.get_metric_history(rid, "train/loss")
    # each step once, stamped when it was reported (_report: timestamp 1 s), not when the resume wrote it
    assert sorted((m.step, m.timestamp) for m in history) == [(s, 1000) for s in (5, 10, 15, 20)]
    assert client.get_run(rid).info.status == "FINISHED"


def test_closing_the_parent_again_does_not_repeat_the_sweep_history(tmp_path):
    """A finished sweep resumed to write its backlog closes its parent run a second time: the
    hypervolume and front-size histories were logged again, every point twice."""
    from mlflow import MlflowClient

    from dnasweep import metrics as M
    from dnasweep.sweep import tracking
    from dnasweep.sweep.summary import close_parent

    space = parse_space(SPACE, "s.yaml")
    sweep = tmp_path / "s"
    sweep.mkdir()
    uri = tracking.default_uri(str(sweep))
    rows = [{"number": i, "values": [v], "feasible": True, "front": i == 1, "params": {"train.lr": 1e-3},
             "ray_trial_id": f"t{i}"} for i, v in enumerate([2.0, 1.0, 1.5])]
    t = tracking.MLflowSweepLogger(space, "s", str(sweep), uri)
    close_parent(t, [rows[1]], rows)
    close_parent(tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True), [rows[1]], rows)
    history = MlflowClient(uri).get_metric_history(t.parent_id, M.SWEEP_FRONT_SIZE)
    assert sorted(m.step for m in history) == [1, 2, 3]


def test_the_sweep_files_are_written_when_the_store_is_down_at_the_end(tmp_path, monkeypatch):
    """close_parent waited on the store, then raised at its first MLflow call: pareto.png,
    pareto.html and hypervolume.png were never written, while the log pointed to pareto.html."""
    from dnasweep.sweep import tracking
    from dnasweep.sweep.summary import close_parent

    space = parse_space({**SPACE, "objectives": [{"metric": "val/loss"}, {"metric": "compute/flops_per_token"}]},
                        "s.yaml")
    sweep = tmp_path / "s"
    sweep.mkdir()
    t = tracking.MLflowSweepLogger(space, "s", str(sweep), tracking.default_uri(str(sweep)))
    rows = [{"number": i, "values": v, "feasible": True, "front": True, "params": {"train.lr": 1e-3},
             "ray_trial_id": f"t{i}"} for i, v in enumerate([[2.0, 1e5], [1.0, 2e5]])]
    t.runs["t0"] = "a-run"
    monkeypatch.setattr(t, "drain", lambda wait_s: False)  # the store never answered

    def down(*a, **k):
        raise ConnectionError("the store is down")

    monkeypatch.setattr(t.client, "set_tag", down)
    with pytest.raises(ConnectionError):
        close_parent(t, rows, rows)
    written = {p.name for p in sweep.iterdir()}
    assert {"pareto_front.csv", "trials.csv", "pareto.png", "pareto.html", "hypervolume.png"} <= written, written


@pytest.mark.slow  # two MLflow stores (~3 s)
def test_a_sweep_moved_to_a_new_store_recreates_its_pruned_and_failed_trials_too(tmp_path):
    """Resumed against a store without its runs (a new server after a lost head), the sweep rebuilt
    only trials with a result.json: pruned, invalid and errored trials write none, and silently got
    no run in the new store."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space = parse_space(SPACE, "s.yaml")
    sweep = tmp_path / "s"
    for tid in ("t1", "t2", "t3"):
        (sweep / "trials" / tid).mkdir(parents=True)
        (sweep / "trials" / tid / "metrics.jsonl").write_text(json.dumps({"step": 5, "train/loss": 3.0}) + "\n")
    first = tracking.MLflowSweepLogger(space, "s", str(sweep), f"sqlite:///{tmp_path / 'old.db'}")
    for tid in ("t1", "t2", "t3"):
        _report(first, _trial(tid), 5)
    first.flush()
    new_uri = f"sqlite:///{tmp_path / 'new.db'}"
    finished = {"t1": ("PRUNED", {"pruned_at": 20}), "t2": ("FAIL", {"fail_reason": "x: broken rule",
                                                                    "fail_status": "invalid"})}
    second = tracking.MLflowSweepLogger(space, "s", str(sweep), new_uri, resume=True, finished=finished)
    assert second.drain(wait_s=5)
    client = MlflowClient(new_uri)
    runs = {r.data.tags.get("dnasweep.trial"): r for r in client.search_runs([second.exp_id])}
    assert runs["t1"].info.status == "FINISHED" and runs["t1"].data.tags["dnasweep.status"] == "pruned"
    assert runs["t1"].data.tags["dnasweep.stopped_at_step"] == "20"
    assert runs["t2"].info.status == "FAILED" and runs["t2"].data.tags["dnasweep.status"] == "invalid"
    assert "t3" not in runs  # still running: its run comes when it reports again


def test_a_resume_closes_runs_the_study_finished_while_the_store_was_down(tmp_path):
    """The store was down when a trial ended, then the driver was killed: Tune had saved the trial
    as TERMINATED and reports it no more, so its run stayed RUNNING for good."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space = parse_space(SPACE, "s.yaml")
    sweep = tmp_path / "s"
    uri = tracking.default_uri(str(sweep))
    for tid in ("t1", "t2"):
        (sweep / "trials" / tid).mkdir(parents=True)
    first = tracking.MLflowSweepLogger(space, "s", str(sweep), uri)
    for tid in ("t1", "t2"):
        _report(first, _trial(tid), 5)
    first.flush()  # both runs exist, RUNNING; t1 then ends unseen by the store, and the driver dies
    (sweep / "trials" / "t1" / "result.json").write_text(json.dumps({"status": "completed", "step": 50,
                                                                     "val/loss": 1.0}))
    second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True,
                                        finished={"t1": ("COMPLETE", {})})
    assert second.drain(wait_s=5)
    client = MlflowClient(uri)
    assert client.get_run(first.runs["t1"]).info.status == "FINISHED"
    assert client.get_run(first.runs["t2"]).info.status == "RUNNING"  # still training: Tune reports it


@pytest.mark.parametrize("objectives", [{}, {"val/loss": float("nan")}])
def test_a_trial_without_finite_objectives_has_a_failed_run(tmp_path, monkeypatch, objectives):
    """The searcher tells Optuna FAIL (and the progress line counts a failure) when an objective is
    missing or not finite: its run was FINISHED, whether Tune completed it or a resume closed it."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space, sweep, uri, first, t = _one_trial_sweep(tmp_path, monkeypatch)
    (sweep / "trials" / "t2").mkdir()
    for tid in ("t1", "t2"):
        _report(first, _trial(tid), 5)
    first.flush()
    first.on_trial_complete(0, [], _trial("t1", {"step": 50, **objectives}))
    # t2 ended unseen by the store (the driver was killed): the resume closes it from its result.json
    (sweep / "trials" / "t2" / "result.json").write_text(json.dumps({"status": "completed", "step": 50,
                                                                     **objectives}))
    second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True, finished={"t2": ("FAIL", {})})
    assert second.drain(wait_s=5)
    for tid in ("t1", "t2"):
        run = MlflowClient(uri).get_run(first.runs[tid])
        assert run.info.status == "FAILED", tid
        assert run.data.tags["dnasweep.fail_reason"] == "no finite objectives reported"


def test_runs_closed_from_a_backlog_keep_the_trials_own_times(tmp_path, monkeypatch):
    """The backlog kept results and end states but not the trials' times: a resume closed t1's run
    at the resume's time, and created t2's run (the store was down from its first report) starting then."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space, sweep, uri, first, t = _one_trial_sweep(tmp_path, monkeypatch)
    _report(first, t, 5)
    first.flush()

    def down(tid):
        raise ConnectionError("the store is down")

    monkeypatch.setattr(first, "_flush_trial", down)
    first.on_trial_result(0, [], _trial("t2"), {"step": 5, "train/loss": 1.0, "timestamp": 100, "time_total_s": 40})
    for tid in ("t1", "t2"):
        first.on_trial_complete(0, [], _trial(tid, {"val/loss": 1.0}))
    first._save_backlog()

    second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True)
    assert second.drain(wait_s=5)
    client = MlflowClient(uri)
    for tid in ("t1", "t2"):
        assert client.get_run(second.runs[tid]).info.end_time == first.times[tid][1], tid
    assert client.get_run(second.runs["t2"]).info.start_time == (100 - 40) * 1000  # its first report's start


def test_a_run_closed_or_rebuilt_on_resume_ends_when_its_trial_did(tmp_path):
    """A run closed from the study (stale) or recreated in a new store got the resume's time as its end
    (and, recreated, as its start): the trial's result.json and attempts.log say when it ran."""
    import os

    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space = parse_space(SPACE, "s.yaml")
    sweep = tmp_path / "s"
    d = sweep / "trials" / "t1"
    d.mkdir(parents=True)
    first = tracking.MLflowSweepLogger(space, "s", str(sweep), tracking.default_uri(str(sweep)))
    _report(first, _trial("t1"), 5)
    first.flush()  # t1's run exists, RUNNING; t1 then ends unseen by the store, and the driver dies
    (d / "attempts.log").write_text("pid 1 start_step 0 time 1000.0 node n\npid 2 start_step 5 time 1500.0 node n\n")
    (d / "result.json").write_text(json.dumps({"status": "completed", "step": 50, "val/loss": 1.0}))
    os.utime(d / "result.json", (2000, 2000))  # the trial ended at 2000 s
    for uri in (first.uri, f"sqlite:///{tmp_path / 'new.db'}"):  # stale close, then rebuild in a new store
        second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True, finished={"t1": ("COMPLETE", {})})
        assert second.drain(wait_s=5)
        run = MlflowClient(uri).get_run(second.runs["t1"])
        assert run.info.status == "FINISHED" and run.info.end_time == 2000 * 1000, uri
    assert run.info.start_time == 1000 * 1000  # recreated: its first attempt's start


def test_a_trial_pulled_from_object_storage_ends_when_it_did_not_when_it_was_copied(tmp_path):
    """The end came from result.json's mtime, which a copy from object storage sets to the time of
    the copy: a resume on a new head dated every ended trial's run at the resume."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking
    from dnasweep.train.loop import TrialResult

    res = TrialResult("completed", "", 50, {"val/loss": 1.0}, finished_at=2000.0).to_json()
    assert TrialResult("completed", "", 1).to_json()["finished_at"] > 1.7e9  # stamped when made
    space = parse_space(SPACE, "s.yaml")
    sweep = tmp_path / "s"
    d = sweep / "trials" / "t1"
    d.mkdir(parents=True)
    first = tracking.MLflowSweepLogger(space, "s", str(sweep), tracking.default_uri(str(sweep)))
    _report(first, _trial("t1"), 5)
    first.flush()  # t1's run exists, RUNNING; the driver dies, the trial ends
    (d / "result.json").write_text(json.dumps(res))  # mtime: now, as a pulled copy's
    for uri in (first.uri, f"sqlite:///{tmp_path / 'new.db'}"):  # stale close, then rebuild in a new store
        second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True, finished={"t1": ("COMPLETE", {})})
        assert second.drain(wait_s=5)
        assert MlflowClient(uri).get_run(second.runs["t1"]).info.end_time == 2000 * 1000, uri


def test_a_drained_backlog_is_not_loaded_again_from_object_storage(tmp_path, monkeypatch):
    """`drain` removed the written backlog locally, but the object store kept its copy (a mirror only
    uploads): a later resume from the store's URI loaded it and closed its runs again."""
    from dnasweep.sweep import tracking
    from dnasweep.sweep.storage import ObjectStore

    space, sweep, uri, first, t = _one_trial_sweep(tmp_path, monkeypatch)
    _report(first, t, 5)
    first.ended["t1"] = ("FINISHED", {})
    first._save_backlog()  # the store was down at the end
    remote = (tmp_path / "bucket").as_uri()
    ObjectStore(str(sweep), remote).mirror()
    second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True)
    assert second.drain(wait_s=5)
    ObjectStore(str(sweep), remote).mirror()

    head = tmp_path / "new-head" / "s"  # a resume on another head pulls the sweep from the store
    ObjectStore(str(head), remote).pull_sweep()
    pulled = head / tracking.BACKLOG_FILE
    assert not (pulled.exists() and json.loads(pulled.read_text()))  # nothing a resume there would write again


def test_a_reference_run_left_running_by_a_killed_driver_is_finished_on_resume(tmp_path):
    """The driver created a dense rung's run and was killed before it wrote the rung's metrics and
    status: the resumed sweep skipped every rung already in tracking.json, so it stayed RUNNING."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space = parse_space(SPACE, "s.yaml")
    sweep = tmp_path / "s"
    (sweep / "trials").mkdir(parents=True)
    uri = tracking.default_uri(str(sweep))
    rung = {"hash": "abc", "reused": False, "d_model": 32, "dense_layers": 1, "config": {"model.d_model": 32},
            "planned_steps": 10, "rows": [{"step": 5, "train/loss": 3.0}],
            "result": {"status": "completed", "step": 10, "val/loss": 2.5}}
    first = tracking.MLflowSweepLogger(space, "s", str(sweep), uri)
    first.rungs["ref-abc"] = rung
    first._ensure_run("ref-abc")  # created; the driver dies before the flush that ends it
    second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True)
    second.reference([rung])
    assert second.drain(wait_s=5)
    run = MlflowClient(uri).get_run(first.runs["ref-abc"])
    assert run.info.status == "FINISHED" and run.data.metrics["val/loss"] == 2.5
    assert len(MlflowClient(uri).search_runs([second.exp_id], "tags.`dnasweep.role` = 'reference'")) == 1


def test_a_rung_run_that_tracking_json_lost_is_taken_back_on_resume(tmp_path):
    """tracking.json (copied to object storage when a trial ends) can lack the runs created since: a
    resume takes trials' runs back by their dnasweep.trial tag, and a rung's, untagged, got a second run."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space = parse_space(SPACE, "s.yaml")
    sweep = tmp_path / "s"
    (sweep / "trials").mkdir(parents=True)
    uri = tracking.default_uri(str(sweep))
    first = tracking.MLflowSweepLogger(space, "s", str(sweep), uri)
    rung = {"hash": "abc", "reused": False, "d_model": 32, "dense_layers": 1, "config": {}, "planned_steps": 10,
            "rows": [{"step": 10, "val/loss": 2.5}], "result": {"status": "completed", "step": 10, "val/loss": 2.5}}
    first.reference([rung])
    assert first.drain(wait_s=5)
    state = json.loads((sweep / "tracking.json").read_text())
    (sweep / "tracking.json").write_text(json.dumps({**state, "runs": {}}))  # the copy a new head pulls
    second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True)
    second.reference([rung])
    assert second.drain(wait_s=5)
    assert len(MlflowClient(uri).search_runs([first.exp_id], "tags.`dnasweep.role` = 'reference'")) == 1


def test_a_diverged_rung_logs_evaluations_at_their_steps_and_a_time_limited_one_fails_its_run(tmp_path):
    """A diverged rung's last evaluation (step 20) was logged again at step 27, where it stopped and
    was never evaluated; a rung train.time_limit_s stopped short (off the frontier, `time-limited` in
    the table) had a FINISHED run with no status, where a trial stopped so has a FAILED one."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space = parse_space(SPACE, "s.yaml")
    sweep = tmp_path / "s"
    (sweep / "trials").mkdir(parents=True)
    uri = tracking.default_uri(str(sweep))
    rows = [{"step": s, "val/loss": v} for s, v in ((10, 2.9), (20, 2.6))]
    diverged = {"hash": "div", "reused": False, "d_model": 32, "dense_layers": 1, "planned_steps": 50, "rows": rows,
                "config": {}, "result": {"status": "diverged", "reason": "non-finite loss (nan) at step 27",
                                         "step": 27, "val/loss": 2.6}}
    short = {**diverged, "hash": "short", "dense_layers": 2,
             "result": {"status": "completed", "reason": "time limit 9s reached at step 20", "step": 20,
                        "val/loss": 2.6}}
    t = tracking.MLflowSweepLogger(space, "s", str(sweep), uri)
    t.reference([diverged, short])
    assert t.drain(wait_s=5)
    c = MlflowClient(uri)
    assert sorted(m.step for m in c.get_metric_history(t.runs["ref-div"], "val/loss")) == [10, 20]
    run = c.get_run(t.runs["ref-short"])
    assert run.info.status == "FAILED" and run.data.tags["dnasweep.status"] == "time_limit"
    assert "time limit" in run.data.tags["dnasweep.fail_reason"]
    assert c.get_run(t.runs["ref-div"]).data.tags["dnasweep.status"] == "diverged"


def test_a_retried_trials_timings_are_the_new_attempts_and_other_steps_are_written_once(tmp_path, monkeypatch):
    """A worker died after step 20 (checkpoint at 10): the retry re-ran 11..20 and re-reported them.
    metrics.jsonl holds the new attempt's tokens/s (700) and MLflow kept only the dead attempt's (1100)."""
    from mlflow import MlflowClient

    space, sweep, uri, t, trial = _one_trial_sweep(tmp_path, monkeypatch)
    # the speed gain is tokens/s over the dense rungs': it changes with every new timing (it was kept by
    # step alone, so MLflow showed the new tokens/s beside the dead attempt's gain)
    row = lambda s, tps: {"step": s, "train/loss": 3 - s / 100, "perf/tokens_per_s": tps,  # noqa: E731
                          M.SPEED_GAIN: tps / 1000, M.COMPUTE_GAIN: 1.5}
    for r in (row(10, 1000.0), row(20, 1100.0)):  # attempt 1
        t.on_trial_result(0, [], trial, {**r, "timestamp": 1})
    rows = [row(10, 1000.0), row(20, 700.0), row(30, 800.0), {"step": 30, "val/loss": 2.0}]  # attempt 2's jsonl
    for r in rows[1:]:
        t.on_trial_result(0, [], trial, {**r, "timestamp": 2})
    (sweep / "trials" / "t1" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    t.on_trial_complete(0, [], _trial("t1", {"step": 30, "val/loss": 2.0}))  # back-fills from metrics.jsonl
    assert t.drain(wait_s=5)
    c = MlflowClient(uri)
    tps = sorted((m.step, m.timestamp, m.value) for m in c.get_metric_history(t.runs["t1"], "perf/tokens_per_s"))
    assert [(s, v) for s, _, v in tps] == [(10, 1000.0), (20, 1100.0), (20, 700.0), (30, 800.0)]
    assert max((m for m in tps if m[0] == 20), key=lambda m: m[1])[2] == 700.0  # the newer measurement last
    assert sorted(m.step for m in c.get_metric_history(t.runs["t1"], "train/loss")) == [10, 20, 30]
    gain = sorted((m.step, m.timestamp, m.value) for m in c.get_metric_history(t.runs["t1"], M.SPEED_GAIN))
    assert [(s, v) for s, _, v in gain] == [(10, 1.0), (20, 1.1), (20, 0.7), (30, 0.8)]
    assert max((m for m in gain if m[0] == 20), key=lambda m: m[1])[2] == 0.7  # beside tokens/s 700
    assert sorted(m.step for m in c.get_metric_history(t.runs["t1"], M.COMPUTE_GAIN)) == [10, 20, 30]


def test_a_trial_replayed_by_a_resume_keeps_its_own_end_time(tmp_path, monkeypatch):
    """A trial finished after Tune last saved its state: the resume replays its result.json, and its
    run, closed with the trial's end by the first driver, was closed again with the resume's clock."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space, sweep, uri, first, t = _one_trial_sweep(tmp_path, monkeypatch)
    res = {"step": 50, "val/loss": 2.0, "status": "completed", "reason": "reached 50 steps",
           "finished_at": 1_700_000_000.0}
    first.on_trial_result(0, [], t, {"step": 50, "val/loss": 2.0, "timestamp": 1_699_999_990, "time_total_s": 5})
    (sweep / "trials" / "t1" / "result.json").write_text(json.dumps(res))
    first.on_trial_complete(0, [], _trial("t1", {"step": 50, "val/loss": 2.0}))
    assert first.drain(wait_s=5)
    second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True, finished={"t1": ("COMPLETE", {})})
    saved = {k: v for k, v in res.items() if k != "status"}
    second.on_trial_result(0, [], t, {**saved, "timestamp": 1_800_000_000, "time_total_s": 0.1})  # the replay
    second.on_trial_complete(0, [], _trial("t1", saved))
    assert second.drain(wait_s=5)
    assert MlflowClient(uri).get_run(first.runs["t1"]).info.end_time == 1_700_000_000_000


def test_a_trial_stopped_short_of_its_planned_steps_has_a_failed_run(tmp_path, monkeypatch):
    """The searcher tells Optuna FAIL for a trial train.time_limit_s stopped before its planned steps
    (partial fidelity, kept off the front): its run said FINISHED, whether Tune completed it or a
    resume closed it from result.json."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space, sweep, uri, first, t = _one_trial_sweep(tmp_path, monkeypatch)
    (sweep / "trials" / "t2").mkdir()
    for tid in ("t1", "t2"):
        _report(first, _trial(tid), 5)
    first.flush()
    first.on_trial_complete(0, [], _trial("t1", {"step": 30, "val/loss": 2.0}))  # 50 planned
    (sweep / "trials" / "t2" / "result.json").write_text(json.dumps({"status": "completed", "step": 30,
                                                                     "val/loss": 2.0}))
    said = "stopped by train.time_limit_s (9s) at step 30 of 50 planned"
    second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True,
                                        finished={"t2": ("FAIL", {"fail_reason": said, "fail_status": "time_limit"})})
    assert second.drain(wait_s=5)
    for tid in ("t1", "t2"):
        run = MlflowClient(uri).get_run(first.runs[tid])
        assert run.info.status == "FAILED" and run.data.tags["dnasweep.status"] == "time_limit", tid
        assert "at step 30 of 50 planned" in run.data.tags["dnasweep.fail_reason"], tid


def test_a_resume_takes_back_runs_its_tracking_json_lost(tmp_path, monkeypatch):
    """A sweep in object storage uploads tracking.json when a trial ends: a head lost while t2 ran
    left t2's run out of the copy a new head pulls, and the resumed tracker gave t2 a second run
    (the first stayed RUNNING for ever). The store knows the run by its dnasweep.trial tag."""
    from mlflow import MlflowClient

    from dnasweep.sweep import tracking

    space, sweep, uri, first, t1 = _one_trial_sweep(tmp_path, monkeypatch)
    _report(first, t1, 5)
    first.on_trial_complete(0, [], _trial("t1", {"val/loss": 1.0}))
    first.flush()
    saved = (sweep / "tracking.json").read_text()  # the copy object storage holds: t1's run only
    (sweep / "trials" / "t2").mkdir()
    _report(first, _trial("t2"), 5)
    first.flush()  # t2's run exists in the store; the head is lost before tracking.json is uploaded again
    assert set(first.runs) == {"t1", "t2"}
    (sweep / "tracking.json").write_text(saved)

    second = tracking.MLflowSweepLogger(space, "s", str(sweep), uri, resume=True)
    assert second.runs == first.runs
    _report(second, _trial("t2"), 10)
    second.on_trial_complete(0, [], _trial("t2", {"val/loss": 0.9}))
    second.flush()
    client = MlflowClient(uri)
    children = client.search_runs([first.exp_id], filter_string=f"tags.mlflow.parentRunId = '{first.parent_id}'")
    assert sorted(r.data.tags["dnasweep.trial"] for r in children) == ["t1", "t2"]  # one run each
    assert sorted(m.step for m in client.get_metric_history(first.runs["t2"], "train/loss")) == [5, 10]
    assert json.loads((sweep / "tracking.json").read_text())["runs"] == first.runs
