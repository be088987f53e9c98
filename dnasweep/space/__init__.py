"""Search spaces, free of Ray, Optuna and MLflow (a test holds it to that).

    params.py       the search: entries as typed Params; range and when: rules
    space.py        SearchSpace (a typed SweepConfig + params + constraints), load_space
    apply.py        apply(base, point) -> TrialConfig: the only way a point becomes a trial
    feasibility.py  corners; constraints no point can meet
    steps.py        the most steps one trial can be asked for (what a step budget leaves room for)
    sample.py       seeded points and the share that break a rule (validate --samples)
    summary.py      what validate prints
"""

from dnasweep.space.apply import active_values, apply
from dnasweep.space.feasibility import corners
from dnasweep.space.params import Param
from dnasweep.space.space import Constraint, SearchSpace, load_space, parse_space, space_from_dict
from dnasweep.space.summary import space_warnings, summarize

__all__ = ["Constraint", "Param", "SearchSpace", "active_values", "apply", "corners", "load_space",
           "parse_space", "space_from_dict", "space_warnings", "summarize"]
