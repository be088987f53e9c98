"""The `search:` section: each entry becomes a typed Param, checked against the trial schema.

Owns: the trial schema's dotted paths and their field types, the parsing of one search entry
({choice}, {int}, {float}, log, when), range rules and `when:` rules. Each check appends to a
problem list and never raises, so a file's problems are reported all at once.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from dnasweep.config import TrialConfig
from dnasweep.config.load import did_you_mean, fits, interpolations, type_name
from dnasweep.errors import Problem, type_hints, value_problem

SPEC_KEYS = ("choice", "int", "float", "log", "when")  # the keys of one search: entry


@dataclass
class Param:
    """One searched dimension."""

    path: str  # dotted path into the trial config, e.g. "model.router.top_k"
    kind: str  # choice | int | float
    low: float | None = None  # int / float: lower bound (inclusive)
    high: float | None = None  # int / float: upper bound (inclusive)
    choices: list | None = None  # choice: the values, each of the field's exact type
    log: bool = False  # int / float: sample on a log scale
    when: dict[str, list] = field(default_factory=dict)  # active only if these params take these values

    def active(self, values: dict) -> bool:
        """Whether this dimension is drawn, given the values drawn before it (file order)."""
        # A condition holds only on a drawn value: a parameter not drawn (its own when: false) takes
        # none, whatever the list holds (`[null]` too)
        return all(k in values and values[k] in v for k, v in self.when.items())

    def ends(self) -> list:
        """The extreme values of this dimension: every choice, or a range's two ends."""
        return self.choices if self.kind == "choice" else [self.low, self.high]


def _owner(path: str) -> tuple[Any, str] | None:
    """(the dataclass that holds the dotted leaf `path` of the trial schema, the leaf's name)."""
    cls: Any = TrialConfig
    *parents, leaf = path.split(".")
    for part in parents:
        cls = type_hints(cls).get(part) if is_dataclass(cls) else None
        if cls is None or not is_dataclass(cls):
            return None
    return cls, leaf


def field_type(path: str) -> Any | None:
    """The declared type of a dotted leaf of the trial schema; None when no such leaf."""
    if (owner := _owner(path)) is None:
        return None
    typ = type_hints(owner[0]).get(owner[1])
    return None if typ is None or is_dataclass(typ) else typ


def field_of(path: str) -> Any | None:
    """The dataclasses.Field of a dotted leaf of the trial schema (its metadata holds the bounds)."""
    if (owner := _owner(path)) is None:
        return None
    return next((f for f in fields(owner[0]) if f.name == owner[1]), None)


def _bound_problems(key: str, path: str, values: list, what: str) -> list[Problem]:
    """Every value a dimension can draw (its choices, or its range's ends: Optuna draws both ends)
    within the field's declared bounds: otherwise the trials that draw it fail one by one at run time."""
    f, out = field_of(path), []
    for v in values:
        if f is not None and (msg := value_problem(f, v)) is not None:
            out.append(Problem(key, f"{what} {v!r}: {path} {msg.split(', got')[0]}",
                               f"keep every value within the rule, or leave {v!r} out"))
    return out


def schema_paths(cls: Any = TrialConfig, prefix: str = "") -> list[str]:
    out = []
    for f in fields(cls):
        typ = type_hints(cls)[f.name]
        out += schema_paths(typ, f"{prefix}{f.name}.") if is_dataclass(typ) else [f"{prefix}{f.name}"]
    return out


def _choice_fix(c: Any, typ: Any) -> str:
    # The file's spelling is gone once YAML has read it: a bare yes / on / true are all True
    if isinstance(c, bool) and fits("x", typ):
        words = "'true', 'yes' or 'on'" if c else "'false', 'no' or 'off'"
        return f"quote the word you wrote ({words}: YAML reads each unquoted as {str(c).lower()}) to pass the text"
    if c is None and fits("x", typ):
        return "quote it ('null', or '~') to pass the text"
    if isinstance(c, str) and (fits(1.0, typ) or fits(1, typ)):
        return "write it as a YAML number (e.g. 1000.0, not '1e3')"
    return f"use values of type {type_name(typ)}"


