"""Training a sweep's dense reference ladder on the cluster (dnasweep.space.reference has the rest).

Each rung runs as a Ray task with one trial's resources, `budget.concurrent` at a time, before the
trials start (their compare/* gains need the frontier). The driver keeps every rung's result in
ROOT/reference-cache/HASH.json (a later sweep with the same base reuses it) and the sweep's own
SWEEP/reference.json (a resumed sweep never retrains), and writes SWEEP/reference.csv.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile

from dnasweep import metrics as M
from dnasweep.config import flatten, to_dict
from dnasweep.space import SearchSpace
from dnasweep.space.reference import Frontier, config_hash, ladder
from dnasweep.sweep.study import read_json

FILE = "reference.json"  # SWEEP/reference.json: [{hash, cache_key, d_model, dense_layers, result, rows, ...}]
CSV_COLUMNS = ["d_model", "dense_layers", "blocks", M.PARAMS_TOTAL, M.FLOPS_PER_TOKEN, M.VAL_LOSS, M.TOKENS_PER_S,
               "status", "frontier", "reused", "hash"]


def _train_rung(cfg_dict: dict) -> dict:
    """One rung, on a worker: train it in node-local scratch, return its result and metric rows."""
    from dnasweep.config import build_trial
    from dnasweep.plugins import load_plugins
    from dnasweep.train.loop import run_trial

    load_plugins()
    out = tempfile.mkdtemp(prefix="dnasweep-reference-")
    try:
        cfg = build_trial(cfg_dict, [f"out_dir={json.dumps(out)}"])  # quoted: TMPDIR may hold any path
        result = run_trial(cfg, resume=False)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return {"result": result.to_json(), "rows": rows, "hardware": _worker_hardware(cfg.train.device)}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _worker_hardware(device: str) -> str:
    """On a worker: the hardware a trial with `train.device` = `device` would train on."""
    from dnasweep.space.reference import hardware
    from dnasweep.train.loop import resolve_device

    return hardware(resolve_device(device))


def _device_kind(cfg, space: SearchSpace) -> str:
    """cpu or cuda: where this sweep's rungs train (train.device auto: a GPU iff trials reserve one)."""
    d = cfg.train.device
    return ("cuda" if space.resources.gpu > 0 else "cpu") if d == "auto" else d.split(":")[0]


def _planned(rung: dict) -> int:
    """The steps a rung was to train (recorded since; an older SWEEP/reference.json has its config)."""
    if "planned_steps" in rung:
        return int(rung["planned_steps"])
    if not rung.get("config"):
        return 0
    from dnasweep.config.trial import build_trial, planned_steps

    nested: dict = {}
    for k, v in rung.get("config", {}).items():
        *head, leaf = k.split(".")
        d = nested
        for h in head:
            d = d.setdefault(h, {})
        d[leaf] = v
    try:
        return planned_steps(build_trial(nested))
    except Exception:  # noqa: BLE001 - a config this version no longer reads: judge by status alone
        return 0


def rung_status(rung: dict) -> str:
    """How a rung ended, the one rule for what stands on the dense frontier: `completed` (every
    planned step), `time-limited` (stopped by train.time_limit_s before them: where its machine's
    speed put it, and a short rung's higher loss would inflate every gain, so it is never on the
    frontier, nor cached), `diverged`, `oom`, or `untrained` (the sweep stopped before it ended)."""
    r = rung.get("result") or {}
    s = r.get("status") or "untrained"
    return "time-limited" if s == "completed" and r.get("step", math.inf) < _planned(rung) else s


def _reusable(cached: dict, cfg, space: SearchSpace) -> bool:
    """Whether a rung of the shared cache stands for this sweep's: completed all its planned steps
    (rung_status), on the same kind of device (under precision auto, CPU rungs train in fp32 and GPU
    rungs in bf16). An out-of-memory rung is a fact of one machine and its load: trained again."""
    from dnasweep.config.trial import planned_steps

    return (rung_status({**cached, "planned_steps": planned_steps(cfg)}) == "completed"
            and str(cached.get("hardware") or "").split(":")[0] == _device_kind(cfg, space))


def ranks_speed(space: SearchSpace) -> bool:
    """Whether the sweep's objectives or constraints read compare/speed_gain."""
    return M.SPEED_GAIN in {o.metric for o in space.objectives} | {c.metric for c in space.constraints}


