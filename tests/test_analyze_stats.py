"""dnasweep.analyze: path extraction, the power-law fit (recovers known Zipf exponents), mutual
information against its shuffled baseline, module usage on hand-made routings, and the report
files for an LM-shaped and a vision-shaped routing."""

import json
import math
import re
import subprocess
import sys
from itertools import combinations

import numpy as np
import pytest

from dnasweep.analyze import Routed, build_report, fit_rank_frequency, mi_test, path_ids, path_label, rank_frequency
from dnasweep.analyze.info import entropy_bits
from dnasweep.analyze.usage import (
    flops_summary,
    group_compute,
    identity_slot_share,
    load_heatmap,
    mean_by,
    module_reuse,
    skip_share,
    transition_matrix,
)

NAMES = ["T0", "T1", "A0", "M0", "M1", "I0"]
COST = np.array([10.0, 10.0, 6.0, 4.0, 4.0, 0.0])


def zipf_sample(alpha: float, n_ranks: int, n: int, seed: int) -> np.ndarray:
    """n path labels with P(rank r) ∝ r^-alpha; labels are shuffled so they carry no rank."""
    rng = np.random.default_rng(seed)
    p = np.arange(1, n_ranks + 1, dtype=float) ** -alpha
    return rng.permutation(n_ranks)[rng.choice(n_ranks, size=n, p=p / p.sum())]


# ---------------------------------------------------------------- paths

def test_path_ids_treat_each_step_as_a_set_and_order_ids_by_frequency():
    paths = np.array([
        [[0, 2], [5, -1]],
        [[2, 0], [5, 5]],  # same path: slot order and a repeated module do not matter
        [[1, -1], [3, 4]],
        [[0, 2], [-1, 5]],
        [[1, -1], [-1, -1]],  # nothing routed at step 1
    ])
    ids, keys = path_ids(paths)
    assert ids.tolist() == [0, 0, 1, 0, 2] or ids.tolist() == [0, 0, 2, 0, 1]
    assert keys[0] == ((0, 2), (5,))
    assert keys[ids[2]] == ((1,), (3, 4))
    assert keys[ids[4]] == ((1,), ())
    assert path_label(keys[0], NAMES) == "T0+A0 > I0"
    assert path_label(keys[ids[2]], NAMES) == "T1 > M0+M1"
    assert path_label(keys[ids[4]], NAMES) == "T1 > -"
    assert rank_frequency(ids).tolist() == [3, 1, 1]


# ---------------------------------------------------------------- power-law fit

@pytest.mark.parametrize("alpha,seed", [(0.8, 3), (1.0, 0), (1.2, 1), (1.5, 2)])
def test_fit_recovers_zipf_exponent(alpha, seed):
    # 0.8 checks the fit crosses alpha = 1, which powerlaw's discrete (zeta-normalised) law cannot.
    f = fit_rank_frequency(zipf_sample(alpha, 20_000, 100_000, seed))
    assert f.ok, f.reason
    assert abs(f.alpha - alpha) < 0.05, f
    assert 0 < f.alpha_se < 0.05
    assert 1 <= f.xmin_rank <= f.xmax_rank / 10
    assert 0 < f.ks_d < 0.05
    # The fitted line is normalised to the tokens it was fitted on.
    r = np.arange(f.xmin_rank, f.xmax_rank + 1)
    assert f.expected_counts(r).sum() == pytest.approx(f.n_tail_tokens, rel=0.02)
    assert f.r_exponential > 0  # a power law beats an exponential on power-law data


