"""Losses, in one module (as open_clip does). Every loss takes logits and either class indices
or soft targets (rows summing to one), so mixing pieces can hand either to any loss.

Both losses also accept missing labels: a hard target equal to ``ignore_index`` or a ``mask``
entry that is False leaves the row out, and a batch with no labelled row gives a zero that
still has a ``grad_fn`` (so ``backward()`` and gradient scaling work unchanged when, e.g., a
multi-task batch carries none of one task's labels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from heritage.config import LossConfig, check_class_weights


def inverse_frequency(class_counts: Sequence[int]) -> torch.Tensor:
    """Per-class weights ``N / (C · n_c)`` (scikit-learn's "balanced"): ∝ 1/count, averaging 1
    over the training *images*.

    An average weight of 1 per image keeps the loss of the training distribution on the scale
    of the unweighted one, so terms added to it (the entropy regulariser's λ) keep their
    meaning; weights of mean 1 over *classes* would shrink it by the ratio of the harmonic to
    the arithmetic mean of the counts (0.04 for counts 1000 and 10). A class with no training
    image has no defined frequency (a weight of 0 or ∞ would both be arbitrary), so zero counts
    are refused.
    """
    counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError("class_counts must be a non-empty sequence of per-class counts")
    if (counts < 0).any():
        raise ValueError(f"class_counts must be >= 0, got {counts.tolist()}")
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(
            f"inverse_frequency weights need every class in the training data; "
            f"classes {empty} have no images (give alpha as an explicit list instead)"
        )
    return (counts.sum() / (counts.numel() * counts)).float()


def inverse_frequency_of_present(class_counts: Sequence[int]) -> torch.Tensor:
    """:func:`inverse_frequency` over the classes that have training images; a class without
    any (a rare class missing from a cross-validation fold) gets the smallest of those weights.

    Such a weight never enters a loss, as no image carries that target, but a finite one
    keeps α a valid per-class vector, so a fit on a fold goes on rather than fail.
    """
    counts = torch.as_tensor(list(class_counts))
    present = counts > 0
    if not present.any():
        raise ValueError("inverse_frequency weights need at least one class with images")
    weights = torch.empty(len(counts))
    weights[present] = inverse_frequency(counts[present].tolist())
    weights[~present] = weights[present].min()
    return weights


def _keep_rows(
    target: torch.Tensor, mask: torch.Tensor | None, ignore_index: int
) -> torch.Tensor | None:
    """Boolean (n,) of rows that carry a label, or None when every row does (soft, no mask)."""
    keep = None if target.dtype.is_floating_point else target != ignore_index
    if mask is not None:
        mask = mask.to(device=target.device, dtype=torch.bool).reshape(-1)
        if mask.shape[0] != target.shape[0]:
            raise ValueError(f"mask has {mask.shape[0]} rows, target has {target.shape[0]}")
        keep = mask if keep is None else keep & mask
    return keep


def _masked_mean(per_row: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Mean over kept rows; 0 (with grad_fn) when none is kept. No host sync."""
    if keep is None:
        return per_row.mean()
    per_row = torch.where(keep, per_row, torch.zeros_like(per_row))
    return per_row.sum() / keep.sum().clamp(min=1)


class CrossEntropy(nn.Module):
    """Cross-entropy for hard labels (with optional label smoothing) or soft (mixed) targets.

    Rows with ``target == ignore_index`` (hard targets) or ``mask`` False are left out; the
    mean is over the remaining rows.
    """

    def __init__(self, label_smoothing: float = 0.0, ignore_index: int = -100) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = logits.float()
        keep = _keep_rows(target, mask, self.ignore_index)
        if target.dtype.is_floating_point:  # soft targets already carry any smoothing
            per_row = torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1)
            return _masked_mean(per_row, keep)
        if mask is not None:  # masked rows become ignored ones: one cross_entropy call
            target = torch.where(keep, target, torch.full_like(target, self.ignore_index))
        # The same call as without missing labels, so results are unchanged bit for bit;
        # it is NaN (0/0) when no row is kept, which the where turns into a zero with grad.
        loss = F.cross_entropy(
            logits, target, label_smoothing=self.label_smoothing, ignore_index=self.ignore_index
        )
        return torch.where(keep.any(), loss, logits.sum() * 0.0)


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017):
    ``FL = -Σ_c α_c q_c (1 - p_c)^γ log p_c``, averaged over labelled rows.

    The factor ``(1 - p_c)^γ`` shrinks the loss of examples the model already gets right, so
    the gradient goes to hard and rare examples: what a long-tailed collection needs. ``q`` is
    the one-hot target (label-smoothed like ``F.cross_entropy`` does) for class indices, or the
    given rows for soft targets (which already carry any smoothing, as in
    :class:`CrossEntropy`). With ``γ = 0`` and no ``α`` this is exactly cross-entropy.

    ``α`` weights each *row* by its class: ``α_y`` for a class index, ``Σ_c α_c t_c`` for a
    soft target ``t`` (a mixed pair weighs as the mix of its classes). Weighting every class's
    term instead would also weight the label-smoothing and mixing mass spread over the other
    classes, and with strong imbalance the rare classes' share of that mass would outweigh an
    image's own class and pull predictions towards them. The mean is over rows, not over the
    rows' weights (unlike ``F.cross_entropy(weight=...)``), so weights that average 1 over the
    training images (:func:`inverse_frequency`) keep the loss scale.

    Computed in float32 from ``log_softmax``, with ``1 - p = -expm1(log p)``, so neither
    ``p → 0`` nor ``p → 1`` loses precision or gives NaN, and γ may be non-integer.
    """

    alpha: torch.Tensor | None

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: torch.Tensor | Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"focal gamma must be a finite number >= 0, got {gamma}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.gamma = float(gamma)
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index
        if alpha is not None:
            alpha = torch.as_tensor(alpha, dtype=torch.float32).detach().clone()
            if alpha.ndim != 1:
                raise ValueError(f"alpha must be 1-D (one weight per class), got {alpha.shape}")
            check_class_weights(alpha.tolist())
        # a buffer follows .to(device); not persistent, so state dicts stay as they were
        self.register_buffer("alpha", alpha, persistent=False)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=-1)
        n_classes = logp.shape[-1]
        if self.alpha is not None and self.alpha.shape[0] != n_classes:
            raise ValueError(f"alpha has {self.alpha.shape[0]} weights for {n_classes} classes")
        keep = _keep_rows(target, mask, self.ignore_index)
        if target.dtype.is_floating_point:
            q = target.float()
            labels = q  # the row's own class mix, for its α
        else:
            safe = torch.where(keep, target, torch.zeros_like(target))  # -100 can't index
            q = labels = F.one_hot(safe, n_classes).float()
            if self.label_smoothing:
                q = q * (1.0 - self.label_smoothing) + self.label_smoothing / n_classes
        # 1 - p without cancellation; the floor (not 0) keeps the gradient of x^γ finite at
        # p = 1 for γ < 1, and tiny^γ is 0 (γ > 0) or 1 (γ = 0) to float32 precision anyway.
        one_minus_p = (-torch.expm1(logp)).clamp(min=torch.finfo(torch.float32).tiny)
        per_row = -(q * one_minus_p.pow(self.gamma) * logp).sum(dim=-1)
        if self.alpha is not None:
            per_row = per_row * (labels @ self.alpha.to(labels.device))
        return _masked_mean(per_row, keep)


def create_loss(
    config: LossConfig,
    *,
    label_smoothing: float = 0.0,
    class_counts: Sequence[int] | None = None,
) -> nn.Module:
    """The criterion a :class:`LossConfig` asks for.

    ``class_counts`` (training images per class, in class-index order) resolves
    ``alpha="inverse_frequency"`` and checks that an explicit ``alpha`` list has one weight per
    class.
    """
    if config.name == "ce":
        return CrossEntropy(label_smoothing)
    alpha: torch.Tensor | list[float] | None
    if config.alpha is None:
        alpha = None
    elif isinstance(config.alpha, str):  # "inverse_frequency", the only name allowed
        if class_counts is None:
            raise ValueError(
                "alpha='inverse_frequency' needs the training class counts (class_counts)"
            )
        alpha = inverse_frequency(class_counts)
    else:
        alpha = list(config.alpha)
        if class_counts is not None and len(alpha) != len(class_counts):
            raise ValueError(
                f"alpha has {len(alpha)} weights but there are {len(class_counts)} classes"
            )
    return FocalLoss(config.gamma, alpha, label_smoothing=label_smoothing)
