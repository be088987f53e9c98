"""dnasweep.data: every source, the splits, the pystdlib cache, samplers and the error reports."""

from __future__ import annotations

import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from helpers import FakeImageDataset, fake_datasets, raises

import dnasweep.data as D
from dnasweep.data import DataConfig, LMSampler, VisionSampler, check_data, load_data
from dnasweep.data import lm as lm_mod
from dnasweep.data.lm import SEP, LMData
from dnasweep.data.pystdlib import load_pystdlib
from dnasweep.errors import ConfigError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test gets its own cache dir, so cache tests see a cold start."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def keys(err: ConfigError) -> list[str]:
    return [p.key for p in err.problems]


def docs_of(arr: np.ndarray) -> list[bytes]:
    return bytes(arr).split(bytes([SEP]))


def test_structured_config_and_defaults_are_valid():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.merge(omegaconf.OmegaConf.structured(DataConfig), {"val_fraction": 0.2})
    assert check_data(cfg, "lm") == []
    assert check_data(DataConfig(source="digits"), "vision") == []
    assert "pystdlib" in D.source_names("lm") and "digits" in D.source_names("vision")


def test_unknown_source_and_task_list_allowed_values():
    (p,) = check_data(DataConfig(source="digits"), "lm")
    assert p.key == "data.source" and "digits" in p.message and all(s in p.fix for s in D.source_names("lm"))
    (p,) = check_data(DataConfig(), "vision")
    assert "pystdlib" in p.message and all(s in p.fix for s in D.source_names("vision"))
    assert [p.key for p in check_data(DataConfig(), "speech")] == ["task"]
    for vf in (0.0, 1.0, -0.1, 1.5):  # val_fraction must lie in the open interval (0, 1)
        assert [(p.key, str(vf) in p.message) for p in check_data(DataConfig(val_fraction=vf), "lm")] == [
            ("data.val_fraction", True)]


def tiny_lm(cfg: DataConfig) -> LMData:
    """An LM loader registered from outside dnasweep.data (see the test below)."""
    ids = np.frombuffer(b"abcdefgh" * 8, dtype=np.uint8)
    return LMData(ids[:48], ids[48:], cfg.vocab_size or 256, 1.0, cfg.source, "tiny")


@pytest.fixture
def tiny_source():
    yield D.register_source("lm", "tiny", f"{__name__}:tiny_lm", "64 fixed bytes", byte_level=True)
    del D.SOURCES["lm", "tiny"]  # the registration ends with the test


def test_source_registered_from_outside_is_checked_and_loaded(tiny_source):
    assert check_data(DataConfig(source="tiny"), "lm") == [] and "tiny" in D.source_names("lm")
    d = load_data(DataConfig(source="tiny"), "lm")
    assert isinstance(d, LMData) and d.source == "tiny" and len(d.train) == 48 and len(d.val) == 16
    (p,) = check_data(DataConfig(source="tiny", vocab_size=100), "lm")  # byte_level: vocab >= 256
    assert p.key == "data.vocab_size" and "byte-level" in p.message
    (p,) = check_data(DataConfig(source="tiny"), "vision")  # registered for lm only
    assert p.key == "data.source" and "tiny" not in p.fix
    with pytest.raises(ValueError, match="already registered"):
        D.register_source("lm", "tiny", f"{__name__}:tiny_lm", "again")


def test_unknown_source_lists_the_registered_names_of_its_task():
    for task in ("lm", "vision"):
        (p,) = check_data(DataConfig(source="nope"), task)
        names = [name for t, name in D.SOURCES if t == task]
        assert p.key == "data.source" and p.fix == f"use one of: {', '.join(names)}" and names
    assert D.get_source("lm", "hf").loader != D.get_source("vision", "hf").loader


def test_all_problems_reported_at_once(tmp_path):
    err = raises(DataConfig(source="tokens", val_fraction=2.0, max_bytes=0, seed=-1))
    assert sorted(keys(err)) == ["data.max_bytes", "data.path", "data.seed", "data.val_fraction",
                                 "data.vocab_size"]
    assert "5 problems" in str(err) and "needs a path" in str(err)
    missing = tmp_path / "nope.txt"
    err = raises(DataConfig(source="text", path=str(missing), vocab_size="big"))
    assert keys(err) == ["data.vocab_size", "data.path"] and str(missing) in str(err)