def test_alpha_se_matches_the_spread_over_independent_samples_when_sequences_share_paths():
    """Tokens of one sequence route alike: 400 sequences of 64 tokens, each drawing its paths from one of
    20 reshuffled Zipf laws. The Fisher error took every token as independent and read 3.2x smaller than
    alpha's spread over independent datasets; the group bootstrap's is within the spread's own noise."""
    P, L, G = 3000, 64, 400
    rng = np.random.default_rng(123)
    base = np.arange(1, P + 1, dtype=float) ** -1.2
    topics = []
    for _ in range(20):  # a third of the paths trade places
        perm, moved = np.arange(P), rng.permutation(P)[:P // 3]
        perm[np.sort(moved)] = moved
        topics.append(base[perm] / base.sum())
    alpha, se = [], []
    for r in range(16):
        ids = np.concatenate([rng.choice(P, size=L, p=topics[rng.integers(20)]) for _ in range(G)])
        f = fit_rank_frequency(ids, seed=r, groups_N=np.repeat(np.arange(G), L))
        alpha.append(f.alpha)
        se.append(f.alpha_se)
    ratio = np.std(alpha, ddof=1) / np.mean(se)
    assert 0.6 < ratio < 1.8, (ratio, np.std(alpha, ddof=1), np.mean(se))


@pytest.mark.parametrize("ids,needle", [
    (np.zeros(500, dtype=int), "distinct path"),
    (np.arange(5).repeat(40), "distinct path"),
    (np.random.default_rng(0).integers(0, 1000, 2000), "tokens"),  # many paths, none frequent
    (np.zeros(0, dtype=int), "no tokens"),
])
def test_fit_degenerate_input_returns_nan_with_reason(ids, needle):
    f = fit_rank_frequency(ids)
    assert not f.ok and needle in f.reason
    assert math.isnan(f.alpha) and math.isnan(f.ks_d)
    assert np.isnan(f.expected_counts(np.arange(1, 5))).all()


# ---------------------------------------------------------------- mutual information

def test_mi_of_independent_labels_is_near_zero_and_not_significant():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 8, 100_000), rng.integers(0, 10, 100_000)
    t = mi_test(x, y, n_perm=200, seed=1)
    assert t.mi_bits < 0.01 and t.baseline_bits < 0.01
    assert t.p_value > 0.05


def test_mi_of_dependent_labels_is_large_and_significant():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 8, 100_000)
    y = np.where(rng.random(x.size) < 0.8, x, rng.integers(0, 8, x.size))
    t = mi_test(x, y, n_perm=200, seed=1)
    assert t.mi_bits > 0.5
    assert t.p_value == pytest.approx(1 / 201)  # no permutation comes close
    assert t.baseline_bits < 0.01 < t.excess_bits
    assert 0 < t.nmi <= 1


def test_mi_of_a_relabelling_is_the_full_entropy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, 50_000)
    t = mi_test(x, (x * 7 + 3) % 4, n_perm=20)
    assert t.mi_bits == pytest.approx(entropy_bits(x), abs=1e-6)
    assert entropy_bits(x) == pytest.approx(2.0, abs=0.01)
    assert t.nmi_raw == pytest.approx(1.0)
    assert t.nmi == pytest.approx(1.0, abs=1e-4)  # normalises the excess: 2 bits less a ~1e-5-bit baseline


def test_mi_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        mi_test(np.zeros(5, int), np.zeros(6, int))
    with pytest.raises(ValueError, match="integer"):
        mi_test(np.zeros(5), np.zeros(5, int))


# ---------------------------------------------------------------- module usage and compute

# names T0 A0 I0; 4 tokens, 2 steps, top-2
USAGE_NAMES = ["T0", "A0", "I0"]
USAGE_PATHS = np.array([
    [[0, 1], [2, -1]],
    [[0, -1], [0, 1]],
    [[2, -1], [2, 2]],
    [[1, 0], [1, -1]],
])


def test_load_identity_and_skip_shares_by_hand():
    np.testing.assert_allclose(load_heatmap(USAGE_PATHS, 3), [[3 / 4, 2 / 4, 1 / 4], [1 / 4, 2 / 4, 2 / 4]])
    np.testing.assert_allclose(identity_slot_share(USAGE_PATHS, USAGE_NAMES), [1 / 6, 3 / 6])
    np.testing.assert_allclose(skip_share(USAGE_PATHS, USAGE_NAMES), [1 / 4, 2 / 4])


def test_module_reuse_by_hand():
    share, per_module = module_reuse(USAGE_PATHS, USAGE_NAMES)
    assert share == pytest.approx(2 / 4)  # token 1 revisits T0, token 3 revisits A0
    np.testing.assert_allclose(per_module[:2], [1 / 3, 1 / 3])
    assert math.isnan(per_module[2])  # identity modules are not "reused"


