"""Every private attribute of Ray Tune or Optuna that dnasweep relies on (dnasweep/sweep/compat.py)
still exists where compat looks for it: an upgrade that moves one fails here, loudly, instead of
deep inside a resumed sweep."""

import pytest

pytest.importorskip("ray", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")


def test_private_attributes_dnasweep_uses_are_where_compat_looks():
    from dnasweep.sweep import compat

    compat.check()


def test_no_other_module_reaches_into_ray_or_optuna_internals():
    import pathlib
    import re

    sweep = pathlib.Path(__file__).resolve().parents[1] / "dnasweep" / "sweep"
    private = re.compile(r"\._(ot_study|ot_trials|completed_trials|local_tuner|tune_config|trial_id)\b")
    offenders = [f"{p.name}:{i + 1}" for p in sweep.glob("*.py") if p.name != "compat.py"
                 for i, line in enumerate(p.read_text().splitlines()) if private.search(line)]
    assert not offenders, offenders
