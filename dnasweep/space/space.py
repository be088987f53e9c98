"""A search space: a typed SweepConfig plus its parsed dimensions and constraints.

`load_space` / `parse_space` run the one pipeline (dnasweep.config.sweep for the sections, this
package for search:, objectives: and constraints:) and raise a ConfigError listing every problem
of the file. `SearchSpace.apply(values, out_dir)` is how a sampled point becomes a trial config.
Ray-, Optuna- and MLflow-free; dnasweep.sweep adapts it to them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from dnasweep import metrics as M
from dnasweep.config import TrialConfig, read_yaml
from dnasweep.config.load import (
    build,
    covers,
    did_you_mean,
    flatten,
    from_command_line,
    interpolations,
    override_key,
    schema_problems,
)
from dnasweep.config.sweep import SECTIONS, ObjectiveConfig, SweepConfig, drawn_anyway, sweep_sections
from dnasweep.config.trial import planned_steps
from dnasweep.data.config import anchor_paths
from dnasweep.data.sources import byte_level, get_source, source_names
from dnasweep.errors import ConfigError, Problem, raise_if
from dnasweep.space.apply import apply
from dnasweep.space.feasibility import Trials, impossible_values, unsatisfiable
from dnasweep.space.params import Param, parse_param, when_problems
from dnasweep.space.reference import ladder
from dnasweep.space.steps import PLANNED_BY, get_path, most_planned, most_steps

_CONSTRAINT = re.compile(r"^\s*([\w/.\-]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")
@dataclass
class Constraint:
    """`metric op bound`, told to Optuna so infeasible trials never reach the front."""

    metric: str
    op: str  # <= | >=
    bound: float

    @property
    def key(self) -> str:
        """`metric op bound`: how it is named in output and recorded on Optuna trials (12 digits: two
        bounds on one metric that agree to :g's 6 shared one key, and Optuna kept only the first)."""
        return f"{self.metric} {self.op} {self.bound:.12g}"

    def violation(self, value: float, more: int = 0) -> float:
        """Optuna's convention: <= 0 is feasible. `more`: +1 when the true value is above `value`,
        -1 below (a gain outside the dense ladder's range is such a bound). A bound that cannot
        settle the constraint counts as a violation: a 'less than 1.2' gain is no proof of '>= 1'."""
        v = value - self.bound if self.op == "<=" else self.bound - value
        rises = (1 if self.op == "<=" else -1) * more  # which way the true violation lies from v
        if (v <= 0 and rises > 0) or (v > 0 and rises < 0):  # undecided: the truth may be either side
            return max(abs(v), 1e-9)
        return v

    def violation_in(self, result: dict) -> float:
        """The violation of a trial's report (the searcher's and MO-ASHA's one rule): its value, with
        the direction of a gain reported as a bound (metrics.BOUND_OF); missing or non-finite: 1."""
        v = result.get(self.metric)
        if not (isinstance(v, int | float) and math.isfinite(v)):
            return 1.0
        return self.violation(v, int(result.get(M.BOUND_OF.get(self.metric, "")) or 0))


@dataclass
class SearchSpace:
    """A parsed, validated search-space file."""

    source: str  # the file it came from
    config: SweepConfig  # every section, typed (smoke overlay and overrides applied)
    params: list[Param]  # the searched dimensions, in file order (the order they are drawn)
    constraints: list[Constraint]
    notes: list[str] = field(default_factory=list)  # warnings about the overrides it was read with

    # The config's sections, read through the space (space.budget is space.config.budget)
    base = property(lambda self: self.config.base)  # the trial every point starts from
    objectives = property(lambda self: self.config.objectives)
    sampler = property(lambda self: self.config.sampler)
    budget = property(lambda self: self.config.budget)
    resources = property(lambda self: self.config.resources)
    tracking = property(lambda self: self.config.tracking)
    analyze = property(lambda self: self.config.analyze)
    scheduler = property(lambda self: self.config.scheduler)

    def rungs(self) -> list[list[int]]:
        """MO-ASHA's rungs (training steps) per bracket: grace * rf^k below train.max_steps; [] for fifo."""
        s = self.scheduler
        if s.type == "fifo":
            return []
        grace, top = s.grace_steps or self.base.train.eval_every, planned_steps(self.base)
        out = []
        for b in range(s.brackets):
            r, ladder_b = grace * s.reduction_factor ** b, []
            while r < top:
                ladder_b.append(r)
                r *= s.reduction_factor
            out.append(ladder_b)
        return out

    def most_steps(self) -> int:
        """The largest train.max_steps a trial can have (dnasweep.space.steps.most_steps)."""
        return most_steps(self.base.train.max_steps, self.params)

    def most_planned(self) -> int:
        """The most steps one trial can be asked for, the token budget counted: what a step budget
        must leave room for (dnasweep.space.steps.most_planned)."""
        return most_planned(self.base, self.params)

    def apply(self, values: dict, out_dir: str) -> TrialConfig:
        """The trial config of one point (its active sampled values); ConfigError if invalid.
        An LM point whose batch size (or eval_batches) differs from the base's keeps the base's
        validation windows (train.eval_windows), so every trial is scored on the same text."""
        cfg = apply(self.base, values, out_dir, source=self.source)
        b, t = self.base.train, cfg.train
        if cfg.model.task == "lm" and t.eval_windows is None and (t.batch_size, t.eval_batches) != (
                b.batch_size, b.eval_batches):
            t.eval_windows = b.eval_windows or b.batch_size * b.eval_batches
        return cfg

    def to_dict(self) -> dict:
        """The file as run (what SWEEP/space.json holds); `space_from_dict` reads it back."""
        return {"source": self.source, "config": OmegaConf.to_container(OmegaConf.structured(self.config))}


def _unreported(metric: str, cfg: TrialConfig, searched, reference: bool) -> str:
    """Why no trial of base `cfg` reports `metric` ("" when trials may): a task-, source- or
    routing-only metric (metrics.REPORTED_BY). Every trial would then fail (objective) or be
    infeasible (constraint)."""
    who = M.reported_by(metric)
    if metric in M.TRAIN_ONLY:
        return "is logged in training rows only, never in the evaluation reports a sweep ranks and constrains"
    if who == "cuda" and cfg.train.device == "cpu":  # auto runs on CUDA where there is one
        return "is reported on CUDA devices of known peak only (base.train.device is 'cpu')"
    if who == "reference" and not reference:
        return "is reported only by sweeps with a dense reference ladder (a reference: section)"
    if set(searched) & {"model.task", "model.kind", "data.source"}:
        return ""  # the search decides
    m, source = cfg.model, cfg.data.source
    if who == "vision" and m.task != "vision":
        return f"is reported by vision trials only (base.model.task is {m.task!r})"
    if who == "byte_lm" and not byte_level(m.task, source):
        byte_sources = [s for s in source_names("lm") if byte_level("lm", s)]
        return (f"is reported by byte-level LM trials only (data.source {' / '.join(byte_sources)}; the base has "
                f"model.task {m.task!r}, data.source {source!r})")
    if who in ("routed", "learned") and m.kind == "dense":
        return "is reported by routed models only (base.model.kind is 'dense')"
    if who == "learned" and "model.router.type" not in searched:
        from dnasweep.model.registry import find_router

        spec = find_router(m.router.type)
        if spec is not None and not spec.learns:
            return (f"is reported by routers that learn only (base.model.router.type is {m.router.type!r}, "
                    "a fixed table with no router distribution)")
    return ""


def _metric_problem(key: str, metric: str, base: TrialConfig | None, searched, what: str,
                    reference: bool) -> Problem | None:
    if not M.is_trial_metric(metric):
        return Problem(key, f"unknown metric {metric!r}",
                       did_you_mean(metric, M.TRIAL_METRICS) or f"known: {', '.join(sorted(M.TRIAL_METRICS))}")
    if base is not None and (why := _unreported(metric, base, searched, reference)):
        return Problem(key, f"{metric} {why}: {what}", "use a metric these trials report, e.g. val/loss")
    return None


def _objectives(raw: list, base: TrialConfig | None, searched, p: list[Problem],
                reference: bool) -> list[ObjectiveConfig]:
    if not raw:
        p.append(Problem("objectives", "at least one objective is needed",
                         "e.g. [{metric: val/loss, mode: min}, {metric: compute/flops_per_token, mode: min}]"))
    out = []
    for i, o in enumerate(raw):
        q = schema_problems(o, ObjectiveConfig, f"objectives[{i}]")
        if not q and not o.get("metric"):
            q = [Problem(f"objectives[{i}]", f"expected {{metric: ..., mode: min|max}}, got {o!r}")]
        p += q
        if q:
            continue
        obj = build(ObjectiveConfig, o)
        if bad := _metric_problem(f"objectives[{i}].metric", obj.metric, base, searched, "every trial would fail",
                                  reference):
            p.append(bad)
        out.append(obj)
    if len({o.metric for o in out}) != len(out):
        p.append(Problem("objectives", "the same metric appears twice"))
    return out


def _constraints(raw: list, base: TrialConfig | None, searched, p: list[Problem], reference: bool) -> list[Constraint]:
    out = []
    for i, c in enumerate(raw):
        if found := interpolations(c, f"constraints[{i}]"):
            p += found
            continue
        m = _CONSTRAINT.match(str(c))
        if m and not _is_number(m.group(3)):  # the pattern admits '1e' or '.': float() would raise
            m = None
        if not m:
            p.append(Problem(f"constraints[{i}]", f"cannot parse {c!r}", "write 'metric <= number' or '>='"))
            continue
        bad = _metric_problem(f"constraints[{i}]", m.group(1), base, searched, f"no trial could satisfy {c!r}",
                              reference)
        if bad:
            p.append(bad if "unknown" in bad.message else Problem(
                bad.key, bad.message, "drop the constraint, or use a metric these trials report"))
        out.append(Constraint(m.group(1), m.group(2), float(m.group(3))))
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# Where training ends, and how many tokens (and what context) a step takes: a reference ladder's dense
# rungs train with the base's values of both (searched, compare/* gains would set trials against dense
# models trained otherwise), and a pruning scheduler places its rungs below the base's end.
_END_KEYS = ("train.max_steps", "train.max_tokens", "train.time_limit_s")
_STEP_KEYS = ("train.batch_size", "train.grad_accum", "model.seq_len", "model.image_size", "model.patch_size")
# How a step computes: precision moves val/loss and tokens/s, compilation tokens/s; the rungs train
# with the base's, so a searched value set a bf16 or compiled DNA against fp32 eager dense rungs.
_NUMERIC_KEYS = ("train.precision", "train.compile")
_RUNG_KEYS = _END_KEYS + _STEP_KEYS + _NUMERIC_KEYS
_RECORD_FIELDS = ("data.field", "data.image_field", "data.label_field")  # read by sources named by data.name only


def _comparable_problems(params: list[Param], base: TrialConfig | None, reference: bool) -> list[Problem]:
    """Searched keys that would make trials incomparable: any data key (the validation data changes
    with it, so val/* objectives would rank trials scored on different data), and with a reference
    ladder, the budget and context its rungs are trained with."""
    src = get_source(base.model.task, base.data.source) if base is not None else None
    fields_read = src is not None and "name" in (src.reads or ())  # the record fields of a named dataset
    p = []
    for q in params:
        if q.path.startswith("data.") and not (q.path in _RECORD_FIELDS and not fields_read):
            p.append(Problem(f"search.{q.path}", "is searched, but it changes the data each trial trains on and its "
                             "validation split: val/* objectives of different trials would be scored on different "
                             "data and could not be compared", "set it in base, one sweep per value"))
        elif q.path == "train.eval_windows":  # eval_batches may vary: apply() pins the base's windows then
            p.append(Problem(f"search.{q.path}", "is searched, but it sets which held-out windows a trial is scored "
                             "on: val/* objectives of different trials (and the dense rungs) would be measured on "
                             "different text", "set it in base"))
        elif reference and q.path in _RUNG_KEYS:
            value = get_path(base, q.path) if base is not None else "?"
            what = "precision or compilation" if q.path in _NUMERIC_KEYS else "budget or context"
            p.append(Problem(f"search.{q.path}", f"is searched, but the reference: ladder's dense rungs train with "
                             f"the base's value ({value}): compare/* gains would set trials against dense models "
                             f"trained with another {what}", "set it in base (one sweep per value), or "
                             "drop the reference: section"))
    return p


def _device_problems(cfg, base: TrialConfig, params: list[Param]) -> list[Problem]:
    """train.device cuda with resources.gpu 0: Ray hides every GPU from a trial that asked for none,
    so each trial would fail as invalid ('CUDA is not available') after the sweep started."""
    if cfg.resources.gpu > 0:
        return []
    q = next((q for q in params if q.path == "train.device"), None)
    values = [("search.train.device", v) for v in (q.ends() if q is not None else [])]
    if q is None or q.when:
        values.append(("base.train.device", base.train.device))
    return [Problem(key, f"{v!r} with resources.gpu: 0: Ray gives a trial that asks for no GPU none to see, "
                    "so every such trial would fail", "set resources.gpu (1 per trial, or e.g. 0.25 to share one "
                    "GPU among 4 trials), or use train.device auto or cpu")
            for key, v in values if str(v).startswith("cuda")][:1]


def _budget_problems(cfg, base: TrialConfig, bad: set[str], params: list[Param]) -> list[Problem]:
    """The scheduler's rungs against the base's evaluations, and a step budget that fits a trial
    (each judged only when its own section has no problem yet: `bad`)."""
    p, s, tc = [], cfg.scheduler, base.train
    # Rungs are evaluations below every trial's end, judged from the base: what moves either is fixed.
    # (with a token budget, the steps it leaves are set by the step's size)
    # (steps.PLANNED_BY, the one list of what sets a step's tokens: model.pooling was missing from a copy)
    moving = _END_KEYS + ("train.eval_every",) + (PLANNED_BY if tc.max_tokens else ())
    if s.type != "fifo":
        p += [Problem(f"search.{q.path}", f"is searched, but scheduler {s.type} places its rungs at evaluations "
                      "below the end of training, taken from the base: a trial with another value is judged off "
                      "its evaluations, or after it has finished", "set it in base, or use scheduler: {type: fifo}")
              for q in params if q.path in moving]
    if s.type != "fifo" and "scheduler" not in bad:
        grace = s.grace_steps or tc.eval_every
        if grace % tc.eval_every:  # objectives exist only at evaluations: a rung between two would wait
            p.append(Problem("scheduler.grace_steps", f"must be a multiple of base train.eval_every "
                             f"({tc.eval_every}): rungs are evaluations, got {grace}",
                             f"use {max(tc.eval_every, grace - grace % tc.eval_every)}, or change train.eval_every"))
        elif grace * s.reduction_factor ** (s.brackets - 1) >= (end := planned_steps(base)):
            p.append(Problem("scheduler", f"no rung below the base's last step ({end}) in every bracket: "
                             f"grace_steps {grace} x reduction_factor {s.reduction_factor}^{s.brackets - 1}",
                             "lower grace_steps or brackets, or raise train.max_steps"))
    if cfg.budget.steps is not None and "budget" not in bad and cfg.budget.steps < (most := most_planned(base, params)):
        # the searcher reserves this much for every trial it starts (the token budget counted)
        p.append(Problem("budget.steps", f"{cfg.budget.steps} is less than the most steps one trial can be asked "
                         f"for ({most}: train.max_steps, the most a searched one draws, or fewer where "
                         "train.max_tokens ends it): no trial would start", f"use at least {most}, e.g. "
                         f"{most * cfg.budget.trials} for budget.trials x {most}"))
    return p


def parse_space(data: dict, source: str, overrides: list[str] | None = None, smoke: bool = False,
                check: bool = True) -> SearchSpace:
    """A SearchSpace from a file's dict; ConfigError listing every problem. `check=False` reads a
    sweep's own space.json back without re-judging data paths and constraints (another machine).
    Without `smoke`, the file as --smoke reads it is checked too (`_smoke_problems`)."""
    return _parse(data, source, overrides, smoke, check)


def _parse(data: dict, source: str, overrides: list[str] | None, smoke: bool, check: bool,
           feasibility: bool = True, values: bool = True, hint: list[dict] | None = None) -> SearchSpace:
    cfg, p = sweep_sections(data, source, overrides, smoke, check_base=check)
    base_ok = not any(q.key.startswith("base") for q in p)
    base = cfg.base if base_ok and check else None
    if base is not None:  # read here, against this cwd: the stored space and every trial carry the absolute path
        anchor_paths(base.data)
    design: list[Problem] = []  # rules on how a space is designed: a sweep's own space.json reads back
    params = [q for path, spec in cfg.search.items() if (q := parse_param(str(path), spec, p, design)) is not None]
    design += when_problems(params) + _comparable_problems(params, base, bool(cfg.reference.d_model))
    if check:  # (check=False) whatever rules were added after it started
        p += design
    if not any(q.key == "objectives" for q in p):  # a wrong-shaped section is one problem, not two
        cfg.objectives = _objectives(cfg.objectives, base, cfg.search, p, bool(cfg.reference.d_model))
    constraints = _constraints(cfg.constraints, base, cfg.search, p, bool(cfg.reference.d_model))
    if base is not None and cfg.reference.d_model and cfg.reference.dense_layers:
        p += _reference_problems(cfg, data, source, overrides or [], smoke)
    trials = Trials(params, base) if base is not None else None  # the points judged, shared by both checks
    if values and trials is not None and not any(q.key.startswith("search") for q in p):
        # before any trial starts: a value no trial can take failed every trial that drew it (exit 0)
        p += impossible_values(params, base, trials, hint)
    if feasibility and trials is not None and not any(q.key.startswith(("search", "constraints")) for q in p):
        p += unsatisfiable(params, constraints, base, trials)
    if base is not None:
        p += _budget_problems(cfg, base, {q.key.split(".")[0] for q in p}, params) + _device_problems(cfg, base, params)
    p = _attributed(p, overrides or [], cfg.smoke if smoke else {})
    if check and not smoke and cfg.smoke:
        # the points valid here, tried first on the overlay's base (the same search: its own points)
        hint = trials.witnesses() if trials is not None and not covers("search", list(flatten(cfg.smoke))) else None
        p += _smoke_problems(data, source, overrides, cfg.smoke, p, hint)
    raise_if(p, source)
    return SearchSpace(source, cfg, params, constraints, drawn_anyway(cfg, overrides or [])[1])


def _rung_problems(base: TrialConfig, ref) -> list[Problem]:
    """The problems of the ladder `ref` (a ReferenceConfig) on `base`, one per rung and rule."""
    try:
        ladder(base, ref.d_model, ref.dense_layers)
    except ConfigError as e:
        return e.problems
    return []


def _reference_problems(cfg, data: dict, source: str, overrides: list[str], smoke: bool) -> list[Problem]:
    """The reference: ladder's invalid rungs. A rung that only a `base.*` override breaks (the file's
    own base builds it) is that override's problem: said once, on the key the user set, not once per
    rung under `reference`, which the user never touched."""
    found = _rung_problems(cfg.base, cfg.reference)
    keys = [override_key(o) for o in overrides]
    set_base = [o for o, k in zip(overrides, keys, strict=True)
                if covers("base", [k]) or (smoke and covers("smoke.base", [k]))]
    if not found or not set_base:
        return found

    def without(dropped: list[str]) -> list[Problem] | None:
        """The rung problems with the overrides `dropped`; None when that base is invalid itself."""
        rest = [o for o in overrides if o not in dropped]
        other, q = sweep_sections(data, source, rest, smoke)
        return None if any(x.key.startswith("base") for x in q) else _rung_problems(other.base, other.reference)

    own = without(set_base)
    if own is None:  # the file's base alone is invalid: which rung problem is whose cannot be told
        return found
    out, caused = [q for q in found if q in own], {}
    for q in found:
        if q not in own:  # 'rung d_model=W, dense_layers=N: KEY: MESSAGE' (space.reference.ladder)
            rung, _, what = q.message.partition(": ")
            caused.setdefault((what, q.fix), []).append(rung.removeprefix("rung "))
    for (what, fix), rungs in caused.items():
        # the override that breaks it alone, else the last of them (they break it together)
        alone = (o for o in set_base if len(set_base) == 1 or (
            (other := without([x for x in set_base if x != o])) is not None
            and any(q.message.partition(": ")[2] == what for q in other)))
        culprit = next(alone, set_base[-1])
        key = override_key(culprit)
        out.append(Problem(key, f"breaks the reference: ladder's dense rung{'s' if len(rungs) > 1 else ''} "
                           f"{'; '.join(rungs)}: {what}", "; ".join(filter(None, [
                               fix, f"set {key} to a value every rung takes too, or change reference.d_model / "
                               "reference.dense_layers"]))))
    return out


def _attributed(p: list[Problem], overrides: list[str], overlay: dict) -> list[Problem]:
    """Problems said where their value came from: a `key=value` override (the command line), or the
    smoke: overlay (keyed smoke.KEY, as the file holds it); the rest are the file's own."""
    cli, keys = [override_key(o) for o in overrides], list(flatten(overlay))
    out = []
    for q in p:
        if not covers(q.key, keys) or covers(q.key, cli):
            out.append(q)
            continue
        fix = q.fix  # a "did you mean" of a section or a base key is in the overlay too
        if fix.startswith("did you mean ") and fix[len("did you mean "):].split(".")[0].rstrip("?") in SECTIONS:
            fix = fix.replace("did you mean ", "did you mean smoke.", 1)
        out.append(Problem(f"smoke.{q.key}", q.message, fix))
    return from_command_line(out, overrides)


def _smoke_problems(data: dict, source: str, overrides: list[str] | None, overlay: dict,
                    seen: list[Problem], hint: list[dict] | None = None) -> list[Problem]:
    """The file as --smoke reads it, checked on every read: a mistake in the smoke: overlay is found by
    `validate` and `run`, not first by a smoke run. Its problems that the file without it lacks. The
    constraints are judged again only when the overlay changes what they depend on (the slow check),
    the searched values only when it changes the search or the base (any base key takes part in a
    rule of the trial config)."""
    keys = list(flatten(overlay))
    moves = any(covers(k, keys) for k in ("search", "constraints", "base.model"))
    try:
        _parse(data, source, overrides, smoke=True, check=True, feasibility=moves,
               values=any(covers(k, keys) for k in ("search", "base")), hint=hint)
    except ConfigError as e:
        return [q if q.key.startswith("smoke") else
                Problem(q.key, f"{q.message} (with the smoke: overlay applied, as --smoke runs it)", q.fix)
                for q in e.problems if q not in seen]
    return []


def load_space(path: str, overrides: list[str] | None = None, smoke: bool = False) -> SearchSpace:
    return parse_space(read_yaml(path), path, overrides, smoke)


def space_from_dict(d: dict[str, Any]) -> SearchSpace:
    """A SearchSpace from `SearchSpace.to_dict()` (SWEEP/space.json), through the same pipeline."""
    return parse_space(d["config"], d["source"], check=False)
