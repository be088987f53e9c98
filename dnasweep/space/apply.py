"""`apply(base, point)`: the only way a sampled point becomes a trial config.

Values are set on a copy of the typed base as they are (no text round trip), so a trial gets
exactly what the sampler recorded: 'true', 'off', '1e3' and None stay what they are. A point that
breaks a rule of the trial config (e.g. a router that cannot take identity_bias) raises a
ConfigError naming the rule: the trial then fails as `invalid`, and no other trial is touched.
"""

from __future__ import annotations

import copy
import functools
from typing import get_args

from dnasweep.config import TrialConfig, trial_problems
from dnasweep.config.load import fits, type_name
from dnasweep.errors import ConfigError, Problem, raise_if
from dnasweep.space.params import Param, field_type


def active_values(params: list[Param], point: dict) -> dict:
    """The values a trial at `point` gets: a conditional parameter only where its `when:` holds,
    decided in file order as the sampler draws them (an inactive one keeps the base value)."""
    values: dict = {}
    for q in params:
        if q.path in point and q.active(values):
            values[q.path] = point[q.path]
    return values


def apply(base: TrialConfig, values: dict, out_dir: str | None = None, source: str = "point") -> TrialConfig:
    """base + `values` ({dotted path: value}) as a new TrialConfig; ConfigError listing every
    value of the wrong type and every rule the combination breaks."""
    cfg = copy.deepcopy(base)
    bad = []
    for path, v in values.items():
        typ = field_type(path)
        if typ is None or not fits(v, typ):
            bad.append(Problem(path, f"value {v!r} ({type(v).__name__}) does not fit this field"
                               + (f" ({type_name(typ)})" if typ is not None else " (no such field)")))
            continue
        *parents, leaf = path.split(".")
        node = functools.reduce(getattr, parents, cfg)
        if type(v) is int and not _takes_int(typ):
            v = float(v)  # an int for a float field: the same number, typed as the field is
        setattr(node, leaf, v)
    if out_dir is not None:
        cfg.out_dir = out_dir
    raise_if(bad or trial_problems(cfg), source)
    return cfg


def _takes_int(typ) -> bool:
    return typ is int or int in get_args(typ)


def try_apply(base: TrialConfig, values: dict) -> TrialConfig | None:
    """apply, or None when the point is invalid."""
    try:
        return apply(base, values)
    except ConfigError:
        return None