def test_path_kind_and_suffix_checks(tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text("1 2 3")
    (p,) = check_data(DataConfig(source="tokens", path=str(f), vocab_size=10), "lm")
    assert p.key == "data.path" and str(f) in p.message and ".bin" in p.message
    problems = check_data(DataConfig(source="folder", path=str(f)), "vision")  # (+ Pillow, if missing)
    assert "is not a folder" in problems[0].message and problems[0].key == "data.path"
    (big := tmp_path / "ids.bin").write_bytes(b"\0\0")
    (p,) = check_data(DataConfig(source="tokens", path=str(big), vocab_size=70000), "lm")
    assert p.key == "data.dtype" and "uint32" in p.fix


def test_missing_optional_packages_name_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import of `datasets` now fails
    monkeypatch.setitem(sys.modules, "PIL", None)
    err = raises(DataConfig(source="hf"))
    assert keys(err) == ["data.name", "data.source"] and "pip install 'dnasweep[hf]'" in str(err)
    err = raises(DataConfig(source="folder", path=str(tmp_path)), "vision")
    assert "Pillow" in str(err) and "pip install 'dnasweep[images]'" in str(err)


def fake_stdlib(root):
    """A small stdlib tree: 12 modules plus folders the corpus must skip."""
    for i in range(12):
        (root / "pkg").mkdir(parents=True, exist_ok=True)
        (root / ("pkg" if i % 2 else "") / f"mod{i:02d}.py").write_text(f"# module {i}\n" + "x = 1\n" * (i + 5))
    for skipped in ("site-packages", "test", "pkg/tests", "__pycache__"):
        (root / skipped).mkdir(parents=True, exist_ok=True)
        (root / skipped / "skip.py").write_text("SKIPPED = True\n")
    (root / "notes.txt").write_text("not python\n")
    return root


def test_pystdlib_real_corpus_and_cache_reuse(tmp_path):
    first = load_data(DataConfig(), "lm")
    assert first.vocab_size == 256 and first.bytes_per_token == 1.0 and first.train.dtype == np.uint8
    assert len(first.train) + len(first.val) > 10_000_000
    assert 0.03 < len(first.val) / (len(first.train) + len(first.val)) < 0.3
    assert b"def " in bytes(first.val[:200_000]) and "stdlib" in first.describe()
    cached = sorted(p.name for p in (tmp_path / "cache" / "dnasweep").iterdir())
    assert len(cached) == 3 and not any(n.endswith(".tmp") for n in cached)
    second = load_data(DataConfig(), "lm")
    assert isinstance(second.train, np.memmap)  # read back from the cache, not rebuilt
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)


def test_pystdlib_splits_by_file_seeded_and_skips_tests(tmp_path):
    root = fake_stdlib(tmp_path / "lib")
    files = {p.read_bytes() for p in root.rglob("mod*.py")}
    d = load_pystdlib(DataConfig(val_fraction=0.25), root=root)
    train, val = docs_of(d.train), docs_of(d.val)
    assert set(train) | set(val) == files and not set(train) & set(val)  # whole files, each once
    assert len(train) + len(val) == 12 and b"SKIPPED" not in bytes(d.train) + bytes(d.val)
    again = load_pystdlib(DataConfig(val_fraction=0.25), root=root)
    assert docs_of(again.val) == val
    other = {tuple(docs_of(load_pystdlib(DataConfig(val_fraction=0.25, seed=s), root=root).val))
             for s in range(1, 6)}
    assert len(other | {tuple(val)}) > 1  # the seed changes which files are held out


