"""What `dnasweep validate` prints about a space: dimensions, budget, the parameter / FLOP range
over its corners, and warnings for valid but probably unintended settings."""

from __future__ import annotations

from dnasweep import metrics as M
from dnasweep.space.apply import active_values, try_apply
from dnasweep.space.feasibility import corners
from dnasweep.space.space import SearchSpace


def space_warnings(space: SearchSpace) -> list[str]:
    """Valid but probably unintended settings, printed by validate and run."""
    out = []
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
    return out


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
