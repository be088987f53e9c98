"""Reading a sweep back from its directory: the Optuna study, the Pareto front, trial counts.
Used while a sweep runs, after it ends, and by `pareto`, `ls`, `analyze` and `resume`.
Optuna is imported inside functions: `is_sweep_dir` is cheap to import."""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dnasweep import metrics as M
from dnasweep.errors import ConfigError, Problem

if TYPE_CHECKING:  # annotations only: `dnasweep ls` reads journals and needs no config pipeline
    from dnasweep.space import SearchSpace

ABANDONED = "abandoned"  # Optuna user attr: lost with a killed driver; FAIL in Optuna, not a failed trial
STOPPED = "stopped_at"  # Optuna study user attr: when Ctrl-C / SIGTERM stopped the driver (None: run since)


@dataclass
class SweepResult:
    """What a sweep produced so far."""

    sweep_dir: str
    n_complete: int
    n_failed: int
    front: list[dict]  # Pareto-front trials: {"number", objectives..., params...}
    tracking_errors: list[str] = field(default_factory=list)  # MLflow failures (the sweep went on)
    interrupted: bool = False  # stopped before its budget (Ctrl-C / SIGTERM): `dnasweep resume` goes on
    n_abandoned: int = 0  # Optuna trials lost with a killed driver (re-sampled by the resumed sweep)
    n_pruned: int = 0  # trials MO-ASHA stopped at a rung (PRUNED in Optuna, never on the front)
    reference: list[dict] = field(default_factory=list)  # the dense ladder's rungs (sweep/reference.py)
    n_infeasible: int = 0  # complete trials that break a constraint (never on the front)
    infeasible: dict[str, int] = field(default_factory=dict)  # constraint -> complete trials breaking it


def is_sweep_dir(d: str) -> bool:
    """A directory written by `dnasweep run` (its Optuna journal and parsed space)."""
    return os.path.isfile(os.path.join(d, "optuna.log")) and os.path.isfile(os.path.join(d, "space.json"))


def front_trial_dirs(sweep_dir: str, front: list[dict]) -> list[str]:
    """SWEEP/trials/ID of each front row that knows its Ray trial id."""
    return [os.path.join(sweep_dir, "trials", r["ray_trial_id"]) for r in front if r.get("ray_trial_id")]


def journal(sweep_dir: str):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(os.path.join(sweep_dir, "optuna.log")))


def open_study(sweep_dir: str, command: str = "pareto"):
    """The sweep's Optuna study; a ConfigError (exit 2) when `sweep_dir` is not a sweep, or its journal
    holds no study of the directory's name (renamed, or an empty journal)."""
    import optuna

    if not is_sweep_dir(sweep_dir):
        raise ConfigError([Problem("SWEEP", f"{sweep_dir} is not a sweep directory (no optuna.log / space.json)",
                                   "pass ROOT/NAME of a sweep started by dnasweep run; see dnasweep ls")], command)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name, storage = os.path.basename(os.path.normpath(sweep_dir)), journal(sweep_dir)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError as e:  # Optuna's "Record does not exist": no study of this name in the journal
        missing = e
    # The study is named after the directory the sweep was started in: say which names the journal
    # holds (a KeyError traceback said none of it)
    try:
        names = optuna.get_all_study_names(storage)
    except Exception as e:  # noqa: BLE001 - the journal itself cannot be listed: say that instead
        names, why = None, f"{type(e).__name__}: {e}"[:200]
    if names and name in names:  # the study is there: the KeyError was about something else in it
        raise missing
    journal_file = os.path.join(sweep_dir, "optuna.log")
    if names == []:
        what = ("is empty (the sweep was stopped as its study was being written, or the file was truncated)"
                if os.path.getsize(journal_file) == 0 else "holds no Optuna study (not a journal Optuna can read)")
        problem = Problem("SWEEP", f"{journal_file} {what}: there is nothing to read or resume",
                          "restore optuna.log from a copy of the sweep (its --storage, if it had one), "
                          f"or move {sweep_dir} away and start the sweep again with dnasweep run")
    elif names:
        shown = ", ".join(repr(n) for n in names)
        back = os.path.join(os.path.dirname(os.path.normpath(sweep_dir)), names[0])
        fix = (f"rename it back: mv {os.path.normpath(sweep_dir)} {back}" if len(names) == 1
               else f"rename it back to its study's name (one of {shown})")
        if len(names) == 1 and os.path.exists(back):
            fix += f" ({back} exists: a copy of this sweep? move one of them away first)"
        problem = Problem("SWEEP", f"{sweep_dir}'s Optuna journal holds the study {shown}, not {name!r}: the "
                          "directory was renamed (a sweep's study keeps the name it was started with)", fix)
    else:
        problem = Problem("SWEEP", f"{sweep_dir} has no Optuna study named {name!r}, and {journal_file} cannot be "
                          f"listed ({why})", "check that optuna.log is the sweep's Optuna journal, or restore it "
                          "from a copy of the sweep")
    raise ConfigError([problem], command)


