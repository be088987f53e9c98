"""One trial: data -> model -> AdamW loop with evaluation, checkpoints and honest metrics.

`run_trial(cfg, reporter)` is what `dnasweep train` and every sweep trial run. It reports
through the Reporter protocol only; it never imports ray, optuna or mlflow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dnasweep import metrics as M
from dnasweep.config import TrialConfig, to_yaml
from dnasweep.config.trial import fit_problems, planned_steps, tokens_per_step
from dnasweep.data import LMSampler, VisionSampler, lm_val_batches, load_data, vision_val_batches
from dnasweep.data.config import resume_key
from dnasweep.errors import ConfigError, Problem, raise_if
from dnasweep.model import build_model, compute_loss
from dnasweep.model.output import combine
from dnasweep.train import checkpoint
from dnasweep.train.evaluate import evaluate
from dnasweep.train.limits import is_oom
from dnasweep.train.optim import lr_at, make_optimizer
from dnasweep.train.report import JsonlReporter, Reporter, Reporters

WARMUP_STEPS = 2  # steps of each (re)start left out of the throughput (compile, recompile, lazy imports)

# Dense bf16 tensor-core peaks (FLOP/s) for MFU: NVIDIA's published BF16 Tensor Core figures, which are
# "with sparsity", halved. Keyed by the words of a device name (torch.cuda.get_device_name); the entry
# needing the most words wins, whatever the order here (an L40S is not an L4, an H100 PCIe or NVL not an
# SXM, an H200 NVL not an H200 SXM). Other devices report no MFU rather than a guess.
PEAK_FLOPS = [({"H100", "PCIE"}, 756e12), ({"H100", "NVL"}, 835e12), ({"H100"}, 989e12),
              ({"H200", "NVL"}, 835e12), ({"H200"}, 989e12), ({"GH200"}, 989e12), ({"A100"}, 312e12),
              ({"L40S"}, 362e12), ({"L40"}, 181e12), ({"L4"}, 121e12), ({"A10"}, 125e12)]


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of a CUDA device by its name (torch.cuda.get_device_name); None if unknown.
    Whole words, case-insensitive; the most specific matching entry (most words) first."""
    words = set(re.split(r"[\s\-_]+", device_name.upper()))
    found = [(len(need), peak) for need, peak in PEAK_FLOPS if {w.upper() for w in need} <= words]
    return max(found, key=lambda f: f[0])[1] if found else None


@dataclass
class TrialResult:
    """How a trial ended."""

    status: str  # completed | diverged | oom
    reason: str  # one line: why it stopped
    step: int  # optimizer steps done
    metrics: dict[str, float] = field(default_factory=dict)  # the last evaluation's metrics
    out_dir: str = ""
    # True when OUT/checkpoint had already used this config's budget: nothing was trained by this
    # call, `metrics` is a re-evaluation of that checkpoint (the reason says so).
    already_done: bool = False
    # Unix time the run ended: the sweep's tracker dates the trial's MLflow run by it (a file's
    # mtime is the time of the copy once the trial directory comes from object storage).
    finished_at: float = field(default_factory=time.time)

    def to_json(self) -> dict:
        # the run's own fields last: the metrics carry the step of their evaluation, which for a run
        # that diverged or ran out of memory after it is not the steps done
        return {**self.metrics, "status": self.status, "reason": self.reason, "step": self.step,
                "already_done": self.already_done, "finished_at": self.finished_at}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError([Problem("train.device", f"{name!r} requested but CUDA is not available",
                                   "use train.device=auto or cpu")], "train")
    return torch.device(name)


def _check_fit(cfg: TrialConfig, data) -> None:
    """The loaded data must fit the model's input: vocabulary, image shape, classes."""
    vision = cfg.model.task == "vision"
    raise_if(fit_problems(cfg.model, None if vision else data.vocab_size, data.image_shape if vision else None,
                          data.n_classes if vision else None), "config vs data")


