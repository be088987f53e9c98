"""The dense reference frontier and the compute gain against it (Ray-free)."""

import math
import pathlib

import pytest

from dnasweep import metrics as M
from dnasweep.config import build_trial
from dnasweep.errors import ConfigError
from dnasweep.space import parse_space
from dnasweep.space.reference import Frontier, config_hash, gain_text, ladder

RUNGS = [{M.FLOPS_PER_TOKEN: 1e5, M.VAL_LOSS: 3.0, M.TOKENS_PER_S: 4000.0},
         {M.FLOPS_PER_TOKEN: 4e5, M.VAL_LOSS: 2.5, M.TOKENS_PER_S: 2000.0},
         {M.FLOPS_PER_TOKEN: 1.6e6, M.VAL_LOSS: 2.2, M.TOKENS_PER_S: 800.0},
         {M.FLOPS_PER_TOKEN: 8e5, M.VAL_LOSS: 2.6, M.TOKENS_PER_S: 1000.0}]  # dominated: off the frontier


def test_frontier_keeps_only_non_dominated_rungs():
    assert [p[0] for p in Frontier(RUNGS).points] == [1e5, 4e5, 1.6e6]


def test_a_dominated_rung_of_a_frontier_rungs_flops_is_not_marked_on_the_frontier():
    """Matched by FLOPs alone, a rung with the FLOPs/token of a frontier rung and a higher loss (one
    size listed twice, another seed) read 'frontier: yes' in the table and reference.csv."""
    pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
    from dnasweep.sweep.reference import frontier_keys, on_frontier

    rungs = [{"planned_steps": 10, "result": {"status": "completed", "step": 10, M.FLOPS_PER_TOKEN: 1e5,
                                                M.VAL_LOSS: loss}} for loss in (3.0, 3.4)]
    keys = frontier_keys(rungs)
    assert [on_frontier(r, keys) for r in rungs] == [True, False]


def test_gain_is_exact_at_the_rungs_and_log_linear_between():
    f = Frontier(RUNGS)
    for flops, loss in ((1e5, 3.0), (4e5, 2.5), (1.6e6, 2.2)):
        g = f.compute_gain(loss, flops)
        assert g.bound == 0 and g.value == pytest.approx(1.0)
    g = f.compute_gain(2.75, 1e5)  # halfway in loss between 1e5 and 4e5: the geometric mean, 2e5
    assert g.bound == 0 and g.value == pytest.approx(2.0)
    assert f.compute_gain(2.5, 2e5).value == pytest.approx(2.0)  # half the dense FLOPs for the same loss


def test_gain_is_monotone_in_loss():
    f = Frontier(RUNGS)
    losses = [3.0 - 0.01 * i for i in range(81)]  # 3.0 down to 2.2
    gains = [f.compute_gain(loss, 3e5).value for loss in losses]
    assert all(b >= a for a, b in zip(gains, gains[1:], strict=False))


def test_outside_the_ladder_the_gain_is_a_bound():
    f = Frontier(RUNGS)
    better = f.compute_gain(2.0, 4e5)  # better than the largest dense model
    assert better.bound == 1 and better.value == pytest.approx(4.0) and str(better) == "> 4"
    worse = f.compute_gain(3.5, 4e4)  # worse than the smallest
    assert worse.bound == -1 and worse.value == pytest.approx(2.5) and str(worse) == "< 2.5"
    m = f.metrics({M.VAL_LOSS: 2.0, M.FLOPS_PER_TOKEN: 4e5, M.TOKENS_PER_S: 1600.0})
    assert m[M.COMPUTE_GAIN_BOUND] == 1.0 and gain_text(m) == "> 4"
    assert m[M.SPEED_GAIN] == pytest.approx(2.0) and m[M.SPEED_GAIN_BOUND] == 1.0  # dense at most 800 tok/s there
    assert gain_text({}) == "-" and Frontier([]).metrics(m) == {}


def test_speed_gain_interpolates_tokens_per_s_at_equal_loss():
    f = Frontier(RUNGS)
    s = f.speed_gain(2.75, 2000.0)  # dense: geometric mean of 4000 and 2000 tok/s at this loss
    assert s.bound == 0 and s.value == pytest.approx(2000.0 / math.sqrt(4000 * 2000))