def read_space(sweep_dir: str) -> SearchSpace:
    """The search space exactly as the sweep ran it (SWEEP/space.json), through the same pipeline."""
    from dnasweep.space import space_from_dict

    with open(os.path.join(sweep_dir, "space.json")) as f:
        d = json.load(f)
    if "config" not in d:
        raise ConfigError([Problem("SWEEP", f"{sweep_dir}/space.json was written by an older dnasweep (before the "
                                   "typed sweep config)", "read it with the dnasweep version that ran it")], "sweep")
    return space_from_dict(d)


def counts(study) -> dict[str, int]:
    """Trials by outcome: complete, pruned (stopped early by the scheduler), failed (diverged, OOM,
    errors), abandoned, running."""
    out = dict.fromkeys(("complete", "pruned", "failed", "abandoned", "running"), 0)
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        state = ("abandoned" if ABANDONED in t.user_attrs else "failed") if state == "fail" else state
        if state in out:  # WAITING trials are not counted
            out[state] += 1
    return out


# What a front row carries from the trial's own result.json besides objectives and sampled values.
VERDICTS = (M.COMPUTE_GAIN, M.COMPUTE_GAIN_BOUND, M.SPEED_GAIN, M.SPEED_GAIN_BOUND, M.IDENTITY_FRACTION,
            M.ROUTER_COLLAPSED, M.ROUTER_IDENTITY_GAP)


def pareto_front(study, space: SearchSpace, sweep_dir: str | None = None) -> list[dict]:
    """The study's feasible non-dominated trials as rows (Optuna's `best_trials` honours constraints),
    each with its gains against the dense reference and its routing verdict when the trial has them."""
    rows = []
    first_sign = 1 if space.objectives[0].mode == "min" else -1  # best first: the highest accuracy on top
    for t in sorted(study.best_trials, key=lambda t: first_sign * t.values[0]):
        row = {"trial": t.number, **{o.metric: v for o, v in zip(space.objectives, t.values, strict=True)}}
        rid = row["ray_trial_id"] = t.user_attrs.get("ray_trial_id")
        res = (_read_json(os.path.join(sweep_dir, "trials", rid, "result.json")) if sweep_dir and rid else None) or {}
        row.update({k: res[k] for k in VERDICTS if k in res})
        row.update(t.params)
        row["ray_trial_id"] = row.pop("ray_trial_id")  # last, as in the --wide table
        rows.append(row)
    return rows


def read_json(path: str):
    """A JSON file of the sweep directory, None when it is not there."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _read_json(path: str):
    """read_json, None too for a file being written (a trial's result.json while the sweep runs)."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def trial_rows(study, space: SearchSpace) -> list[dict]:
    """Every complete trial in completion order: number, objective values, params, whether it is
    feasible (all constraints <= 0) and on the feasible Pareto front."""
    from optuna.trial import TrialState

    from dnasweep.sweep.pareto import pareto_mask

    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                  key=lambda t: (t.datetime_complete, t.number))
    rows = [{"number": t.number, "values": list(t.values), "params": dict(t.params),
             "ray_trial_id": t.user_attrs.get("ray_trial_id"),
             "feasible": all(v <= 0 for v in t.constraints.values()), "front": False} for t in done]
    ok = [r for r in rows if r["feasible"]]
    if ok:
        for r, keep in zip(ok, pareto_mask([r["values"] for r in ok], [o.mode for o in space.objectives]),
                           strict=True):
            r["front"] = bool(keep)
    return rows