def test_pystdlib_parallel_builds_and_max_bytes(tmp_path):
    root = fake_stdlib(tmp_path / "lib")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: load_pystdlib(DataConfig(max_bytes=100), root=root), range(4)))
    assert all(np.array_equal(r.train, results[0].train) for r in results)
    n_docs = len(docs_of(results[0].train)) + len(docs_of(results[0].val))
    assert len(results[0].train) + len(results[0].val) - (n_docs - 2) == 100  # bytes without SEPs
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_text_single_file_tail_split(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("héllo wörld " * 100)
    d = load_data(DataConfig(source="text", path=str(f), val_fraction=0.2), "lm")
    assert bytes(d.train) + bytes(d.val) == f.read_bytes()
    assert len(d.val) == round(0.2 * len(f.read_bytes())) and d.vocab_size == 256


def test_text_folder_splits_by_file_and_skips_non_text(tmp_path):
    texts = {f"sub{i % 3}/doc{i}.txt": f"document {i} " * (10 + i) for i in range(10)}
    for name, text in texts.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "sub0" / "blob.pyc").write_bytes(b"\xff\xfe\x00binary")
    (tmp_path / ".hidden.txt").write_text("HIDDEN")
    d = load_data(DataConfig(source="text", path=str(tmp_path), val_fraction=0.3), "lm")
    train, val = docs_of(d.train), docs_of(d.val)
    assert sorted(train + val) == sorted(t.encode() for t in texts.values())
    assert 1 <= len(val) <= 5 and "10 files" in d.describe()


@pytest.mark.parametrize("seed", range(8))
def test_a_large_file_does_not_make_the_val_share(tmp_path, seed):
    """Files were held out in seeded order until the share was reached: a 1 MB file drawn first went
    to val whole (train: 800 bytes of README), or the README alone was the val set (0.08%)."""
    (tmp_path / "big.txt").write_text("big file text. " * 70_000)
    (tmp_path / "README.md").write_text("# notes\n" * 100)
    d = load_data(DataConfig(source="text", path=str(tmp_path), val_fraction=0.1, seed=seed), "lm")
    assert 0.05 <= len(d.val) / (len(d.train) + len(d.val)) <= 0.15, d.describe()
    assert "tail split" in d.describe()


@pytest.mark.parametrize("sizes", [[9_000_000] + [100_000] * 10, [300] * 40 + [50_000], [1000] * 30])
def test_the_held_out_share_of_whole_documents_stays_near_val_fraction(sizes):
    for seed in range(6):
        train, val, take = lm_mod.split_documents(sizes, 0.1, seed, None)
        share = sum(take[i] for i in val) / sum(take.values())
        assert (not val and not train) or 0.05 <= share <= 0.15, (seed, share)


def test_the_pystdlib_identity_names_the_files_not_only_the_python_version(monkeypatch):
    """Installs of one Python version differ (a distro's tkinter, ensurepip): the shared reference
    cache, keyed by the version alone, reused rungs scored on another validation split."""
    from dnasweep.data import pystdlib
    from dnasweep.data.config import identity

    a = identity(DataConfig(), "lm")
    monkeypatch.setattr(pystdlib, "stdlib_files", lambda root=None: [("only.py", 10)])
    assert identity(DataConfig(), "lm") != a


