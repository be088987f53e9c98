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


def test_trial_actors_get_no_runtime_env_unless_the_driver_has_variables_to_pass_on(monkeypatch):
    """Tune gave every trial actor a runtime env (PyTorch Lightning's PL_DISABLE_FORK), so none took
    a worker Ray keeps idle, and each slot's first trial waited for a new process that imports Ray
    twice. Without one to pass on, the actor class has none; with one, Tune's is kept."""
    from ray.tune.execution import class_cache

    from dnasweep.sweep import compat

    compat.trial_actors_in_idle_workers()
    compat.trial_actors_in_idle_workers()  # idempotent: Tune's own get stays one level down
    assert "ray.remote(runtime_env=runtime_env)" in __import__("inspect").getsource(
        class_cache._ActorClassCache.get.tune_get)
    for v in class_cache.ENV_VARS_TO_PROPAGATE:
        monkeypatch.delenv(v, raising=False)

    class Trainable:
        pass

    assert class_cache._ActorClassCache().get(Trainable)._default_options.get("runtime_env") is None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    env = class_cache._ActorClassCache().get(Trainable)._default_options["runtime_env"]["env_vars"]
    assert env["AWS_ACCESS_KEY_ID"] == "key"
