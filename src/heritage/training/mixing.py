"""Batch mixing as composable pieces: each takes a batch and returns inputs and soft targets.

MixUp and CutMix come from timm (well tested, handles label smoothing); heritage's own pieces
(SynerMix) live beside them and follow the same call shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.data import Mixup


@dataclass
class MixConfig:
    """MixUp / CutMix strengths (Beta(α, α)); 0 switches one off, both 0 means no mixing."""

    mixup: float = 0.0
    cutmix: float = 0.0
    prob: float = 1.0  # probability a batch is mixed at all
    switch_prob: float = 0.5  # when both are on: chance of CutMix instead of MixUp

    @property
    def enabled(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


class MixUpCutMix:
    """timm's Mixup as a batch transform: (x, y) -> (mixed x, soft targets)."""

    def __init__(self, config: MixConfig, num_classes: int, label_smoothing: float = 0.0) -> None:
        self._mixup = Mixup(
            mixup_alpha=config.mixup,
            cutmix_alpha=config.cutmix,
            prob=config.prob,
            switch_prob=config.switch_prob,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2:  # timm mixes a batch with its flip and needs an even size
            x, y = x[:-1], y[:-1]
        return self._mixup(x, y)