def test_text_errors_name_every_bad_file(tmp_path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_bytes(b"ok text \xff\xfe more")
    (tmp_path / "good.txt").write_text("fine")
    err = raises(DataConfig(source="text", path=str(tmp_path)))
    assert keys(err) == ["data.path", "data.path"] and "not UTF-8" in str(err)
    assert str(tmp_path / "a.txt") in str(err) and str(tmp_path / "b.txt") in str(err)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert f"{empty} is empty" in str(raises(DataConfig(source="text", path=str(empty))))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.pyc").write_bytes(b"\0")
    assert "holds no text files" in str(raises(DataConfig(source="text", path=str(tmp_path / "bin"))))


@pytest.mark.parametrize("suffix,dtype", [(".bin", "uint16"), (".npy", "uint32"), (".bin", "uint32")])
def test_tokens_memmapped_tail_split(tmp_path, suffix, dtype):
    ids = (np.arange(1000) * 7 % 300).astype(dtype)
    f = tmp_path / f"ids{suffix}"
    ids.tofile(f) if suffix == ".bin" else np.save(f, ids)
    d = load_data(DataConfig(source="tokens", path=str(f), vocab_size=300, dtype=dtype), "lm")
    assert isinstance(d.train, np.memmap) and d.train.dtype == dtype and d.bytes_per_token is None
    assert np.array_equal(np.concatenate([d.train, d.val]), ids) and len(d.val) == 100
    x, _ = LMSampler(d.train, 4, 8, seed=0).next()  # windows gathered straight from the memory map
    assert all(any(np.array_equal(r, ids[i: i + 8]) for i in range(900)) for r in x.numpy())


def test_tokens_id_out_of_vocab_names_max_id_and_file(tmp_path, monkeypatch):
    monkeypatch.setattr(lm_mod, "_CHUNK", 64)  # the largest id sits in a later chunk
    ids = np.zeros(1000, np.uint16)
    ids[900] = 4242
    f = tmp_path / "ids.bin"
    ids.tofile(f)
    err = raises(DataConfig(source="tokens", path=str(f), vocab_size=4242))
    assert keys(err) == ["data.vocab_size"] and "4242" in str(err) and str(f) in str(err)
    assert load_data(DataConfig(source="tokens", path=str(f), vocab_size=4243), "lm").vocab_size == 4243


def test_uint32_ids_read_as_uint16_are_refused(tmp_path):
    """A .bin of uint32 ids read with the default data.dtype uint16 trained on the ids interleaved with
    token 0 (their high halves): every id passed the vocabulary check, half the corpus was 0."""
    ids = (np.arange(1, 20_001) * 7919 % 50_257).astype(np.uint32)  # GPT-2-sized vocabulary
    f = tmp_path / "ids.bin"
    ids.tofile(f)
    err = raises(DataConfig(source="tokens", path=str(f), vocab_size=50_257))
    assert keys(err) == ["data.path"] and "uint32" in err.problems[0].fix and str(f) in str(err)
    d = load_data(DataConfig(source="tokens", path=str(f), vocab_size=50_257, dtype="uint32"), "lm")
    assert np.array_equal(np.concatenate([d.train, d.val]), ids)


def test_tokens_bad_files(tmp_path):
    odd, empty, flat = tmp_path / "odd.bin", tmp_path / "empty.bin", tmp_path / "grid.npy"
    odd.write_bytes(b"\1\2\3")
    empty.write_bytes(b"")
    np.save(flat, np.zeros((4, 4), np.int32))
    for f, words in ((odd, "not a multiple of 2"), (empty, "is empty"), (flat, "2-D")):
        err = raises(DataConfig(source="tokens", path=str(f), vocab_size=10))
        assert keys(err) == ["data.path"] and str(f) in str(err) and words in str(err)


def test_hf_real_module_local_folders_and_offline(tmp_path, monkeypatch):
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):  # no network: hub names fail fast
        monkeypatch.setenv(var, "1")
    datasets = pytest.importorskip("datasets", reason="datasets not installed (optional extra hf)")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf", raising=False)
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "train.jsonl").write_text("".join(f'{{"text": "story {i}"}}\n' for i in range(30)))
    d = load_data(DataConfig(source="hf", name=str(tmp_path / "txt")), "lm")
    assert sorted(docs_of(d.train) + docs_of(d.val)) == sorted(f"story {i}".encode() for i in range(30))
    err = raises(DataConfig(source="hf", name="dnasweep-test/no-such-dataset"))
    assert "could not load Hugging Face dataset dnasweep-test/no-such-dataset (offline?)" in str(err)


def test_hf_text_code_path_with_a_fake_module(monkeypatch):
    fake_datasets(monkeypatch, [{"text": f"story {i} " * 20} for i in range(40)])
    d = load_data(DataConfig(source="hf", name="org/stories", max_bytes=2000), "lm")
    assert len(d.train) + len(d.val) - (len(docs_of(d.train)) + len(docs_of(d.val)) - 2) == 2000
    assert d.vocab_size == 256 and "org/stories" in d.describe()
    err = raises(DataConfig(source="hf", name="org/stories", field="body"))
    assert keys(err) == ["data.field"] and "'body'" in str(err) and "text" in err.problems[0].fix
    fake_datasets(monkeypatch, error=ConnectionError("no route to host"))
    err = raises(DataConfig(source="hf", name="org/stories"))
    assert "could not load Hugging Face dataset org/stories (offline?)" in str(err)


def _images(sizes):
    """A fake image dataset of RGB images of `sizes`, 3 classes."""
    from PIL import Image

    return FakeImageDataset([{"img": Image.new("RGB", wh, (i * 20, 0, 0)), "label": i % 3}
                             for i, wh in enumerate(sizes)], ["ant", "bee", "cow"])