def test_speed_gain_is_against_the_fastest_dense_rung_at_that_loss_not_the_cheapest():
    """A wide rung with a few more FLOPs than a deep one of the same loss is off the FLOPs frontier,
    but runs twice as fast: the trial was set against the slower one (gain 1.4 where it is 0.7)."""
    deep = {M.FLOPS_PER_TOKEN: 1.00e6, M.VAL_LOSS: 2.0, M.TOKENS_PER_S: 5000.0}
    wide = {M.FLOPS_PER_TOKEN: 1.05e6, M.VAL_LOSS: 2.0, M.TOKENS_PER_S: 10000.0}
    small = {M.FLOPS_PER_TOKEN: 3.0e5, M.VAL_LOSS: 2.4, M.TOKENS_PER_S: 20000.0}
    f = Frontier([small, deep, wide])
    assert [p[0] for p in f.points] == [3.0e5, 1.00e6]  # the compute gain's frontier is unchanged
    assert f.compute_gain(2.0, 5e5).value == pytest.approx(2.0)
    s = f.speed_gain(2.0, 7000.0)
    assert s.bound == 0 and s.value == pytest.approx(0.7)
    s = f.speed_gain(2.2, 7000.0)  # between small and wide, log-interpolated in loss
    assert s.bound == 0 and s.value == pytest.approx(7000.0 / math.sqrt(20000 * 10000))
    # better than every rung: the dense speed is at most the slowest frontier rung's (here wide's, not
    # a slower rung that reaches a worse loss), so the gain is a lower bound
    slow = {M.FLOPS_PER_TOKEN: 6e5, M.VAL_LOSS: 2.1, M.TOKENS_PER_S: 4000.0}
    s = Frontier([small, slow, wide]).speed_gain(1.9, 6000.0)
    assert s.bound == 1 and s.value == pytest.approx(0.6)


def test_speed_gain_only_on_the_hardware_the_rungs_trained_on():
    """A ladder cached on one machine and reused by trials on another: FLOPs still compare, tokens/s
    do not (a GPU trial against CPU rungs read as a speed gain of the GPU/CPU ratio)."""
    cpu = [{**r, "hardware": "cpu: EPYC x1 threads"} for r in RUNGS]
    m = {M.VAL_LOSS: 2.75, M.FLOPS_PER_TOKEN: 1e5, M.TOKENS_PER_S: 9e5}
    on_gpu = Frontier(cpu).metrics(m, "cuda: NVIDIA H200")
    assert on_gpu[M.COMPUTE_GAIN] == pytest.approx(2.0) and M.SPEED_GAIN not in on_gpu
    assert Frontier(cpu).metrics(m, "cpu: EPYC x1 threads")[M.SPEED_GAIN] == pytest.approx(9e5 / math.sqrt(8e6))
    # rungs that recorded no hardware (older caches) or disagree: no speed claim for a trial that says where it is
    assert M.SPEED_GAIN not in Frontier(RUNGS).metrics(m, "cpu: EPYC x1 threads")
    mixed = [{**RUNGS[0], "hardware": "cuda: NVIDIA H200"}, *cpu[1:]]
    assert M.SPEED_GAIN not in Frontier(mixed).metrics(m, "cpu: EPYC x1 threads")


def test_hardware_names_the_device_the_cpu_and_threads():
    import torch

    from dnasweep.space.reference import hardware

    h = hardware(torch.device("cpu"))
    assert h.startswith("cpu: ") and h.endswith(f" x{torch.get_num_threads()} threads")


def test_ladder_configs_and_hash():
    space = parse_space({"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2}},
                         "objectives": [{"metric": "val/loss"}],
                         "reference": {"d_model": [32, 64], "dense_layers": [1, 2]}}, "s.yaml")
    rungs = ladder(space.base, space.config.reference.d_model, space.config.reference.dense_layers)
    assert [(c.model.kind, c.model.d_model, c.model.dense_layers) for c in rungs] == [
        ("dense", 32, 1), ("dense", 32, 2), ("dense", 64, 1), ("dense", 64, 2)]
    assert len({config_hash(c) for c in rungs}) == 4
    moved = rungs[0]
    h = config_hash(moved)
    moved.out_dir = "/elsewhere"
    assert config_hash(moved) == h  # out_dir is not part of what was trained
    with pytest.raises(ConfigError, match="d_model=30"):  # 30 is not divisible by 4 heads
        ladder(space.base, [30], [1])


