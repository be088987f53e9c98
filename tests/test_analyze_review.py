"""Review fixes of `dnasweep analyze`: group-level MI permutations, a class-balanced vision subset,
split-half power-law ranks, no byte-class wording without an attribute, MI led by its excess over
the shuffled baseline, and one min_count for the trained and initial fits.

Every test here failed on the code before its fix (checked by swapping the old module back in)."""

import re
from types import SimpleNamespace

import numpy as np
import pytest

from dnasweep.analyze import Routed, build_report, figures, fit_rank_frequency, mi_test
from dnasweep.analyze.html import summary_paragraph

NAMES = ["T0", "T1", "A0", "M0", "M1", "I0"]


@pytest.fixture(autouse=True)
def no_rendering(monkeypatch):
    """Rasterising the report's figures is ~3/4 of a build_report call and nothing here looks at them."""
    monkeypatch.setattr(figures, "_png", lambda fig: b"png")


def sticky_vision(seed: int, G: int = 200, L: int = 16, S: int = 3, C: int = 10) -> Routed:
    """Images whose patches mostly take the image's own favourite module at each step, and labels
    drawn independently of everything: routing clusters within an image, but says nothing of the label."""
    rng = np.random.default_rng(seed)
    y_G = rng.integers(0, C, G)
    pref_GS = rng.integers(0, 5, (G, S))
    stick = rng.random((G * L, S)) < 0.6
    paths = np.where(stick, np.repeat(pref_GS, L, axis=0), rng.integers(0, 5, (G * L, S)))[:, :, None]
    group = np.repeat(np.arange(G), L)
    return Routed(paths, NAMES, rng.random(G * L), y_G[group], [str(c) for c in range(C)], group,
                  np.tile(np.arange(L), G), rng.random(G))