def test_hf_images_code_path_with_a_fake_module(monkeypatch):
    pytest.importorskip("PIL", reason="Pillow not installed (optional extra images)")
    fake_datasets(monkeypatch, _images([(4, 3)] * 12))
    d = load_data(DataConfig(source="hf", name="org/imgs", image_field="img", val_fraction=0.25), "vision")
    assert d.image_shape == (3, 3, 4) and d.class_names == ["ant", "bee", "cow"] and len(d.val_y) == 3
    err = raises(DataConfig(source="hf", name="org/imgs"), "vision")
    assert keys(err) == ["data.image_field"] and "'image'" in str(err) and "img" in err.problems[0].fix
    fake_datasets(monkeypatch, _images([(4, 3)] * 11 + [(5, 5)]))
    err = raises(DataConfig(source="hf", name="org/imgs", image_field="img"), "vision")
    assert keys(err) == ["data.image_size"] and "org/imgs record 11 is 5x5" in str(err)


def test_digits_stratified_and_seeded():
    d = load_data(DataConfig(source="digits", val_fraction=0.2), "vision")
    assert d.train_x.dtype == np.uint8 and d.train_x.shape[1:] == (1, 8, 8) == d.image_shape
    assert len(d.train_y) + len(d.val_y) == 1797 and d.n_classes == 10 and d.train_x.max() == 255
    assert np.all(np.abs(np.bincount(d.val_y, minlength=10) - 0.2 * np.bincount(
        np.concatenate([d.train_y, d.val_y]))) <= 1)  # every class held out in proportion
    assert np.allclose(d.mean, d.train_x.mean() / 255, atol=1e-4) and np.allclose(
        d.std, (d.train_x / 255).std(), atol=1e-4)
    same = load_data(DataConfig(source="digits", val_fraction=0.2), "vision")
    other = load_data(DataConfig(source="digits", val_fraction=0.2, seed=1), "vision")
    assert np.array_equal(same.val_x, d.val_x) and not np.array_equal(other.val_x, d.val_x)


def test_digits_load_without_importing_scikit_learn_and_equal_its_loader():
    """The embedded digits are read from scikit-learn's CSV without its 1-2 s import (each vision
    trial loads them), and are exactly what sklearn.datasets.load_digits gives."""
    code = ("import sys; from dnasweep.data import load_data; from dnasweep.data.config import DataConfig; "
            "d = load_data(DataConfig(source='digits'), 'vision'); "
            "print(len(d.train_y) + len(d.val_y), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1797", "False"]
    from sklearn.datasets import load_digits

    from dnasweep.data.vision import digits_arrays

    images, target = digits_arrays()
    ref = load_digits()
    assert np.array_equal(images, ref.images) and np.array_equal(target, ref.target) and target.dtype == np.int64