def test_reference_section_rules():
    ok = {"base": {"model": {"d_model": 32}}, "objectives": [{"metric": "val/loss"}]}
    with pytest.raises(ConfigError) as e:
        parse_space({**ok, "reference": {"d_model": [64]}}, "s.yaml")
    assert "needs both d_model and dense_layers" in str(e.value)
    with pytest.raises(ConfigError) as e:  # gains are reported only by sweeps with a ladder
        parse_space({**ok, "objectives": [{"metric": "compare/compute_gain", "mode": "max"}]}, "s.yaml")
    assert "reference" in str(e.value)
    assert parse_space({**ok, "objectives": [{"metric": "compare/compute_gain", "mode": "max"}],
                        "reference": {"d_model": [32], "dense_layers": [1]}}, "s.yaml")


def test_report_states_the_gain_with_its_bound():
    from dnasweep.analyze.html import _versus_dense

    assert _versus_dense({"compare": {}}) == ""
    text = _versus_dense({"compare": {M.COMPUTE_GAIN: 4.0, M.COMPUTE_GAIN_BOUND: 1.0, M.SPEED_GAIN: 0.5,
                                      M.SPEED_GAIN_BOUND: 0.0}})
    assert "compute gain is more than 4" in text and "0.5 of a dense model's" in text


def test_a_rung_hash_follows_the_data_it_reads_not_only_its_config(tmp_path, monkeypatch):
    """The ladder cache is keyed by the rung's hash: two corpora at the same relative path (or one
    edited in place) hashed alike, and a later sweep reused dense rungs trained on the other text."""
    from dnasweep.config import build_trial

    for d, text in (("h1", "first corpus " * 50), ("h2", "another text " * 60)):
        (tmp_path / d).mkdir()
        (tmp_path / d / "corpus.txt").write_text(text)
    monkeypatch.chdir(tmp_path / "h1")
    base = build_trial({"model": {"d_model": 32, "n_heads": 4, "seq_len": 16},
                        "data": {"source": "text", "path": "corpus.txt"}})
    hashes = []
    for d in ("h1", "h2"):
        monkeypatch.chdir(tmp_path / d)
        hashes.append(config_hash(ladder(base, [16], [1])[0]))
    assert hashes[0] != hashes[1]
    assert config_hash(ladder(base, [16], [1])[0]) == hashes[1]  # same data, same hash
    (tmp_path / "h2" / "corpus.txt").write_text("edited " * 80)
    assert config_hash(ladder(base, [16], [1])[0]) != hashes[1]


