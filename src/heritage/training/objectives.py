"""What one training step optimises, as a composable piece.

An *objective* turns a batch into a loss. It receives the model, the batch and the criterion
(cross-entropy or focal loss, from :mod:`heritage.training.losses`), so losses and mixing
methods combine freely: SynerMix with focal loss is ``SynerMix(...)`` called with a
``FocalLoss``. It also hands back the penultimate features of the batch and their labels, so
that feature regularisers (:mod:`heritage.training.regularisers`) reuse the same forward pass.

The objectives here are the plain one; the mixing objectives (SynerMix, Manifold MixUp) live in
:mod:`heritage.training.mixing` with the same call shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features of a timm model: ``forward_head(pre_logits=True)`` applies global
    pooling and dropout but not the classifier, so an objective can feed the head features it
    made itself (SynerMix, Manifold MixUp)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features and logits from a single forward pass."""
    features = pooled_features(model, x)
    return features, model.get_classifier()(features)


@dataclass
class StepOutput:
    """An objective's result for one batch."""

    loss: torch.Tensor  # scalar, before feature regularisers
    features: torch.Tensor  # (n, d) penultimate features of real (unmixed) images
    labels: torch.Tensor | None  # (n,) their class indices; None when no row has one label


class Objective(Protocol):
    """Batch -> loss. ``needs_class_pairs`` asks the trainer for a batch sampler that puts at
    least two images of every class present into each batch (SynerMix-Intra needs it)."""

    needs_class_pairs: bool

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module
    ) -> StepOutput: ...


class Supervised:
    """Plain supervised training: ``criterion(head(features(x)), y)``.

    ``batch_transform`` optionally mixes the inputs first (MixUp / CutMix from
    :class:`heritage.training.mixing.MixUpCutMix`); the targets are then soft and the features
    belong to mixed images, so no labels are handed to regularisers.
    """

    needs_class_pairs = False

    def __init__(self, batch_transform=None) -> None:
        self.batch_transform = batch_transform

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module
    ) -> StepOutput:
        labels: torch.Tensor | None = y
        if self.batch_transform is not None:
            x, y = self.batch_transform(x, y)
            labels = None
        features, logits = features_and_logits(model, x)
        return StepOutput(criterion(logits, y), features, labels)
