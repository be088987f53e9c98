"""Pixel and text decoding of the Pillow and Hugging Face sources: nothing clipped, dropped or stringified."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FakeImageDataset, fake_datasets, raises

from dnasweep.data import DataConfig, load_data


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test gets its own cache dir, so nothing lands in the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _write(path, array, suffix):
    """Save `array` with Pillow (mode from its dtype) as path.<suffix>, making the class folder."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path.with_suffix(suffix))


def test_folder_16_bit_images_are_scaled_not_clipped(tmp_path):
    pytest.importorskip("PIL", reason="Pillow not installed (optional extra images)")
    from PIL import Image

    pattern = np.arange(0, 65536, 4369, dtype=np.uint16).reshape(4, 4)  # 0 .. 65535 in 16 steps
    for f in ("a/0", "a/1", "b/0", "b/1"):
        _write(tmp_path / "png" / f, pattern, ".png")
        _write(tmp_path / "tif" / f, pattern.astype(np.int32), ".tif")  # mode I, values within 16 bits
    assert Image.open(tmp_path / "png" / "a" / "0.png").mode.startswith("I")
    for kind in ("png", "tif"):
        d = load_data(DataConfig(source="folder", path=str(tmp_path / kind), val_fraction=0.5), "vision")
        assert d.image_shape == (1, 4, 4)
        for x in (d.train_x[0, 0], d.val_x[0, 0]):
            assert np.array_equal(x, pattern // 257), kind  # clipping to 8 bits would give mostly 255


def test_a_dark_16_bit_image_is_scaled_as_16_bit_like_the_rest_of_its_folder(tmp_path):
    """A 16-bit PGM opens as mode I; one whose pixels all happened to be <= 255 was taken for 8-bit
    and came out up to 257x brighter than its folder's other images."""
    pytest.importorskip("PIL", reason="Pillow not installed (optional extra images)")
    bright, dark = np.full((4, 4), 60_000, np.uint16), np.full((4, 4), 249, np.uint16)
    for f, a in (("a/0", dark), ("a/1", bright), ("b/0", dark), ("b/1", bright)):
        path = tmp_path / "pgm" / f"{f}.pgm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"P5 4 4 65535\n" + a.astype(">u2").tobytes())  # what 16-bit PGM writers emit
    d = load_data(DataConfig(source="folder", path=str(tmp_path / "pgm"), val_fraction=0.5), "vision")
    x = np.concatenate([d.train_x, d.val_x])
    assert sorted(int(v.max()) for v in x) == [0, 0, 233, 233]  # 249 // 257 and 60000 // 257


def test_a_split_layout_is_not_read_as_two_classes(tmp_path):
    """PATH/train/<class>/... and PATH/val/<class>/... loaded as classes 'train' and 'val'."""
    pytest.importorskip("PIL", reason="Pillow not installed (optional extra images)")
    for f in ("train/cat/0", "train/cat/1", "train/dog/0", "train/dog/1", "val/cat/0", "val/dog/0"):
        _write(tmp_path / f, np.zeros((4, 4), np.uint8), ".png")
    (p,) = raises(DataConfig(source="folder", path=str(tmp_path)), "vision").problems
    assert p.key == "data.path" and "split names" in p.message and str(tmp_path / "train") in p.fix
    d = load_data(DataConfig(source="folder", path=str(tmp_path / "train"), val_fraction=0.5), "vision")
    assert d.class_names == ["cat", "dog"]


def test_folder_images_of_unknown_range_are_refused(tmp_path):
    pytest.importorskip("PIL", reason="Pillow not installed (optional extra images)")
    for kind in ("f", "i"):
        for f in ("a/0", "a/1", "b/0"):
            _write(tmp_path / kind / f, np.zeros((4, 4), np.uint8), ".png")
    _write(tmp_path / "f" / "b" / "1", np.full((4, 4), 0.5, np.float32), ".tif")  # mode F
    err = raises(DataConfig(source="folder", path=str(tmp_path / "f")), "vision")
    (p,) = err.problems
    assert p.key == "data.path" and "1.tif" in p.message and "mode F" in p.message and "8-bit" in p.fix
    _write(tmp_path / "i" / "b" / "1", np.full((4, 4), 70_000, np.int32), ".tif")  # mode I beyond 16 bits
    (p,) = raises(DataConfig(source="folder", path=str(tmp_path / "i")), "vision").problems
    assert p.key == "data.path" and "1.tif" in p.message and "mode I" in p.message and "npz" in p.fix


def _mixed(n=8):
    """A fake image dataset whose record 0 is grayscale and the rest pure red or green."""
    from PIL import Image

    return FakeImageDataset([{"image": Image.new("L", (3, 2), 7) if i == 0 else Image.new(
        "RGB", (3, 2), (255, 0, 0) if i % 2 else (0, 255, 0)), "label": i % 2} for i in range(n)], ["red", "green"])


def test_hf_images_keep_colour_when_record_0_is_gray(monkeypatch):
    pytest.importorskip("PIL", reason="Pillow not installed (optional extra images)")
    fake_datasets(monkeypatch, _mixed())
    d = load_data(DataConfig(source="hf", name="org/mixed", val_fraction=0.25), "vision")
    assert d.image_shape == (3, 2, 3)
    x, y = np.concatenate([d.train_x, d.val_x]), np.concatenate([d.train_y, d.val_y])
    pixels = {tuple(int(v) for v in im[:, 0, 0]) for im in x}
    assert (255, 0, 0) in pixels and (0, 255, 0) in pixels and (7, 7, 7) in pixels
    assert all(tuple(im[:, 0, 0]) == (255, 0, 0) for im, label in zip(x, y, strict=True) if label == 1)


def test_hf_text_skips_missing_values_and_refuses_non_text(monkeypatch):
    fake_datasets(monkeypatch, [{"text": None if i % 2 else f"story {i} " * 5} for i in range(20)])
    d = load_data(DataConfig(source="hf", name="org/stories"), "lm")
    corpus = bytes(d.train) + bytes(d.val)
    assert b"None" not in corpus and b"story 0 " in corpus and "10 records" in d.describe()
    fake_datasets(monkeypatch, [{"text": "fine"}, {"text": ""}, {"text": 42}])
    (p,) = raises(DataConfig(source="hf", name="org/stories"), "lm").problems
    assert p.key == "data.field" and "int" in p.message and "record 2" in p.message and "text" in p.message


def test_folder_8_bit_values_held_as_32_bit_ints_are_kept(tmp_path):
    """Mode I (32-bit) images whose values are 8-bit (an int array saved as such) decoded black
    under the 16-bit scaling (v // 257)."""
    pytest.importorskip("PIL", reason="Pillow not installed (optional extra images)")
    pattern = np.arange(0, 256, 16, dtype=np.int32).reshape(4, 4)
    for f in ("a/0", "a/1", "b/0", "b/1"):
        _write(tmp_path / f, pattern, ".tif")
    d = load_data(DataConfig(source="folder", path=str(tmp_path), val_fraction=0.5), "vision")
    assert np.array_equal(d.train_x[0, 0], pattern)