def test_transition_matrix_by_hand():
    """P(b next | a): module 0 serves tokens 0, 1, 3 at step 0, and module 1 serves two of them next.
    Shares of pairs read it 2/4 (a module that always follows under top-2 read 0.5)."""
    t = transition_matrix(USAGE_PATHS, 3)
    np.testing.assert_allclose(t, [[1 / 3, 2 / 3, 1 / 3], [0, 1 / 2, 1 / 2], [0, 0, 1]])
    always = transition_matrix(np.array([[[0, 2], [1, 2]], [[0, 2], [1, 2]]]), 3)  # top-2: 0 -> {1, 2} always
    np.testing.assert_allclose(always[0], [0, 1, 1])


def test_flops_summary_and_mean_by():
    f = np.arange(1.0, 101.0)
    s = flops_summary(f)
    assert s["mean"] == pytest.approx(f.mean()) and s["cv"] == pytest.approx(f.std() / f.mean())
    assert s["q05"] < s["q25"] < s["q50"] < s["q75"] < s["q95"]
    assert s["p95_over_p5"] == pytest.approx(s["q95"] / s["q05"])
    assert math.isnan(flops_summary(np.r_[np.zeros(10), 1.0])["p95_over_p5"])
    mean, count = mean_by(np.array([1.0, 3.0, 10.0]), np.array([0, 0, 2]), 4)
    assert count.tolist() == [2, 0, 1, 0]
    assert mean[0] == 2.0 and mean[2] == 10.0 and np.isnan(mean[[1, 3]]).all()


def test_group_compute_ranks_groups_and_correlates_with_loss():
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(6), 5)
    level = np.array([3.0, 1.0, 5.0, 2.0, 6.0, 4.0])
    flops = level[group] + rng.normal(0, 0.01, group.size)
    g = group_compute(flops, group, level**2 + 1, k=2)  # loss rises monotonically with compute
    assert g.highest == [4, 2] and g.lowest == [1, 3]
    assert g.spearman_r == pytest.approx(1.0) and g.pearson_r > 0.9
    assert g.n_groups == 6


# ---------------------------------------------------------------- report

