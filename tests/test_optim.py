"""The training loop's AdamW: torch's update, without torch._dynamo's import (1.1 s of CPU in every
process that trains, each sweep worker's start included)."""

import os
import subprocess
import sys
import textwrap

import torch
from helpers import TINY_LM as TINY

from dnasweep.config import load_trial
from dnasweep.config.train import TrainConfig
from dnasweep.model import build_model
from dnasweep.train.optim import make_optimizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_its_steps_and_state_are_torchs_adamw():
    """Same parameters after steps with both weight-decay groups, and state dicts that load either way."""
    cfg = load_trial("search_spaces/lm.yaml", TINY).model
    torch.manual_seed(0)
    a = build_model(cfg)
    b = build_model(cfg)
    b.load_state_dict(a.state_dict())
    tc = TrainConfig(lr=0.01, weight_decay=0.1)
    ours = make_optimizer(a, tc, torch.device("cpu"))
    theirs = torch.optim.AdamW([{"params": [dict(b.named_parameters())[n] for n in names],
                                 "weight_decay": g["weight_decay"]} for g, names in _groups(a, ours)],
                               lr=tc.lr, betas=(tc.beta1, tc.beta2))
    x = torch.randint(0, cfg.vocab_size, (4, cfg.seq_len))
    for _ in range(3):
        for model, opt in ((a, ours), (b, theirs)):
            model(x).logits.float().square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert all(p.grad is None for p in a.parameters())
    theirs.load_state_dict(ours.state_dict())
    ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict()["state"][0]["step"] == 3


def _groups(model, opt):
    """(group, parameter names) of each of `opt`'s groups."""
    name = {id(p): n for n, p in model.named_parameters()}
    return [(g, [name[id(p)] for p in g["params"]]) for g in opt.param_groups]


def test_training_and_resuming_never_import_torch_dynamo(tmp_path):
    """A fresh interpreter trains (evaluation, checkpoint), resumes and trains on: torch._dynamo is
    never imported. torch's own AdamW imported it at construction and at every step."""
    probe = textwrap.dedent(f"""
        import sys
        from dnasweep.config import load_trial
        from dnasweep.train.loop import run_trial
        for steps in (2, 4):
            run_trial(load_trial("search_spaces/lm.yaml", {TINY!r} + [f"train.max_steps={{steps}}",
                                 "train.eval_every=2", "out_dir={tmp_path}"]))
        print("DYNAMO", "torch._dynamo" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "DYNAMO False" in out.stdout, out.stdout[-2000:]
