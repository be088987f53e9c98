"""Imports point one way: the model library, data, configs, search spaces, training loop and
analysis never import the orchestration stack (ray, optuna, mlflow); only dnasweep.sweep (and the
CLI, lazily) may. Configs never import the training loop, spaces or sweeps (train imports config)."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1] / "dnasweep"
CORE = ["model", "data", "train", "analyze", "config", "space"]
FORBIDDEN = {"ray", "optuna", "mlflow"}


def test_core_packages_have_no_orchestration_imports():
    offenders = []
    for pkg in CORE:
        for path in sorted((ROOT / pkg).rglob("*.py")) if (ROOT / pkg).exists() else []:
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                offenders += [f"{path.relative_to(ROOT.parent)}:{node.lineno} imports {n}"
                              for n in names if n.split(".")[0] in FORBIDDEN]
    assert (ROOT / "model").exists()
    assert not offenders, "\n".join(offenders)


def test_importing_core_loads_no_orchestration_module():
    mods = [f"dnasweep.{p}" for p in CORE if (ROOT / p).exists()] + ["dnasweep.cli"]
    code = (f"import sys; import {', '.join(mods)}; "
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _imported_dnasweep_modules(pkg: str) -> set[str]:
    out = set()
    for path in (ROOT / pkg).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dnasweep."):
                out.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("dnasweep.")}
    return out


def test_config_is_below_train_space_and_sweep():
    assert not _imported_dnasweep_modules("config") & {"train", "space", "sweep", "analyze", "cli"}
    assert not _imported_dnasweep_modules("space") & {"train", "sweep", "analyze", "cli"}