def coded(codes: np.ndarray, attr: np.ndarray | None = None, L: int = 64, seed: int = 0) -> Routed:
    """3-step paths over 10 modules from path codes 0..999 (one digit per step), in windows of L tokens."""
    rng = np.random.default_rng(seed)
    n = codes.size
    paths = np.stack([codes // 100, codes // 10 % 10, codes % 10], 1)[:, :, None]
    G = n // L
    attr = rng.integers(0, 6, n) if attr is None else attr
    return Routed(paths, [f"T{i}" for i in range(9)] + ["I0"], rng.random(n), attr, list("abcdef"),
                  np.repeat(np.arange(G), L), np.tile(np.arange(L), G), rng.random(G))


def zipf_codes(n: int, n_paths: int, seed: int, alpha: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.arange(1, n_paths + 1, dtype=float) ** -alpha
    return rng.permutation(n_paths)[rng.choice(n_paths, size=n, p=p / p.sum())]


# ---------------------------------------------------------------- 1. group-level permutations

def test_mi_permutation_null_is_calibrated_when_a_label_spans_a_group():
    """Labels constant over an image, paths clustered within it, no label link: shuffling patch by
    patch gave p < 0.05 on every dataset; permuting whole images keeps the null honest."""
    G, L = 200, 16
    group = np.repeat(np.arange(G), L)
    low = 0
    for rep in range(20):
        rng = np.random.default_rng(100 + rep)
        y_G, pref_G = rng.integers(0, 10, G), rng.integers(0, 40, G)
        path = np.where(rng.random(G * L) < 0.5, np.repeat(pref_G, L), rng.integers(0, 40, G * L))
        t = mi_test(path, y_G[group], n_perm=100, seed=rep, groups=group)
        low += t.p_value < 0.05
        assert t.baseline_bits > 0.5 * t.mi_bits  # the clustering's MI shows in the baseline too
    assert low <= 5, low  # ~1 expected; the token-level shuffle gave 20 of 20


def test_group_permutation_still_detects_a_label_that_routes():
    G, L = 200, 16
    rng = np.random.default_rng(0)
    y_G = rng.integers(0, 10, G)
    group = np.repeat(np.arange(G), L)
    path = np.where(rng.random(G * L) < 0.5, y_G[group], rng.integers(0, 40, G * L))  # the label picks the path
    t = mi_test(path, y_G[group], n_perm=100, seed=0, groups=group)
    assert t.p_value == pytest.approx(1 / 101) and t.excess_bits > 0.3


def test_group_permutation_moves_whole_groups_and_keeps_their_pattern():
    """Groups of unequal size exchange label sequences only with groups of their own size."""
    from dnasweep.analyze.info import group_permuter

    sizes = [3, 3, 3, 5, 5, 2]
    group = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(0)
    shuffle = rng.permutation(group.size)  # groups interleaved in the arrays
    group = group[shuffle]
    y = np.arange(group.size)  # distinct labels: src can be read back
    draw = group_permuter(group, np.random.default_rng(1))
    seqs = {g: y[group == g].tolist() for g in range(len(sizes))}
    moved = 0
    for _ in range(20):
        yp = y[draw()]
        for g in range(len(sizes)):
            got = yp[group == g].tolist()
            assert got in [s for s in seqs.values() if len(s) == len(got)]  # some whole group's, in order
            moved += got != seqs[g]
    assert moved > 0


def test_report_mi_baselines_permute_images(tmp_path):
    s = build_report("v", sticky_vision(0), None, str(tmp_path), "vision")
    m = s["mi"]
    for x in [m["path_vs_attr"], *m["step_modules_vs_attr"]]:  # the path and every per-step baseline
        assert x["p_value"] > 0.1 and x["baseline_bits"] > 0.8 * x["mi_bits"], x  # token shuffle: p = 1/201
    assert "labels shuffled across images" in s["text"]


# ---------------------------------------------------------------- 2. vision subset over all val images

def test_vision_analysis_covers_every_class_of_a_class_ordered_val_set(monkeypatch):
    """A folder source lists its images class by class, and so does val: the first 64 of 100 val
    images left classes 7-9 out. The analysis takes an evenly spaced subset, the same every time."""
    import dnasweep.data
    from dnasweep.analyze import collect as C
    from dnasweep.config import build_trial
    from dnasweep.data.vision import make_vision

    cfg = build_trial({}, ["model.task=vision", "model.d_model=32", "model.n_heads=4", "model.n_steps=2",
                           "model.image_size=8", "model.patch_size=2", "model.channels=1", "model.n_classes=10",
                           "model.pooling=cls", "data.source=digits", "train.batch_size=32"])
    y = np.repeat(np.arange(10), 100)
    x = np.zeros((y.size, 1, 8, 8), np.uint8)
    data = make_vision(x, y, SimpleNamespace(val_fraction=0.1, seed=0, source="folder"), 10, "folder-like")
    assert np.all(np.diff(data.val_y) >= 0)  # val in class order, as the folder source gives it

    def fake_run(model, batches, device):  # the labels the model would have seen, routed nowhere special
        xs = np.concatenate([b[0].numpy() for b in batches])
        ys = np.concatenate([b[1].numpy() for b in batches])
        B, Lc = len(ys), 17  # 16 patches + the class token
        return {"paths": np.zeros((B, Lc, 2, 1), np.int64), "flops": np.ones((B, Lc)), "loss": np.ones(B),
                "x": xs, "y": ys, "identity": np.zeros(B * Lc)}

    monkeypatch.setattr(dnasweep.data, "load_data", lambda *a, **k: data)
    model = SimpleNamespace(gate_identity_share=False)  # a top-k router's: its slots say the identity share
    monkeypatch.setattr(C, "_models", lambda target, dev: (model, model))
    monkeypatch.setattr(C, "_run", fake_run)
    target = C.Target(cfg, "unused", "t")
    trained, _, _ = C.collect(target, max_examples=64)
    per_class = np.bincount(trained.attr_N[trained.position_N == 0], minlength=10)
    assert per_class.sum() == 64 and per_class.min() >= 6, per_class
    again, _, _ = C.collect(target, max_examples=64)
    assert np.array_equal(again.attr_N, trained.attr_N)


def test_groups_are_named_by_their_place_in_the_val_split(tmp_path):
    """'image 130' was the 131st analysed image, not val image 130 (val image 509 of 1,000 with 256
    analysed): nothing mapped the id back. Groups now carry their val index (LM: window offset)."""
    from dnasweep.analyze.collect import vision_analysis_batches
    from dnasweep.data.sampler import lm_val_batches, lm_val_starts
    from dnasweep.data.vision import VisionData

    n_val = 1000
    x = np.zeros((n_val, 1, 8, 8), np.uint8)
    d = VisionData(x, np.zeros(n_val, np.int64), x, np.arange(n_val), n_val, np.zeros(1, np.float32),
                   np.ones(1, np.float32), "test")  # val labels: their own val index
    batches, pick = vision_analysis_batches(d, 64, 256)
    assert np.array_equal(np.concatenate([y.numpy() for _, y in batches]), pick) and pick[130] == 509
    tokens = np.arange(5000) % 251
    windows = np.concatenate([xb.numpy() for xb, _ in lm_val_batches(tokens, 8, 16, 4)])
    starts = lm_val_starts(tokens, 16, 32)
    assert np.array_equal(windows[:, 0], tokens[starts])
    assert np.array_equal(windows[5], tokens[starts[5]:starts[5] + 16])

    rng = np.random.default_rng(0)
    G, grid = 10, (4, 4)
    Q = grid[0] * grid[1]
    group = np.repeat(np.arange(G), Q)
    paths = rng.integers(0, 3, (G * Q, 2, 1))
    at = np.arange(G) * 7 + 100
    routed = Routed(paths, ["T0", "M0", "I0"], paths.sum(axis=(1, 2)).astype(float), group % 3, ["a", "b", "c"],
                    group, np.tile(np.arange(Q), G), rng.random(G), val_index_G=at)
    s = build_report("vis", routed, None, str(tmp_path), "vision", images_GHW=rng.random((G, 8, 8)), patch_grid=grid)
    assert s["compute"]["val_index_G"] == at.tolist()
    html = (tmp_path / "report.html").read_text()
    top = s["compute"]["group"]["highest"][0]
    assert "<th>image (val index)</th>" in html and f'<td class="num">{at[top]}</td><td>highest' in html


# ---------------------------------------------------------------- 3. split-half power-law ranks

def test_uniform_paths_fit_a_flat_law_and_zipf_still_fits_one():
    """Ranking and counting one sample read uniform paths as alpha 0.17 +- 0.014 (12 standard errors)."""
    ids = np.random.default_rng(0).integers(0, 256, 16_384)
    for groups in (None, np.repeat(np.arange(256), 64)):  # alternate tokens, alternate groups
        u = fit_rank_frequency(ids, groups_N=groups) if groups is not None else fit_rank_frequency(ids)
        assert u.ok and abs(u.alpha) < 0.08 and abs(u.alpha) < 3 * u.alpha_se, u
        assert u.split == ("tokens" if groups is None else "groups") and u.n_count_tokens == 8192
    z = fit_rank_frequency(zipf_codes(100_000, 20_000, 0), groups_N=np.arange(100_000) // 64)
    assert abs(z.alpha - 1.0) < 0.05, z


def test_report_fits_uniform_routing_as_flat_and_says_how(tmp_path):
    s = build_report("u", coded(np.random.default_rng(1).integers(0, 256, 16_384)), None, str(tmp_path), "lm")
    assert abs(s["power_law"]["alpha"]) < 0.08, s["power_law"]
    assert "paths ranked on half the sequences, frequencies counted on the rest" in s["text"]
    assert "Split-half ranks (Piantadosi 2014)" in (tmp_path / "report.html").read_text()


# ---------------------------------------------------------------- 4. no attribute, no MI

def test_lm_without_byte_classes_reports_no_information_and_no_byte_class(tmp_path):
    """A corpus of tokens (not bytes) gives every token the one class 'token': '0 bits about the
    token's byte class, p = 1' was no measurement."""
    def tokens_only(codes: np.ndarray) -> Routed:  # what collect builds for a `tokens` source
        r = coded(codes)
        return Routed(r.paths_NSK, r.module_names, r.flops_N, np.zeros(codes.size, np.int64), ["token"], r.group_N,
                      r.position_N, r.group_loss_G)

    s = build_report("tok", tokens_only(zipf_codes(4096, 200, 0)),
                     tokens_only(np.random.default_rng(0).integers(0, 200, 4096)), str(tmp_path), "lm")
    assert s["mi"] is None and s["compute"]["by_class"] is None
    assert s["attribute"]["measured"] is False and "'token'" in s["attribute"]["reason"]
    assert "flops_by_class.png" not in s["files"] and not (tmp_path / "flops_by_class.png").exists()
    html = (tmp_path / "report.html").read_text()
    assert "byte class" not in s["text"] and "byte class" not in html
    assert "No information measure: every token is in the same attribute class" in s["text"]


# ---------------------------------------------------------------- 5. excess first

def test_normalised_mi_is_of_the_excess_over_the_shuffled_baseline():
    """Thousands of sparse Zipf paths against independent classes: Miller-Madow leaves ~0.2 bits,
    which read as a normalised MI of 0.11."""
    rng = np.random.default_rng(0)
    path = zipf_codes(16_384, 2000, 0)
    cls = rng.choice(6, path.size, p=[.55, .03, .17, .12, .03, .10])
    t = mi_test(path, cls, n_perm=100)
    assert t.nmi < 0.02 and t.nmi == pytest.approx(max(t.excess_bits, 0) / min(t.h_x_bits, t.h_y_bits))
    assert t.nmi_raw > 0.05 and t.mi_bits > 0.1  # the raw numbers stay, for summary.json


def test_summary_leads_with_the_excess_and_picks_the_step_by_it(tmp_path):
    s = build_report("toy", coded(zipf_codes(8192, 300, 0)), None, str(tmp_path), "lm")
    steps = s["mi"]["step_modules_vs_attr"]
    # step 0: a large raw MI that is all bias; step 1: a small one that is all dependence
    steps[0].update(mi_bits=0.5, baseline_bits=0.5, excess_bits=0.0)
    steps[1].update(mi_bits=0.1, baseline_bits=0.02, excess_bits=0.08)
    steps[2].update(mi_bits=0.05, baseline_bits=0.05, excess_bits=0.0)
    s["mi"]["path_vs_attr"].update(mi_bits=0.3, baseline_bits=0.1, excess_bits=0.2, nmi=0.1)
    text = summary_paragraph(s)
    assert "The path carries 0.2 bits about the token's byte class beyond what labels shuffled" in text, text
    assert "raw estimate 0.3 bits against a shuffled baseline of 0.1" in text
    assert "at most 0.08 bits beyond their baseline (step 1)" in text, text


# ---------------------------------------------------------------- 6. one min_count

def _note(tmp_path) -> str:
    html = (tmp_path / "report.html").read_text()
    return re.search(r"the last path with at least [^:]*:", html).group(0) + ("<th>min_count</th>" in html) * " col"


def test_init_is_fitted_at_the_trained_min_count(tmp_path):
    """A small trained sample falls back to min_count 10; the init model (20 paths, plenty of tokens
    each) was fitted at 30 on its own while the page stated 10 for both."""
    trained, init = coded(zipf_codes(4096, 1000, 0), seed=1), coded(np.random.default_rng(2).integers(0, 20, 4096))
    s = build_report("t", trained, init, str(tmp_path), "lm")
    assert s["power_law"]["min_count"] == 10 and s["power_law"]["reason"] is None
    assert s["power_law_init"]["min_count"] == 10 and s["power_law_init"]["reason"] is None
    assert _note(tmp_path) == "the last path with at least 10 tokens in the ranking half: col"


def test_init_that_cannot_be_fitted_at_the_trained_min_count_says_which_it_used(tmp_path):
    # uniform over 1000 paths: ~8 tokens a path in the ranking half, none near 30
    trained = coded(zipf_codes(16_384, 1000, 0), seed=1)
    init = coded(np.random.default_rng(2).integers(0, 1000, 16_384))
    s = build_report("t", trained, init, str(tmp_path), "lm")
    assert s["power_law"]["min_count"] == 30 and s["power_law_init"]["min_count"] == 10
    assert _note(tmp_path) == "the last path with at least 30 (trained) / 10 (init) tokens in the ranking half: col"
    assert "At initialisation α = " in s["text"] and "(min_count 10)" in s["text"]
