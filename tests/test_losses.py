"""Tests for heritage.training.losses: cross-entropy, focal loss, class weights, missing labels."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F

from heritage.config import LossConfig
from heritage.training.losses import (
    CrossEntropy,
    FocalLoss,
    create_loss,
    inverse_frequency,
    inverse_frequency_of_present,
)


def _batch(n: int = 16, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3, torch.randint(0, c, (n,), generator=g)


def _grad(loss_fn, logits: torch.Tensor, *args) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.clone().requires_grad_(True)
    loss = loss_fn(logits, *args)
    loss.backward()
    return loss.detach(), logits.grad


# --- CrossEntropy -------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_unchanged(smoothing: float) -> None:
    logits, y = _batch()
    expected = F.cross_entropy(logits, y, label_smoothing=smoothing)
    assert torch.equal(CrossEntropy(smoothing)(logits, y), expected)
    soft = F.one_hot(y, 5).float()
    torch.testing.assert_close(CrossEntropy()(logits, soft), F.cross_entropy(logits, y))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_missing_labels(smoothing: float) -> None:
    logits, y = _batch()
    mask = torch.arange(16) % 3 != 0
    y_ignored = torch.where(torch.arange(16) % 4 == 0, torch.full_like(y, -100), y)
    keep = mask & (y_ignored != -100)
    ce = CrossEntropy(smoothing)
    expected = F.cross_entropy(logits[keep], y[keep], label_smoothing=smoothing)
    torch.testing.assert_close(ce(logits, y_ignored, mask), expected)
    torch.testing.assert_close(
        ce(logits, y, mask), F.cross_entropy(logits[mask], y[mask], label_smoothing=smoothing)
    )
    soft = F.one_hot(y, 5).float()
    torch.testing.assert_close(
        CrossEntropy()(logits, soft, mask), F.cross_entropy(logits[mask], y[mask])
    )


@pytest.mark.parametrize(
    "loss_fn", [CrossEntropy(), CrossEntropy(0.1), FocalLoss(), FocalLoss(0.0)]
)
def test_no_labelled_row_gives_zero_with_grad(loss_fn) -> None:
    logits, y = _batch()
    for args in [(torch.full_like(y, -100),), (y, torch.zeros(16, dtype=torch.bool))]:
        loss, grad = _grad(loss_fn, logits, *args)
        assert loss.item() == 0.0
        assert torch.equal(grad, torch.zeros_like(grad))
    # soft targets with an all-False mask
    loss, grad = _grad(loss_fn, logits, F.one_hot(y, 5).float(), torch.zeros(16, dtype=torch.bool))
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_mask_length_checked() -> None:
    logits, y = _batch()
    with pytest.raises(ValueError, match="mask has 3 rows"):
        FocalLoss()(logits, y, torch.ones(3, dtype=torch.bool))


# --- FocalLoss ----------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_focal_gamma_zero_is_cross_entropy(smoothing: float) -> None:
    logits, y = _batch()
    loss, grad = _grad(FocalLoss(0.0, label_smoothing=smoothing), logits, y)
    ref_loss, ref_grad = _grad(
        lambda z, t: F.cross_entropy(z, t, label_smoothing=smoothing), logits, y
    )
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(grad, ref_grad)


def test_focal_matches_formula() -> None:
    logits, y = _batch()
    p = logits.softmax(-1).gather(1, y[:, None]).squeeze(1)
    expected = (-((1 - p) ** 2.0) * p.log()).mean()
    torch.testing.assert_close(FocalLoss(2.0)(logits, y), expected)


def test_focal_down_weights_easy_examples() -> None:
    easy = torch.tensor([[4.0, 0.0, 0.0]])  # confident and correct
    hard = torch.tensor([[0.0, 1.0, 0.0]])  # wrong
    y = torch.tensor([0])
    ce_easy, ce_hard = F.cross_entropy(easy, y), F.cross_entropy(hard, y)
    ratios_easy, ratios_hard = [], []
    for gamma in [0.0, 0.5, 1.0, 2.0, 5.0]:
        ratios_easy.append((FocalLoss(gamma)(easy, y) / ce_easy).item())
        ratios_hard.append((FocalLoss(gamma)(hard, y) / ce_hard).item())
    assert ratios_easy[0] == pytest.approx(1.0)
    assert all(a > b for a, b in pairwise(ratios_easy))
    assert ratios_easy[-1] < 1e-6  # (1 - p)^5 with p ≈ 0.96
    # the hard example keeps a larger share of its loss, and the gap widens with gamma
    gaps = [h / e for h, e in zip(ratios_hard, ratios_easy, strict=True)]
    assert gaps[0] == pytest.approx(1.0)
    assert all(a < b for a, b in pairwise(gaps))


def test_focal_alpha_weights_classes() -> None:
    logits, y = _batch(n=40, c=4)
    alpha = torch.tensor([0.5, 1.0, 2.0, 0.0])
    per_row = torch.stack([FocalLoss(2.0)(logits[i : i + 1], y[i : i + 1]) for i in range(40)])
    weighted = FocalLoss(2.0, alpha)(logits, y)
    torch.testing.assert_close(weighted, (alpha[y] * per_row).mean())
    # a zero weight removes a class's contribution; scaling a weight scales its rows only
    only3 = y == 3
    assert FocalLoss(2.0, [0.0, 0.0, 0.0, 1.0])(logits, y).item() == pytest.approx(
        per_row[only3].sum().item() / 40, rel=1e-5
    )


def test_focal_alpha_weights_rows_not_the_smoothing_mass() -> None:
    """With label smoothing and strong imbalance, α must not pull a frequent class's images
    towards the rare class: the loss of one row is lowest at its own (smoothed) target."""
    alpha = inverse_frequency([1000, 10])  # the rare class weighs 100x
    loss = FocalLoss(0.0, alpha, label_smoothing=0.1)
    z = torch.zeros(1, 2, requires_grad=True)
    optimiser = torch.optim.SGD([z], lr=0.5)
    for _ in range(300):
        optimiser.zero_grad()
        loss(z, torch.tensor([0])).backward()
        optimiser.step()
    assert torch.softmax(z, -1)[0, 0].item() == pytest.approx(0.95, abs=1e-3)
    # a soft target weighs as the mix of its classes
    logits, t = torch.randn(3, 2), torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    rows = torch.stack([FocalLoss(2.0)(logits[i : i + 1], t[i : i + 1]) for i in range(3)])
    expected = (rows * (t @ alpha)).mean()
    torch.testing.assert_close(FocalLoss(2.0, alpha)(logits, t), expected)


def test_focal_alpha_length_checked() -> None:
    logits, y = _batch(c=5)
    with pytest.raises(ValueError, match="alpha has 3 weights for 5 classes"):
        FocalLoss(2.0, [1.0, 1.0, 1.0])(logits, y)
    with pytest.raises(ValueError, match=">= 0"):
        FocalLoss(2.0, [1.0, -1.0])
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(-1.0)


def test_focal_soft_targets() -> None:
    logits, y = _batch()
    # one-hot soft rows give the hard-label loss
    torch.testing.assert_close(
        FocalLoss(2.0)(logits, F.one_hot(y, 5).float()), FocalLoss(2.0)(logits, y)
    )
    # mixed rows: the formula, applied with the given q
    g = torch.Generator().manual_seed(1)
    q = torch.rand(16, 5, generator=g).softmax(-1)
    logp = logits.log_softmax(-1)
    expected = (-(q * (1 - logp.exp()) ** 1.5 * logp).sum(-1)).mean()
    torch.testing.assert_close(FocalLoss(1.5)(logits, q), expected)
    # soft targets are not smoothed again, as in CrossEntropy
    torch.testing.assert_close(
        FocalLoss(0.0, label_smoothing=0.1)(logits, q), CrossEntropy()(logits, q)
    )


def test_focal_ignore_index_and_mask() -> None:
    logits, y = _batch()
    y_ignored = y.clone()
    y_ignored[::3] = -100
    mask = torch.arange(16) < 12
    keep = (y_ignored != -100) & mask
    fl = FocalLoss(2.0, [1.0, 2.0, 0.5, 1.0, 1.0])
    torch.testing.assert_close(fl(logits, y_ignored, mask), fl(logits[keep], y[keep]))
    fl = FocalLoss(2.0, ignore_index=7)
    y7 = torch.where(torch.arange(16) % 2 == 0, torch.full_like(y, 7), y)
    torch.testing.assert_close(fl(logits, y7), fl(logits[1::2], y[1::2]))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 2.5])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_extreme_logits_finite(gamma: float, smoothing: float) -> None:
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [1e4, 1e4, -1e4], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 0, 2, 1])  # right and sure, wrong and sure, wrong, uniform
    for target in (y, F.one_hot(y, 3).float()):
        loss, grad = _grad(FocalLoss(gamma, label_smoothing=smoothing), logits, target)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    loss, grad = _grad(FocalLoss(gamma), logits[:1], y[:1])  # p = 1 exactly
    assert loss.item() == 0.0 and torch.isfinite(grad).all()


def test_focal_half_precision_logits() -> None:
    logits, y = _batch()
    loss = FocalLoss(2.0)(logits.bfloat16(), y)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, FocalLoss(2.0)(logits.bfloat16().float(), y))


def test_focal_alpha_follows_device_and_not_in_state_dict() -> None:
    fl = FocalLoss(2.0, [1.0, 2.0])
    assert fl.alpha is not None and fl.alpha.dtype == torch.float32
    assert "alpha" not in fl.state_dict()
    assert fl.to(torch.float64).alpha is not None


# --- inverse_frequency, LossConfig, create_loss -------------------------------------------


def test_inverse_frequency() -> None:
    w = inverse_frequency([10, 20, 40])
    assert w.dtype == torch.float32
    # weights average 1 over the training images (not over classes): the loss keeps its scale
    torch.testing.assert_close((w * torch.tensor([10.0, 20.0, 40.0])).sum() / 70, torch.tensor(1.0))
    torch.testing.assert_close(w / w[0], torch.tensor([1.0, 0.5, 0.25]))
    torch.testing.assert_close(inverse_frequency([7, 7]), torch.ones(2))
    with pytest.raises(ValueError, match=r"classes \[1\] have no images"):
        inverse_frequency([3, 0, 2])
    with pytest.raises(ValueError, match="non-empty"):
        inverse_frequency([])
    with pytest.raises(ValueError, match=">= 0"):
        inverse_frequency([3, -1])


def test_inverse_frequency_of_present_fills_absent_classes_with_the_smallest_weight() -> None:
    w = inverse_frequency_of_present([10, 0, 40])
    # the present classes get their own inverse-frequency weights, as if alone
    torch.testing.assert_close(w[[0, 2]], inverse_frequency([10, 40]))
    torch.testing.assert_close(w[1], w[2])  # 40 is the larger count: the smaller weight
    assert torch.isfinite(w).all()
    with pytest.raises(ValueError, match="at least one class"):
        inverse_frequency_of_present([0, 0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "mse"}, "loss name"),
        ({"name": "focal", "gamma": -0.5}, "gamma"),
        ({"name": "focal", "gamma": float("nan")}, "gamma"),
        ({"name": "focal", "alpha": "balanced"}, "inverse_frequency"),
        ({"name": "focal", "alpha": []}, "empty"),
        ({"name": "focal", "alpha": [1.0, -2.0]}, ">= 0"),
        ({"name": "ce", "alpha": "inverse_frequency"}, "only applies to the focal"),
    ],
)
def test_loss_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LossConfig(**kwargs)


def test_loss_config_defaults() -> None:
    config = LossConfig()
    assert (config.name, config.gamma, config.alpha) == ("ce", 2.0, None)
    assert LossConfig("focal", alpha=(1, 2)).alpha == [1.0, 2.0]


def test_create_loss() -> None:
    ce = create_loss(LossConfig(), label_smoothing=0.1)
    assert isinstance(ce, CrossEntropy) and ce.label_smoothing == 0.1

    fl = create_loss(LossConfig("focal", gamma=1.5), label_smoothing=0.05)
    assert isinstance(fl, FocalLoss)
    assert (fl.gamma, fl.label_smoothing, fl.alpha) == (1.5, 0.05, None)

    fl = create_loss(LossConfig("focal", alpha="inverse_frequency"), class_counts=[1, 3])
    torch.testing.assert_close(fl.alpha, torch.tensor([2.0, 2.0 / 3.0]))  # N / (C · n_c)
    with pytest.raises(ValueError, match="needs the training class counts"):
        create_loss(LossConfig("focal", alpha="inverse_frequency"))

    fl = create_loss(LossConfig("focal", alpha=[0.2, 0.8]), class_counts=[5, 5])
    torch.testing.assert_close(fl.alpha, torch.tensor([0.2, 0.8]))
    assert create_loss(LossConfig("focal", alpha=[0.2, 0.8])).alpha is not None  # no counts
    with pytest.raises(ValueError, match="2 weights but there are 3 classes"):
        create_loss(LossConfig("focal", alpha=[0.2, 0.8]), class_counts=[1, 2, 3])
