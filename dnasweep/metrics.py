"""Every metric name dnasweep reports, in one place, and which trials report it. Sweeps, trackers
and tests import these constants instead of spelling the strings, so a rename is one edit; the
search-space checks read TRIAL_METRICS and REPORTED_BY (objectives and constraints must name a
metric the space's trials report)."""

import math
import re

TRAIN_LOSS = "train/loss"  # training loss of the last optimizer step, label smoothing included (nats/token)
TRAIN_AUX = "train/aux_loss"  # weighted sum of auxiliary (compute, balance, z) terms
VAL_LOSS = "val/loss"  # held-out cross-entropy, nats per token (LM) or per image (vision)
VAL_BPB = "val/bpb"  # held-out bits per byte (byte-level LM)
VAL_ACC = "val/acc"  # held-out top-1 accuracy (vision)
FLOPS_PER_TOKEN = "compute/flops_per_token"  # measured forward FLOPs per token/patch (useful)
# incl. dispatch padding, at evaluation (exact dispatch, 1.02-1.04x useful); compiled training pads every
# module to a static capacity instead (1.5-1.9x useful on the shipped bases with adapted capacities, in a
# review's count; dnasweep/model/pool.py), which this metric does not see
FLOPS_EXECUTED_PER_TOKEN = "compute/flops_executed_per_token"
PARAMS_ACTIVE = "params/active"  # mean parameters touched per token
PARAMS_TOTAL = "params/total"  # parameters in the model
# routed slots sent to identity; soft mixture and expert choice (their slot share is n_identity / M by construction):
# the gate weight on the skip path, a token expert choice left unpicked counting as skipped
IDENTITY_FRACTION = "router/identity_fraction"
ROUTER_ENTROPY = "router/entropy"  # mean entropy (nats) of the router distributions
ROUTER_Z = "router/z_loss"  # mean squared log-partition of router logits (what z-loss shrinks)
ROUTER_LOAD_MAX = "router/load_max"  # largest per-module share of slots (1/M is balanced)
ROUTER_LOAD_PREFIX = "router/load/"  # + "m{index}": share of slots routed to that module
# The one form of those names (train/evaluate.py: one per pool module, index 0 to pool size - 1, identity
# modules last). Listed in TRIAL_METRICS so that an unknown name's "did you mean" / "known:" shows it;
# is_trial_metric accepts its instances only (router/load/m3), never the form itself.
ROUTER_LOAD_FORM = ROUTER_LOAD_PREFIX + "m<i>"  # (this short: "did you mean" finds it for m03, module0, 0)
_ROUTER_LOAD = re.compile(re.escape(ROUTER_LOAD_PREFIX) + r"m(0|[1-9][0-9]*)")  # as f"m{i}" prints an int
ROUTER_TRAIN_IDENTITY = "router/train_identity_fraction"  # identity share of training slots since the last log row
# evaluation's identity share minus the training steps' since the previous evaluation: far from 0, the routing
# evaluated is not the one trained (a skip bias on a step-shaped response; selection noise off at evaluation)
ROUTER_IDENTITY_GAP = "router/identity_gap"
ROUTER_NONIDENTITY_PATHS = "router/distinct_paths"  # distinct non-identity paths of the evaluation tokens
ROUTER_COLLAPSED = "router/collapsed"  # 1.0 when evaluation finds the pool bypassed (is_collapsed), else 0.0
ROUTER_DROPPED = "router/dropped_fraction"  # share of computing slots dropped by static capacities (0 when exact)
PERF_PREFIX = "perf/"  # timings: measured anew by each attempt of a trial
TOKENS_PER_S = "perf/tokens_per_s"  # training throughput
TRAIN_FLOPS_PER_TOKEN = "perf/train_flops_per_token"  # mean useful forward FLOPs/token of the steps tokens/s timed
MFU = "perf/mfu"  # useful training FLOPs / peak (CUDA only)
STEP = "step"

# Against the sweep's dense reference frontier (a `reference:` ladder), at each evaluation (an early one
# sets a part-trained trial against rungs trained for the whole budget: docs/sweeps.md). Outside
# the ladder's range the gain is a bound, never an extrapolation: *_BOUND is +1 for "more than"
# (better than the largest dense model), -1 for "less than" (worse than the smallest), 0 exact.
COMPUTE_GAIN = "compare/compute_gain"  # dense FLOPs/token needed for this val/loss / this trial's FLOPs/token
COMPUTE_GAIN_BOUND = "compare/compute_gain_bound"
SPEED_GAIN = "compare/speed_gain"  # this trial's tokens/s / a dense model's tokens/s at this val/loss
SPEED_GAIN_BOUND = "compare/speed_gain_bound"
BOUND_OF = {COMPUTE_GAIN: COMPUTE_GAIN_BOUND, SPEED_GAIN: SPEED_GAIN_BOUND}  # a gain -> its bound's metric


