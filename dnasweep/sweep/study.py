"""Reading a sweep back from its directory: the Optuna study, the Pareto front, trial counts.
Used while a sweep runs, after it ends, and by `pareto`, `ls`, `analyze` and `resume`.
Optuna is imported inside functions: `is_sweep_dir` is cheap to import."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from dnasweep.errors import ConfigError, Problem
from dnasweep.space import SearchSpace

ABANDONED = "abandoned"  # Optuna user attr: lost with a killed driver; FAIL in Optuna, not a failed trial


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
    """The sweep's Optuna study; a ConfigError (exit 2) when `sweep_dir` is not a sweep."""
    import optuna

    if not is_sweep_dir(sweep_dir):
        raise ConfigError([Problem("SWEEP", f"{sweep_dir} is not a sweep directory (no optuna.log / space.json)",
                                   "pass ROOT/NAME of a sweep started by dnasweep run; see dnasweep ls")], command)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=os.path.basename(os.path.normpath(sweep_dir)), storage=journal(sweep_dir))


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
    """Trials by outcome: complete, failed (diverged, OOM, errors), abandoned, running."""
    out = {"complete": 0, "failed": 0, "abandoned": 0, "running": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "COMPLETE":
            out["complete"] += 1
        elif t.state.name == "FAIL":
            out["abandoned" if ABANDONED in t.user_attrs else "failed"] += 1
        elif t.state.name == "RUNNING":
            out["running"] += 1
    return out


def pareto_front(study, space: SearchSpace) -> list[dict]:
    """The study's feasible non-dominated trials as rows (Optuna's `best_trials` honours constraints)."""
    rows = []
    for t in sorted(study.best_trials, key=lambda t: t.values[0]):
        row = {"trial": t.number, **{o.metric: v for o, v in zip(space.objectives, t.values, strict=True)}}
        row.update(t.params)
        row["ray_trial_id"] = t.user_attrs.get("ray_trial_id")
        rows.append(row)
    return rows


def trial_rows(study, space: SearchSpace) -> list[dict]:
    """Every complete trial in completion order: number, objective values, params, whether it is
    feasible (all constraints <= 0) and on the feasible Pareto front."""
    from optuna.trial import TrialState

    from dnasweep.sweep.pareto import pareto_mask

    done = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                  key=lambda t: (t.datetime_complete, t.number))
    rows = [{"number": t.number, "values": list(t.values), "params": dict(t.params),
             "feasible": all(v <= 0 for v in t.constraints.values()), "front": False} for t in done]
    ok = [r for r in rows if r["feasible"]]
    if ok:
        for r, keep in zip(ok, pareto_mask([r["values"] for r in ok], [o.mode for o in space.objectives]),
                           strict=True):
            r["front"] = bool(keep)
    return rows


def result_of(study, space: SearchSpace, sweep_dir: str, **kw) -> SweepResult:
    c = counts(study)
    return SweepResult(os.path.abspath(sweep_dir), c["complete"], c["failed"], pareto_front(study, space),
                       n_abandoned=c["abandoned"], **kw)


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
        try:
            study = open_study(d)
        except ConfigError:
            continue
        with open(os.path.join(d, "space.json")) as f:
            budget = json.load(f).get("config", {}).get("budget", {}).get("trials", "?")
        rows.append({"name": name, "budget": budget, **counts(study)})
    return rows


def format_front(result: SweepResult, space: SearchSpace) -> str:
    """The Pareto front as a text table, plus where to look next."""
    objs = [o.metric for o in space.objectives]
    params = [p.path for p in space.params]
    head = ["trial", "ray_trial_id", *objs, *params]
    rows = [[str(r.get(k, "-")) if not isinstance(r.get(k), float) else f"{r[k]:.4g}" for k in head]
            for r in result.front]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    lost = f", {result.n_abandoned} abandoned by a killed driver" if result.n_abandoned else ""
    out = [f"Pareto front ({len(rows)} of {result.n_complete} complete trials; {result.n_failed} failed{lost}):",
           line(head), *map(line, rows), f"sweep directory: {result.sweep_dir}"]
    return "\n".join(out)
