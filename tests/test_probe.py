"""Tests for heritage.probe: the linear probe and its export as a linear head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from heritage.backbones import create_backbone
from heritage.probe import FineScores, LinearProbe, extract_features, fine_label_scores, knn_top1


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


def _fine_blobs(
    n_per: int, seed: int, dim: int = 16, n_coarse: int = 2, n_fine: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Fine classes as tight clusters around directions, grouped in coarse classes."""
    rng = np.random.default_rng(0)  # same centres for train and test
    centres = rng.normal(0, 1, (n_coarse * n_fine, dim))
    rng = np.random.default_rng(seed)
    fine = np.repeat(np.arange(n_coarse * n_fine), n_per)
    return centres[fine] + rng.normal(0, 0.1, (len(fine), dim)), fine


def test_fine_label_scores_separable() -> None:
    x_train, y_train = _fine_blobs(20, seed=1)
    x_test, y_test = _fine_blobs(10, seed=2)
    scores = fine_label_scores(x_train, y_train, x_test, y_test, k=5)
    assert isinstance(scores, FineScores)
    assert scores.fine_knn_top1 >= 0.98 and scores.fine_probe_top1 >= 0.98
    # labels need not be contiguous integers
    names = np.array(["a", "b", "c", "x", "y", "z"])
    named = fine_label_scores(x_train, names[y_train], x_test, names[y_test])
    assert named == scores


def test_fine_label_scores_random_features_near_chance() -> None:
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(200, 16)), rng.normal(size=(400, 16))
    y_train, y_test = rng.integers(0, 4, 200), rng.integers(0, 4, 400)
    scores = fine_label_scores(x_train, y_train, x_test, y_test)
    assert 0.15 < scores.fine_knn_top1 < 0.35
    assert 0.15 < scores.fine_probe_top1 < 0.35


def test_fine_label_scores_class_only_in_test() -> None:
    x_train, y_train = _fine_blobs(10, seed=1)
    x_test, y_test = _fine_blobs(5, seed=2)
    keep = y_train != 5  # fine class 5 never seen in training: its test rows are errors
    scores = fine_label_scores(x_train[keep], y_train[keep], x_test, y_test)
    assert scores.fine_knn_top1 == pytest.approx(5 / 6)
    assert scores.fine_probe_top1 == pytest.approx(5 / 6)


def test_knn_top1_vote_and_ties() -> None:
    # cosine: only directions matter, so scaled rows are the same point
    train = np.array([[1.0, 0.0], [1.0, 0.1], [1.0, 0.2], [0.0, 1.0], [0.1, 1.0]])
    labels = np.array([1, 0, 0, 2, 2])
    test = np.array([[5.0, 0.0]])
    assert knn_top1(train, labels, test, np.array([1]), k=1) == 1.0
    assert knn_top1(train, labels, test, np.array([0]), k=3) == 1.0  # majority over nearest
    # k=2: labels 1 and 0 tie, the nearest (1) wins, where sklearn would pick the smaller label
    assert knn_top1(train, labels, test, np.array([1]), k=2) == 1.0
    # k capped at 5: 0 and 2 tie with two votes each, 0 has the nearer neighbour
    assert knn_top1(train, labels, test, np.array([0]), k=50) == 1.0
    with pytest.raises(ValueError, match="k must be"):
        knn_top1(train, labels, test, np.array([1]), k=0)
    with pytest.raises(ValueError, match="same number of rows"):
        knn_top1(train, labels[:3], test, np.array([1]))