def run_trial(cfg: TrialConfig, reporter: Reporter | None = None, resume: bool = True,
              derive: Callable[[dict], dict] | None = None) -> TrialResult:
    """Train `cfg` to its budget, evaluating and checkpointing on the way.

    `derive(metrics) -> more metrics` adds to every evaluation (a sweep's compare/* gains).
    With `resume`, continues exactly from OUT/checkpoint when one exists (same batches, same
    RNG, same optimizer state), so an interrupted-and-resumed run equals an uninterrupted one.
    Only the same run continues: a checkpoint written with another config (budget keys and out_dir
    aside) is a ConfigError, raised before anything is loaded or written. A checkpoint that used
    the budget trains nothing: its evaluation is re-run and reported, the result says `already_done`.
    Without `resume`, an earlier run's checkpoint and result there are deleted first.
    """
    tc, task = cfg.train, cfg.model.task
    ckpt_dir = os.path.join(cfg.out_dir, "checkpoint")
    result_path = os.path.join(cfg.out_dir, "result.json")
    resuming = resume and checkpoint.exists(ckpt_dir)
    if resuming:
        checkpoint.check_resumable(ckpt_dir, cfg)
    device = resolve_device(tc.device)
    data_key = resume_key(cfg.data, task)  # before loading: the files as they are read
    data = load_data(cfg.data, task)
    _check_fit(cfg, data)
    torch.manual_seed(tc.seed)
    model = build_model(cfg.model).to(device)
    opt = make_optimizer(model, tc, device)
    fwd = torch.compile(model) if tc.compile else model
    bf16 = tc.precision == "bf16" or (tc.precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    if task == "lm":
        sampler = LMSampler(data.train, tc.batch_size, cfg.model.seq_len, seed=tc.seed)
        val = lm_val_batches(data.val, tc.batch_size, cfg.model.seq_len, tc.eval_batches, tc.eval_windows)
        bytes_per_token = data.bytes_per_token
    else:
        sampler = VisionSampler(data.train_x, data.train_y, tc.batch_size, tc.seed, data.mean, data.std)
        val = vision_val_batches(data, tc.batch_size)
        bytes_per_token = None
    step_tokens, total_steps = tokens_per_step(cfg), planned_steps(cfg)

    step, train_time = 0, 0.0
    # Throughput is timed apart from train_time (which budgets and resume judge by): the first
    # WARMUP_STEPS of each start hold torch.compile's compilation and the first recompile, and the
    # optimizer's lazy imports, which are not the run's speed. perf = [steps timed, their seconds,
    # the sum of their forward FLOPs per token]: a DNA's FLOPs/token move as it learns to route, so
    # the work tokens/s was measured on is the mean over those steps, not the last evaluation's.
    perf = [0, 0.0, 0.0]
    if resuming:
        st = checkpoint.load(ckpt_dir)
        if st.get("data_key", data_key) != data_key:  # checkpoints before data_key: not known, as then
            # the config is the same, the files are not: the run went on over other data, said nowhere
            raise ConfigError([Problem("data.path", f"the data files changed since the checkpoint in {ckpt_dir} "
                                       f"was written (names and sizes; files {st['data_key'].split('/')[-1]} then, "
                                       f"{data_key.split('/')[-1] or 0} now)",
                                       "put the data back as it was, or pass --no-resume to start over (or --out "
                                       "DIR elsewhere)")], source=f"resume from {ckpt_dir}")
        if st.get("weights_only") and int(st["step"]) < total_steps:
            # a finished sweep trial keeps its weights, not the optimizer (dnasweep.sweep.storage):
            # continuing without the optimizer state would not be the same run
            raise ConfigError([Problem("out_dir", f"{ckpt_dir} keeps the weights of a finished sweep trial "
                                       f"(step {int(st['step'])}), not its optimizer state: training cannot go on "
                                       f"from it to step {total_steps}",
                                       "pass --no-resume to train from scratch there, or --out DIR elsewhere; "
                                       "`dnasweep analyze` reads it as it is")], source=f"resume from {ckpt_dir}")
        model.load_state_dict(st["model"])
        if not st.get("weights_only"):
            opt.load_state_dict(st["optimizer"])
        sampler.load_state_dict(st["sampler"])
        checkpoint.set_rng_state(st["rng"])
        step, train_time = int(st["step"]), float(st["train_time"])
        perf = list(st.get("perf", (step, train_time)))  # checkpoints before perf: all of it, as then
        perf += [math.nan] * (3 - len(perf))  # checkpoints before the FLOPs sum: unknown
        plan = [list(p) for p in st.get("lr_plan", [])]  # checkpoints before lr_plan: unknown
    else:
        plan = [[0, total_steps]]
    # The cosine runs to total_steps, so a run extended (or shortened) on resume changes its LR
    # schedule midway: recorded as segments [from step, planned total], said in the result.
    if plan and plan[-1][1] != total_steps and step < total_steps:
        plan.append([step, total_steps])
    start = step
    already_done = resuming and (step >= total_steps or (tc.time_limit_s is not None and train_time >= tc.time_limit_s))
    if not resume:  # start over: nothing of an earlier run here may be resumed or reported later
        checkpoint.remove(ckpt_dir)
    if already_done:  # OUT (config.yaml, metrics.jsonl, result.json) stays as the run that trained it left it
        jsonl = None
    else:
        with contextlib.suppress(FileNotFoundError):  # an earlier result is not this run's, which may crash
            os.remove(result_path)
        os.makedirs(cfg.out_dir, exist_ok=True)
        with open(os.path.join(cfg.out_dir, "config.yaml"), "w") as f:
            f.write(to_yaml(cfg))
        # resuming: drops the rows logged after the checkpoint; otherwise: starts the file afresh
        jsonl = JsonlReporter(os.path.join(cfg.out_dir, "metrics.jsonl"), truncate_after_step=step if step else None)
    rep = Reporters(jsonl, reporter)
    rep.begin(step)
    if (resuming and not already_done and getattr(reporter, "resend_evaluation", False)
            and (st.get("eval") or {}).get(M.STEP) == step):
        # This checkpoint was saved by the evaluation at its step, which a worker killed between the
        # save and the report never sent: a sweep's history lacked it, and MO-ASHA judged the rung
        # by a later report. Sent again (a sweep's scheduler and tracker keep one report per step);
        # metrics.jsonl kept its copy.
        reporter.report(dict(st["eval"]))

    def save(evaluation: dict | None = None) -> str:
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "eval": evaluation,
                 "sampler": sampler.state_dict(), "rng": checkpoint.rng_state(), "train_time": train_time,
                 "perf": [perf[0], perf[1], float(perf[2])], "lr_plan": plan, "data_key": data_key,
                 # the steps since the last log row: the next row averages them as an unbroken run would
                 "row_logs": [[float(v) for v in skip_log], [float(v) for v in drop_log],
                              [float(v) for v in eval_skip]]}
        return checkpoint.save(ckpt_dir, state, to_yaml(cfg))

    def tokens_per_s() -> float:
        """Training tokens/s past each start's warm-up (all steps while there are none yet)."""
        n, t = perf[:2] if perf[0] else (step, train_time)
        return n * step_tokens / max(t, 1e-9)

    def do_eval() -> dict:
        res = evaluate(model, val, cfg.loss, device, autocast, bytes_per_token)
        res.update({M.STEP: step, M.PARAMS_TOTAL: float(model.params_total)})
        if eval_skip and M.IDENTITY_FRACTION in res:  # (none: a run resumed at its end, evaluated again)
            res[M.ROUTER_IDENTITY_GAP] = res[M.IDENTITY_FRACTION] - sum(eval_skip) / len(eval_skip)
            eval_skip.clear()
        if train_time > 0:
            res[M.TOKENS_PER_S] = tokens_per_s()
            # the FLOPs of the steps tokens/s timed (every step while none is past warm-up yet)
            # (the warm-up steps' while none is past it: the evaluation's FLOPs are another batch's, in
            # eval mode, and read 30% high after 2 steps)
            train_flops = float(perf[2]) / perf[0] if perf[0] else float(warm[1]) / warm[0] if warm[0] else math.nan
            if math.isfinite(train_flops):
                res[M.TRAIN_FLOPS_PER_TOKEN] = train_flops
            # the peaks are bf16 tensor-core ones: an fp32 run's MFU against them would be a third too low
            peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" and bf16 else None
            if peak and math.isfinite(train_flops):  # training FLOPs ~ 3x forward
                res[M.MFU] = 3 * train_flops * res[M.TOKENS_PER_S] / peak
        return {**res, **(derive(res) if derive else {})}

    status, reason, last, where = "completed", f"reached {total_steps} steps", {}, "before the first step"
    warm = [0, 0.0]  # this start's warm-up steps and their FLOPs/token sum (perf/* while none is past it)
    model.train()
    skip_log: list[float] = []  # identity share of each training step since the last log row
    drop_log: list = []  # compiled: share of slots dropped by capacity per step (0-dim tensors)
    eval_skip: list[float] = []  # the same as skip_log, since the last evaluation
    if resuming:
        logs = [list(v) for v in st.get("row_logs", ())]
        skip_log, drop_log, eval_skip = (logs + [[], [], []])[:3]
    try:
        while step < total_steps and not already_done:
            where = f"at step {step + 1}"
            t0 = time.perf_counter()
            lr = lr_at(step, tc, total_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            ce_sum, aux_sum, stats = 0.0, 0.0, []
            for _ in range(tc.grad_accum):
                x, y = sampler.next()
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast():
                    out = fwd(x)
                    loss, parts = compute_loss(out, y, cfg.loss)
                (loss / tc.grad_accum).backward()
                ce_sum += float(parts["ce"])
                aux_sum += float(parts["aux"])
                stats.append(out.stats)
            if tc.grad_accum > 1:  # the routing feedback and its logged shares see the whole step
                out = dataclasses.replace(out, stats=combine(stats))
            ce = ce_sum / tc.grad_accum
            if not math.isfinite(ce) or not math.isfinite(aux_sum):
                status, reason = "diverged", f"non-finite loss ({ce}) at step {step + 1}"
                break
            # The norm is taken with clipping off too: a finite loss can still give a non-finite gradient,
            # and one such update leaves weights that evaluate to NaN (a "completed" NaN result).
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
            if not math.isfinite(float(norm)):
                status, reason = "diverged", f"non-finite gradient norm ({float(norm)}) at step {step + 1}"
                break
            opt.step()
            opt.zero_grad(set_to_none=True)
            model.update_routing_biases(out)
            if out.stats.slots_SM is not None:  # routed: the identity share the skip control acts on
                skip_log.append(out.stats.identity_fraction)
                eval_skip.append(skip_log[-1])
                if tc.compile:  # static capacities may drop tokens: say how many (read once per log row)
                    drop_log.append(out.stats.dropped_fraction_)
            step += 1
            dt = time.perf_counter() - t0
            train_time += dt
            if step - start > WARMUP_STEPS:  # past this start's warm-up (a tensor sum: no host sync here)
                perf = [perf[0] + 1, perf[1] + dt, perf[2] + out.stats.flops_per_token_]
            else:
                warm = [warm[0] + 1, warm[1] + out.stats.flops_per_token_]
            if step % tc.log_every == 0 or step == total_steps:
                row = {M.STEP: step, M.TRAIN_LOSS: ce, M.TRAIN_AUX: aux_sum / tc.grad_accum, "train/lr": lr,
                       M.TOKENS_PER_S: tokens_per_s()}
                if skip_log:
                    row[M.ROUTER_TRAIN_IDENTITY] = sum(skip_log) / len(skip_log)
                    skip_log.clear()
                if drop_log:
                    row[M.ROUTER_DROPPED] = float(sum(drop_log)) / len(drop_log)
                    drop_log.clear()
                rep.report(row)
            # training time, as resume judges a run done by (wall time would count evaluations, and
            # a run stopped by the limit trained on when run again)
            timed_out = tc.time_limit_s is not None and train_time >= tc.time_limit_s
            if timed_out:
                reason = f"time limit {tc.time_limit_s:g}s reached at step {step}"
            if step % tc.eval_every == 0 or step == total_steps or timed_out:
                where = f"in the evaluation after step {step}"
                res = do_eval()
                if not all(math.isfinite(res[k]) for k in (M.VAL_LOSS, M.FLOPS_PER_TOKEN) if k in res):
                    # weights that evaluate to NaN/inf: neither a result nor a checkpoint to go on from
                    status, reason = "diverged", f"non-finite {M.VAL_LOSS} ({res.get(M.VAL_LOSS)}) at step {step}"
                    break
                last = res
                rep.report(last, save(last))
            elif tc.checkpoint_every and step % tc.checkpoint_every == 0:
                save()
            if timed_out:
                break
        if status == "completed" and not last:  # resumed from the final checkpoint: report its evaluation
            where = f"in the evaluation of the checkpoint at step {step}"
            last = do_eval()  # (a sweep trial retried after its last checkpoint reports its objectives so)
            rep.report(last)
    except Exception as e:
        if not is_oom(e):
            raise
        # CUDA OOM, or the host memory limit (resources.memory_gb): this trial fails, the sweep goes on
        status, reason = "oom", f"out of memory {where}: {str(e).splitlines()[0][:300]}"
    finally:
        rep.close()
    if status == "oom" and device.type == "cuda":  # after the except block has dropped its frames
        torch.cuda.empty_cache()
    if status == "completed" and already_done:
        reason = f"already complete: trained to step {step} earlier ({cfg.out_dir}); nothing trained now"
    elif start:
        reason += f"; continued from step {start}"
    if len(plan) > 1:
        reason += "; LR schedule re-planned on resume: " + ", then ".join(
            f"from step {a} a cosine to step {b}" for a, b in plan) + " (not one cosine over the whole run)"
    result = TrialResult(status, reason, step, last, cfg.out_dir, already_done=already_done)
    if not already_done or not os.path.exists(result_path):  # an existing one is the run that trained
        with open(result_path, "w") as f:
            json.dump(result.to_json(), f, indent=1)
    return result