def test_npz_channels_last_and_grayscale(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (40, 5, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", images=rgb, labels=np.arange(40) % 4)
    d = load_data(DataConfig(source="npz", path=str(tmp_path / "rgb.npz"), val_fraction=0.3), "vision")
    assert d.image_shape == (3, 5, 6) and d.n_classes == 4 and len(d.val_y) == 12
    assert all(any(np.array_equal(v, r.transpose(2, 0, 1)) for r in rgb) for v in d.val_x[:3])
    np.savez(tmp_path / "g.npz", images=rgb[..., 0], labels=np.arange(40) % 2, n_classes=3)
    g = load_data(DataConfig(source="npz", path=str(tmp_path / "g.npz")), "vision")
    assert g.image_shape == (1, 5, 6) and g.n_classes == 3


def test_npz_errors(tmp_path):
    f = tmp_path / "bad.npz"
    np.savez(f, pixels=np.zeros((2, 2, 2), np.uint8))
    err = raises(DataConfig(source="npz", path=str(f)), "vision")
    assert len(err.problems) == 2 and "'images'" in str(err) and "'labels'" in str(err) and str(f) in str(err)
    np.savez(f, images=np.zeros((4, 3, 3), np.float32), labels=np.array([0, -1, 5, 1]), n_classes=3)
    err = raises(DataConfig(source="npz", path=str(f)), "vision")
    msg = str(err)
    assert len(err.problems) == 3 and "float32" in msg and "negative label -1" in msg and "label 5" in msg
    np.savez(f, images=np.zeros((4, 3, 3), np.uint8), labels=np.array([0, 1, 0]))
    assert "4 images but 3 labels" in str(raises(DataConfig(source="npz", path=str(f)), "vision"))


def _save(path, mode, size, color):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_image_folder(tmp_path):
    pytest.importorskip("PIL", reason="Pillow not installed (optional extra images)")
    for c, name in enumerate(["cat", "dog", "eel"]):
        for i in range(4):
            _save(tmp_path / "rgb" / name / f"{i}.png", "RGB", (6, 4), (c * 80, i * 10, 5))
            _save(tmp_path / "gray" / name / f"{i}.png", "L", (5, 5), c * 80 + i)
    d = load_data(DataConfig(source="folder", path=str(tmp_path / "rgb"), val_fraction=0.25), "vision")
    assert d.image_shape == (3, 4, 6) and d.n_classes == 3 and d.class_names == ["cat", "dog", "eel"]
    assert sorted(d.val_y.tolist()) == [0, 1, 2] and np.all(d.train_x[d.train_y == 2][:, 0] == 160)
    g = load_data(DataConfig(source="folder", path=str(tmp_path / "gray"), image_size=8), "vision")
    assert g.image_shape == (1, 8, 8)


def test_image_folder_errors(tmp_path):
    pytest.importorskip("PIL", reason="Pillow not installed (optional extra images)")
    _save(tmp_path / "a" / "x.png", "RGB", (4, 4), 0)
    _save(tmp_path / "b" / "y.png", "RGB", (5, 4), 0)
    err = raises(DataConfig(source="folder", path=str(tmp_path)), "vision")
    assert keys(err) == ["data.image_size"] and "x.png is 4x4" in str(err) and "y.png is 5x4" in str(err)
    (tmp_path / "c").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"not a png")
    err = raises(DataConfig(source="folder", path=str(tmp_path)), "vision")
    assert "c holds no images" in str(err)
    (tmp_path / "c" / "z.png").write_bytes(b"")
    err = raises(DataConfig(source="folder", path=str(tmp_path)), "vision")
    assert len(err.problems) == 2 and "broken.png is not a readable image" in str(err)


def test_lm_sampler_windows_deterministic_and_resumable():
    tokens = np.arange(10_000, dtype=np.uint32)
    s = LMSampler(tokens, 8, 16, seed=3)
    x, y = s.next()
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:] - x[:, :1], torch.arange(1, 16).expand(8, -1)) and torch.equal(y, x + 1)
    for _ in range(4):
        s.next()
    state = s.state_dict()
    after = [s.next() for _ in range(3)]
    fresh = LMSampler(tokens, 8, 16, seed=99)
    buf = io.BytesIO()
    torch.save(state, buf)  # the state survives a checkpoint
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    again = [fresh.next() for _ in range(3)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(after, again, strict=True))
    assert not torch.equal(LMSampler(tokens, 8, 16, seed=4).next()[0], LMSampler(tokens, 8, 16, 3).next()[0])
    with pytest.raises(ConfigError, match="fewer than seq_len"):
        LMSampler(tokens[:16], 8, 16)


def test_vision_sampler_epochs_resume_and_normalize():
    x = np.repeat(np.arange(10, dtype=np.uint8)[:, None, None, None] * 20, 4, axis=2)
    y = np.arange(10)
    s = VisionSampler(x, y, 4, seed=1, mean=np.array([0.5]), std=np.array([0.25]))
    seen = torch.cat([s.next()[1] for _ in range(3)])  # 12 draws: one whole epoch, then 2 more
    assert sorted(seen[:10].tolist()) == list(range(10))
    epoch1 = torch.cat([seen[10:], torch.cat([s.next()[1] for _ in range(2)])])
    assert sorted(epoch1.tolist()) == list(range(10)) and not torch.equal(epoch1, seen[:10])  # reshuffled
    s.load_state_dict({"seed": 1, "epoch": 1, "position": 2})
    assert s.state_dict() == {"seed": 1, "epoch": 1, "position": 2}
    xb, yb = s.next()
    assert xb.dtype == torch.float32 and torch.allclose(xb[:, 0, 0, 0], (yb * 20 / 255 - 0.5) / 0.25)
    state, after = s.state_dict(), [s.next()[1] for _ in range(4)]
    fresh = VisionSampler(x, y, 4, seed=0)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, fresh.next()[1]) for a in after)


