"""Analyse one trained trial: collect its routing over held-out data (trained and at
initialisation) and write the report. The entry point behind `dnasweep analyze` for a trial."""

from __future__ import annotations

import json
import os

from dnasweep.analyze.collect import collect, find_target
from dnasweep.analyze.report import build_report

# Held-out examples run through the model: enough paths with >= 30 tokens for the power-law fit
# (LM: 256 windows x seq_len tokens; vision: up to 4,096 held-out images), in whole batches.
DEFAULT_EXAMPLES = {"lm": 256, "vision": 4096}


def _gains(path: str) -> dict:
    """The compare/* gains a sweep trial reported against its dense reference (result.json), if any."""
    from dnasweep import metrics as M

    try:
        with open(os.path.join(path, "result.json")) as f:
            res = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: res[k] for k in (M.COMPUTE_GAIN, M.COMPUTE_GAIN_BOUND, M.SPEED_GAIN, M.SPEED_GAIN_BOUND) if k in res}


def analyze_trial(path: str, out_dir: str | None = None, max_examples: int | None = None,
                  device: str = "cpu") -> tuple[dict, str]:
    """Report on the trial at `path` (trial or checkpoint directory) -> (summary, report directory).
    The report goes to `out_dir`, default PATH/analysis."""
    target = find_target(path)
    task = target.cfg.model.task
    trained, init, extra = collect(target, max_examples or DEFAULT_EXAMPLES[task], device)
    out = out_dir or os.path.join(path, "analysis")
    summary = build_report(target.name, trained, init, out, task, images_GHW=extra.get("images_GHW"),
                           patch_grid=extra.get("patch_grid"), paths_vary=extra["paths_vary"], compare=_gains(path),
                           identity_share=extra.get("identity_share"))
    return summary, out
