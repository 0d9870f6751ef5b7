"""Frozen features and linear probes.

A linear probe on frozen pretrained features is the honest baseline for any fine-tune, and it
is also the best starting point for one: fine-tuning from a random head lets large early
gradients distort the pretrained features, while starting from the probe's head keeps them
(LP-FT; Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution", ICLR 2022). Features are computed once and cached, so the probe costs one
forward pass over the images.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
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
