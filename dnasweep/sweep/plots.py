"""Sweep-level figures: the Pareto front as a PNG (matplotlib) and an interactive HTML (plotly),
plus the hypervolume history. Dominated trials are drawn faded, infeasible ones (a constraint
violated) as crosses, so the front stands out. Both libraries load lazily.

The HTML loads plotly.js from PLOTLY_JS beside it, written once per sweep directory: embedded,
the 4.8 MB script made every copy of a few-kB figure 4.8 MB (SWEEP/, MLflow's artifacts, the
object store). It works offline, with no CDN."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from dnasweep import metrics as M

if TYPE_CHECKING:
    from dnasweep.space import SearchSpace

PLOTLY_JS = "plotly.min.js"
# Shown when the script is missing: the HTML opened where PLOTLY_JS is not beside it (MLflow's artifact viewer).
_NO_PLOTLY = ("<script>if (typeof Plotly === 'undefined') document.body.insertAdjacentHTML('afterbegin', "
              "'<p>The interactive figure needs " + PLOTLY_JS + " beside this file: open pareto.html in the sweep "
              "directory, or see pareto.png.</p>');</script>")


def _label(row: dict, space: SearchSpace) -> str:
    params = ", ".join(f"{p.path.split('.')[-1]}={row['params'][p.path]:.3g}" if isinstance(
        row["params"].get(p.path), float) else f"{p.path.split('.')[-1]}={row['params'][p.path]}"
        for p in space.params if p.path in row["params"])
    return f"trial {row['number']}: {params}"


def _groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by how they are drawn, each sorted by the first objective (empty groups left out)."""
    kinds = {"dominated": lambda r: r["feasible"] and not r["front"], "infeasible": lambda r: not r["feasible"],
             "Pareto front": lambda r: r["front"]}
    out = {name: sorted((r for r in rows if keep(r)), key=lambda r: r["values"][0]) for name, keep in kinds.items()}
    return {name: sel for name, sel in out.items() if sel}


def _staircase(space: SearchSpace) -> str:
    """"post" or "pre": where the step line through the front (sorted by the first objective, rising)
    turns. Its corners must be points the front dominates, never values no trial reached: with the
    first objective minimised, (next x, this y) is dominated by this point ("post"); maximised,
    (this x, next y) by the next one ("pre"). The second objective's mode does not matter."""
    return "post" if space.objectives[0].mode == "min" else "pre"


def _dense(reference: list[dict], space: SearchSpace) -> tuple[list, list, list[str], list, list]:
    """The dense reference frontier in the first two objectives' units and modes: rung x, y, labels,
    and the line through them (empty if no rung reports both objectives). The rungs drawn are those
    no other rung beats on both plotted objectives: the (FLOPs, val/loss) frontier would drop a rung
    that is better in, say, val/acc. Between rungs in (val/loss, FLOPs/token), the line follows the
    gain's interpolation (log FLOPs linear in loss), not a straight segment on a linear axis, so a
    trial drawn beyond the line has a gain above 1."""
    (x_m, x_mode), (y_m, y_mode) = ((o.metric, o.mode) for o in space.objectives[:2])
    sx, sy = (1 if x_mode == "min" else -1), (1 if y_mode == "min" else -1)
    from dnasweep.sweep.reference import blocks, rung_status

    pts = [(r["result"][x_m], r["result"][y_m], f"dense d_model={r['d_model']} blocks={blocks(r)}")
           for r in reference if rung_status(r) == "completed"
           and M.is_number(r["result"].get(x_m)) and M.is_number(r["result"].get(y_m))]
    on = sorted(p for p in pts if not any(sx * q[0] <= sx * p[0] and sy * q[1] <= sy * p[1] and q[:2] != p[:2]
                                          for q in pts))
    x, y, labels = [p[0] for p in on], [p[1] for p in on], [p[2] for p in on]
    lx, ly = list(x), list(y)
    if {x_m, y_m} == {M.VAL_LOSS, M.FLOPS_PER_TOKEN} and len(on) > 1:
        loss, flops = (x, y) if x_m == M.VAL_LOSS else (y, x)
        curve = [(loss[0], flops[0])]
        for i in range(1, len(on)):
            for t in (k / 16 for k in range(1, 17)):
                curve.append((loss[i - 1] + t * (loss[i] - loss[i - 1]),
                              flops[i - 1] * (flops[i] / flops[i - 1]) ** t))
        lx, ly = ([c[0] for c in curve], [c[1] for c in curve]) if x_m == M.VAL_LOSS else \
            ([c[1] for c in curve], [c[0] for c in curve])
    return x, y, labels, lx, ly


def warm() -> None:
    """Import the figure libraries in a thread (~0.8 s on a 2-core CPU), for a driver that will draw
    soon: called when the last trials run, so the end of the sweep does not wait for the import and
    a core left idle by the finished slot does the work."""
    import threading

    def imports():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.figure  # noqa: F401
        import plotly.graph_objects  # noqa: F401
        import plotly.offline  # noqa: F401

    threading.Thread(target=imports, name="dnasweep-warm-figures", daemon=True).start()


