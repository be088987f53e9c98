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


@pytest.mark.slow  # imports Ray Tune in a process (~3 s)
def test_tune_usage_tag_counts_callbacks_as_tune_does_without_importing_mlflow():
    """Tune's own tag_callbacks imports all of MLflow before the first trial starts; the replacement
    records the same counts and imports none of it (run in a fresh process: the suite imports mlflow)."""
    import subprocess
    import sys

    code = """
import json, sys
from ray.air._internal import usage
from ray.tune import Callback
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback
from dnasweep.sweep import compat

class Mine(Callback): pass
class MyLogger(LoggerCallback): pass

cbs = [CSVLoggerCallback(), JsonLoggerCallback(), Mine(), Mine(), MyLogger(), object()]
seen = []
usage.record_extra_usage_tag = lambda key, value: seen.append((key, value))
compat.tag_callbacks_without_imports()
assert usage.tag_callbacks(cbs) and not usage.tag_callbacks([])
assert "mlflow" not in sys.modules, "the usage tag imported mlflow"
assert seen == [(usage.TagKey.AIR_CALLBACKS, json.dumps(usage._count_callbacks(cbs)))], seen
print(seen[0][1])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"Mine"' not in out.stdout and '"CustomCallback": 2' in out.stdout and '"CSVLoggerCallback": 1' in out.stdout