def parse_param(path: str, spec: Any, p: list[Problem], design: list[Problem] | None = None) -> Param | None:
    """One search: entry as a Param (None when it cannot be parsed; the problems say why). Problems
    with how the dimension is designed, not with reading it, go to `design` (default: `p`)."""
    design = p if design is None else design
    key = f"search.{path}"
    typ = field_type(path)
    if typ is None and (example := _nested_path(path, spec)):
        p.append(Problem(key, f"{path} is a section of the trial config, not a field: a search: entry is "
                         "keyed by the dotted path of one field", f"write dotted paths, e.g. search: "
                         f"{{{example}: {{choice: [...]}}}}, not nested mappings"))
        return None
    if typ is None:
        p.append(Problem(key, "no such field in the trial config",
                         did_you_mean(path, schema_paths()) or "use a dotted path such as model.d_model"))
        return None
    if not isinstance(spec, dict):
        p.append(Problem(key, f"expected {{choice: [...]}}, {{int: [lo, hi]}} or {{float: [lo, hi]}}, got {spec!r}"))
        return None
    for k in spec:
        if k not in SPEC_KEYS:
            p.append(Problem(f"{key}.{k}", "unknown option", did_you_mean(k, SPEC_KEYS)
                             or f"known options: {', '.join(SPEC_KEYS)}"))
    kinds = [k for k in ("choice", "int", "float") if k in spec]
    if len(kinds) != 1:
        p.append(Problem(key, f"needs exactly one of choice / int / float (got {sorted(map(str, spec))})",
                         "e.g. {float: [1e-4, 1e-2], log: true}"))
        return None
    kind, when = kinds[0], spec.get("when") or {}
    if found := interpolations(spec.get(kind), f"{key}.{kind}"):  # a choice OmegaConf would resolve later
        p += found
        return None
    if not isinstance(when, dict):
        p.append(Problem(f"{key}.when", f"expected a mapping, got {type(when).__name__} {when!r}",
                         "map a searched parameter to its values, e.g. when: {model.router.type: [threshold]}"))
        when = {}
    when = dict(when)  # (the file's own mapping stays as written)
    for k, v in list(when.items()):
        if isinstance(v, dict):  # when: {model: {router: {type: [...]}}}
            example = _nested_path(str(k), v) or str(k)
            p.append(Problem(f"{key}.when", f"condition on {k!r} is a nested mapping {v!r}: a condition is keyed "
                             "by the dotted path of one searched parameter", f"write dotted paths, e.g. when: "
                             f"{{{example}: [...]}}"))
            del when[k]
        elif v == []:  # never holds: the dimension would never be drawn
            design.append(Problem(f"{key}.when", f"condition on {k!r} lists no values, so it never holds and {path} "
                                  "is never searched", f"list the values of {k} under which {path} is searched, or "
                                  "drop the condition"))
    when = {str(k): v if isinstance(v, list) else [v] for k, v in when.items()}
    if kind == "choice":
        choices = spec["choice"]
        if not isinstance(choices, list) or not choices:
            p.append(Problem(f"{key}.choice", f"must be a non-empty list, got {choices!r}",
                             f"list the values to try, e.g. {{choice: [64, 128]}}; a fixed value belongs "
                             f"in base: ({path})"))
            return None
        if (log := spec.get("log", False)) is not False:  # Optuna's categorical draw has no scale
            design.append(Problem(f"{key}.log", f"log applies to int / float ranges, not to choice (got log: {log!r})",
                             "drop log:, or search a range, e.g. {float: [1.0e-4, 1.0e-2], log: true}"))
        for c in choices:  # exactly the field's type: what Optuna records is what the trial gets
            if not fits(c, typ):
                p.append(Problem(f"{key}.choice", f"choice {c!r} ({type(c).__name__}) does not fit {path} "
                                 f"({type_name(typ)})", _choice_fix(c, typ)))
        p += _bound_problems(f"{key}.choice", path, [c for c in choices if fits(c, typ)], "choice")
        seen: list = []
        for c in choices:  # Optuna keeps both copies: the repeated value is drawn twice as often
            if any(c == d and type(c) is type(d) for d in seen):
                design.append(Problem(f"{key}.choice", f"choice {c!r} is listed twice",
                                      "list each value once (to favour a value, narrow the choices)"))
            seen.append(c)
        return Param(path, kind, choices=choices, when=when)
    rng = spec[kind]
    if not (isinstance(rng, list) and len(rng) == 2 and all(fits(v, float) for v in rng)):
        p.append(Problem(f"{key}.{kind}", f"must be [low, high], two numbers, got {rng!r}",
                         "e.g. {int: [2, 6]}" if kind == "int" else "e.g. {float: [1.0e-4, 1.0e-2]}"))
        return None
    if not all(math.isfinite(v) for v in rng if isinstance(v, float)):  # Optuna overflows at the first draw
        p.append(Problem(f"{key}.{kind}", f"bounds must be finite numbers, got {rng!r}",
                         "e.g. {int: [2, 6]}" if kind == "int" else "e.g. {float: [1.0e-4, 1.0e-2]}"))
        return None
    lo, hi = rng
    p += _range_problems(key, path, kind, typ, lo, hi)
    p += _bound_problems(f"{key}.{kind}", path, [lo, hi], "bound")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        p.append(Problem(f"{key}.log", f"must be true or false, got {log!r}"))
    elif log and lo <= 0:
        p.append(Problem(f"{key}.log", f"log scale needs low > 0, got {lo}", "raise low, or use choice to include 0"))
    return Param(path, kind, low=lo, high=hi, log=log is True, when=when)


