"""Pareto helpers beyond 2-D, the sweep's reference point and hypervolume history, and the sweep
figures (no Ray: synthetic trial rows)."""

import json
import re

import numpy as np
import pytest

from dnasweep.space import parse_space
from dnasweep.sweep import plots
from dnasweep.sweep.pareto import hypervolume, hypervolume_history, reference_point

SPACE = {"base": {"model": {"task": "vision", "d_model": 32}, "data": {"source": "digits"}},
         "search": {"train.lr": {"float": [1e-4, 1e-2], "log": True},
                    "model.router.type": {"choice": ["topk", "hash"]}},
         "objectives": [{"metric": "val/acc", "mode": "max"}, {"metric": "compute/flops_per_token", "mode": "min"}]}


def test_hypervolume_1d_and_3d_hand_computed():
    assert hypervolume([[0.5], [0.2]], ["min"], [1.0]) == pytest.approx(0.8)
    assert hypervolume([[0.5]], ["max"], [0.1]) == pytest.approx(0.4)
    # two boxes of volume 2 overlapping in a unit cube: 2 + 2 - 1
    assert hypervolume([[1, 2, 2], [2, 1, 2]], ["min"] * 3, [3, 3, 3]) == pytest.approx(3.0)
    # a point beyond the reference adds nothing; a max objective flips
    assert hypervolume([[1, 1, 1], [5, 0, 0]], ["min", "min", "max"], [2, 2, 0]) == pytest.approx(1.0)


def test_reference_point_lies_beyond_the_worst_value_of_each_objective():
    pts = [[0.9, 100.0], [0.5, 300.0], [0.7, 200.0]]
    ref = reference_point(pts, ["max", "min"])
    assert ref[0] == pytest.approx(0.5 - 0.1 * 0.4) and ref[1] == pytest.approx(300 + 0.1 * 200)
    assert reference_point([[2.0, 2.0]], ["min", "min"]).tolist() == pytest.approx([2.2, 2.2])


def test_hypervolume_history_grows_and_ignores_infeasible_trials():
    pts = [[3, 3], [1, 1], [2, 2], [0, 0]]
    hv = hypervolume_history(pts, [True, True, True, False], ["min", "min"], [4, 4])
    assert hv == pytest.approx([1.0, 9.0, 9.0, 9.0])  # [2,2] is dominated, [0,0] infeasible


def _rows():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        acc, flops = float(rng.uniform(0.4, 0.95)), float(rng.uniform(1e4, 2e6))
        rows.append({"number": i, "values": [acc, flops], "feasible": i != 3, "front": False,
                     "params": {"train.lr": float(rng.uniform(1e-4, 1e-2)), "model.router.type": "topk"}})
    from dnasweep.sweep.pareto import pareto_mask

    ok = [r for r in rows if r["feasible"]]
    for r, keep in zip(ok, pareto_mask([r["values"] for r in ok], ["max", "min"]), strict=True):
        r["front"] = bool(keep)
    return rows


def test_sweep_figures_written_front_highlighted_and_offline(tmp_path):
    pytest.importorskip("plotly", reason="the sweep extra (plotly) is not installed")
    space = parse_space(SPACE, "space.yaml")
    rows = _rows()
    paths = plots.write_all(rows, space, [0.1 * i for i in range(12)], str(tmp_path))
    assert sorted(p.split("/")[-1] for p in paths) == ["hypervolume.png", "pareto.html", "pareto.png"]
    for name in ("pareto.png", "hypervolume.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "pareto.html").read_text()
    # offline: the one script it loads is plotly.js beside it (no CDN), written once per directory
    assert re.findall(r"<script[^>]+src=\"([^\"]+)\"", html) == [plots.PLOTLY_JS]
    bundle = tmp_path / plots.PLOTLY_JS
    assert bundle.stat().st_size > 1_000_000 and len(html) < 100_000  # the figure alone, not 4.8 MB
    assert "plotly.js v" in bundle.read_text()[:500]
    mtime = bundle.stat().st_mtime_ns
    plots.write_all(rows, space, [0.1], str(tmp_path))  # a later figure reuses the script
    assert bundle.stat().st_mtime_ns == mtime and not list(tmp_path.glob("*.tmp"))
    # one trace per group; the dominated one faded, the front opaque, hover text names the trial
    traces = {t["name"]: t for t in _plotly_traces(html)}
    assert set(traces) == {"dominated", "infeasible", "Pareto front"}
    assert traces["dominated"]["opacity"] < 0.5 <= traces["Pareto front"]["opacity"]
    n_front = sum(r["front"] for r in rows)
    assert len(traces["Pareto front"]["x"]) == n_front and len(traces["infeasible"]["x"]) == 1
    assert any(t.startswith("trial ") and "lr=" in t for t in traces["Pareto front"]["text"])
    assert plots.write_all([], space, [], str(tmp_path / "none")) == []


def _plotly_traces(html: str) -> list[dict]:
    """The figure's data array from Plotly.newPlot(id, [traces...], layout, ...)."""
    start = html.index("Plotly.newPlot(")
    data_at = html.index("[", start)
    data, _ = json.JSONDecoder().raw_decode(html[data_at:])
    return data


@pytest.mark.parametrize("modes", [("min", "min"), ("max", "min"), ("min", "max"), ("max", "max")])
def test_front_line_turns_at_corners_the_front_dominates(tmp_path, modes):
    """The step line joining the front must bound what the trials reached: each corner it turns
    at is dominated by a trial. The turn used to follow the slope of the front, which put the
    corners on the optimistic side (claiming values no trial reached) when the first objective
    is minimised and the second maximised, or both maximised."""
    pytest.importorskip("plotly", reason="the sweep extra (plotly) is not installed")
    from dnasweep.sweep.pareto import pareto_mask

    spec = dict(SPACE, objectives=[{"metric": "val/acc", "mode": modes[0]},
                                   {"metric": "compute/flops_per_token", "mode": modes[1]}])
    space = parse_space(spec, "space.yaml")
    rng = np.random.default_rng(1)
    rows = [{"number": i, "values": [float(rng.uniform(0, 1)), float(rng.uniform(0, 1))], "feasible": True,
             "params": {}} for i in range(40)]
    for r, keep in zip(rows, pareto_mask([r["values"] for r in rows], list(modes)), strict=True):
        r["front"] = bool(keep)
    plots.write_all(rows, space, [0.1], str(tmp_path))
    (front,) = [t for t in _plotly_traces((tmp_path / "pareto.html").read_text()) if t["name"] == "Pareto front"]
    xs, ys = front["x"], front["y"]
    assert len(xs) > 2
    hv = front["line"]["shape"] == "hv"  # hv: along x first, so the corner is (next x, this y)
    corners = [(xs[i + 1], ys[i]) if hv else (xs[i], ys[i + 1]) for i in range(len(xs) - 1)]
    better = [(lambda a, b: a <= b) if m == "min" else (lambda a, b: a >= b) for m in modes]
    for cx, cy in corners:
        assert any(better[0](x, cx) and better[1](y, cy) for x, y in zip(xs, ys, strict=True)), (modes, cx, cy)