def test_the_cache_key_holds_the_code_that_trains_a_rung(tmp_path, monkeypatch):
    """The shared cache was keyed by dnasweep's version string, which never moved: rungs trained
    before a change to the model or the loop were reused beside trials of the new code."""
    import shutil

    from dnasweep.space import reference

    ident = reference.code_identity.__wrapped__  # (uncached: the copy is edited in between)
    pkg = pathlib.Path(reference.__file__).resolve().parents[1]
    copy = tmp_path / "dnasweep"
    shutil.copytree(pkg, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert ident(str(copy)) == ident(str(pkg)) == reference.code_identity()
    (copy / "analyze" / "report.py").write_text("# a report trains no rung\n")
    assert ident(str(copy)) == ident(str(pkg))
    loop = copy / "train" / "loop.py"
    loop.write_text(loop.read_text() + "\n# warm-up now left out of tokens/s\n")
    assert ident(str(copy)) != ident(str(pkg))
    # the cache key follows it; a sweep's own rungs are found by the config alone
    rung = ladder(build_trial({"model": {"d_model": 32, "n_heads": 4, "seq_len": 16}}), [16], [1])[0]
    key, own = config_hash(rung), config_hash(rung, data=False)
    monkeypatch.setattr(reference, "code_identity", lambda: "other code")
    assert config_hash(rung) != key and config_hash(rung, data=False) == own


def test_only_completed_rungs_are_reused_from_the_cache(tmp_path, monkeypatch):
    """An out-of-memory rung (a fact of one machine and its load) was cached like a trained one:
    every later sweep reused it, 'trained before', and measured every gain against a frontier
    without that rung. Now it trains again; completed rungs are still reused."""
    pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
    import json

    import ray

    from dnasweep.sweep import reference as R

    space = parse_space({"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2}},
                         "objectives": [{"metric": "val/loss"}],
                         "reference": {"d_model": [32, 64], "dense_layers": [1]}}, "s.yaml")
    rungs = ladder(space.base, [32, 64], [1])
    (tmp_path / "reference-cache").mkdir()
    for cfg, status in zip(rungs, ("completed", "oom"), strict=True):
        result = {"status": status, "step": 1000, M.VAL_LOSS: 2.0, M.FLOPS_PER_TOKEN: 1e5} \
            if status == "completed" else {"status": status, "reason": "out of memory"}
        (tmp_path / "reference-cache" / f"{config_hash(cfg)}.json").write_text(json.dumps(
            {"hash": config_hash(cfg), "result": result, "rows": [], "hardware": "cpu: some CPU x2 threads"}))
    trained = []

    class Task:  # stands in for ray.remote(_train_rung): runs nothing, records what would train
        def options(self, **kw):
            return self

        def remote(self, d):
            trained.append(d["model"]["d_model"])
            return len(trained)  # an object ref

    done = {"result": {"status": "completed", M.VAL_LOSS: 1.9, M.FLOPS_PER_TOKEN: 2e5}, "rows": [], "hardware": "x"}
    monkeypatch.setattr(ray, "remote", lambda f: Task())
    monkeypatch.setattr(ray, "wait", lambda refs, num_returns: ([refs[0]], refs[1:]))
    monkeypatch.setattr(ray, "get", lambda ref: done)
    (tmp_path / "sweep").mkdir()
    out = R.train_reference(space, str(tmp_path / "sweep"), str(tmp_path), lambda line: None)
    assert trained == [64]
    assert [r["result"]["status"] for r in out] == ["completed", "completed"]
    assert [r["reused"] for r in out] == [True, False]


def test_a_resumed_sweep_keeps_its_own_rungs_when_the_data_identity_moves(tmp_path, monkeypatch):
    """The sweep's own rungs were looked up by the hash that includes the data's identity (paths,
    mtimes, Python, dnasweep version): a resume on another head, after a touch of the corpus, or of
    a sweep started before that hash, retrained the ladder and changed its frontier mid-sweep."""
    pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
    import json

    import ray

    from dnasweep.sweep import reference as R

    space = parse_space({"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2}},
                         "objectives": [{"metric": "val/loss"}],
                         "reference": {"d_model": [32], "dense_layers": [1], "cache": False}}, "s.yaml")
    (cfg,) = ladder(space.base, [32], [1])
    (tmp_path / "sweep").mkdir()
    own = {"hash": config_hash(cfg, data=False), "d_model": 32, "dense_layers": 1, "hardware": "x", "rows": [],
           "result": {"status": "completed", M.VAL_LOSS: 2.0, M.FLOPS_PER_TOKEN: 1e5}}
    (tmp_path / "sweep" / R.FILE).write_text(json.dumps([own]))
    monkeypatch.setattr("dnasweep.__version__", "9.9.9")  # the identity moved since the sweep started
    monkeypatch.setattr(ray, "remote", lambda f: pytest.fail("the sweep's own rung must not retrain"))
    (rung,) = R.train_reference(space, str(tmp_path / "sweep"), str(tmp_path), lambda line: None)
    assert rung["reused"] and rung["result"][M.VAL_LOSS] == 2.0


def test_equal_rungs_one_without_tokens_per_s_do_not_crash_the_frontier():
    rungs = [{M.FLOPS_PER_TOKEN: 1e5, M.VAL_LOSS: 3.0, M.TOKENS_PER_S: 10.0},
             {M.FLOPS_PER_TOKEN: 1e5, M.VAL_LOSS: 3.0}]  # sorted by all three fields: None < float raised
    assert [p[:2] for p in Frontier(rungs).points] == [(1e5, 3.0)]


def _ladder_rows(*rungs):
    return [{"d_model": i, "dense_layers": 1, "result": {"status": "completed", **r}} for i, r in enumerate(rungs)]


def _plot_space(objectives):  # what the figures read of a space: its objectives
    from types import SimpleNamespace

    return SimpleNamespace(objectives=[SimpleNamespace(**o) for o in objectives])


def test_the_drawn_dense_line_is_the_frontier_in_the_plotted_objectives():
    """The plot drew the (FLOPs, val/loss) frontier in val/acc units: a rung with better accuracy
    at lower FLOPs but a worse loss was left out, so dense looked weaker than it is."""
    from dnasweep.sweep.plots import _dense

    space = _plot_space([{"metric": M.VAL_ACC, "mode": "max"}, {"metric": M.FLOPS_PER_TOKEN, "mode": "min"}])
    rows = _ladder_rows({M.FLOPS_PER_TOKEN: 1e5, M.VAL_LOSS: 1.50, M.VAL_ACC: 0.50},
                        {M.FLOPS_PER_TOKEN: 2e5, M.VAL_LOSS: 1.52, M.VAL_ACC: 0.56},
                        {M.FLOPS_PER_TOKEN: 4e5, M.VAL_LOSS: 1.40, M.VAL_ACC: 0.55})
    x, y, _, _, _ = _dense(rows, space)
    assert sorted(zip(x, y, strict=True)) == [(0.50, 1e5), (0.56, 2e5)]  # the 4e5 rung: beaten by the 2e5 one


def test_the_drawn_dense_line_follows_the_gains_interpolation():
    """Straight segments on a linear FLOPs axis put a trial with gain 0.98 on the better side."""
    from dnasweep.sweep.plots import _dense

    space = _plot_space([{"metric": M.VAL_LOSS, "mode": "min"}, {"metric": M.FLOPS_PER_TOKEN, "mode": "min"}])
    rows = _ladder_rows({M.FLOPS_PER_TOKEN: 5.57e5, M.VAL_LOSS: 2.101}, {M.FLOPS_PER_TOKEN: 9.83e5, M.VAL_LOSS: 1.938})
    _, _, _, lx, ly = _dense(rows, space)
    f = Frontier([r["result"] for r in rows])
    for loss, flops in zip(lx, ly, strict=True):  # every point of the line has gain 1 exactly
        assert f.compute_gain(loss, flops).value == pytest.approx(1.0)
    mid = min(range(len(lx)), key=lambda i: abs(lx[i] - 2.0195))
    assert ly[mid] == pytest.approx(7.40e5, rel=0.01)  # not 7.70e5, the straight segment's


@pytest.mark.parametrize("cached, reused", [
    ({"step": 200, "hardware": "cpu: a CPU x2 threads"}, True),
    ({"step": 150, "hardware": "cpu: a slow CPU x2 threads", "reason": "time limit 600s reached at step 150"}, False),
    ({"step": 200, "hardware": "cuda: NVIDIA H100"}, False),  # bf16 under precision auto; these trials: CPU fp32
    ({"step": 200}, False),  # where it trained is unknown
])
def test_a_cached_rung_is_reused_only_if_it_trained_its_whole_budget_on_this_kind_of_device(cached, reused):
    """A rung stopped by time_limit_s on a slow machine is 'completed': the shared cache (keyed by
    config and data) reused it in every later sweep, and its under-trained loss inflated every gain."""
    from dnasweep.sweep.reference import _reusable

    space = parse_space({"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2},
                                  "train": {"max_steps": 200, "time_limit_s": 600}},
                         "objectives": [{"metric": "val/loss"}], "reference": {"d_model": [32], "dense_layers": [1]}},
                        "s.yaml")
    (cfg,) = ladder(space.base, [32], [1])
    step = cached.pop("step")
    entry = {"result": {"status": "completed", "step": step, **cached}, "hardware": cached.get("hardware")}
    assert _reusable(entry, cfg, space) is reused


