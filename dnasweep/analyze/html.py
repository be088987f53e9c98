"""The report's words: the plain-language summary paragraph and the self-contained HTML page.

Both read the JSON-safe summary dict (None where a number is undefined), so what the page says
is exactly what summary.json holds. All text goes through html.escape; figures are embedded as
base64 data URIs, and nothing links outside the file, so it opens offline and from an artifact store.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

from dnasweep import metrics as M

ATTR_WORD = {"lm": "byte class", "vision": "image label"}
GROUP_WORD = {"lm": "sequence", "vision": "image"}  # LM groups are held-out windows of seq_len tokens
HTML_TOP_PATHS = 20
FIT_KEYS = ["alpha", "alpha_se", "xmin_rank", "xmax_rank", "min_count", "ks_d", "n_tail_tokens", "n_tail_paths",
            "n_paths", "r_lognormal", "p_lognormal", "r_exponential", "p_exponential", "reason"]  # power-law table
# The MI table: the excess over the shuffled baseline first (the raw MI is mostly estimator bias with many paths).
MI_KEYS = ["excess_bits", "nmi", "p_value", "mi_bits", "baseline_bits", "nmi_raw", "h_x_bits", "h_y_bits"]
MI_HEAD = ["excess bits", "NMI (of excess)", "p-value", "MI bits (raw)", "shuffled baseline bits", "NMI (raw)"]

CSS = """body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f0f0f0}td.num{text-align:right}code{white-space:pre;background:#f6f6f6;padding:0 2px}
figure{display:inline-block;margin:.5em}figcaption{font-size:12px;color:#555}p.summary{font-size:15px;
line-height:1.4;background:#f7f9fc;padding:.7em;border-left:4px solid #4a7}"""


def _f(x: Any, fmt: str = ".3g") -> str:
    """A number for prose and tables; '-' where the summary holds None (NaN)."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return format(x, fmt)
    return str(x)


def _alpha(x: float) -> str:
    """An exponent to two decimals; a flat fit reads 0.00, not -0.00."""
    t = f"{x:.2f}"
    return "0.00" if t == "-0.00" else t


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _versus(fit: dict, alt: str) -> str:
    r, p = fit[f"r_{alt}"], fit[f"p_{alt}"]
    if r is None or p is None:
        return f"the {alt} comparison failed"
    a, stats = f"a{'n' if alt[0] in 'aeiou' else ''} {alt}", f"(R = {r:.2f}, p = {p:.2g})"
    return f"{a} fits about as well {stats}" if p >= 0.05 else f"it beats {a} {stats}" if r > 0 \
        else f"{a} fits better {stats}"


def collapse_verdict(s: dict) -> str:
    """The opening sentences of a collapsed model's report: that it collapsed, and why."""
    c, units = s["collapse"], s["units"]
    why = []
    if c["identity_share"] is not None and c["identity_share"] >= c["identity_threshold"]:
        why.append(f"its routers put {_pct(c['identity_share'])} of their gate weight on the skip path"
                   if s["usage"].get("identity_from_gates") else
                   f"identity (skip) modules take {_pct(c['identity_share'])} of its routed slots")
    if c["paths_vary"] and c["distinct_paths"] == 0:
        why.append(f"no {s['unit']} goes through a computing module at any step")
    elif c["paths_vary"] and c["distinct_paths"] <= c["max_paths"]:
        why.append(f"every {s['unit']} that computes takes the same path through the pool ({c['only_path']}; "
                   "'-': identity only at that step)")
    return (f"{s['name']} ({s['task']}) has collapsed: its routed pool is bypassed, because {' and '.join(why)}. "
            f"It is a fixed network, not a distributed one, so the path rank-frequency fit, the information "
            f"paths carry and how compute spreads over {units} are left out: they would describe routing that "
            f"does not happen.")


def _versus_dense(s: dict) -> str:
    """The sentence on the dense reference frontier, when the trial was measured against one."""
    c = s.get("compare") or {}
    if M.COMPUTE_GAIN not in c:
        return ""
    word = {1: "more than ", -1: "less than ", 0: ""}
    g, b = c[M.COMPUTE_GAIN], int(c.get(M.COMPUTE_GAIN_BOUND) or 0)
    text = (f" Against the sweep's dense reference frontier its compute gain is {word[b]}{_f(g)} (the dense "
            f"FLOPs/token for its loss over its own; above 1 it beats dense)")
    if M.SPEED_GAIN in c:
        sb = int(c.get(M.SPEED_GAIN_BOUND) or 0)
        text += f"; in tokens/s, {word[sb]}{_f(c[M.SPEED_GAIN])} of a dense model's at that loss"
    return text + "."


def _slot_shares(u: dict) -> str:
    """Identity's share of the slots at each step, as a list ("12%, 30%")."""
    return ", ".join(_pct(v) for v in u["identity_slot_share_S"])


def _identity_per_step(s: dict) -> str:
    """Where the skip path's share comes from: slots per step, or the gate weight of a router whose
    slots hold identity at n_identity/M whatever it learnt (soft mixture: every module; expert
    choice: every module picks as many)."""
    u = s["usage"]
    slots = f"identity takes {_slot_shares(u)} of the slots per step"
    gates = f"the skip path holds {_pct(u['identity_share'])} of the routers' gate weight"
    if not u.get("identity_from_gates"):
        return slots
    return f"{slots} (fixed by expert choice) and {gates}" if s["collapse"]["paths_vary"] else gates


def _skip_clause(u: dict, paths_vary: bool, unit: str) -> str:
    """The summary's clause on the skip path: identity's share of the routed slots, or where those
    are fixed by the router, the gate weight (expert choice: both; a soft mixture: the gates)."""
    slots = f"of routed slots (per step: {_slot_shares(u)})"
    if not u.get("identity_from_gates"):
        return f"Identity (skip) modules take {_pct(u['identity_share'])} {slots}"
    if paths_vary:
        return (f"Identity (skip) modules take {_pct(u['identity_slot_share'])} {slots}, as expert choice fixes; "
                f"the skip path holds {_pct(u['identity_share'])} of the routers' gate weight, a {unit} no module "
                "picked counting as skipped")
    return (f"Identity (skip) modules hold {_pct(u['identity_share'])} of the routers' gate weight (a soft "
            f"mixture: every module computes for every {unit})")


def _split_words(fit: dict, s: dict) -> str:
    """How the fit's ranks were kept independent of its counts, in words."""
    half = f"half the {GROUP_WORD[s['task']]}s" if fit["split"] == "groups" else f"alternate {s['units']}"
    return f"paths ranked on {half}, frequencies counted on the rest"


def _information(s: dict, unit: str, attr: str, group: str) -> str:
    """The MI sentence, led by the excess over the shuffled baseline (the raw MI of thousands of
    sparse paths is mostly estimator bias); or why there is none."""
    if s["mi"] is None:
        return f"No information measure: {s['attribute']['reason']}."
    mi, steps = s["mi"]["path_vs_attr"], s["mi"]["step_modules_vs_attr"]
    best = max(steps, key=lambda m: -float("inf") if m["excess_bits"] is None else m["excess_bits"])
    shuffled = f"labels shuffled across {group}s"
    raw = f"raw estimate {_f(mi['mi_bits'])} bits against a shuffled baseline of {_f(mi['baseline_bits'])}"
    # An excess at or below 0 is no information, not "-0.005 bits of" it.
    head = (f"The path carries {_f(mi['excess_bits'])} bits about the {unit}'s {attr} beyond what {shuffled} give "
            f"(normalised MI {_f(mi['nmi'], '.2f')}, permutation p = {_f(mi['p_value'])}; {raw})"
            if (mi["excess_bits"] or 0) > 0 else
            f"The path carries no information about the {unit}'s {attr} beyond what {shuffled} give (excess "
            f"{_f(mi['excess_bits'])} bits, permutation p = {_f(mi['p_value'])}; {raw})")
    step = (f"at most {_f(best['excess_bits'])} bits beyond their baseline (step {best['step']})"
            if (best["excess_bits"] or 0) > 0 else "none beyond their baseline")
    return f"{head}; the modules of a single step carry {step}."


def summary_paragraph(s: dict) -> str:
    """One paragraph of plain language built from the summary's numbers; a collapsed model's
    opens with the verdict and says only what still means something."""
    unit, units, attr, group = s["unit"], s["units"], ATTR_WORD[s["task"]], GROUP_WORD[s["task"]]
    if s["collapse"]["collapsed"]:
        return " ".join([
            collapse_verdict(s),
            f"Over {s['n_tokens']:,} {units} and {s['n_steps']} steps, {_identity_per_step(s)}; a {unit} "
            f"spends {_f(s['compute']['flops']['mean'], ',.0f')} forward FLOPs on average."]) + _versus_dense(s)
    out = [f"{s['name']} ({s['task']}): {s['n_tokens']:,} {units} took {s['n_paths']:,} distinct paths through "
           f"{s['n_modules']} modules over {s['n_steps']} steps."]
    fit, init = s["power_law"], s["power_law_init"]
    if fit["reason"] is None:
        tail = _pct(fit["n_tail_tokens"] / fit["n_count_tokens"]) if fit["n_count_tokens"] else "-"
        out.append(f"Path frequency falls off with rank as r^-α with α = {_alpha(fit['alpha'])} ± "
                   f"{_f(fit['alpha_se'], '.2f')} ({_split_words(fit, s)}; ranks "
                   f"{fit['xmin_rank']:.0f}-{fit['xmax_rank']:.0f}, {tail} of the counted {units}, "
                   f"KS D = {_f(fit['ks_d'])}); {_versus(fit, 'lognormal')}, and {_versus(fit, 'exponential')}.")
    else:
        out.append(f"No power-law fit of the path frequencies: {fit['reason']}.")
    if init is not None:
        own = "" if init["min_count"] == fit["min_count"] else f" (min_count {init['min_count']})"
        out.append(f"At initialisation α = {_alpha(init['alpha'])} ± {_f(init['alpha_se'], '.2f')}{own}."
                   if init["reason"] is None else f"No fit at initialisation: {init['reason']}.")
    out.append(_information(s, unit, attr, group))
    u = s["usage"]
    out.append(f"{_skip_clause(u, s['collapse']['paths_vary'], unit)}, and {_pct(u['reuse_token_share'])} of "
               f"{units} revisit a non-identity module at two or more steps.")
    fl, gc = s["compute"]["flops"], s["compute"]["group"]
    spread = (f"the 95th-percentile {unit} costs {fl['p95_over_p5']:.1f}x the 5th" if fl["p95_over_p5"] is not None
              else f"the cheapest 5% of {units} spend no FLOPs")
    out.append(f"Compute per {unit} has a coefficient of variation of {_f(fl['cv'], '.2f')}; {spread}.")
    if gc["spearman_r"] is not None:
        out.append(f"Across {gc['n_groups']:,} {group}s, mean compute and loss correlate with Spearman ρ = "
                   f"{gc['spearman_r']:.2f} (p = {_f(gc['spearman_p'])}; Pearson r = {_f(gc['pearson_r'], '.2f')}).")
    return " ".join(out) + _versus_dense(s)


class _Raw(str):
    """A table cell that is already HTML (built from escaped parts), inserted as is."""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, _Raw):
            return f"<td>{v}</td>"
        num = v is None or isinstance(v, int | float) and not isinstance(v, bool)
        return f"<td class=\"num\">{html.escape(_f(v))}</td>" if num else f"<td>{html.escape(str(v))}</td>"

    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(map(cell, row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(key: str, pngs: dict[str, bytes], caption: str) -> str:
    if key not in pngs:
        return ""
    b64 = base64.b64encode(pngs[key]).decode("ascii")
    cap = html.escape(caption)
    return (f'<figure><img alt="{html.escape(key)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{cap}</figcaption></figure>")


def _usage_figures(s: dict, pngs: dict[str, bytes]) -> list[str]:
    return ["<h2>Module usage</h2>",
            _img("load_heatmap", pngs, f"Share of {s['units']} using each module at each step."),
            _img("identity_per_step", pngs, "Identity share of routed slots, and share of tokens whose every slot at "
                                            "the step is an identity.")]


def _top_paths(s: dict) -> str:
    return _table(["rank", "path", "count", "share", "examples"],
                  [[p["rank"], p["label"], p["count"], p["share"],
                    _Raw(" ".join(f"<code>{html.escape(x)}</code>" for x in p["examples"]))]
                   for p in s["top_paths"][:HTML_TOP_PATHS]])


def _information_section(s: dict, attr: str, group: str) -> list[str]:
    """The MI table, or (a single attribute class, e.g. an LM corpus without byte classes) why there is none."""
    e = html.escape
    mi = s["mi"]
    if mi is None:
        return ["<h2>Information</h2>", f"<p>Not measured: {e(s['attribute']['reason'])}.</p>"]
    mrows = [("path id", mi["path_vs_attr"])] + [(f"step {x['step']} modules", x)
                                                 for x in mi["step_modules_vs_attr"]]
    mrows += [("path id (init model)", mi["init_path_vs_attr"])] if mi["init_path_vs_attr"] else []
    return [f"<h2>Information: path vs {e(attr)}</h2>",
            _table(["variable", *MI_HEAD, "H(variable) bits", f"H({attr}) bits"],
                   [[n, *(m[k] for k in MI_KEYS)] for n, m in mrows]),
            f"<p>Miller-Madow corrected plug-in MI. The baseline is the mean MI over {mi['path_vs_attr']['n_perm']} "
            f"permutations of the labels across {e(group)}s (whole {e(group)}s exchange their labels, so the "
            f"dependence among the {e(s['units'])} of one {e(group)} stays in the null); excess = MI - baseline, "
            "the dependence beyond the estimator's bias. NMI (of excess) = max(excess, 0) / min(H(X), H(Y)); "
            "NMI (raw) = MI / min(H(X), H(Y)).</p>"]


def render_html(s: dict, pngs: dict[str, bytes]) -> str:
    """The whole report page; a collapsed model's shows, after the verdict, where its slots go and its paths."""
    unit, units, attr, group = s["unit"], s["units"], ATTR_WORD[s["task"]], GROUP_WORD[s["task"]]
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{e(s['name'])}: routing analysis</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{e(s['name'])}: routing analysis</h1>",
             f"<p class=\"summary\">{e(s['text'])}</p>"]
    if s["collapse"]["collapsed"]:
        return "\n".join([*parts, *_usage_figures(s, pngs),
                          f"<h3>Paths taken (identity modules included), with example {e(units)} in context</h3>",
                          _top_paths(s), "<p>Left out for a collapsed model: the path rank-frequency fit, mutual "
                          "information, step-to-step transitions and compute allocation.</p>", "</body></html>"])

    parts.append("<h2>Paths</h2>")
    parts.append(_img("rank_frequency", pngs, "Tokens per path in the counted half against the path's rank in the "
                                              "ranking half (log-log); lines: power-law fits over the fitted rank "
                                              "range."))
    fits = [("trained", s["power_law"])] + ([("init", s["power_law_init"])] if s["power_law_init"] else [])
    parts.append(_table(["model", *FIT_KEYS], [[name, *(f[k] for k in FIT_KEYS)] for name, f in fits]))
    counts = sorted({f["min_count"] for _, f in fits})
    least = (f"{counts[0]} tokens" if len(counts) == 1
             else " / ".join(f"{f['min_count']} ({name})" for name, f in fits) + " tokens")
    half = (f"alternate {e(group)}s" if s["power_law"]["split"] == "groups" else f"alternate {e(units)}")
    parts.append(f"<p>Split-half ranks (Piantadosi 2014): the {e(units)} are split into two halves ({half}); "
                 "paths are ranked by their frequency in one half and counted in the other, so the sampling noise "
                 "of the counts cannot line up with the ranks (ranking and counting one sample makes even uniform "
                 "paths look like a power law). α: path frequency ∝ rank^-α, fitted by maximum likelihood "
                 "(powerlaw) to the ranks of the counted tokens' paths between xmin_rank and xmax_rank (the last "
                 f"path with at least {least} in the ranking half: min_count). R: normalised log-likelihood "
                 "ratio, &gt; 0 favours the power law.</p>")
    parts.append(f"<h3>Most frequent paths, with example {e(units)} in context</h3>")
    parts.append(_top_paths(s))

    parts += _information_section(s, attr, group)

    parts += _usage_figures(s, pngs)
    parts.append(_img("transitions", pngs, "P(module at step s+1 | module at step s), pooled over steps; with "
                      "several modules per step a row sums to the mean number of modules a token takes next."))
    parts.append(_table(["module", "revisit share (of its visitors)"],
                        list(map(list, s["usage"]["reuse_per_module"].items()))))

    c = s["compute"]
    parts.append("<h2>Compute allocation</h2>")
    parts.append(_table(list(c["flops"]), [list(c["flops"].values())]))
    parts.append(_img("flops_hist", pngs, f"Forward FLOPs per {unit}."))
    parts.append(_img("flops_by_class", pngs, f"Mean FLOPs per {unit} by {attr}."))  # absent with one class
    parts.append(_img("flops_by_position", pngs, f"Mean FLOPs per {unit} by position."))
    parts.append(_img("compute_vs_loss", pngs, f"Mean compute of each {group} against its loss."))
    gc, loss, at = c["group"], c["group_loss_G"], c.get("val_index_G")
    # named by their place in the val split (the analysed subset is evenly spaced over it)
    name = (lambda g: at[g]) if at else (lambda g: g)  # noqa: E731
    where = ("val token offset" if group == "sequence" else "val index") if at else "in the analysed subset"
    parts.append(f"<h3>Highest- and lowest-compute {e(group)}s</h3>")
    parts.append(_table([f"{group} ({where})", "which", "mean FLOPs", "loss"],
                        [[name(g), "highest", gc["flops_G"][g], loss[g]] for g in gc["highest"]]
                        + [[name(g), "lowest", gc["flops_G"][g], loss[g]] for g in gc["lowest"]]))
    parts.append(_img("compute_overlay", pngs, "Highest- (top) and lowest-compute (bottom) images with per-patch "
                                               "compute overlaid."))
    parts.append("</body></html>")
    return "\n".join(parts)
