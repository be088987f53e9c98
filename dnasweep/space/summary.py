"""What `dnasweep validate` prints about a space: dimensions, budget, the parameter / FLOP range
over its corners, and warnings for valid but probably unintended settings."""

from __future__ import annotations

from dnasweep import metrics as M
from dnasweep.model.config import BalanceConfig, RouterConfig
from dnasweep.space.apply import active_values, try_apply
from dnasweep.space.feasibility import corners
from dnasweep.space.space import SearchSpace
from dnasweep.space.steps import get_path


def space_warnings(space: SearchSpace) -> list[str]:
    """Valid but probably unintended settings, printed by validate and run."""
    out = list(space.notes)
    if space.sampler.type == "gp" and space.budget.trials > 100:
        out.append(f"sampler.type=gp with budget.trials={space.budget.trials}: Optuna's GPSampler took ~1 s per "
                   "suggestion at 100 finished trials and ~5 s at 500 on 2 CPU cores (bench/suggest.py), blocking "
                   "the driver meanwhile; tpe stays under 60 ms there")
    for o in space.objectives:
        if o.metric in M.BOUND_OF:
            out.append(f"objective {o.metric}: a trial whose val/loss lies outside the dense rungs' losses gets "
                       "only a bound ('> x' or '< x' in the front's table), and the searcher ranks it by x. Widen "
                       "reference: (d_model, dense_layers) so the rungs' losses span the trials'")
    for c in space.constraints:
        if c.metric in M.BOUND_OF:
            out.append(f"constraint {c.key}: a trial whose gain is only a bound that does not settle it (e.g. "
                       "'< 1.2' against '>= 1') counts as breaking it")
    out += _same_trial_warnings(space) + _router_load_warnings(space) + _unused_warnings(space)
    return out


def _drawable(space: SearchSpace, path: str) -> list:
    """The values of dotted trial key `path` a trial can have: the base's (unless a dimension always
    sets it), and a dimension's choices or its range's two ends. Enough for the max / min / "ever"
    questions below (an int range's inner values lie between its ends)."""
    q = next((q for q in space.params if q.path == path), None)
    base = get_path(space.base, path)
    return ([] if q is not None and not q.when else [base]) + (q.ends() if q is not None else [])


def _set(space: SearchSpace, section, path: str) -> bool:
    """Whether `path` is searched, or the base gives it a value other than its default in `section`
    (a dataclass instance of defaults): a setting the file asks for, not one it merely inherits."""
    return (any(q.path == path for q in space.params)
            or get_path(space.base, path) != getattr(section, path.split(".")[-1]))


def _same_trial_warnings(space: SearchSpace) -> list[str]:
    """No dimension draws two values: every trial is the base config (the same seed too), so a sweep
    trains one model budget.trials times and its front is one point."""
    if any(len({repr(v) for v in q.ends()}) > 1 for q in space.params):
        return []
    what = ("has no search: dimensions" if not space.params else
            f"has {len(space.params)} search: dimension(s), each with one value")
    return [f"the space {what}: every one of the budget.trials={space.budget.trials} trials would train the same "
            "config. Add dimensions under search: (e.g. train.lr: {float: [1.0e-3, 1.0e-2], log: true}), or train "
            f"that one config once with `dnasweep train {space.source}`"]


def _router_load_warnings(space: SearchSpace) -> list[str]:
    """A router/load/m<i> objective or constraint whose module index no drawable pool reaches (the
    pool's modules are m0 to m<size - 1>): no trial reports it, so every trial fails (objective) or
    is infeasible (constraint). The format itself is refused by validation (metrics.is_trial_metric)."""
    size = sum(max(_drawable(space, f"model.pool.n_{k}"))
               for k in ("transformer", "attention", "mlp", "identity"))
    named = [(f"objective {o.metric}", o.metric, "every trial would fail") for o in space.objectives]
    named += [(f"constraint {c.key}", c.metric, "no trial could satisfy it") for c in space.constraints]
    return [f"{what}: the largest pool this space can draw has {size} modules, reported as "
            f"{M.ROUTER_LOAD_PREFIX}m0 to {M.ROUTER_LOAD_PREFIX}m{size - 1}, so no trial reports {metric}: {why}. "
            f"Use an index below {size} (identity modules come last), or draw larger model.pool sizes"
            for what, metric, why in named if (i := M.router_load_index(metric)) is not None and i >= size]


