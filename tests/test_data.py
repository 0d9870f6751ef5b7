"""Tests for heritage.data: augmentation presets, decoding, the image cache and datasets."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import heritage.data
from heritage.backbones import Preprocessing
from heritage.config import AugmentConfig
from heritage.data import (
    ImageCache,
    ImageDataset,
    decode,
    eval_transform,
    tensor_to_pil,
    train_transform,
)

HALF = (0.5, 0.5, 0.5)


def _prep(mode: str = "crop", size: int = 32) -> Preprocessing:
    return Preprocessing(size, HALF, HALF, crop_pct=0.875, resize_mode=mode)


def test_augment_presets() -> None:
    assert AugmentConfig.preset("photo") == AugmentConfig()
    glyphs = AugmentConfig.preset("glyphs")
    assert glyphs.hflip == 0.0 and glyphs.rotate > 0
    assert AugmentConfig.preset("glyphs", rotate=3.0).rotate == 3.0
    none = AugmentConfig.preset("none")
    assert none.hflip == 0 and none.color_jitter == 0 and none.scale == (1.0, 1.0)
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        AugmentConfig.preset("sculptures")


def test_glyphs_transform_never_flips() -> None:
    prep = _prep()
    glyph_steps = train_transform(prep, AugmentConfig.preset("glyphs")).transforms
    assert not any(isinstance(t, v2.RandomHorizontalFlip) for t in glyph_steps)
    photo_steps = train_transform(prep, AugmentConfig.preset("photo")).transforms
    assert any(isinstance(t, v2.RandomHorizontalFlip) for t in photo_steps)


@pytest.fixture
def wide_image(tmp_path: Path) -> Path:
    arr = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)  # h=40, w=60
    path = tmp_path / "wide.png"
    Image.fromarray(arr).save(path)
    return path


def test_decode_crop_keeps_aspect(wide_image: Path) -> None:
    prep = _prep("crop")
    assert prep.resize_size == 37
    out = decode(str(wide_image), prep)
    assert out.dtype == torch.uint8
    assert out.shape[0] == 3
    assert min(out.shape[1:]) == prep.resize_size
    assert out.shape[1] == 37  # height is the shorter side
    assert abs(out.shape[2] - 60 * 37 / 40) <= 1


def test_decode_squash_is_square(wide_image: Path) -> None:
    prep = _prep("squash")
    out = decode(str(wide_image), prep)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8


def test_decode_pad_keeps_aspect_with_border_colour(tmp_path: Path) -> None:
    """A wide dark glyph on a light stone background: the whole glyph stays, undistorted, and
    the padding takes the background's colour."""
    arr = np.full((20, 60, 3), (200, 180, 150), dtype=np.uint8)
    arr[8:12, 10:50] = 0  # a flat wide stroke
    path = tmp_path / "glyph.png"
    Image.fromarray(arr).save(path)
    out = decode(str(path), _prep("pad"))
    assert out.shape == (3, 32, 32)
    assert tuple(out[:, 0, 0].tolist()) == (200, 180, 150)  # padding = border colour
    assert tuple(out[:, 31, 16].tolist()) == (200, 180, 150)
    dark_rows = (out.float().mean(dim=0) < 60).any(dim=1).nonzero().flatten()
    dark_cols = (out.float().mean(dim=0) < 60).any(dim=0).nonzero().flatten()
    assert dark_cols.max() - dark_cols.min() > 3 * (dark_rows.max() - dark_rows.min())  # still wide


def test_decode_pil_equals_path(wide_image: Path) -> None:
    prep = _prep("crop")
    with Image.open(wide_image) as img:
        from_pil = decode(img, prep)
    assert torch.equal(from_pil, decode(str(wide_image), prep))
    grey = Image.new("L", (20, 30), 128)  # non-RGB input is converted
    assert decode(grey, prep).shape[0] == 3


@pytest.mark.parametrize("mode", ["crop", "squash", "pad"])
def test_dataset_shapes_and_normalisation(tmp_path: Path, mode: str) -> None:
    white = tmp_path / "white.png"
    Image.new("RGB", (50, 40), (255, 255, 255)).save(white)
    black = tmp_path / "black.png"
    Image.new("RGB", (40, 50), (0, 0, 0)).save(black)
    prep = _prep(mode)
    cache = ImageCache(prep)
    ds = ImageDataset([str(white), str(black)], [2, 0], cache, eval_transform(prep))
    assert len(ds) == 2
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 2
    assert torch.allclose(x, torch.ones_like(x), atol=1e-5)  # (1 - 0.5) / 0.5
    x, y = ds[1]
    assert torch.allclose(x, -torch.ones_like(x), atol=1e-5) and y == 0
    aug = ImageDataset([str(white)], None, cache, train_transform(prep, AugmentConfig()))
    x, y = aug[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == -1
    assert x.min() >= -1.0 - 1e-5 and x.max() <= 1.0 + 1e-5


def test_dataset_length_mismatch(tmp_path: Path) -> None:
    prep = _prep()
    with pytest.raises(ValueError, match="targets"):
        ImageDataset(["a.png", "b.png"], [0], ImageCache(prep), eval_transform(prep))


def test_cache_decodes_each_path_once(image_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    lock = threading.Lock()
    real = heritage.data.decode

    def counting(image, prep):
        with lock:
            calls.append(image)
        return real(image, prep)

    monkeypatch.setattr(heritage.data, "decode", counting)
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))[:5]
    cache = ImageCache(_prep(), threads=2)
    cache.load(paths + paths[:2])  # duplicates in one call
    cache.load(paths)  # everything cached already
    for p in paths:
        assert cache[p].shape[0] == 3
    ds = ImageDataset(paths, None, cache, eval_transform(cache.prep))
    for i in range(len(ds)):
        ds[i]
    assert sorted(calls) == sorted(paths)
    extra = sorted(str(p) for p in image_folder.rglob("*.png"))[5]
    cache[extra]  # a miss decodes lazily, once
    cache[extra]
    assert calls.count(extra) == 1
    assert cache.nbytes == sum(t.numel() for t in cache.images.values())


def test_tensor_to_pil_round_trip(wide_image: Path) -> None:
    t = decode(str(wide_image), _prep("squash"))
    img = tensor_to_pil(t)
    assert img.size == (32, 32)
    assert torch.equal(torch.from_numpy(np.array(img)).permute(2, 0, 1), t)