def test_a_rung_stopped_by_its_time_limit_is_never_on_the_frontier(tmp_path, monkeypatch):
    """A dense rung that train.time_limit_s stopped at step 150 of 200 ends 'completed': only the
    cache's reuse looked at its steps, so the sweep's own frontier, its gains, reference.csv and the
    front's table counted the under-trained rung's loss as dense's, inflating every gain."""
    pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
    import csv

    import ray

    from dnasweep.sweep import reference as R

    space = parse_space({"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2},
                                  "train": {"max_steps": 200, "time_limit_s": 600}},
                         "objectives": [{"metric": "val/loss"}],
                         "reference": {"d_model": [32, 64], "dense_layers": [1]}}, "s.yaml")

    class Task:  # stands in for ray.remote(_train_rung)
        def options(self, **kw):
            return self

        def remote(self, d):
            return d["model"]["d_model"]

    def get(d_model):  # the wider rung hit its time limit at step 150 with a worse loss (under-trained)
        step, loss, flops = (200, 2.5, 1e5) if d_model == 32 else (150, 2.8, 3e5)
        return {"result": {"status": "completed", "step": step, M.VAL_LOSS: loss, M.FLOPS_PER_TOKEN: flops},
                "rows": [], "hardware": "cpu: a CPU x2 threads"}

    monkeypatch.setattr(ray, "remote", lambda f: Task())
    monkeypatch.setattr(ray, "wait", lambda refs, num_returns: ([refs[0]], refs[1:]))
    monkeypatch.setattr(ray, "get", get)
    (tmp_path / "sweep").mkdir()
    rungs = R.train_reference(space, str(tmp_path / "sweep"), str(tmp_path), lambda line: None)
    assert [R.rung_status(r) for r in rungs] == ["completed", "time-limited"]
    assert [p[0] for p in R.frontier_of(rungs).points] == [1e5]
    assert len(list((tmp_path / "reference-cache").iterdir())) == 1  # the short rung is not shared either
    with open(tmp_path / "sweep" / "reference.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["status"], r["frontier"], r["blocks"]) for r in rows] == [("completed", "True", "2"),
                                                                       ("time-limited", "False", "2")]
    from types import SimpleNamespace

    from dnasweep.sweep.study import format_front
    table = format_front(SimpleNamespace(front=[], reference=R.read(str(tmp_path / "sweep")), n_abandoned=0,
                                         n_pruned=0, n_infeasible=0, n_complete=0, n_failed=0, infeasible={},
                                         sweep_dir="x"), space)
    dense = table.splitlines()[table.splitlines().index(next(ln for ln in table.splitlines() if "d  blocks" in ln)):]
    assert "time-limited" in dense[2] and not dense[2].rstrip().endswith("yes") and dense[1].rstrip().endswith("yes")


