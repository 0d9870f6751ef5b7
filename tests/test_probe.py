"""Tests for heritage.probe: the linear probe and its export as a linear head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from heritage.backbones import create_backbone
from heritage.probe import LinearProbe, extract_features


def _blobs(
    n_classes: int, labels: list[int] | None = None, n_per: int = 15, dim: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian blobs, shifted and scaled so that the scaler matters."""
    rng = np.random.default_rng(seed)
    labels = list(range(n_classes)) if labels is None else labels
    centres = rng.normal(0, 1.5, (max(labels) + 1, dim))
    x = np.concatenate([rng.normal(centres[c], 1.0, (n_per, dim)) for c in labels])
    y = np.repeat(labels, n_per)
    return x * np.linspace(0.5, 20, dim) + 7.0, y


def _head_proba(probe: LinearProbe, x: np.ndarray) -> np.ndarray:
    weight, bias = probe.head_weights()
    logits = torch.from_numpy(x).float() @ weight.T + bias
    return torch.softmax(logits, dim=1).numpy()


@pytest.mark.parametrize("n_classes", [3, 2])
def test_head_weights_reproduce_predict_proba(n_classes: int) -> None:
    x, y = _blobs(n_classes)
    probe = LinearProbe().fit(x, y, n_classes)
    weight, bias = probe.head_weights()
    assert weight.shape == (n_classes, x.shape[1]) and bias.shape == (n_classes,)
    assert weight.dtype == torch.float32
    proba = probe.predict_proba(x)
    assert proba.shape == (len(x), n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(_head_proba(probe, x), proba, atol=1e-4)


@pytest.mark.parametrize(("n_classes", "present"), [(3, [0, 2]), (4, [0, 1, 3])])
def test_classes_missing_from_training(n_classes: int, present: list[int]) -> None:
    x, y = _blobs(n_classes, labels=present)
    probe = LinearProbe().fit(x, y, n_classes)
    absent = sorted(set(range(n_classes)) - set(present))
    proba = probe.predict_proba(x)
    assert proba.shape == (len(x), n_classes)
    assert np.all(proba[:, absent] == 0)
    head = _head_proba(probe, x)
    assert head[:, absent].max() < 1e-3
    np.testing.assert_allclose(head[:, present], proba[:, present], atol=1e-3)


def test_n_classes_defaults_to_largest_label() -> None:
    x, y = _blobs(3)
    assert LinearProbe().fit(x, y).predict_proba(x).shape == (len(x), 3)


def test_extract_features_shape_and_mode() -> None:
    model = create_backbone("test_efficientnet", 3, pretrained=False)
    model.train()
    x = torch.randn(5, 3, 32, 32)
    loader = DataLoader(list(zip(x, torch.arange(5), strict=True)), batch_size=2)
    feats, targets = extract_features(model, loader, torch.device("cpu"))
    assert feats.shape == (5, model.num_features)
    assert targets.tolist() == [0, 1, 2, 3, 4]
    assert model.training  # mode restored
