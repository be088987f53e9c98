"""The training loop: exact resume, divergence, budgets, config errors, the `dnasweep` command."""

import json
import pathlib
import subprocess
import sys

import pytest

from dnasweep import metrics as M
from dnasweep.config import build_trial, load_trial
from dnasweep.errors import ConfigError
from dnasweep.train.loop import run_trial

TINY = ["model.d_model=32", "model.n_heads=4", "model.seq_len=32", "model.n_steps=2",
        "data.max_bytes=2000000", "train.batch_size=4", "train.warmup_steps=5", "train.device=cpu"]


def _losses(out_dir):
    with open(f"{out_dir}/metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    return [(r[M.STEP], r[M.TRAIN_LOSS]) for r in rows if M.TRAIN_LOSS in r]


class _KillAt:
    """Simulates a crash right after the checkpoint at `step` was written."""

    def __init__(self, step):
        self.step = step

    def report(self, metrics, checkpoint_dir=None):
        if checkpoint_dir and metrics[M.STEP] == self.step:
            raise KeyboardInterrupt

    def close(self):
        pass


@pytest.mark.parametrize("router", ["topk", "noisy_topk"])  # noisy_topk draws from the RNG
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, router):
    over = [*TINY, f"model.router.type={router}", "train.max_steps=30", "train.eval_every=10",
            "train.log_every=1", "model.balance.identity_bias=true", "model.balance.skip_control=pi"]
    full = run_trial(build_trial({}, [*over, f"out_dir={tmp_path}/a"]))
    cfg_b = build_trial({}, [*over, f"out_dir={tmp_path}/b"])
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg_b, _KillAt(20))
    resumed = run_trial(cfg_b)
    a, b = _losses(f"{tmp_path}/a"), _losses(f"{tmp_path}/b")
    assert [s for s, _ in b] == list(range(1, 31))  # no duplicated or missing steps
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) < 1e-6
    assert resumed.metrics[M.VAL_LOSS] == pytest.approx(full.metrics[M.VAL_LOSS], abs=1e-6)