def test_a_sweep_ranking_speed_gain_trains_its_own_rungs(tmp_path, monkeypatch):
    """A rung cached on another machine of the same kind (cpu) was reused; the trials' hardware then
    differed from the rungs', so no trial got compare/speed_gain: as an objective it failed every
    trial, as a constraint it broke every one. Such a sweep now times its rungs on its own cluster."""
    pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
    import json

    import ray

    from dnasweep.sweep import reference as R

    def space(objectives):
        return parse_space({"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2},
                                     "train": {"max_steps": 200}}, "objectives": objectives,
                            "reference": {"d_model": [32], "dense_layers": [1]}}, "s.yaml")

    (cfg,) = ladder(space([{"metric": "val/loss"}]).base, [32], [1])
    (tmp_path / "reference-cache").mkdir()
    (tmp_path / "reference-cache" / f"{config_hash(cfg)}.json").write_text(json.dumps(
        {"hash": config_hash(cfg), "rows": [], "hardware": "cpu: another CPU x8 threads",
         "result": {"status": "completed", "step": 200, M.VAL_LOSS: 2.0, M.FLOPS_PER_TOKEN: 1e5}}))
    trained = []

    class Task:
        def options(self, **kw):
            return self

        def remote(self, d):
            trained.append(d["model"]["d_model"])
            return 0

    monkeypatch.setattr(ray, "remote", lambda f: Task())
    monkeypatch.setattr(ray, "wait", lambda refs, num_returns: ([refs[0]], refs[1:]))
    monkeypatch.setattr(ray, "get", lambda ref: {"result": {"status": "completed", "step": 200, M.VAL_LOSS: 2.1,
                                                            M.FLOPS_PER_TOKEN: 1e5}, "rows": [], "hardware": "cpu: x"})
    for i, objectives in enumerate(([{"metric": "val/loss"}],
                                    [{"metric": "val/loss"}, {"metric": M.SPEED_GAIN, "mode": "max"}])):
        (tmp_path / f"sweep{i}").mkdir()
        (rung,) = R.train_reference(space(objectives), str(tmp_path / f"sweep{i}"), str(tmp_path), lambda line: None)
        assert rung["reused"] is (i == 0)
    assert trained == [32]  # only the sweep that ranks speed trained the rung


