"""Seeded random points of a space, drawn as the sampler draws them (file order, `when:` rules),
and what applying them says: `dnasweep validate --samples N` reports the share of points that
break a rule of the trial config, and the first rule each breaks. A shipped space has none."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field

from dnasweep.errors import ConfigError
from dnasweep.space.apply import apply
from dnasweep.space.space import SearchSpace


def sample_point(space: SearchSpace, rnd: random.Random) -> dict:
    """One point: each active dimension drawn uniformly (log-uniformly with log: true)."""
    values: dict = {}
    for q in space.params:
        if not q.active(values):
            continue
        if q.kind == "choice":
            values[q.path] = rnd.choice(q.choices)
        elif q.log:
            x = math.exp(rnd.uniform(math.log(q.low), math.log(q.high)))
            values[q.path] = min(max(round(x), int(q.low)), int(q.high)) if q.kind == "int" else x
        else:
            values[q.path] = rnd.randint(int(q.low), int(q.high)) if q.kind == "int" else rnd.uniform(q.low, q.high)
    return values


@dataclass
class SampleReport:
    """What N seeded points of a space gave."""

    n: int
    invalid: int = 0
    rules: Counter = field(default_factory=Counter)  # "key: rule" -> points whose first broken rule it is
    example: dict = field(default_factory=dict)  # "key: rule" -> the first point that broke it

    def text(self) -> str:
        lines = [f"  {self.n} sampled points (seeded): {self.invalid} invalid ({100 * self.invalid / self.n:.1f}%)"]
        for rule, k in self.rules.most_common():
            lines.append(f"    {k:>4} x  {rule}\n           e.g. {self.example[rule]}")
        return "\n".join(lines)


def check_samples(space: SearchSpace, n: int, seed: int = 0) -> SampleReport:
    rnd, report = random.Random(seed), SampleReport(n)
    for _ in range(n):
        point = sample_point(space, rnd)
        try:
            apply(space.base, point)
        except ConfigError as e:
            report.invalid += 1
            rule = f"{e.problems[0].key}: {e.problems[0].message}"
            report.rules[rule] += 1
            report.example.setdefault(rule, point)
    return report


def sampled_warnings(space: SearchSpace, n: int = 200) -> list[str]:
    """`run`'s check before a sweep starts: the share of `n` seeded points that break a rule of the
    trial config. Load-time checks judge corners and range ends only, so an int range whose inner
    values mostly break a rule ({int: [16, 64]} for d_model with 4 heads) passed, and each such
    trial failed `invalid`, budget spent. (Kept out of `validate`, which must start fast.)"""
    report = check_samples(space, n, seed=space.sampler.seed)
    if not report.invalid:
        return []
    rule, _ = report.rules.most_common(1)[0]
    return [f"{report.invalid} of {n} sampled points ({100 * report.invalid / n:.0f}%) break a rule of the trial "
            f"config, e.g. {rule} (at {report.example[rule]}): each such trial fails as invalid and spends one of "
            f"budget.trials. Add a when: to the dimension, or list the valid values as a choice; "
            f"`dnasweep validate {space.source} --samples 500` lists the rules"]