def _figure(w: float, h: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    return fig, fig.add_subplot()


def _save(fig, ax, path: str) -> str:
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def pareto_png(rows: list[dict], space: SearchSpace, path: str, reference: list[dict] | None = None) -> str:
    """First two objectives; front joined by a step line. `rows`: see pareto.trial_rows."""
    x_m, y_m = space.objectives[0].metric, space.objectives[1].metric
    fig, ax = _figure(6.4, 4.6)
    styles = {"dominated": dict(c="tab:blue", alpha=0.25, s=28),
              "infeasible": dict(c="grey", alpha=0.5, marker="x", s=28),
              "Pareto front": dict(c="tab:red", s=42, edgecolors="k")}
    groups = _groups(rows)
    for name, sel in groups.items():
        ax.scatter([r["values"][0] for r in sel], [r["values"][1] for r in sel], label=name, **styles[name])
    front = groups.get("Pareto front", [])
    if len(front) > 1:
        ax.step([r["values"][0] for r in front], [r["values"][1] for r in front], where=_staircase(space),
                c="tab:red", lw=1)
    dx, dy, _, lx, ly = _dense(reference or [], space)
    if dx:
        ax.plot(lx, ly, c="k", ls="--", lw=1)
        ax.plot(dx, dy, c="k", ls="none", marker="s", ms=4, label="dense reference")
    all_y = [r["values"][1] for r in rows] + dy
    if min(all_y) > 0 and max(all_y) / min(all_y) > 20:  # compute spans decades: a log axis shows all
        ax.set_yscale("log")
    for r in front:
        ax.annotate(str(r["number"]), (r["values"][0], r["values"][1]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set(xlabel=f"{x_m} ({space.objectives[0].mode})", ylabel=f"{y_m} ({space.objectives[1].mode})",
           title=f"{len(front)} Pareto-optimal of {len(rows)} complete trials")
    ax.legend(fontsize=8)
    return _save(fig, ax, path)


def pareto_html(rows: list[dict], space: SearchSpace, path: str, reference: list[dict] | None = None) -> str:
    """Interactive scatter (hover: trial and its parameters); loads plotly.js from PLOTLY_JS beside
    it, written there when missing (offline: no CDN)."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    fig = go.Figure()
    markers = {"dominated": (dict(color="#1f77b4"), 0.3), "infeasible": (dict(color="grey", symbol="x"), 0.5),
               "Pareto front": (dict(color="#d62728", size=10), 1.0)}
    for name, sel in _groups(rows).items():
        marker, opacity = markers[name]
        fig.add_trace(go.Scatter(x=[r["values"][0] for r in sel], y=[r["values"][1] for r in sel], name=name,
                                 mode="markers+lines" if name == "Pareto front" else "markers",
                                 line=dict(shape={"post": "hv", "pre": "vh"}[_staircase(space)], width=1),
                                 marker=marker, opacity=opacity,
                                 text=[_label(r, space) for r in sel], hoverinfo="text+x+y"))
    dx, dy, labels, lx, ly = _dense(reference or [], space)
    if dx:
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line=dict(color="black", dash="dash", width=1),
                                 hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=dx, y=dy, name="dense reference", mode="markers", text=labels,
                                 marker=dict(symbol="square", color="black"), hoverinfo="text+x+y"))
    fig.update_layout(title=f"{space.source}: Pareto front", template="plotly_white",
                      xaxis_title=space.objectives[0].metric, yaxis_title=space.objectives[1].metric)
    bundle = os.path.join(os.path.dirname(os.path.abspath(path)), PLOTLY_JS)
    if not os.path.isfile(bundle):
        with open(bundle + ".tmp", "w", encoding="utf-8") as f:  # renamed in: never a half script
            f.write(get_plotlyjs())
        os.replace(bundle + ".tmp", bundle)
    html = fig.to_html(include_plotlyjs="directory", full_html=True)  # <script src="plotly.min.js">
    with open(path, "w", encoding="utf-8") as f:
        f.write(html.replace("</body>", _NO_PLOTLY + "</body>", 1))
    return path


def hypervolume_png(history: list[float], path: str) -> str:
    """`history`: one value per complete trial (pruned and failed ones add no point), in completion order."""
    fig, ax = _figure(5.6, 3.4)
    ax.plot(range(1, len(history) + 1), history, marker="o", ms=3)
    ax.set(xlabel="complete trials (in completion order)", ylabel="hypervolume (share of the reference box)")
    return _save(fig, ax, path)


def write_all(rows: list[dict], space: SearchSpace, history: list[float], out_dir: str,
              reference: list[dict] | None = None) -> list[str]:
    """Every sweep figure into `out_dir` (the front against the dense `reference` frontier when
    there is one); returns the figures written (none when nothing finished). PLOTLY_JS, written
    beside pareto.html, is not among them: the caller logs each figure, and a copy of the script
    with every log would undo keeping it once."""
    if not rows:
        return []
    paths = [hypervolume_png(history, os.path.join(out_dir, "hypervolume.png"))]
    if len(space.objectives) >= 2:
        paths += [pareto_png(rows, space, os.path.join(out_dir, "pareto.png"), reference),
                  pareto_html(rows, space, os.path.join(out_dir, "pareto.html"), reference)]
    return paths