def is_timed(key: str) -> bool:
    """Whether metric `key` is measured anew by each attempt of a trial: a timing (perf/*), or the
    speed gain, a trial's tokens/s over the dense rungs'."""
    return key.startswith(PERF_PREFIX) or key in (SPEED_GAIN, SPEED_GAIN_BOUND)

# Sweep-level metrics, logged on the sweep's parent run (not usable as trial objectives).
SWEEP_HYPERVOLUME = "sweep/hypervolume"  # feasible front's hypervolume after each complete trial, over the box
# between the best value of each objective and the reference point (1: the front fills it); step i: the i-th
# complete trial in completion order (pruned and failed trials add no step)
SWEEP_HYPERVOLUME_RAW = "sweep/hypervolume_raw"  # the same in the objectives' own units
SWEEP_FRONT_SIZE = "sweep/front_size"  # feasible Pareto-front trials after each complete trial
SWEEP_PREFIX = "sweep/"

# Every metric a trial reports: the names objectives and constraints may use.
TRIAL_METRICS = frozenset(v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str) and "/" in v
                          and not v.startswith(SWEEP_PREFIX) and not v.endswith("/"))  # a prefix names none
# Logged in training rows only, never in an evaluation's report, which is what a sweep ranks, prunes
# and constrains on: not usable as objectives or constraints.
TRAIN_ONLY = frozenset({TRAIN_LOSS, TRAIN_AUX, ROUTER_TRAIN_IDENTITY, ROUTER_DROPPED})
# Metrics only some trials report: metric (or prefix) -> which ones ("vision", "byte_lm", "routed",
# "learned", "reference": sweeps with a reference ladder, "cuda": trials on a CUDA device of known peak).
# (first match wins: exact names before the prefixes; "learned": routers with learnt logits, not hash,
# whose fixed table has no distribution to take an entropy or a log-partition of)
REPORTED_BY = {VAL_ACC: "vision", VAL_BPB: "byte_lm", MFU: "cuda", ROUTER_ENTROPY: "learned", ROUTER_Z: "learned",
               "router/": "routed", "compare/": "reference"}


def router_load_index(name: str) -> int | None:
    """The module index of a per-module load metric (router/load/m3 -> 3); None for any other name.
    Only the exact form the trainer reports: router/load/module0 or router/load/m03 would be
    accepted by a prefix test and then be missing from every trial's report."""
    m = _ROUTER_LOAD.fullmatch(name)
    return int(m.group(1)) if m else None


def is_trial_metric(name: str) -> bool:
    if name == ROUTER_LOAD_FORM:  # the form, listed for messages, names no metric
        return False
    return name in TRIAL_METRICS or router_load_index(name) is not None


def reported_by(name: str) -> str | None:
    """Which trials report `name` when not every trial does, else None."""
    return next((who for m, who in REPORTED_BY.items() if name == m or m.endswith("/") and name.startswith(m)), None)


# The collapse verdict (ROUTER_COLLAPSED, and the analysis report's opening line): the routed pool is
# bypassed when identity modules take this share of routed slots or more, or when the evaluation
# tokens take at most this many distinct non-identity paths (the model is then a fixed stack).
COLLAPSE_IDENTITY_SHARE = 0.95
COLLAPSE_MAX_PATHS = 1
# The front table's "skip gap" verdict: |ROUTER_IDENTITY_GAP| at least this. In the full LM sweep of
# docs/results.md the four front trials whose skip control held its target read at most 0.07 (step 100),
# 0.025 from step 200; the two that did not, 0.14-0.19 (noisy_topk) and 0.46-0.50 (trial 17).
SKIP_GAP_LIMIT = 0.1


def is_collapsed(identity_share: float, distinct_paths: int, paths_vary: bool = True) -> bool:
    """The collapse verdict. `paths_vary` False: the router sends every token through every module
    (soft mixture), one path by construction, so only the identity share can say collapse."""
    return identity_share >= COLLAPSE_IDENTITY_SHARE or (paths_vary and distinct_paths <= COLLAPSE_MAX_PATHS)


def is_number(v) -> bool:
    """A finite int or float, bool excluded: a value that can be logged and compared as a metric."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