def result_of(study, space: SearchSpace, sweep_dir: str, **kw) -> SweepResult:
    c = counts(study)
    from dnasweep.sweep.reference import read

    return SweepResult(os.path.abspath(sweep_dir), c["complete"], c["failed"], pareto_front(study, space, sweep_dir),
                       n_abandoned=c["abandoned"], n_pruned=c["pruned"], reference=read(sweep_dir),
                       **_infeasible(study), **kw)


def _infeasible(study) -> dict:
    """Complete trials that break a constraint (Optuna's constraint value > 0), in all and by constraint."""
    from optuna.trial import TrialState

    broken = [[k for k, v in t.constraints.items() if v > 0]
              for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    by: dict[str, int] = {}
    for keys in broken:
        for k in keys:
            by[k] = by.get(k, 0) + 1
    return {"n_infeasible": sum(bool(keys) for keys in broken), "infeasible": by}


def load_sweep(sweep_dir: str) -> tuple[SweepResult, SearchSpace]:
    """A sweep's current state (running or finished) read back from its storage."""
    study = open_study(sweep_dir)  # first: refuses a directory that is not a sweep
    space = read_space(sweep_dir)
    return result_of(study, space, sweep_dir), space


def list_sweeps(root: str) -> list[dict]:
    """Every sweep under `root` with its trial counts by state."""
    rows = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        d = os.path.join(root, name)
        if not is_sweep_dir(d):
            continue
        try:  # one sweep that cannot be read (renamed, journal still empty) must not hide the others
            study = open_study(d)
            with open(os.path.join(d, "space.json")) as f:
                budget = json.load(f).get("config", {}).get("budget", {}).get("trials", "?")
            rows.append({"name": name, "budget": budget, **counts(study), STOPPED: study.user_attrs.get(STOPPED)})
        except Exception as e:  # noqa: BLE001 - Optuna raises KeyError for a missing study
            rows.append({"name": name, "unreadable": f"{type(e).__name__}: {e}"[:200]})
    return rows


# Short column names of the front table (--wide shows the dotted paths).
SHORT = {M.VAL_LOSS: "loss", M.VAL_ACC: "acc", M.VAL_BPB: "bpb", M.FLOPS_PER_TOKEN: "FLOPs/tok",
         M.COMPUTE_GAIN: "gain", M.IDENTITY_FRACTION: "skip", "model.d_model": "d", "model.n_steps": "S",
         "model.pool.n_transformer": "tf", "model.pool.n_attention": "attn", "model.pool.n_mlp": "mlp",
         "model.pool.n_identity": "id", "model.router.type": "router", "model.router.top_k": "k",
         "model.router.threshold": "thr", "loss.compute_weight": "cw", "model.balance.target_skip": "target",
         "model.balance.identity_bias": "bias", "train.lr": "lr"}


def _cell(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _digits(values: list) -> int:
    """The fewest significant digits (from 4) that print these values' distinct floats apart: two
    learning rates 0.0030001 and 0.0030004 both read 0.003, and the column looked constant."""
    floats = {v for v in values if isinstance(v, float)}
    return next((d for d in range(4, 18) if len({f"{v:.{d}g}" for v in floats}) == len(floats)), 17)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    return ["  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)).rstrip() for cells in (head, *rows)]


def _skip_gap(row: dict) -> str:
    """'skip gap +0.50' when evaluation's identity share is far from training's (metrics.SKIP_GAP_LIMIT):
    the trial's objectives then describe a routing other than the one it trained with."""
    gap = row.get(M.ROUTER_IDENTITY_GAP)
    return f"skip gap {gap:+.2f}" if M.is_number(gap) and abs(gap) >= M.SKIP_GAP_LIMIT else ""


def _verdict_legend(collapsed: bool, gap: bool) -> str:
    """What each verdict the table shows means, and what it does to the row's numbers."""
    parts = []
    if collapsed:
        parts.append(f"collapsed = evaluation routes >= {M.COLLAPSE_IDENTITY_SHARE:.0%} of slots to identity "
                     f"(or at most {M.COLLAPSE_MAX_PATHS} distinct path): the pool is bypassed")
    if gap:
        parts.append(f"skip gap = evaluation's identity share minus training's since the previous evaluation "
                     f"(shown at |gap| >= {M.SKIP_GAP_LIMIT}): loss and FLOPs are of a routing it did not "
                     "train with")
    return "verdict: " + "; ".join(parts)


def format_front(result: SweepResult, space: SearchSpace, wide: bool = False) -> str:
    """The Pareto front as a text table (objectives, gain against the dense reference, routing
    verdict, then the sampled values that vary on the front; `wide`: every sampled value and the
    Ray trial id), the dense reference frontier below it, and where to look next."""
    from dnasweep.space.reference import gain_text
    from dnasweep.sweep.reference import blocks, frontier_keys, on_frontier, rung_status

    front = result.front
    objs = [o.metric for o in space.objectives]
    # raw values decide what varies (two values may print alike at 4 digits: `_digits`)
    params = [p.path for p in space.params if wide or len({repr(r.get(p.path)) for r in front}) > 1]
    extra = [k for k in (M.COMPUTE_GAIN, M.IDENTITY_FRACTION) if any(k in r for r in front)]
    head = ["trial", *(["ray_trial_id"] if wide else []), *objs, *extra, *params]
    digits = {k: _digits([r.get(k) for r in front]) for k in head}
    cells = [[gain_text(r, k) if k == M.COMPUTE_GAIN else _cell(r.get(k), digits[k]) for k in head] for r in front]
    collapsed, gaps = [bool(r.get(M.ROUTER_COLLAPSED)) for r in front], [_skip_gap(r) for r in front]
    shown = [", ".join(filter(None, ["collapsed" if c else "", g])) for c, g in zip(collapsed, gaps, strict=True)]
    if any(shown):
        head, cells = [*head, "verdict"], [[*c, v] for c, v in zip(cells, shown, strict=True)]
    # ~100 columns: short names, with a legend; --wide keeps the dotted paths
    names = {h: h if wide else SHORT.get(h, h.split(".")[-1]) for h in head}
    head = [names[h] for h in head]
    lost = f", {result.n_abandoned} abandoned by a killed driver" if result.n_abandoned else ""
    pruned = f"{result.n_pruned} pruned (never on the front), " if result.n_pruned else ""
    infeasible = (f", {result.n_infeasible} infeasible (constraint "
                  + ", ".join(f"{k} broken by {n}" for k, n in result.infeasible.items()) + ")"
                  if result.n_infeasible else "")
    out = [f"Pareto front ({len(front)} of {result.n_complete} complete trials{infeasible}; {pruned}"
           f"{result.n_failed} failed{lost}):",
           *_table(head, cells)]
    legend = [f"{n}={h}" for h, n in names.items() if n != h]
    if legend:
        out += textwrap.wrap("columns: " + ", ".join(legend), 100, subsequent_indent="  ")
    if any(shown):  # a verdict read without its rule reads as noise
        out += textwrap.wrap(_verdict_legend(any(collapsed), any(gaps)), 100, subsequent_indent="  ")
    if not front:  # nothing is "the same on the whole front" of an empty front
        out.append("(no trial on the front: " + ("every complete trial breaks a constraint)" if result.n_complete
                                                 else "no trial completed)"))
    elif not wide and len(params) < len(space.params):
        same = [p.split(".")[-1] for p in (q.path for q in space.params) if p not in params]
        out.append(f"(same on the whole front, or not sampled: {', '.join(same)}; --wide shows every column)")
    if result.reference:
        on = frontier_keys(result.reference)
        rows = [[str(r["d_model"]), _cell(blocks(r)), _cell(r.get("result", {}).get(M.VAL_LOSS)),
                 _cell(r.get("result", {}).get(M.FLOPS_PER_TOKEN)), _cell(r.get("result", {}).get(M.TOKENS_PER_S)),
                 rung_status(r), "yes" if on_frontier(r, on) else ""] for r in result.reference]
        out += ["dense reference (gain: the dense FLOPs/token this loss needs on its frontier over the trial's; "
                "> 1 beats\n  dense; blocks: the backbone's and dense_layers; a rung stopped short is never on "
                "the frontier):", *_table(["d", "blocks", "loss", "FLOPs/tok", "tok/s", "status", "frontier"], rows)]
    out.append(f"sweep directory: {result.sweep_dir}")
    return "\n".join(out)