def test_a_speed_ranked_sweep_resumed_on_other_hardware_times_its_rungs_again(tmp_path, monkeypatch):
    """A sweep ranking compare/speed_gain, resumed on a cluster of other hardware, kept the rungs
    timed on the first: each new trial's hardware differed from theirs, none got a speed gain, and
    the objective failed every one. Its rungs are now trained again where the trials run; on the
    same hardware they stand as they are."""
    pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")
    import json

    import ray

    from dnasweep.sweep import reference as R

    space = parse_space({"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 24, "n_steps": 2},
                                  "train": {"max_steps": 200}},
                         "objectives": [{"metric": "val/loss"}, {"metric": M.SPEED_GAIN, "mode": "max"}],
                         "reference": {"d_model": [32], "dense_layers": [1]}}, "s.yaml")
    (cfg,) = ladder(space.base, [32], [1])
    here = "cpu: the second head's CPU x2 threads"
    calls = []

    class Task:  # stands in for ray.remote(f): records the call, answers as the worker would
        def __init__(self, f):
            self.f = f

        def options(self, **kw):
            return self

        def remote(self, arg):
            calls.append(self.f.__name__)
            return self.f.__name__

    answers = {"_worker_hardware": here,
               "_train_rung": {"result": {"status": "completed", "step": 200, M.VAL_LOSS: 2.1,
                                          M.FLOPS_PER_TOKEN: 1e5, M.TOKENS_PER_S: 900.0}, "rows": [], "hardware": here}}
    monkeypatch.setattr(ray, "remote", Task)
    monkeypatch.setattr(ray, "wait", lambda refs, num_returns: ([refs[0]], refs[1:]))
    monkeypatch.setattr(ray, "get", answers.get)
    for i, first_head in enumerate(("cpu: the first head's CPU x8 threads", here)):
        sweep = tmp_path / f"sweep{i}"
        sweep.mkdir()
        (sweep / R.FILE).write_text(json.dumps([{
            "hash": config_hash(cfg, data=False), "d_model": 32, "dense_layers": 1, "rows": [], "hardware": first_head,
            "result": {"status": "completed", "step": 200, M.VAL_LOSS: 2.0, M.FLOPS_PER_TOKEN: 1e5,
                       M.TOKENS_PER_S: 4000.0}}]))
        calls.clear()
        lines = []
        (rung,) = R.train_reference(space, str(sweep), str(tmp_path), lines.append)
        frontier = R.frontier_of([rung])
        gain = frontier.metrics({M.VAL_LOSS: 2.1, M.FLOPS_PER_TOKEN: 1e5, M.TOKENS_PER_S: 450.0}, here)
        assert gain[M.SPEED_GAIN] == pytest.approx(0.5 if i == 0 else 450.0 / 4000.0)
        if i == 0:
            assert calls == ["_worker_hardware", "_train_rung"] and not rung["reused"]
            assert rung["hardware"] == here and rung["result"][M.TOKENS_PER_S] == 900.0
            assert any("first head's CPU" in ln and "training them again" in ln for ln in lines), lines
        else:
            assert calls == ["_worker_hardware"] and rung["reused"] and rung["result"][M.TOKENS_PER_S] == 4000.0
