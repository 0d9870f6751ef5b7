"""Tests for heritage.training.samplers: the class-aware batch sampler SynerMix-Intra needs and
the class-balanced sampler for imbalanced collections."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from heritage.training.samplers import ClassAwareBatchSampler, ClassBalancedBatchSampler

#: imbalanced: 13, 5, 1, 2 and 7 images; groups of 2: 7 + 3 + 1 + 1 + 4 = 16
LABELS = np.array([0] * 13 + [1] * 5 + [2] * 1 + [3] * 2 + [4] * 7)
rng = np.random.default_rng(0)
LABELS = LABELS[rng.permutation(len(LABELS))]  # classes interleaved, as in a real split


def _epoch(sampler: ClassAwareBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize(("batch_size", "k"), [(6, 2), (7, 2), (9, 3), (4, 4), (2, 1)])
def test_every_class_present_has_k_rows(batch_size: int, k: int) -> None:
    for drop_last in (True, False):
        sampler = ClassAwareBatchSampler(
            LABELS, batch_size, images_per_class=k, drop_last=drop_last
        )
        for epoch in range(5):
            batches = _epoch(sampler, epoch)
            assert len(batches) == len(sampler)
            for i, batch in enumerate(batches):
                assert all(isinstance(j, int) for j in batch)
                counts = Counter(LABELS[batch].tolist())
                assert min(counts.values()) >= k, (epoch, batch, counts)
                if drop_last or i < len(batches) - 1:
                    assert len(batch) == (batch_size // k) * k == sampler.batch_size


def test_each_image_seen_about_once_per_epoch() -> None:
    sampler = ClassAwareBatchSampler(LABELS, 6, drop_last=False)
    rows = [j for batch in _epoch(sampler, 0) for j in batch]
    assert len(rows) == 16 * 2  # the 16 groups, topped up
    seen = Counter(rows)
    assert set(seen) == set(range(len(LABELS)))  # every image, none forgotten
    assert max(seen.values()) == 2  # a top-up or the lone image's repeat, never more
    lone = int(np.flatnonzero(LABELS == 2)[0])
    assert seen[lone] == 2  # a class of one is repeated to make a pair
    # in natural proportions: the big class fills the most rows
    per_class = Counter(LABELS[rows].tolist())
    assert per_class[0] == 14 and per_class[2] == 2


def test_length() -> None:
    assert len(ClassAwareBatchSampler(LABELS, 6)) == 16 // 3
    assert len(ClassAwareBatchSampler(LABELS, 6, drop_last=False)) == 6
    assert len(ClassAwareBatchSampler(LABELS, 7)) == 16 // 3  # batches of 6
    assert len(ClassAwareBatchSampler(LABELS, 8, images_per_class=4)) == (4 + 2 + 1 + 1 + 2) // 2


def test_deterministic_per_seed_and_epoch() -> None:
    a = ClassAwareBatchSampler(LABELS, 6, seed=3)
    b = ClassAwareBatchSampler(LABELS, 6, seed=3)
    assert _epoch(a, 4) == _epoch(b, 4)  # a resumed run re-creates the batches
    assert _epoch(a, 4) != _epoch(a, 5)
    assert _epoch(a, 4) != _epoch(ClassAwareBatchSampler(LABELS, 6, seed=4), 4)
    # without set_epoch each pass moves on, so epochs still differ
    fresh = ClassAwareBatchSampler(LABELS, 6, seed=3)
    first, second = list(fresh), list(fresh)
    assert first != second
    assert first == _epoch(b, 0) and second == _epoch(b, 1)


def test_works_as_dataloader_batch_sampler() -> None:
    data = TensorDataset(torch.arange(len(LABELS)), torch.as_tensor(LABELS))
    loader = DataLoader(data, batch_sampler=ClassAwareBatchSampler(LABELS, 6))
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    for index, y in batches:
        assert torch.equal(y, torch.as_tensor(LABELS)[index])
        assert torch.bincount(y).max() >= 2 and (torch.bincount(y)[torch.unique(y)] >= 2).all()


def test_string_labels() -> None:
    sampler = ClassAwareBatchSampler(["a", "b", "a", "b", "b"], 4)
    for batch in list(sampler):
        assert len(batch) == 4


def test_errors() -> None:
    with pytest.raises(ValueError, match="smaller than images_per_class"):
        ClassAwareBatchSampler(LABELS, 1, images_per_class=2)
    with pytest.raises(ValueError, match="at least 1"):
        ClassAwareBatchSampler(LABELS, 4, images_per_class=0)
    with pytest.raises(ValueError, match="non-empty"):
        ClassAwareBatchSampler([], 4)
    with pytest.raises(ValueError, match="drop_last=False"):
        ClassAwareBatchSampler([0, 0, 1], 8)
    assert len(ClassAwareBatchSampler([0, 0, 1], 8, drop_last=False)) == 1


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_balanced_class_frequencies_follow_power(power: float) -> None:
    """Class c is drawn with probability ∝ n_c ** (1 - power): measured over many epochs."""
    sampler = ClassBalancedBatchSampler(LABELS, 5, power=power, seed=1)
    rows = [j for epoch in range(400) for batch in _epoch(sampler, epoch) for j in batch]
    counts = Counter(int(LABELS[j]) for j in rows)
    sizes = np.bincount(LABELS)
    expected = sizes ** (1 - power) / (sizes ** (1 - power)).sum()
    observed = np.array([counts[c] for c in range(len(sizes))]) / sum(counts.values())
    np.testing.assert_allclose(observed, expected, atol=0.02)
    if power == 1.0:  # the one-image class is drawn as often as the 13-image one
        assert abs(observed[2] - observed[0]) < 0.03


def test_balanced_epoch_length_and_determinism() -> None:
    sampler = ClassBalancedBatchSampler(LABELS, 6, seed=3)
    batches = _epoch(sampler, 2)
    assert len(batches) == len(sampler) == len(LABELS) // 6
    assert all(len(b) == 6 for b in batches)
    assert batches == _epoch(ClassBalancedBatchSampler(LABELS, 6, seed=3), 2)  # resumable
    assert batches != _epoch(sampler, 3)
    loose = ClassBalancedBatchSampler(LABELS, 6, drop_last=False)
    assert sum(len(b) for b in _epoch(loose, 0)) == len(LABELS) == 28
    assert len(loose) == 5


def test_balanced_errors() -> None:
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ClassBalancedBatchSampler(LABELS, 4, power=1.5)
    with pytest.raises(ValueError, match="non-empty"):
        ClassBalancedBatchSampler([], 4)
    with pytest.raises(ValueError, match="drop_last=False"):
        ClassBalancedBatchSampler([0, 1, 1], 8)