def train_reference(space: SearchSpace, sweep_dir: str, root: str, log) -> list[dict]:
    """Every rung of the ladder with its result, training only those neither this sweep nor the
    cache has. Empty when the space has no `reference:` section. A sweep that ranks or constrains
    trials by compare/speed_gain reuses no cached rung: tokens/s is a fact of the machine, a trial
    gets a speed gain only against rungs of its own hardware, and a ladder cached on another machine
    left every trial without one (an objective then failed every trial, a constraint broke all).
    For the same reason such a sweep, resumed on a cluster of other hardware, trains its own rungs
    again (a worker with a trial's resources is asked what it runs on)."""
    import ray

    from dnasweep.config.trial import planned_steps
    from dnasweep.sweep.cluster import bundle

    ref = space.config.reference
    if not ref.d_model:
        return []
    own = {r["hash"]: r for r in read_json(os.path.join(sweep_dir, FILE)) or []}
    cache = os.path.join(os.path.abspath(root), "reference-cache")
    rungs, todo, speed = [], [], ranks_speed(space)
    cfgs = ladder(space.base, ref.d_model, ref.dense_layers)
    b = bundle(space)
    task_options = dict(num_cpus=b.get("CPU", 0), num_gpus=b.get("GPU", 0), memory=b.get("memory"),
                        resources={k: v for k, v in b.items() if k not in ("CPU", "GPU", "memory")} or None)
    if speed and own:
        # A resume on another cluster kept rungs timed on the first one: every new trial's hardware
        # differed from theirs, no trial got a speed gain, and the objective failed them all. Its
        # speeds are a fact of that machine: the rungs are timed again where the trials now run.
        here = ray.get(ray.remote(_worker_hardware).options(**task_options).remote(cfgs[0].train.device))
        stale = sorted({r.get("hardware") or "a machine not recorded" for r in own.values()
                        if r.get("hardware") != here})
        if stale:
            log(f"reference: this sweep's dense models were timed on {', '.join(stale)}; its trials now run on "
                f"{here}: training them again (compare/speed_gain compares speeds on one machine)")
            own = {h: r for h, r in own.items() if r.get("hardware") == here}
    for cfg in cfgs:
        h, key = config_hash(cfg, data=False), config_hash(cfg)
        # This sweep's own rungs stand as they are (a resumed sweep keeps its frontier); from the
        # shared cache only those that trained their whole budget on this sweep's kind of device.
        cached = read_json(os.path.join(cache, f"{key}.json")) if ref.cache and not speed else None
        known = own.get(h) or (cached if cached and _reusable(cached, cfg, space) else None)
        entry = {"hash": h, "cache_key": key, "d_model": cfg.model.d_model, "dense_layers": cfg.model.dense_layers,
                 "blocks": cfg.model.n_backbone + cfg.model.dense_layers, "planned_steps": planned_steps(cfg),
                 "config": flatten(to_dict(cfg)), "reused": known is not None}
        rungs.append({**entry, **({"result": known["result"], "rows": known["rows"],
                                    "hardware": known.get("hardware")} if known else {})})
        if not known:
            todo.append((len(rungs) - 1, to_dict(cfg)))
    if todo:
        log(f"reference: training {len(todo)} dense model(s) of the ladder ({len(rungs) - len(todo)} reused"
            + ("; none from the cache: compare/speed_gain needs rungs timed on this cluster" if speed else "") + ")")
        task = ray.remote(_train_rung).options(**task_options)
        running: dict = {}
        while todo or running:
            while todo and len(running) < space.budget.concurrent:
                i, d = todo.pop(0)
                running[task.remote(d)] = i
            (done,), _ = ray.wait(list(running), num_returns=1)
            i = running.pop(done)
            rungs[i].update(ray.get(done))
            if rung_status(rungs[i]) == "completed":
                os.makedirs(cache, exist_ok=True)
                with open(os.path.join(cache, f"{rungs[i]['cache_key']}.json"), "w") as f:
                    json.dump(rungs[i], f)
            r = rungs[i]["result"]
            log(f"reference: dense d_model={rungs[i]['d_model']} dense_layers={rungs[i]['dense_layers']}: "
                f"{rung_status(rungs[i])} ({r.get('reason')}), val/loss={r.get(M.VAL_LOSS, float('nan')):.4g}, "
                f"compute/flops_per_token={r.get(M.FLOPS_PER_TOKEN, float('nan')):.4g}")
    elif rungs:
        log(f"reference: all {len(rungs)} dense models of the ladder reused (trained before with the same config)")
    write(sweep_dir, rungs)
    return rungs


def frontier_of(rungs: list[dict]) -> Frontier:
    """The dense frontier of the rungs that trained their whole budget (rung_status)."""
    return Frontier([{**r["result"], "hardware": r.get("hardware")} for r in rungs
                     if rung_status(r) == "completed"])


def frontier_keys(rungs: list[dict]) -> set[tuple]:
    """The frontier's points as (FLOPs/token, val/loss): what `on_frontier` looks a rung up by."""
    return {p[:2] for p in frontier_of(rungs).points}


def on_frontier(rung: dict, keys: set[tuple]) -> bool:
    """Whether `rung` is one of the frontier's points (`keys`: frontier_keys). By FLOPs and loss: a
    dominated rung of the same FLOPs/token as a frontier rung (a ladder listing one size twice with
    another seed, say) read 'frontier: yes' when FLOPs alone matched."""
    r = rung.get("result", {})
    return rung_status(rung) == "completed" and (r.get(M.FLOPS_PER_TOKEN), r.get(M.VAL_LOSS)) in keys


def write(sweep_dir: str, rungs: list[dict]) -> list[str]:
    """SWEEP/reference.json (everything) and SWEEP/reference.csv (one row per rung)."""
    with open(os.path.join(sweep_dir, FILE), "w") as f:
        json.dump(rungs, f)
    on = frontier_keys(rungs)
    path = os.path.join(sweep_dir, "reference.csv")
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rungs:
            res = r.get("result", {})
            w.writerow({**{k: res.get(k) for k in CSV_COLUMNS}, "d_model": r["d_model"],
                        "dense_layers": r["dense_layers"], "blocks": blocks(r), "status": rung_status(r),
                        "reused": r["reused"],
                        "frontier": on_frontier(r, on), "hash": r["hash"]})
    return [os.path.join(sweep_dir, FILE), path]


def blocks(rung: dict) -> int | None:
    """A rung's depth: the backbone's blocks and its dense_layers (dense_layers alone understates it)."""
    if "blocks" in rung:
        return rung["blocks"]
    n = rung.get("config", {}).get("model.n_backbone")
    return None if n is None else n + rung["dense_layers"]


def read(sweep_dir: str) -> list[dict]:
    """The rungs a sweep recorded (empty without a ladder)."""
    return read_json(os.path.join(sweep_dir, FILE)) or []
