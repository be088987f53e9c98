"""Typed configs and the one pipeline that loads them: YAML -> overrides -> smoke overlay (then the
overrides again on top) -> structured merge -> every problem at once (file, dotted key, rule, fix).

    trial.py   TrialConfig (model + data + train + loss; component configs live beside their
               components), build_trial / load_trial
    sweep.py   SweepConfig: the typed sections of a search-space file, the sampler registry
    train.py   TrainConfig (the training loop's settings; dnasweep.train imports it)
    load.py    YAML reading, overrides, schema checks shared by both

This package never imports dnasweep.train, dnasweep.space or the orchestration stack.
"""

from dnasweep.config.load import flatten, parse_overrides, read_yaml
from dnasweep.config.trial import TrialConfig, build_trial, load_trial, to_dict, to_yaml, trial_problems

__all__ = ["TrialConfig", "build_trial", "flatten", "load_trial", "parse_overrides", "read_yaml", "to_dict",
           "to_yaml", "trial_problems"]
