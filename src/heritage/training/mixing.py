"""Mixing methods: MixUp / CutMix as a batch transform, and SynerMix as an objective.

MixUp and CutMix come from timm (well tested, handles label smoothing) and only change the
inputs, so they run inside :class:`~heritage.training.objectives.Supervised`. SynerMix
(arXiv 2403.14137) changes what is optimised, so it is an objective of its own:

* intra-class part: per class present in the batch, a random convex combination of that class's
  penultimate features is classified as that class (``L_intra``);
* inter-class part: MixUp on the inputs or Manifold MixUp on the penultimate features, with
  ``λ·loss(y) + (1−λ)·loss(y[perm])`` so hard labels, label smoothing and focal loss all work;
* ``L = β·L_intra + (1−β)·L_inter``.

Manifold MixUp alone is SynerMix with ``β = 0``; SynerMix-Intra alone has a plain supervised
second term. :func:`create_objective` maps a :class:`MixConfig` to the right objective.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from timm.data import Mixup
from torch import nn

from heritage.config import DEFAULT_BETA, MixConfig
from heritage.training.objectives import Objective, StepOutput, Supervised, pooled_features

_INTER = ("manifold", "input", "none")  # SynerMix's inter-class part, or none


class MixUpCutMix:
    """timm's Mixup as a batch transform: (x, y) -> (mixed x, soft targets).

    A strength of 0 switches that method off. timm mixes a batch with its flip, so an odd
    batch loses its last row.
    """

    def __init__(
        self,
        mixup_alpha: float,
        cutmix_alpha: float,
        num_classes: int,
        label_smoothing: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
    ) -> None:
        if not (mixup_alpha > 0 or cutmix_alpha > 0):
            raise ValueError("MixUpCutMix needs mixup_alpha > 0 or cutmix_alpha > 0 (or both).")
        # timm's positional order: mixup_alpha, cutmix_alpha, cutmix_minmax, prob, switch_prob
        self._mixup = Mixup(
            mixup_alpha,
            cutmix_alpha,
            None,
            prob,
            switch_prob,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] % 2:  # timm mixes a batch with its flip and needs an even size
            x, y = x[:-1], y[:-1]
        return self._mixup(x, y)


# --------------------------------------------------------------------------- SynerMix


def _sample_beta(
    alpha: float, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """λ ~ Beta(α, α) as a 0-d tensor on ``device`` (no host sync with the global RNG)."""
    if generator is None:
        a = torch.tensor(float(alpha), device=device)
        return torch.distributions.Beta(a, a, validate_args=False).sample()
    # torch's Beta sampler takes no generator: seed numpy from the generator instead, which
    # keeps the draw reproducible from the generator alone
    seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    lam = np.random.default_rng(seed).beta(alpha, alpha)
    return torch.tensor(lam, dtype=torch.float32, device=device)


def _dirichlet_weights(
    inverse: torch.Tensor, num_groups: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Random convex weights per group: row i gets w_i ≥ 0 and each group's weights sum to one.

    Normalised Exponential(1) draws are Dirichlet(1, ..., 1), i.e. uniform on the simplex; a
    group of one row gets weight 1.
    """
    w = torch.empty(inverse.shape[0], device=inverse.device, dtype=torch.float32)
    w.exponential_(generator=generator).clamp_min_(1e-12)  # never a 0/0 for a lone row
    totals = torch.zeros(num_groups, device=w.device, dtype=w.dtype).index_add_(0, inverse, w)
    return w / totals[inverse]


