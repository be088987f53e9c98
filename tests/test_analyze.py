"""`dnasweep analyze` end to end on trained tiny models (LM and ViT): the model-running side
(paths, per-token FLOPs, byte classes) and the report it writes."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dnasweep.analyze.collect import BYTE_CLASSES, byte_class_N, token_flops_BL
from dnasweep.config import build_trial
from dnasweep.model import build_model
from dnasweep.train.loop import run_trial

pytest.importorskip("powerlaw", reason="the analyze extra (matplotlib, powerlaw) is not installed")

LM = ["model.d_model=32", "model.n_heads=4", "model.seq_len=64", "model.n_steps=3", "data.max_bytes=2000000",
      "train.batch_size=8", "train.max_steps=40", "train.eval_every=40", "train.eval_batches=2"]
VIT = ["model.task=vision", "model.d_model=32", "model.n_heads=4", "model.n_steps=2", "model.image_size=8",
       "model.patch_size=2", "model.channels=1", "model.n_classes=10", "model.pooling=cls", "data.source=digits",
       "train.batch_size=32", "train.max_steps=40", "train.eval_every=40"]


def test_byte_classes_hand_computed():
    got = byte_class_N(np.frombuffer(b"a7 ,\n\xc3Z\t", dtype=np.uint8))
    assert [BYTE_CLASSES[c] for c in got] == ["letter", "digit", "space", "punct", "newline", "other", "letter",
                                              "space"]


@pytest.mark.parametrize("task", ["lm", "vision"])
def test_per_token_flops_add_up_to_the_models_own_accounting(task):
    over = LM if task == "lm" else VIT
    cfg = build_trial({}, [o for o in over if o.startswith(("model.", "data.source"))]).model
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.randint(0, 256, (3, 64)) if task == "lm" else torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        out = model(x, return_paths=True)
    flops_BL = token_flops_BL(model, out.paths)
    # pool FLOPs by path, spread over tokens, equal what the forward pass measured for the pool
    pool_per_token = float(flops_BL.mean())
    base = out.stats.flops_per_token - pool_per_token
    assert 0 < base < out.stats.flops_per_token
    # the base (stem, backbone, routers, readout) does not depend on routing: same for a second input
    with torch.no_grad():
        out2 = model(x.flip(0) if task == "lm" else -x, return_paths=True)
    assert out2.stats.flops_per_token - float(token_flops_BL(model, out2.paths).mean()) == pytest.approx(base)
    assert flops_BL.std() > 0  # tokens differ in what they spend


@pytest.mark.slow  # trains, then analyses (~10 s each)
@pytest.mark.parametrize("task", ["lm", "vision"])
def test_analyze_trained_trial_end_to_end(task, tmp_path):
    over = LM if task == "lm" else VIT
    trial = tmp_path / "trial"
    assert run_trial(build_trial({}, [*over, f"out_dir={trial}"])).status == "completed"
    r = subprocess.run([sys.executable, "-m", "dnasweep.cli", "analyze", str(trial), "--examples", "64"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = trial / "analysis"
    summary = json.loads((out / "summary.json").read_text())
    for f in summary["files"]:
        assert (out / f).stat().st_size > 0, f
    assert str(out / "report.html") in r.stdout and summary["text"][:40] in r.stdout
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 8
    if task == "vision":
        assert "compute_overlay.png" in summary["files"]
    n = summary["n_tokens"]
    assert n == (64 * 64 if task == "lm" else summary["n_groups"] * 16)  # class token dropped
    assert 1 <= summary["n_paths"] <= n
    assert 0 <= summary["mi"]["path_vs_attr"]["p_value"] <= 1
    assert np.isfinite(summary["compute"]["flops"]["mean"]) and summary["compute"]["flops"]["mean"] > 0
    load = np.array(summary["usage"]["load_SM"])
    assert load.shape[0] == (3 if task == "lm" else 2)
    # The freshly initialised router spreads 4k tokens over many paths: enough for a fit. A trained
    # tiny model may collapse onto a handful of paths; then the report says why there is no fit.
    if task == "lm":
        init = summary["power_law_init"]
        assert init["reason"] is None and 0.2 < init["alpha"] < 3 and init["alpha_se"] > 0, init
    fit = summary["power_law"]
    assert (fit["reason"] is None and fit["alpha"] > 0) or ("path" in fit["reason"] and fit["alpha"] is None)


@pytest.mark.slow  # dnasweep processes (~2 s)
def test_analyze_refuses_a_directory_without_a_trial(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dnasweep.cli", "analyze", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "holds no trained trial" in r.stderr
