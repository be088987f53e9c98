"""Every metric name dnasweep reports, in one place. Sweeps, trackers and tests import these
constants instead of spelling the strings, so a rename is one edit."""

TRAIN_LOSS = "train/loss"  # cross-entropy of the last optimizer step (nats/token)
TRAIN_AUX = "train/aux_loss"  # weighted sum of auxiliary (compute, balance, z) terms
VAL_LOSS = "val/loss"  # held-out cross-entropy, nats per token (LM) or per image (vision)
VAL_BPB = "val/bpb"  # held-out bits per byte (byte-level LM)
VAL_ACC = "val/acc"  # held-out top-1 accuracy (vision)
FLOPS_PER_TOKEN = "compute/flops_per_token"  # measured forward FLOPs per token/patch (useful)
FLOPS_EXECUTED_PER_TOKEN = "compute/flops_executed_per_token"  # incl. dispatch padding
PARAMS_ACTIVE = "params/active"  # mean parameters touched per token
PARAMS_TOTAL = "params/total"  # parameters in the model
IDENTITY_FRACTION = "router/identity_fraction"  # share of routed slots sent to identity modules
ROUTER_ENTROPY = "router/entropy"  # mean entropy (nats) of the router distributions
ROUTER_Z = "router/z_loss"  # mean squared log-partition of router logits (what z-loss shrinks)
ROUTER_LOAD_MAX = "router/load_max"  # largest per-module share of slots (1/M is balanced)
ROUTER_LOAD_PREFIX = "router/load/"  # + "m{index}": share of slots routed to that module
TOKENS_PER_S = "perf/tokens_per_s"  # training throughput
MFU = "perf/mfu"  # useful training FLOPs / peak (CUDA only)
STEP = "step"

# Sweep-level metrics, logged on the sweep's parent run (not usable as trial objectives).
SWEEP_HYPERVOLUME = "sweep/hypervolume"  # hypervolume of the feasible front after each finished trial
SWEEP_FRONT_SIZE = "sweep/front_size"  # feasible Pareto-front trials after each finished trial
SWEEP_PREFIX = "sweep/"