def test_a_log_row_straddling_the_resume_point_averages_every_step_since_the_last_row(tmp_path):
    # log_every 3, checkpoint at 20: the row at step 21 averages the identity share of steps 19-21;
    # resumed, it averaged step 21 alone (the steps before the checkpoint were forgotten)
    over = [*TINY, "train.max_steps=24", "train.eval_every=10", "train.log_every=3",
            "model.balance.identity_bias=true"]
    run_trial(build_trial({}, [*over, f"out_dir={tmp_path}/a"]))
    cfg_b = build_trial({}, [*over, f"out_dir={tmp_path}/b"])
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg_b, _KillAt(20))
    run_trial(cfg_b)

    def shares(d):
        rows = [json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        return {r[M.STEP]: r[M.ROUTER_TRAIN_IDENTITY] for r in rows if M.ROUTER_TRAIN_IDENTITY in r}

    a, b = shares("a"), shares("b")
    assert sorted(a) == sorted(b) == [3, 6, 9, 12, 15, 18, 21, 24]
    assert max(abs(a[s] - b[s]) for s in a) < 1e-6, (a[21], b[21])


def test_divergence_stops_with_status_and_reason(tmp_path):
    cfg = build_trial({}, [*TINY, "train.lr=1e6", "train.warmup_steps=0", "train.grad_clip=0",
                           "train.max_steps=50", f"out_dir={tmp_path}"])
    res = run_trial(cfg)
    assert res.status == "diverged"
    assert "non-finite loss" in res.reason and res.step < 50
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "diverged"


def test_token_budget_and_eval_metrics(tmp_path):
    cfg = build_trial({}, [*TINY, "train.max_steps=1000", "train.max_tokens=1280", "train.eval_every=5",
                           f"out_dir={tmp_path}"])
    res = run_trial(cfg)
    assert res.step == 10  # 1280 tokens / (4 x 32) per step
    m = res.metrics
    for key in (M.VAL_LOSS, M.VAL_BPB, M.FLOPS_PER_TOKEN, M.PARAMS_ACTIVE, M.PARAMS_TOTAL, M.IDENTITY_FRACTION,
                M.ROUTER_ENTROPY, M.TOKENS_PER_S):
        assert key in m, key
    assert m[M.VAL_BPB] == pytest.approx(m[M.VAL_LOSS] / 0.6931471805599453)
    assert m[M.PARAMS_ACTIVE] < m[M.PARAMS_TOTAL]


@pytest.mark.parametrize("router,learns", [("hash", False), ("topk", True)])
def test_router_entropy_and_z_are_reported_only_by_routers_that_learn(tmp_path, router, learns):
    """A hash router has no logits: its entropy and log-partition are undefined, not 0.0 (which reads as
    a fully confident router in MLflow). Routers that learn report both."""
    cfg = build_trial({}, [*TINY, f"model.router.type={router}", "train.max_steps=2", f"out_dir={tmp_path}"])
    m = run_trial(cfg).metrics
    assert (M.ROUTER_ENTROPY in m, M.ROUTER_Z in m) == (learns, learns)
    assert M.IDENTITY_FRACTION in m and M.ROUTER_LOAD_MAX in m  # what routing did: every router
    if learns:
        assert m[M.ROUTER_ENTROPY] > 0


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path):
    run_trial(build_trial({}, [*TINY, "train.max_steps=2", f"out_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="model.d_model"):
        run_trial(build_trial({}, [*TINY, "model.d_model=64", "train.max_steps=2", f"out_dir={tmp_path}"]))


def test_config_errors_all_at_once_with_did_you_mean(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  d_modle: 64\n  n_heads: four\ntrain:\n  lr: -1\n  max_stpes: 3\n")
    with pytest.raises(ConfigError) as e:
        load_trial(str(bad))
    msg = str(e.value)
    assert str(bad) in msg
    assert "model.d_modle: unknown key" in msg and "did you mean model.d_model" in msg
    assert "model.n_heads" in msg and "train.max_stpes" in msg
    # semantic problems come after the schema is right, again all at once
    with pytest.raises(ConfigError) as e:
        build_trial({}, ["train.lr=-1", "model.router.type=nope", "model.d_model=30"])
    assert {p.key for p in e.value.problems} >= {"train.lr", "model.router.type", "model.d_model"}


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dnasweep.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow  # four dnasweep processes (~8 s)
def test_cli_train_json_and_exit_codes(tmp_path):
    r = _cli("train", "search_spaces/lm.yaml", *TINY, "train.max_steps=3", "train.eval_every=3",
             f"out_dir={tmp_path}", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["status"] == "completed" and last["step"] == 3 and M.VAL_BPB in last
    assert (tmp_path / "checkpoint" / "state.pt").exists()
    r = _cli("train", "search_spaces/lm.yaml", "model.router.type=expert_choice", "train.lr=0")
    assert r.returncode == 2
    assert "model.router.type" in r.stderr and "train.lr" in r.stderr and "Traceback" not in r.stderr
    r = _cli("train", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "no such file" in r.stderr


SHIPPED = sorted(str(p) for p in pathlib.Path("search_spaces").glob("*.yaml"))


def test_search_spaces_are_shipped():
    assert {"search_spaces/lm.yaml", "search_spaces/vision.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("space", SHIPPED)
def test_shipped_configs_validate_and_smoke_train(space, tmp_path):
    header = pathlib.Path(space).read_text().split("\nbase:")[0]
    # the header comment: its sweep command, its run time and hardware
    assert header.startswith("#") and f"dnasweep run {space}" in header and "CPU" in header
    r = _cli("validate", space)
    assert r.returncode == 0 and "valid" in r.stdout, r.stderr
    cfg = load_trial(space, ["train.max_steps=3", "train.eval_every=3", "train.eval_batches=2",
                             f"out_dir={tmp_path}", "data.max_bytes=2000000"])
    assert run_trial(cfg).status == "completed"


@pytest.mark.slow  # trains to a time limit (~2.5 s)
def test_time_limit_ends_with_eval_and_checkpoint(tmp_path):
    cfg = build_trial({}, [*TINY, "train.max_steps=100000", "train.time_limit_s=2", "train.eval_every=100000",
                           f"out_dir={tmp_path}"])
    res = run_trial(cfg)
    assert res.status == "completed" and "time limit" in res.reason
    assert 0 < res.step < 100000 and M.VAL_LOSS in res.metrics
    assert (tmp_path / "checkpoint" / "state.pt").exists()


@pytest.mark.slow  # trains past a time limit (~3 s)
def test_time_limit_counts_training_time_as_resume_does(tmp_path, monkeypatch):
    """The limit stopped on wall-clock time (evaluations included) while resume judged a run done by
    its training time: a run stopped by the limit trained on when run again, its result replaced."""
    import time

    from dnasweep.train import loop

    evaluate = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: (time.sleep(0.3), evaluate(*a, **k))[1])
    cfg = build_trial({}, [*TINY, "train.max_steps=100000", "train.time_limit_s=0.3", "train.eval_every=5",
                           f"out_dir={tmp_path}"])
    first = run_trial(cfg)
    assert "time limit" in first.reason and 0 < first.step < 100000
    again = run_trial(cfg)
    assert again.already_done and again.step == first.step


def test_grad_accumulation_counts_every_micro_batch(tmp_path):
    cfg = build_trial({}, [*TINY, "train.max_steps=1000", "train.max_tokens=1280", "train.grad_accum=2",
                           "train.eval_every=1000", f"out_dir={tmp_path}"])
    res = run_trial(cfg)
    assert res.step == 5  # 1280 tokens / (2 micro-batches x 4 x 32) per optimizer step
    assert res.status == "completed"


def test_routing_feedback_sees_every_micro_batch_of_a_step(tmp_path, monkeypatch):
    """With grad_accum, the selection-bias updates (skip control, loss-free balancing, capacities)
    and the logged identity share read only the last micro-batch's routing."""
    from dnasweep.model.dna import DNAModel

    seen = []
    monkeypatch.setattr(DNAModel, "update_routing_biases",
                        lambda self, out: seen.append(float(out.stats.slots_SM.sum())))

    def slots_per_step(accum):
        seen.clear()
        run_trial(build_trial({}, [*TINY, "train.max_steps=2", f"train.grad_accum={accum}", "train.eval_every=2",
                                   f"out_dir={tmp_path / str(accum)}"]))
        return list(seen)

    one, two = slots_per_step(1), slots_per_step(2)
    assert len(one) == len(two) == 2 and two == [2 * v for v in one]  # every token of the step, counted once


@pytest.mark.slow  # trains twice (~2.5 s)
def test_throughput_leaves_out_the_warm_up_steps_of_each_start(tmp_path, monkeypatch):
    """perf/tokens_per_s (and MFU, compare/speed_gain from it) divided by all training time: under
    train.compile the first step's compilation (43 s against 0.28 s steps) read as 311 tokens/s
    for ~7,300. A start's first steps (compile, recompile, lazy imports) are now left out."""
    import types

    import dnasweep.train.loop as loop

    # The loop's clock, faked: each reading advances it 1 s, the first forward of the start 1000 s
    # more (a compilation). Wall-clock bounds flaked on a loaded CI machine (111 tokens/s measured).
    clock = {"t": 0.0}

    def perf_counter():
        clock["t"] += 1.0
        return clock["t"]

    monkeypatch.setattr(loop, "time", types.SimpleNamespace(perf_counter=perf_counter))
    calls = {"n": 0}
    real = loop.compute_loss

    def slow_first(*a, **k):  # stands in for a compilation on the first forward of a start
        calls["n"] += 1
        if calls["n"] == 1:
            clock["t"] += 1000.0
        return real(*a, **k)

    monkeypatch.setattr(loop, "compute_loss", slow_first)
    cfg = build_trial({}, [*TINY, "train.max_steps=8", "train.eval_every=8", f"out_dir={tmp_path}"])
    res = run_trial(cfg)
    with open(tmp_path / "result.json") as f:
        tps = json.load(f)[M.TOKENS_PER_S]
    assert res.status == "completed"
    # past warm-up, each step reads the clock twice (1 s apart): 4 x 32 tokens a second; with the
    # first step's 1000 s counted it would be 8 x 128 / 1008 s, about 1 token/s
    assert tps == pytest.approx(4 * 32 / 1.0), tps


def test_a_finite_loss_with_a_non_finite_gradient_is_diverged_not_completed(tmp_path, monkeypatch):
    """Only the loss was checked: a last update from a NaN gradient (finite loss) left weights that
    evaluate to NaN, and the run ended `completed` with val/loss NaN, reported as objectives."""
    import torch

    from dnasweep.train import loop

    real, calls = loop.compute_loss, {"n": 0}

    def nan_grad_at_step_4(out, y, cfg):
        calls["n"] += 1
        loss, parts = real(out, y, cfg)
        if calls["n"] == 4:  # value unchanged (sqrt(0) = 0), gradient NaN (d sqrt at 0 times 0)
            loss = loss + (out.logits.sum() * 0).abs().sqrt()
        return loss, parts

    monkeypatch.setattr(loop, "compute_loss", nan_grad_at_step_4)
    res = run_trial(build_trial({}, [*TINY, "train.max_steps=4", "train.eval_every=2", f"out_dir={tmp_path}"]))
    assert res.status == "diverged" and "gradient" in res.reason and res.step == 3
    assert all(torch.isfinite(v).all() for v in torch.load(tmp_path / "checkpoint" / "state.pt",
                                                           weights_only=True)["model"].values())


def test_a_non_finite_evaluation_is_diverged_and_not_checkpointed(tmp_path, monkeypatch):
    from dnasweep.train import loop

    real = loop.evaluate

    def nan_at_step_4(*a, **k):
        res = real(*a, **k)
        return {**res, M.VAL_LOSS: float("nan")} if nan_at_step_4.n == 1 else (setattr(nan_at_step_4, "n", 1), res)[1]

    nan_at_step_4.n = 0
    monkeypatch.setattr(loop, "evaluate", nan_at_step_4)
    res = run_trial(build_trial({}, [*TINY, "train.max_steps=6", "train.eval_every=2", f"out_dir={tmp_path}"]))
    assert res.status == "diverged" and "val/loss" in res.reason and res.step == 4
    import torch

    assert torch.load(tmp_path / "checkpoint" / "state.pt", weights_only=True)["step"] == 2  # the last good one


def test_result_json_says_the_steps_done_not_those_of_the_last_evaluation(tmp_path, monkeypatch):
    """The last evaluation's own `step` overwrote the run's in result.json / --json: a run that
    diverged at step 5 after evaluating at step 3 said step 3."""
    import torch

    from dnasweep.train import loop

    real, calls = loop.compute_loss, {"n": 0}

    def nan_loss_at_step_5(out, y, cfg):
        calls["n"] += 1
        loss, parts = real(out, y, cfg)
        return loss, (dict(parts, ce=torch.tensor(float("nan"))) if calls["n"] == 5 else parts)

    monkeypatch.setattr(loop, "compute_loss", nan_loss_at_step_5)
    res = run_trial(build_trial({}, [*TINY, "train.max_steps=8", "train.eval_every=3", f"out_dir={tmp_path}"]))
    saved = json.loads((tmp_path / "result.json").read_text())
    assert res.status == saved["status"] == "diverged" and res.step == saved["step"] == 4
    assert res.to_json()["step"] == 4


def test_train_flops_per_token_is_the_mean_over_the_steps_tokens_per_s_timed(tmp_path, monkeypatch):
    # A DNA's FLOPs/token move as it learns to route: throughput (and MFU) pair tokens/s with the
    # work of the same steps, not with the last evaluation's FLOPs
    from dnasweep.train import loop

    seen = []
    build = loop.build_model

    def recording(cfg):
        model = build(cfg)
        model.register_forward_hook(lambda m, args, out: seen.append(out.stats.flops_per_token) if m.training
                                    else None)
        return model

    monkeypatch.setattr(loop, "build_model", recording)
    cfg = build_trial({}, [*TINY, "train.max_steps=12", "train.eval_every=12", "model.router.type=threshold",
                           f"out_dir={tmp_path}"])
    res = run_trial(cfg)
    timed = seen[loop.WARMUP_STEPS:]
    assert len(seen) == 12 and len(set(timed)) > 1  # routing changed the work from step to step
    assert res.metrics[M.TRAIN_FLOPS_PER_TOKEN] == pytest.approx(sum(timed) / len(timed), rel=1e-6)


def test_a_steps_flops_average_its_micro_batches():
    """combine() kept the last micro-batch's FLOPs per token: with grad_accum, perf/train_flops_per_token
    and MFU measured one micro-batch's routing (1/grad_accum of the step) as the whole step's."""
    from dnasweep.model.output import RoutingStats, combine

    a = RoutingStats(flops_per_token_=100.0, flops_executed_per_token_=120.0, params_active_=10.0, params_total=50,
                     identity_fraction_=0.5, entropy_=1.0)
    b = RoutingStats(flops_per_token_=300.0, flops_executed_per_token_=360.0, params_active_=30.0, params_total=50,
                     identity_fraction_=0.1, entropy_=2.0)
    s = combine([a, b])
    assert (s.flops_per_token, s.flops_executed_per_token, s.params_active, s.entropy) == (200.0, 240.0, 20.0, 1.5)
    assert s.identity_fraction == pytest.approx(0.3) and s.params_total == 50