def synth_lm(n=5000, alpha=1.0, dep=0.85, seed=0, n_groups=50, S=3, C=4) -> Routed:
    """Zipf-distributed top-2 paths over 6 modules; the class is a function of the path w.p. dep."""
    rng = np.random.default_rng(seed)
    sets = np.array(list(combinations(range(len(NAMES)), 2)))
    n_paths = len(sets) ** S
    pid = zipf_sample(alpha, n_paths, n, seed)
    paths = sets[np.stack([(pid // len(sets) ** s) % len(sets) for s in range(S)], axis=1)]
    swap = rng.random((n, S)) < 0.5
    paths[swap] = paths[swap][:, ::-1]
    attr = np.where(rng.random(n) < dep, pid % C, rng.integers(0, C, n))
    flops = COST[paths].sum(axis=(1, 2))
    group = np.repeat(np.arange(n_groups), n // n_groups)
    gflops = np.bincount(group, weights=flops) / np.bincount(group)
    loss = 2.0 + 0.05 * gflops + rng.normal(0, 0.1, n_groups)
    ctx = [f"doc{g}<script>&'{a}'" for g, a in zip(group, attr, strict=True)]
    return Routed(paths, NAMES, flops, attr, [f"class{c}" for c in range(C)], group,
                  np.tile(np.arange(n // n_groups), n_groups), loss, ctx)


def _html_without_images(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)


def test_build_report_lm(tmp_path):
    routed = synth_lm()
    s = build_report("toy", routed, synth_lm(alpha=0.9, dep=0.0, seed=1), str(tmp_path), "lm")
    pngs = ["rank_frequency", "load_heatmap", "identity_per_step", "transitions", "flops_hist", "flops_by_class",
            "flops_by_position", "compute_vs_loss"]
    for f in ["report.html", "summary.json", "paths.csv", "usage.csv"] + [f"{p}.png" for p in pngs]:
        assert (tmp_path / f).stat().st_size > 0, f
    assert not (tmp_path / "compute_overlay.png").exists()
    assert json.loads((tmp_path / "summary.json").read_text()) == s

    for fit in (s["power_law"], s["power_law_init"]):
        assert fit["reason"] is None and 0.5 < fit["alpha"] < 1.5 and fit["alpha_se"] > 0
    mi = s["mi"]["path_vs_attr"]
    assert mi["mi_bits"] > mi["baseline_bits"] + 0.3 and mi["p_value"] < 0.01
    assert s["mi"]["init_path_vs_attr"]["p_value"] > 0.01  # init classes are independent of the path
    assert len(s["mi"]["step_modules_vs_attr"]) == 3
    assert 0 < s["usage"]["identity_share"] < 1
    assert s["compute"]["flops"]["cv"] > 0 and s["compute"]["group"]["spearman_r"] > 0
    assert s["n_paths"] == len(np.unique(path_ids(routed.paths_NSK)[0]))

    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(pngs)
    assert "http" not in _html_without_images(html).lower()
    assert "<script>" not in html and "&lt;script&gt;" in html  # contexts are escaped
    assert s["text"][:40] in html.replace("&#x27;", "'")
    rows = (tmp_path / "paths.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + min(50, s["n_paths"]) and rows[1].startswith("1,")
    assert len((tmp_path / "usage.csv").read_text().strip().splitlines()) == 1 + 3


def test_build_report_vision_with_overlay(tmp_path):
    rng = np.random.default_rng(0)
    G, grid = 10, (4, 4)
    Q = grid[0] * grid[1]
    group, pos = np.repeat(np.arange(G), Q), np.tile(np.arange(Q), G)
    paths = rng.integers(0, len(NAMES), (G * Q, 2, 1))
    label = rng.integers(0, 3, G)
    routed = Routed(paths, NAMES, COST[paths].sum(axis=(1, 2)), label[group], ["a", "b", "c"], group, pos,
                    rng.random(G))
    s = build_report("vis", routed, None, str(tmp_path), "vision", images_GHW=rng.random((G, 8, 8)), patch_grid=grid)
    assert (tmp_path / "compute_overlay.png").stat().st_size > 0
    assert s["power_law"]["alpha"] is None and s["power_law"]["reason"]  # 160 patches: too few for a fit
    assert s["power_law_init"] is None and s["mi"]["init_path_vs_attr"] is None
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 9
    assert "No power-law fit" in s["text"]
    with pytest.raises(ValueError, match="patch_grid"):
        build_report("vis", routed, None, str(tmp_path), "vision", images_GHW=rng.random((G, 8, 8)))
    with pytest.raises(ValueError, match="task"):
        build_report("vis", routed, None, str(tmp_path), "audio")


def test_routed_rejects_inconsistent_input():
    r = synth_lm(n=200, n_groups=2)
    with pytest.raises(ValueError, match="flops_N"):
        Routed(r.paths_NSK, NAMES, r.flops_N[:-1], r.attr_N, r.attr_names, r.group_N, r.position_N, r.group_loss_G)
    with pytest.raises(ValueError, match="ids must lie"):
        Routed(r.paths_NSK + 10, NAMES, r.flops_N, r.attr_N, r.attr_names, r.group_N, r.position_N, r.group_loss_G)


def test_importing_analyze_loads_no_heavy_or_orchestration_module():
    code = ("import sys, dnasweep.analyze; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'ray', 'optuna', 'mlflow', 'matplotlib', 'powerlaw'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_fit_falls_back_to_min_count_10_for_small_samples_and_says_so():
    # min_count counts tokens of the ranking half (alternate tokens here): doubled counts put
    # 3 paths >= 30 and 42 paths >= 10 in each half
    counts = 2 * np.r_[400, 200, 120, (60 / np.arange(1, 40)).astype(int) + 10]
    ids = np.repeat(np.arange(len(counts)), counts)
    assert fit_rank_frequency(ids, min_count=30).reason is not None
    f = fit_rank_frequency(ids)
    assert f.ok and f.min_count == 10 and f.alpha > 0
