"""User-facing errors, and the field rules every typed config declares.

A ConfigError owns *every* problem found in one input, so the user fixes them all in one go
(torchtune style) instead of one per run. Numeric bounds are declared on the config field
(`field(default=..., metadata=gt(0))`) and a `Literal` type names the allowed words;
`field_problems` checks both for any config dataclass, so no config spells those checks by hand.
"""

from __future__ import annotations

import functools
import math
import operator
import typing
from dataclasses import dataclass, fields
from typing import Literal


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one key of one input."""

    key: str  # dotted path into the config, e.g. "model.router.top_k"
    message: str  # the rule that was broken, with the offending value
    fix: str = ""  # what to do about it (allowed values, a suggestion)

    def render(self) -> str:
        s = f"  {self.key}: {self.message}"
        return s + (f"\n      fix: {self.fix}" if self.fix else "")


class ConfigError(ValueError):
    """Raised with every problem of an input at once. The CLI prints it and exits with code 2."""

    def __init__(self, problems: list[Problem], source: str = "config"):
        self.problems = list(problems)
        self.source = source
        n = len(self.problems)
        head = f"{source}: {n} problem{'s' if n != 1 else ''}"
        super().__init__("\n".join([head, *(p.render() for p in self.problems)]))

    def __reduce__(self):
        # Pickled across processes (a Ray worker's error reaches the driver): rebuild from the
        # problems, not from the rendered text, which __init__ would take for a problem list.
        return (ConfigError, (self.problems, self.source))


def raise_if(problems: list[Problem | None], source: str = "config") -> None:
    """Raise a ConfigError when `problems` holds any (None: a check that found nothing)."""
    if found := [p for p in problems if p is not None]:
        raise ConfigError(found, source)


_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def gt(x: float, below: float | None = None) -> dict:
    """Field metadata: the value must be > x (and < below, when given)."""
    return {">": x} if below is None else {">": x, "<": below}


def ge(x: float, below: float | None = None) -> dict:
    """Field metadata: the value must be >= x (and < below, when given)."""
    return {">=": x} if below is None else {">=": x, "<": below}


@functools.cache
def type_hints(cls: type) -> dict:
    """`typing.get_type_hints(cls)`, once per class: string annotations are compiled on every call,
    and `dnasweep validate` checks hundreds of points (most of its 2 s went there). Read only."""
    return typing.get_type_hints(cls)


def field_problems(cfg, prefix: str, schema: type | None = None) -> list[Problem]:
    """The declared rules of every field of dataclass `schema` (default: `cfg`'s type) on `cfg`:
    bounds in its metadata, the words of a Literal type. None passes (an optional value unset)."""
    schema = schema or type(cfg)
    out, types = [], type_hints(schema)
    for f in fields(schema):
        v, key = getattr(cfg, f.name), f"{prefix}.{f.name}"
        words = typing.get_args(types[f.name]) if typing.get_origin(types[f.name]) is Literal else ()
        if words and v not in words:
            out.append(Problem(key, f"unknown value {v!r}", f"use one of: {', '.join(map(str, words))}"))
        if (p := value_problem(f, v)) is not None:
            out.append(Problem(key, p))
    return out


def value_problem(f, v) -> str | None:
    """What is wrong with `v` as a value of dataclass field `f` by the bounds in its metadata (a
    number must be finite: inf passes `> 0` and makes a NaN at the first step); None if nothing."""
    rules = [(op, x) for op, x in f.metadata.items() if op in _OPS]
    if not isinstance(v, int | float) or isinstance(v, bool):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return f"must be a finite number, got {v!r}"
    if rules and not all(_OPS[op](v, x) for op, x in rules):
        return f"must be {' and '.join(f'{op} {x:g}' for op, x in rules)}, got {v!r}"
    return None
