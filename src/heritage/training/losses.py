"""Losses, in one module (as open_clip does). Every loss takes logits and either class indices
or soft targets (rows summing to one), so mixing pieces can hand either to any loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CrossEntropy(nn.Module):
    """Cross-entropy for hard labels (with optional label smoothing) or soft (mixed) targets."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.dtype.is_floating_point:  # soft targets already carry any smoothing
            return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        return F.cross_entropy(logits.float(), target, label_smoothing=self.label_smoothing)