def _nested_path(path: str, spec: Any) -> str:
    """The dotted path of the first field that a nested mapping under `path` names, when `path` is a
    section of the trial config ({model: {d_model: {...}}} -> model.d_model); "" when it is not."""
    paths = schema_paths()
    if not any(sp.startswith(f"{path}.") for sp in paths):
        return ""
    while isinstance(spec, dict) and spec and not set(map(str, spec)) & set(SPEC_KEYS):
        k, spec = next(iter(spec.items()))
        if not any(sp.startswith(f"{path}.{k}.") or sp == f"{path}.{k}" for sp in paths):  # a typo below
            return (difflib.get_close_matches(f"{path}.{k}", paths, n=1) or [f"{path}.{k}"])[0]
        path = f"{path}.{k}"
        if field_type(path) is not None:
            return path
    return next(sp for sp in paths if sp.startswith(f"{path}."))


def _range_problems(key: str, path: str, kind: str, typ: Any, lo: float, hi: float) -> list[Problem]:
    """An int / float range [lo, hi] of numbers: low < high, of the field's type."""
    out = []
    if kind == "int" and not all(isinstance(v, int) for v in (lo, hi)):
        out.append(Problem(f"{key}.int", f"bounds must be integers, got {[lo, hi]!r}"))
    if not fits(1 if kind == "int" else 0.5, typ) or (kind == "int" and fits(0.5, typ)):
        other = "float" if kind == "int" else "int"
        out.append(Problem(key, f"{kind} range on a {type_name(typ)} field", f"use {other} or choice"))
    # A zero-width range searches nothing (Optuna would draw the one value every time): almost
    # certainly a typo, and a fixed value belongs in base:.
    if lo > hi:
        out.append(Problem(f"{key}.{kind}", f"inverted range [{lo}, {hi}]: low is above high",
                           f"swap them: [{hi}, {lo}]"))
    elif lo == hi:
        out.append(Problem(f"{key}.{kind}", f"empty range [{lo}, {hi}]: low equals high, so nothing is searched",
                           f"set {path}: {lo} under base: instead, or widen the range"))
    return out


def _when_fix(other: str, searched: dict, listed: str) -> str:
    """What to do about a condition on `other`, which is not searched: search it, or fix a typo."""
    close = [other] if field_type(other) is not None else difflib.get_close_matches(other, schema_paths(), n=1)
    if not close:
        return f"condition on a parameter under search: (now: {listed})"
    guess = "" if close[0] == other else f"did you mean {close[0]}?"
    unsearched = "" if close[0] in searched else f"{close[0]} must be under search: too (now: {listed})"
    return " ".join(filter(None, [guess, unsearched]))


def when_problems(params: list[Param]) -> list[Problem]:
    """Each `when:` names a parameter searched before it, and values that parameter can take."""
    out = []
    order = {q.path: i for i, q in enumerate(params)}
    searched = ", ".join(order) or "none"
    for q in params:
        key = f"search.{q.path}.when"
        for other, vals in q.when.items():
            if other == q.path:  # (also "not listed before itself": moving it cannot help)
                out.append(Problem(key, f"condition on {other!r}, the parameter itself: a parameter cannot be "
                                   "conditioned on itself (its value is drawn only once the condition holds)",
                                   f"drop the condition on {other}, or condition on another parameter searched "
                                   "before it"))
            elif other not in order:
                out.append(Problem(key, f"condition on {other!r}, which is not a searched parameter",
                                   _when_fix(other, order, searched)))
            elif order[other] >= order[q.path]:
                # Parameters are drawn in file order (DefineByRun), so a later one is unset here.
                out.append(Problem(key, f"condition on {other!r}, which is not listed before {q.path} under "
                                   "search: parameters are drawn in that order, so the condition never holds",
                                   f"move {other} above {q.path}"))
            else:
                out += _value_problems(key, other, params[order[other]], vals)
    return out


def _value_problems(key: str, other: str, q: Param, vals: list) -> list[Problem]:
    """A condition `other in vals` must be able to hold: each value one `q` can draw."""
    if q.kind == "choice":
        if all(any(v == c and type(v) is type(c) for c in q.choices) for v in vals):
            return []
        return [Problem(key, f"values {vals} are not among {other}'s choices {q.choices}")]
    if q.kind == "float":  # a continuous draw equals a listed value with probability 0
        return [Problem(key, f"condition on {other!r}, a float range {[q.low, q.high]}: a float draw never equals "
                        f"the listed values {vals}", f"conditions need a choice or int parameter: search {other} "
                        "as a choice, or condition on another parameter")]
    bad = [v for v in vals if isinstance(v, bool) or not isinstance(v, int) or not q.low <= v <= q.high]
    return [Problem(key, f"values {bad} are not integers in {other}'s range {[q.low, q.high]}",
                    f"list integers from {q.low} to {q.high}")] if bad else []
