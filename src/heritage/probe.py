"""Frozen features and linear probes.

A linear probe on frozen pretrained features is the honest baseline for any fine-tune, and it
is also the best starting point for one: fine-tuning from a random head lets large early
gradients distort the pretrained features, while starting from the probe's head keeps them
(LP-FT; Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution", ICLR 2022). Features are computed once and cached, so the probe costs one
forward pass over the images.

The same frozen features also tell how much a fine-tune kept beyond its own labels: train on a
coarse label, then score a finer one on the learned features with k-NN and a linear probe
(:func:`fine_label_scores`), the coarse-to-fine protocol of Baena et al. (arXiv 2208.03684).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader

from heritage.runtime import Precision


@torch.inference_mode()
def extract_features(
    model: nn.Module, loader: DataLoader, device: torch.device, precision: Precision | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled penultimate features (timm's ``pre_logits``) and targets for a loader."""
    precision = precision or Precision(None)
    was_training = model.training
    model.eval()
    feats, targets = [], []
    for x, y in loader:
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with precision.autocast(device):
            f = model.forward_head(model.forward_features(x), pre_logits=True)
        feats.append(f.float().cpu())
        targets.append(y)
    model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(targets).numpy()


class LinearProbe:
    """Multinomial logistic regression on standardised features (scikit-learn), exportable as
    the weights of a ``nn.Linear`` head.

    ``C`` is the inverse L2 strength; ``class_weight="balanced"`` suits imbalanced collections.
    Learnt state: ``scaler_``, ``model_``, ``classes_``.
    """

    def __init__(
        self, C: float = 0.5, class_weight: str | None = "balanced", max_iter: int = 2000
    ) -> None:
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter

    def fit(self, features: np.ndarray, y: np.ndarray, n_classes: int | None = None) -> LinearProbe:
        self.n_classes_ = int(n_classes or (y.max() + 1))
        self.scaler_ = StandardScaler().fit(features)
        self.model_ = LogisticRegression(
            C=self.C, class_weight=self.class_weight, max_iter=self.max_iter
        )
        self.model_.fit(self.scaler_.transform(features), y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities over all ``n_classes`` (classes absent from training get 0)."""
        proba = np.zeros((len(features), self.n_classes_))
        proba[:, self.classes_] = self.model_.predict_proba(self.scaler_.transform(features))
        return proba

    def head_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of an equivalent ``nn.Linear`` on the raw features: the scaler is
        folded in, binary models are made symmetric, and absent classes get a very low bias."""
        coef, intercept = self.model_.coef_, self.model_.intercept_
        if coef.shape[0] == 1:  # binary: one row for class 1
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        scale = self.scaler_.scale_
        w = coef / scale
        b = intercept - (coef * self.scaler_.mean_ / scale).sum(axis=1)
        weight = np.zeros((self.n_classes_, coef.shape[1]))
        bias = np.full(self.n_classes_, -10.0)
        weight[self.classes_], bias[self.classes_] = w, b
        return torch.tensor(weight, dtype=torch.float32), torch.tensor(bias, dtype=torch.float32)


def init_head_from_probe(
    head: nn.Linear, features: np.ndarray, y: np.ndarray, n_classes: int
) -> None:
    """LP-FT: fit a :class:`LinearProbe` on frozen ``features`` and copy it into ``head``, so
    fine-tuning starts from the probe rather than a random head."""
    weight, bias = LinearProbe().fit(features, y, n_classes).head_weights()
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight))
        head.bias.copy_(bias.to(head.bias))


def knn_top1(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    k: int = 5,
) -> float:
    """Cosine k-NN top-1 accuracy: majority vote of the k nearest training rows, a tie going to
    the tied label with the nearest neighbour.

    No training, so it reads the feature geometry as it is (the probe below can re-weight
    dimensions). scikit-learn's ``KNeighborsClassifier`` breaks ties by the smallest label,
    which favours low class indices, hence the vote here. ``k`` larger than the training set
    uses every training row.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if len(train_features) != len(train_labels) or len(test_features) != len(test_labels):
        raise ValueError("features and labels must have the same number of rows")
    if len(train_labels) == 0 or len(test_labels) == 0:
        raise ValueError("k-NN needs at least one training and one test row")
    k = min(k, len(train_labels))
    nn_index = NearestNeighbors(n_neighbors=k, metric="cosine").fit(train_features)
    neighbours = nn_index.kneighbors(test_features, return_distance=False)  # nearest first
    votes = train_labels[neighbours]  # (n_test, k)
    # how many of the k share each neighbour's label; argmax takes the first (nearest) of a tie
    counts = (votes[:, :, None] == votes[:, None, :]).sum(axis=2)
    predicted = votes[np.arange(len(votes)), counts.argmax(axis=1)]
    return float(np.mean(predicted == test_labels))


@dataclass
class FineScores:
    """Top-1 accuracy on fine labels from features trained on coarse ones."""

    fine_knn_top1: float
    fine_probe_top1: float


def fine_label_scores(
    train_features: np.ndarray,
    train_fine_labels: np.ndarray,
    test_features: np.ndarray,
    test_fine_labels: np.ndarray,
    *,
    k: int = 5,
) -> FineScores:
    """k-NN and :class:`LinearProbe` top-1 on the fine labels.

    The two answer different questions: k-NN whether fine classes are neighbourhoods of the
    feature space as it is, the probe whether they are still linearly recoverable. Labels may be
    any values (names, non-contiguous ids); they are encoded together, so a fine class seen only
    at test time counts as an error rather than breaking the probe.
    """
    train_fine_labels, test_fine_labels = (
        np.asarray(train_fine_labels),
        np.asarray(test_fine_labels),
    )
    classes, encoded = np.unique(
        np.concatenate([train_fine_labels, test_fine_labels]), return_inverse=True
    )
    y_train, y_test = encoded[: len(train_fine_labels)], encoded[len(train_fine_labels) :]
    knn = knn_top1(train_features, y_train, test_features, y_test, k=k)
    probe = LinearProbe().fit(train_features, y_train, n_classes=len(classes))
    predicted = probe.predict_proba(test_features).argmax(axis=1)
    return FineScores(fine_knn_top1=knn, fine_probe_top1=float(np.mean(predicted == y_test)))