def test_val_batches_fixed_and_complete():
    tokens = np.arange(1000, dtype=np.uint16)
    batches = D.lm_val_batches(tokens, 4, 10, n_batches=3)
    assert len(batches) == 3 and batches[0][0][0, 0] == 0 and batches[-1][1][-1, -1] == 999
    again = D.lm_val_batches(tokens, 4, 10, n_batches=3)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    d = load_data(DataConfig(source="digits"), "vision")
    vb = D.vision_val_batches(d, 64)
    assert torch.equal(torch.cat([b[1] for b in vb]), torch.from_numpy(d.val_y))
    assert vb[0][0].shape == (64, 1, 8, 8) and abs(float(vb[0][0].mean())) < 0.5


def test_a_small_val_split_scores_each_window_once():
    """Asked for more windows than the val split has, the even spacing rounded several starts to
    the same window: those windows counted twice in val/loss."""
    tokens = np.arange(30, dtype=np.uint16)  # 20 windows of 10 + 1 tokens
    batches = D.lm_val_batches(tokens, 8, 10, n_batches=4)  # 32 asked
    starts = torch.cat([x[:, 0] for x, _ in batches]).tolist()
    assert starts == list(range(20)) and [len(x) for x, _ in batches] == [8, 8, 4]


def test_trials_of_a_sweep_are_scored_on_the_same_windows_whatever_their_batch_size():
    """The val windows were batch_size x eval_batches evenly spaced ones: a sweep searching the batch
    size scored its trials (and its dense reference, at the base's) on different text."""
    from dnasweep.space import parse_space

    space = parse_space({"base": {"model": {"d_model": 32, "n_heads": 4, "seq_len": 16, "n_steps": 2},
                                  "train": {"batch_size": 16, "eval_batches": 8}},
                         "search": {"train.batch_size": {"choice": [16, 32, 12]}},
                         "objectives": [{"metric": "val/loss"}]}, "s.yaml")
    tokens = np.arange(5000, dtype=np.uint16)

    def text(values):
        t = space.apply(values, "out").train
        return torch.cat([x for x, _ in D.lm_val_batches(tokens, t.batch_size, 16, t.eval_batches, t.eval_windows)])

    base = text({"train.batch_size": 16})
    assert base.shape == (128, 16)  # the base's own windows, as before
    assert torch.equal(text({"train.batch_size": 32}), base) and torch.equal(text({"train.batch_size": 12}), base)
    assert space.apply({"train.batch_size": 16}, "out").train.eval_windows is None  # the base's config unchanged


@pytest.mark.parametrize("task,fields,key", [
    ("lm", dict(path="corpus.txt"), "data.path"),  # forgot source: text -> trained on the stdlib
    ("lm", dict(name="roneneldan/TinyStories"), "data.name"),
    ("vision", dict(source="digits", image_size=16), "data.image_size"),  # 8x8, never resized
    ("vision", dict(source="npz", path="x.npz", image_size=16), "data.image_size"),
])
def test_a_data_key_the_source_does_not_read_is_refused(tmp_path, task, fields, key):
    """A key the chosen source ignores is a mistake that would train on other data than asked:
    data.path with the default source trained on the standard library, silently."""
    (tmp_path / "x.npz").write_bytes(b"0")
    cfg = DataConfig(**{k: str(tmp_path / v) if k == "path" else v for k, v in fields.items()})
    (p,) = [q for q in check_data(cfg, task) if q.key == key]
    assert "reads no" in p.message or "does not resize" in p.message, p
    assert cfg.source in p.message and p.fix


def test_a_source_registered_without_saying_what_it_reads_is_not_second_guessed(tiny_source):
    """A plugin source registered with the documented API (no `reads=`) may read data.name or
    data.image_size its own way: the ignored-key check applies to sources that declare `reads`."""
    assert not [p for p in check_data(DataConfig(source="tiny", name="wiki-2024"), "lm") if p.key == "data.name"]
