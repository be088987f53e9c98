"""The report of a collapsed model opens with the verdict and leaves out what means nothing for
it; no figure title or summary sentence of any report says `nan`."""

import json
import re

import numpy as np
import pytest

from dnasweep.analyze import Routed, build_report, figures

NAMES = ["T0", "T1", "A0", "M0", "I0"]
N, S, G = 600, 3, 20
NAN = re.compile(r"\bnan\b", re.IGNORECASE)


@pytest.fixture
def titles(monkeypatch):
    """Every title and legend entry of the figures rendered while the test runs."""
    seen: list[str] = []
    render = figures._png

    def png(fig):
        for ax in fig.axes:
            seen.append(ax.get_title())
            if ax.get_legend():
                seen.extend(t.get_text() for t in ax.get_legend().get_texts())
        return render(fig)

    monkeypatch.setattr(figures, "_png", png)
    return seen


def _routed(paths_NSK: np.ndarray, flops_N: np.ndarray) -> Routed:
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(G), N // G)
    return Routed(paths_NSK, NAMES, flops_N, rng.integers(0, 3, N), ["a", "b", "c"], group,
                  np.tile(np.arange(N // G), G), 2.0 + rng.random(G), [f"ctx{i}" for i in range(N)])


@pytest.mark.parametrize("case", ["all_identity", "one_path"])
def test_collapsed_report_opens_with_the_verdict_and_leaves_out_the_rest(tmp_path, titles, case):
    paths = np.full((N, S, 1), 4)  # I0 at every step
    if case == "one_path":
        paths[:, 0, 0] = 0  # T0 first, then identity: the same for every token
    flops = np.full(N, 1000.0) + 500.0 * (case == "one_path")
    s = build_report("trial7", _routed(paths, flops), _routed(paths, flops), str(tmp_path), "lm")
    assert s["collapse"]["collapsed"] is True
    assert s["text"].startswith("trial7 (lm) has collapsed: its routed pool is bypassed, because ")
    if case == "all_identity":
        assert "identity (skip) modules take 100% of its routed slots" in s["text"]
        assert s["collapse"]["distinct_paths"] == 0
    else:
        assert "takes the same path through the pool (T0 > - > -" in s["text"]
        assert s["collapse"]["distinct_paths"] == 1 and s["collapse"]["only_path"] == "T0 > - > -"
    assert not NAN.search(s["text"]) and not any(NAN.search(t) for t in titles), (s["text"], titles)
    # only the figures that still mean something: where the slots go
    assert s["files"] == ["report.html", "summary.json", "paths.csv", "usage.csv", "load_heatmap.png",
                          "identity_per_step.png"]
    assert not (tmp_path / "rank_frequency.png").exists() and not (tmp_path / "compute_vs_loss.png").exists()
    assert s["power_law"] is None and s["mi"] is None and set(s["compute"]) == {"flops"}
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    assert html.index("has collapsed") < html.index("<h2>")  # the verdict opens the page
    assert "Pearson" not in html and "power-law" not in html
    assert json.loads((tmp_path / "summary.json").read_text()) == s


def test_constant_compute_without_collapse_says_so_instead_of_nan(tmp_path, titles):
    """A soft mixture sends every token through every module: one path by construction, the same
    FLOPs for every token. Not a collapse, and its correlation is undefined, not `nan`."""
    paths = np.broadcast_to(np.arange(len(NAMES)), (N, S, len(NAMES))).copy()
    s = build_report("mix", _routed(paths, np.full(N, 900.0)), None, str(tmp_path), "lm", paths_vary=False)
    assert s["collapse"]["collapsed"] is False and s["collapse"]["distinct_paths"] == 1
    assert "compute_vs_loss.png" in s["files"] and s["compute"]["group"]["pearson_r"] is None
    assert any(t.startswith("Compute vs loss (no correlation") for t in titles)
    assert not NAN.search(s["text"]) and not any(NAN.search(t) for t in titles), titles
    # where paths could differ (the default), one path for every token is collapse
    assert build_report("mix", _routed(paths, np.full(N, 900.0)), None, str(tmp_path / "b"), "lm")["collapse"][
        "collapsed"] is True


def test_the_information_of_a_step_is_in_the_modules_it_picks_not_in_slot_0(tmp_path):
    # Expert choice keeps slots in module order: slot 0 is module 0 (or -1), whatever else the token
    # got. Here module 0 takes every token and the other modules tell the class: slot 0 carried 0 bits.
    attr = np.random.default_rng(0).integers(0, 3, N)  # what _routed draws
    paths = np.full((N, S, 4), -1)
    paths[:, :, 0] = 0
    paths[:, :, 1] = np.where(attr == 0, 1, -1)[:, None]
    paths[:, :, 2] = np.where(attr == 1, 2, -1)[:, None]
    paths[:, :, 3] = np.where(attr == 2, 3, -1)[:, None]
    s = build_report("ec", _routed(paths, np.full(N, 900.0)), None, str(tmp_path), "lm")
    steps = s["mi"]["step_modules_vs_attr"]
    assert len(steps) == S and all(m["mi_bits"] > 1.0 and m["p_value"] < 0.01 for m in steps), steps


@pytest.mark.parametrize("paths_vary", [True, False])
def test_the_summary_says_how_many_tokens_revisit_a_module_for_every_router(tmp_path, paths_vary):
    """A conditional expression took the reuse sentence into its else branch only: the paragraph of
    every hard router (paths that vary) ended '..., and  Compute per token', the share left out."""
    rng = np.random.default_rng(1)
    paths = rng.integers(0, 4, (N, S, 1))  # routed modules T0..M0, revisits included
    s = build_report("hard", _routed(paths, np.full(N, 900.0) + rng.random(N)), None, str(tmp_path), "lm",
                     paths_vary=paths_vary)
    assert s["collapse"]["collapsed"] is False
    share = s["usage"]["reuse_token_share"]
    assert 0 < share < 1
    assert f"{share:.0%} of tokens revisit a non-identity module at two or more steps." in s["text"], s["text"]
    assert ", and  " not in s["text"]