def _unused_warnings(space: SearchSpace) -> list[str]:
    """Settings the file gives (in base or searched) that no trial of the space reads: the value, or
    the sweep over it, changes nothing."""
    from dnasweep.model.registry import _BUILTINS, find_router

    out, bal, rtr = [], BalanceConfig(), RouterConfig()
    if True not in _drawable(space, "model.balance.identity_bias"):
        skip = [k for k in ("target_skip", "skip_control", "skip_kp", "skip_ki", "identity_rate")
                if _set(space, bal, f"model.balance.{k}")]
        if skip:
            them = "them" if len(skip) > 1 else "it"
            out.append(f"model.balance.{', model.balance.'.join(skip)}: set, but no trial turns "
                       f"model.balance.identity_bias on, and only the skip control reads {them}. Set (or search) "
                       f"model.balance.identity_bias: true, or drop {them}")
    types = set(_drawable(space, "model.router.type"))
    specs = [find_router(t) for t in types]
    if _set(space, rtr, "model.router.threshold") and not any(s is not None and s.threshold for s in specs):
        out.append(f"model.router.threshold: set, but no trial uses a threshold router (model.router.type: "
                   f"{', '.join(sorted(map(str, types)))}). Add threshold to model.router.type, or drop it")
    # noise is read by noisy_topk only; a plugin's router might read it too, so only built-ins are judged
    builtin = all(s is not None and getattr(s.rule, "__module__", "") == _BUILTINS for s in specs)
    if _set(space, rtr, "model.router.noise") and builtin and "noisy_topk" not in types:
        out.append(f"model.router.noise: set, but no trial uses the noisy_topk router, the one that reads it "
                   f"(model.router.type: {', '.join(sorted(map(str, types)))}). Add noisy_topk to "
                   "model.router.type, or drop it")
    out += _fixed_compute_warnings(space, types)
    warm, steps = max(_drawable(space, "train.warmup_steps")), min(_drawable(space, "train.max_steps"))
    if warm >= steps:
        out.append(f"train.warmup_steps can be {warm:g} and train.max_steps {steps:g}: a trial with warm-up >= "
                   "its steps ends before the learning rate reaches train.lr, and never decays it. Lower "
                   "train.warmup_steps below train.max_steps")
    if any(q.path == "out_dir" for q in space.params):
        out.append("search.out_dir: every trial writes to its own directory in the sweep (the sweep sets out_dir), "
                   "so the searched values are never used. Drop the dimension")
    return out


def _fixed_compute_warnings(space: SearchSpace, types: set) -> list[str]:
    """A compute penalty drawn with routers whose FLOPs it cannot move: hash (no learnt router: no
    penalty at all), and those that give every module a fixed number of tokens (dense, expert_choice:
    it moves their gates, never their FLOPs). Those trials sweep a setting that trades no compute."""
    from dnasweep.model.registry import find_router

    weights = [v for v in _drawable(space, "loss.compute_weight") if v > 0]
    if not weights:
        return []
    q = next((q for q in space.params if q.path == "loss.compute_weight"), None)
    drawn = set(q.when["model.router.type"]) & types if q is not None and "model.router.type" in q.when else types
    specs = {t: find_router(t) for t in drawn}
    fixed = sorted(str(t) for t, s in specs.items() if s is not None and (not s.learns or s.all_modules or s.capacity))
    if not fixed:
        return []
    rest = sorted(str(t) for t in drawn if str(t) not in fixed)
    fix = (f"Condition it on the others: loss.compute_weight: {{..., when: {{model.router.type: [{', '.join(rest)}]}}}}"
           if rest else "Drop it, or draw routers whose FLOPs follow the gates (topk, sigmoid, threshold)")
    return [f"loss.compute_weight: up to {max(weights):g} with model.router.type {', '.join(fixed)}, whose FLOPs the "
            "compute penalty cannot change (hash learns no router; dense and expert_choice give every module a fixed "
            f"number of tokens): those trials sweep a weight that trades no compute. {fix}"]


def summarize(space: SearchSpace) -> str:
    """Dimensions, budget, and the parameter/FLOP range of the space computed from the config alone."""
    from dnasweep.model import nominal

    lines = [f"{space.source}: valid search space", f"  {len(space.params)} dimensions:"]
    for q in space.params:
        rng = q.choices if q.kind == "choice" else f"[{q.low}, {q.high}]" + (" log" if q.log else "")
        cond = f"  when {q.when}" if q.when else ""
        lines.append(f"    {q.path:<32} {q.kind:<6} {rng}{cond}")
    totals, flops, bad = [], [], 0
    for point in corners(space.params):
        cfg = try_apply(space.base, active_values(space.params, point))
        if cfg is None:
            bad += 1  # a corner can be an invalid combination (e.g. top_k > pool size)
            continue
        n = nominal(cfg.model)
        totals.append(n.params_total)
        flops.append(n.flops_per_token)
    objs = ", ".join(f"{o.mode} {o.metric}" for o in space.objectives)
    b, r = space.budget, space.resources
    lines += [f"  objectives: {objs}",
              f"  constraints: {', '.join(c.key for c in space.constraints) or 'none'}",
              f"  sampler: {space.sampler.type} (seed {space.sampler.seed}), {b.trials} trials, {b.concurrent} at a "
              f"time, per trial: {r.cpu:g} CPU, {r.gpu:g} GPU" + (f", {r.memory_gb:g} GiB" if r.memory_gb else "")]
    ref = space.config.reference
    if ref.d_model:
        lines.append(f"  reference: {len(ref.d_model) * len(ref.dense_layers)} dense models (d_model {ref.d_model} x "
                     f"dense_layers {ref.dense_layers}), trained with the base's data and budget before the trials")
    if totals:
        lines.append(f"  parameters: {min(totals):,} to {max(totals):,}; nominal forward FLOPs/token: "
                     f"{min(flops):,.0f} to {max(flops):,.0f} (over {len(totals)} corners"
                     + (f"; {bad} corner combinations invalid)" if bad else ")"))
    return "\n".join(lines)