class SynerMix:
    """SynerMix objective (arXiv 2403.14137): ``β·L_intra + (1−β)·L_inter``.

    ``beta=0`` with ``inter='manifold'`` is plain Manifold MixUp; ``inter='none'`` makes the
    second term plain criterion on the real images (SynerMix-Intra alone). ``inter='input'``
    is MixUp on the images, run as one forward pass of ``[x; x_mixed]`` (2n rows), so the real
    images' features for the intra term and the regularisers come from the same call.

    Randomness (λ, the permutation, the intra weights) comes from the global torch RNG on the
    batch's device, which the trainer seeds and saves for resume, unless ``generator`` is given
    (it must live on the batch's device).

    ``y`` must hold class indices. The intra term needs at least two images of every class in
    a batch to mix anything (``needs_class_pairs``: :class:`~heritage.training.samplers.\
ClassAwareBatchSampler`); a class with one row just contributes that row's feature.
    """

    def __init__(
        self,
        beta: float = 0.1,
        alpha: float = 1.0,
        inter: Literal["manifold", "input", "none"] = "manifold",
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0 <= beta <= 1:
            raise ValueError(f"beta={beta!r} must be between 0 and 1 (weight of L_intra).")
        if not alpha > 0:
            raise ValueError(f"alpha={alpha!r} must be > 0 (Beta(α, α) strength).")
        if inter not in _INTER:
            raise ValueError(f"inter={inter!r} must be one of {', '.join(_INTER)}.")
        self.beta = float(beta)
        self.alpha = float(alpha)
        self.inter = inter
        self.generator = generator

    @property
    def needs_class_pairs(self) -> bool:
        return self.beta > 0

    def __repr__(self) -> str:
        return f"SynerMix(beta={self.beta}, alpha={self.alpha}, inter={self.inter!r})"

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module
    ) -> StepOutput:
        if y.dim() != 1 or y.dtype.is_floating_point:
            raise ValueError(
                "SynerMix needs class indices of shape (n,), not soft targets; do not combine "
                "it with a MixUp/CutMix batch transform."
            )
        n = x.shape[0]
        head = model.get_classifier()
        use_inter = self.beta < 1  # skip work whose weight is zero
        mix_inputs = use_inter and self.inter == "input"

        if mix_inputs:
            lam, perm = self._draw_mix(n, x.device)
            x_mixed = torch.lerp(x[perm], x, lam.to(x.dtype))  # λ·x + (1−λ)·x[perm]
            both = pooled_features(model, torch.cat([x, x_mixed]))
            features, mixed = both[:n], both[n:]
        else:
            features = pooled_features(model, x)

        loss = features.new_zeros((), dtype=torch.float32)
        if use_inter:
            if self.inter == "none":
                inter_loss = criterion(head(features), y)
            else:
                if not mix_inputs:  # Manifold MixUp: mix features, re-apply only the head
                    lam, perm = self._draw_mix(n, x.device)
                    mixed = torch.lerp(features[perm], features, lam.to(features.dtype))
                logits = head(mixed)
                inter_loss = lam * criterion(logits, y) + (1 - lam) * criterion(logits, y[perm])
            loss = loss + (1 - self.beta) * inter_loss
        if self.beta > 0:
            classes, synthesised = self.synthesise(features, y)
            loss = loss + self.beta * criterion(head(synthesised), classes)
        return StepOutput(loss, features, y)

    def synthesise(
        self, features: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One random convex combination of each present class's features (vectorised).

        Returns ``(classes, synthesised)``: the sorted classes present and one feature row each.
        """
        classes, inverse = torch.unique(y, sorted=True, return_inverse=True)
        weights = _dirichlet_weights(inverse, classes.shape[0], self.generator)
        # in float32: bf16 sums of many rows would no longer be convex combinations
        synthesised = torch.zeros(
            (classes.shape[0], features.shape[1]), device=features.device, dtype=torch.float32
        )
        synthesised.index_add_(0, inverse, weights[:, None] * features.float())
        return classes, synthesised.to(features.dtype)

    def _draw_mix(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        lam = _sample_beta(self.alpha, device, self.generator)
        return lam, torch.randperm(n, device=device, generator=self.generator)


def create_objective(
    config: MixConfig, num_classes: int, label_smoothing: float = 0.0
) -> Objective:
    """The objective a :class:`MixConfig` asks for.

    ``none`` is plain supervised training; ``mixup`` / ``cutmix`` / ``mixup_cutmix`` are timm's
    batch transform inside it (soft targets, label smoothing folded in, so ``label_smoothing``
    must match the criterion's); ``manifold_mixup`` is SynerMix with β = 0; ``synermix`` and
    ``synermix_intra`` take ``config.beta`` or the paper's 0.1 / 0.5.
    """
    method = config.method
    if method == "none":
        return Supervised()
    if method in ("mixup", "cutmix", "mixup_cutmix"):
        return Supervised(
            MixUpCutMix(
                mixup_alpha=config.alpha if method != "cutmix" else 0.0,
                cutmix_alpha=config.cutmix_alpha if method != "mixup" else 0.0,
                num_classes=num_classes,
                label_smoothing=label_smoothing,
                prob=config.prob,
                switch_prob=config.switch_prob,
            )
        )
    if method == "manifold_mixup":
        return SynerMix(beta=0.0, alpha=config.alpha, inter="manifold")
    beta = DEFAULT_BETA[method] if config.beta is None else config.beta
    if method == "synermix":
        return SynerMix(beta=beta, alpha=config.alpha, inter=config.inter)
    if method == "synermix_intra":
        return SynerMix(beta=beta, alpha=config.alpha, inter="none")
    raise ValueError(f"unknown mixing method {method!r}")  # MixConfig validates; defensive
