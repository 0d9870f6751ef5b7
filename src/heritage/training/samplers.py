"""Batch samplers: several images of a class in every batch, or rare classes seen more often.

SynerMix-Intra synthesises a feature per class from that class's images in the batch; with a
plain shuffled loader most classes of a many-class collection appear once per batch and there is
nothing to mix. :class:`ClassAwareBatchSampler` fixes that without re-weighting classes.

Heritage collections are imbalanced (hundreds of crops of one hieroglyph, six of another) and
are often judged by macro-F1, where every class counts the same.
:class:`ClassBalancedBatchSampler` draws rare classes more often than their share, by a chosen
degree (square-root sampling by default: Mahajan et al. 2018; Kang et al. 2020).

Both depend only on ``(seed, epoch)``, so a resumed run that calls ``set_epoch`` re-creates the
same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch


def _checked_labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(
            f"labels must be a non-empty 1-D sequence of class indices (got shape "
            f"{labels.shape}); is the training split empty?"
        )
    return labels


class _EpochSeededSampler(torch.utils.data.Sampler[list[int]]):
    """What both samplers share: batches that depend only on ``(seed, epoch)``."""

    def __init__(self, seed: int, drop_last: bool) -> None:
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the batches of ``epoch`` on the next pass."""
        self.epoch = epoch

    def _epoch_rng(self, *stream: int) -> np.random.Generator:
        """This pass's generator; the next pass differs unless ``set_epoch`` says otherwise."""
        rng = np.random.default_rng([self.seed, self.epoch, *stream])
        self.epoch += 1
        return rng


class ClassAwareBatchSampler(_EpochSeededSampler):
    """Batches in which every class present has at least ``images_per_class`` images, drawn in
    natural class proportions.

    Each epoch, every class's indices are shuffled and cut into groups of ``images_per_class``
    (a class's last short group is topped up with other images of that class, repeating when
    the class is smaller than a group); the groups are shuffled and packed into batches of
    ``batch_size // images_per_class`` groups. Every image is seen about once per epoch, so an
    epoch stays an epoch and class frequencies are not re-balanced (that would be a different
    experiment). Batches hold ``(batch_size // images_per_class) * images_per_class`` rows.

    The order depends only on ``(seed, epoch)``, so a resumed run that calls
    :meth:`set_epoch` re-creates the same batches. Without ``set_epoch`` calls each pass over
    the sampler moves on to the next epoch, so epochs still differ.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        batch_size: int,
        images_per_class: int = 2,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        super().__init__(seed, drop_last)
        labels = _checked_labels(labels)
        if images_per_class < 1:
            raise ValueError(f"images_per_class={images_per_class} must be at least 1.")
        if batch_size < images_per_class:
            raise ValueError(
                f"batch_size={batch_size} is smaller than images_per_class={images_per_class}; "
                "a batch must hold at least one group of a class's images."
            )
        _, inverse = np.unique(labels, return_inverse=True)
        #: dataset indices of each class, in dataset order
        by_class = np.argsort(inverse, kind="stable")
        self._members = np.split(by_class, np.cumsum(np.bincount(inverse))[:-1])
        self.images_per_class = images_per_class
        self.groups_per_batch = batch_size // images_per_class
        self.batch_size = self.groups_per_batch * images_per_class
        self._num_groups = sum(math.ceil(len(m) / images_per_class) for m in self._members)
        if len(self) == 0:
            raise ValueError(
                f"{labels.size} images make only {self._num_groups} group(s) of "
                f"{images_per_class}, fewer than the {self.groups_per_batch} a batch of "
                f"{batch_size} needs, so drop_last=True leaves no batch; lower batch_size or "
                "pass drop_last=False."
            )

    def __len__(self) -> int:
        if self.drop_last:
            return self._num_groups // self.groups_per_batch
        return math.ceil(self._num_groups / self.groups_per_batch)

    def __iter__(self) -> Iterator[list[int]]:
        rng = self._epoch_rng()
        k = self.images_per_class
        groups: list[np.ndarray] = []
        for members in self._members:
            order = rng.permutation(members)
            short = len(order) % k
            if len(order) < k:  # a tiny class: repeat its images to fill one group
                order = np.resize(order, k)
            elif short:  # top up the last group with other images of the class
                extra = rng.choice(order[: len(order) - short], k - short, replace=False)
                order = np.concatenate([order, extra])
            groups.extend(order.reshape(-1, k))
        stacked = np.stack(groups)[rng.permutation(len(groups))]
        g = self.groups_per_batch
        for start in range(0, len(stacked), g):
            chunk = stacked[start : start + g]
            if len(chunk) < g and self.drop_last:
                return
            yield chunk.reshape(-1).tolist()


class ClassBalancedBatchSampler(_EpochSeededSampler):
    """Batches drawn with replacement so that class ``c`` is picked with probability
    proportional to ``n_c ** (1 - power)``: ``power=0`` keeps natural frequencies, ``1`` makes
    every class equally likely, ``0.5`` (square-root sampling) sits between, over-sampling rare
    classes without showing a six-image class as often as a 200-image one.

    An epoch has as many images as the dataset (``len(labels) // batch_size`` batches with
    ``drop_last``), so epochs, schedules and checkpoints mean what they do with shuffling.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        batch_size: int,
        power: float = 0.5,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        super().__init__(seed, drop_last)
        labels = _checked_labels(labels)
        if not 0.0 <= power <= 1.0:
            raise ValueError(f"power={power} must be in [0, 1] (0: natural, 1: fully balanced)")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if drop_last and labels.size < batch_size:
            raise ValueError(
                f"{labels.size} images are fewer than batch_size={batch_size}, so drop_last=True "
                "leaves no batch; lower batch_size or pass drop_last=False."
            )
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        weights = counts[inverse].astype(np.float64) ** -power  # per image
        self.probabilities = weights / weights.sum()
        self.batch_size = batch_size
        self.power = power

    def __len__(self) -> int:
        n = len(self.probabilities)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = self._epoch_rng(1)  # 1: not the class-pairs stream
        n = len(self.probabilities)
        size = len(self) * self.batch_size if self.drop_last else n
        drawn = rng.choice(n, size=size, p=self.probabilities)
        for start in range(0, size, self.batch_size):
            yield drawn[start : start + self.batch_size].tolist()
