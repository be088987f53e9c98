"""The listing commands start fast: `dnasweep ls`, `pareto` and `validate` import no torch, ray or
mlflow (torch alone took 2 to 4.5 s of a 7 to 12 s `ls` on 2 cores). Each runs the real CLI in a
fresh interpreter on a real sweep directory or space file and reports what it imported; a config
that needs torch to be checked (a dense baseline sized by measuring its DNA) still gets it. No
timings here: they depend on the machine (see the README)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("optuna", reason="the sweep extra (ray[tune], optuna, mlflow) is not installed")

from test_sweep_cli import make_sweep  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACES = sorted(os.path.join(REPO, "search_spaces", f) for f in os.listdir(os.path.join(REPO, "search_spaces"))
                if f.endswith(".yaml"))
HEAVY = ("torch", "ray", "mlflow")

# Runs `dnasweep ARGS` as `python -m dnasweep.cli` does, then prints which heavy modules it loaded.
PROBE = textwrap.dedent("""
    import json, runpy, sys
    sys.argv = ["dnasweep", *sys.argv[1:]]
    try:
        runpy.run_module("dnasweep.cli", run_name="__main__", alter_sys=True)
        rc = 0
    except SystemExit as e:
        rc = e.code
    print("PROBE " + json.dumps({"rc": rc, "loaded": sorted(m for m in HEAVY if m in sys.modules)}))
""").replace("HEAVY if m", repr(HEAVY) + " if m")


def cli(*args: str, cwd=None) -> tuple[int, list[str], str]:
    """(exit code, heavy modules loaded, output) of one CLI command in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "DNASWEEP_PLUGINS"}
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=cwd or REPO,
                       env=env, timeout=120)
    lines = r.stdout.splitlines()
    probe = [json.loads(line[6:]) for line in lines if line.startswith("PROBE ")]
    assert probe, r.stdout + r.stderr
    return probe[-1]["rc"], probe[-1]["loaded"], "\n".join(x for x in lines if not x.startswith("PROBE ")) + r.stderr


def test_ls_and_pareto_import_no_torch_ray_or_mlflow(tmp_path):
    make_sweep(tmp_path, "demo")
    make_sweep(tmp_path, "other")
    (tmp_path / "not-a-sweep").mkdir()
    rc, loaded, out = cli("ls", "--root", str(tmp_path))
    assert rc == 0 and loaded == [], (loaded, out)
    assert "demo" in out and "other" in out and "3/" in out and "not-a-sweep" not in out
    for args in (["pareto", "demo", "--root", str(tmp_path)], ["pareto", str(tmp_path / "demo"), "--wide"],
                 ["pareto", "demo", "--root", str(tmp_path), "--json"]):
        rc, loaded, out = cli(*args)
        assert rc == 0 and loaded == [], (args, loaded, out)
        assert "Pareto front (2 of 3" in out or json.loads(out.splitlines()[0])["front"], out


@pytest.mark.parametrize("path", SPACES, ids=os.path.basename)
def test_validate_of_every_shipped_space_imports_no_torch(path):
    rc, loaded, out = cli("validate", path)
    assert rc == 0 and loaded == [], (loaded, out)
    assert "valid search space" in out and "parameters:" in out  # the corners' nominal costs: computed


def test_validate_samples_and_smoke_import_no_torch():
    rc, loaded, out = cli("validate", SPACES[0], "--smoke", "--samples", "30")
    assert rc == 0 and loaded == [], (loaded, out)


def test_validate_reports_bad_router_without_torch(tmp_path):
    """The router registry answers from the built-ins' declarations: a wrong router type is named,
    with every registered one, and still no torch."""
    bad = tmp_path / "bad.yaml"
    shutil.copy(SPACES[0], bad)
    rc, loaded, out = cli("validate", str(bad), "base.model.router.type=nope")
    assert rc == 2 and loaded == [], (loaded, out)
    assert "model.router.type" in out and "expert_choice" in out and "topk" in out


def test_validate_imports_torch_only_when_it_must(tmp_path):
    trial = tmp_path / "trial.yaml"
    trial.write_text("model: {d_model: 32, n_heads: 4, seq_len: 32, n_steps: 2}\n")
    rc, loaded, out = cli("validate", str(trial))
    assert rc == 0 and loaded == [] and "valid trial" in out, (loaded, out)
    # a dense baseline sized to its DNA's measured FLOPs builds that DNA: torch is needed
    rc, loaded, out = cli("validate", str(trial), "model.kind=dense", "model.dense_match=measured")
    assert rc == 0 and "torch" in loaded and "ray" not in loaded, (loaded, out)


def test_declared_builtin_routers_match_their_registration():
    """What the registry reads from routers.py's decorators (without torch) is what importing it
    registers, rule included."""
    code = textwrap.dedent("""
        import json, sys
        from dnasweep.model.registry import ROUTERS, router_names
        names = router_names()
        assert "torch" not in sys.modules
        props = lambda: {n: [s.learns, s.causal, s.biasable, s.all_modules, s.capacity, s.hash_table]
                         for n, s in ROUTERS.items()}
        declared = props()
        import dnasweep.model.routers as r
        print(json.dumps([names, declared == props(), ROUTERS["topk"].rule is r.topk_rule]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    names, same, real = json.loads(out.stdout)
    assert "topk" in names and "expert_choice" in names and same and real


def test_a_declared_rule_runs_the_real_one():
    import torch

    from dnasweep.model.registry import _LazyRule

    lazy = _LazyRule("dnasweep.model.routers", "topk_rule")
    from dnasweep.model import routers

    assert lazy.__qualname__ == "topk_rule" and lazy.__module__ == "dnasweep.model.routers"
    calls = []
    real = routers.topk_rule
    try:
        routers.topk_rule = lambda *a: calls.append(a) or "routed"
        assert lazy(torch.zeros(2, 3), None, None) == "routed" and len(calls) == 1
    finally:
        routers.topk_rule = real


def test_output_piped_into_a_reader_that_stops_early_ends_quietly():
    """`dnasweep pareto SWEEP | head` ended with a BrokenPipeError traceback (exit 1)."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "dnasweep.cli", "validate", "search_spaces/lm.yaml", "--samples", "50"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before the first line
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0 and "Traceback" not in err, err
