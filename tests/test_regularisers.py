"""Tests for heritage.training.regularisers: the nearest-neighbour entropy and its regulariser."""

from __future__ import annotations

import math

import pytest
import torch

from heritage.config import EntropyConfig
from heritage.training.regularisers import EntropyRegulariser, knn_entropy


def _points(n: int = 32, d: int = 8, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * scale


def _mean_nn_distance(x: torch.Tensor) -> float:
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return d.min(dim=1).values.mean().item()


def _two_clusters(n_per: int = 16, d: int = 8, spread: float = 0.01) -> tuple:
    """Two tight clusters far apart (directions, so they stay apart after normalising)."""
    g = torch.Generator().manual_seed(1)
    centres = torch.zeros(2, d)
    centres[0, 0], centres[1, 1] = 1.0, 1.0
    x = torch.cat([centres[c] + spread * torch.randn(n_per, d, generator=g) for c in (0, 1)])
    return x, torch.repeat_interleave(torch.arange(2), n_per)


def test_knn_entropy_matches_brute_force() -> None:
    x = _points()
    for k in (1, 3):
        d = torch.cdist(x.double(), x.double())
        d.fill_diagonal_(float("inf"))
        expected = torch.log(d.sort(dim=1).values[:, k - 1] + 1e-8).mean()
        torch.testing.assert_close(knn_entropy(x, k).double(), expected, atol=1e-5, rtol=0)


def test_spread_points_score_higher() -> None:
    x = _points()
    assert knn_entropy(x * 3) > knn_entropy(x) > knn_entropy(x * 0.1)
    # scale only shifts the estimate by log(scale): the factor d is left out
    assert (knn_entropy(x * 3) - knn_entropy(x)).item() == pytest.approx(math.log(3), abs=1e-4)
    clustered, _ = _two_clusters(spread=0.01)
    assert knn_entropy(clustered) < knn_entropy(_points(n=32, d=8))


@pytest.mark.parametrize("normalise", [True, False])
def test_gradient_steps_spread_points(normalise: bool) -> None:
    x = _points(n=24, d=4, scale=0.1).requires_grad_(True)
    reg = EntropyRegulariser(1.0, normalise=normalise)
    opt = torch.optim.SGD([x], lr=0.05)
    start = _mean_nn_distance(
        torch.nn.functional.normalize(x.detach(), dim=1) if normalise else x.detach()
    )
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = reg(x, None)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    end_x = torch.nn.functional.normalize(x.detach(), dim=1) if normalise else x.detach()
    assert _mean_nn_distance(end_x) > start
    assert losses[-1] < losses[0]


def test_per_class_ignores_between_class_distances() -> None:
    x, y = _two_clusters()
    global_reg = EntropyRegulariser(1.0, normalise=False)
    per_class = EntropyRegulariser(1.0, per_class=True, normalise=False)
    # one tight cluster of 32 has the same within-class spread but no far-away class
    assert global_reg(x, y).item() == pytest.approx(per_class(x, y).item(), abs=1e-5)
    merged = EntropyRegulariser(1.0, per_class=True, normalise=False)(x, torch.zeros_like(y))
    assert merged.item() == pytest.approx(per_class(x, y).item(), abs=1e-5)
    # with k large enough to reach across clusters, global sees the far class; per class doesn't
    far = EntropyRegulariser(1.0, k=20, normalise=False)(x, None)  # -Ĥ: low means high entropy
    near = EntropyRegulariser(1.0, per_class=True, k=15, normalise=False)(x, y)
    assert -far.item() > math.log(1.0)  # the 20th neighbour is in the other cluster (~1.4 away)
    assert -near.item() < math.log(0.2)  # the 15th neighbour is inside the tight cluster


def test_per_class_equal_weight_per_class() -> None:
    x, y = _two_clusters(n_per=16)
    x[16:] = x[16:] * 5  # rescale the second class only: different within-class spread
    x = torch.cat([x[:16], x[16:20]])  # second class keeps 4 rows only
    y = torch.cat([y[:16], y[16:20]])
    reg = EntropyRegulariser(1.0, per_class=True, normalise=False)
    h0, h1 = knn_entropy(x[:16]), knn_entropy(x[16:])
    torch.testing.assert_close(reg(x, y), -(h0 + h1) / 2)


def test_per_class_skips_classes_without_k_plus_one_rows() -> None:
    x = _points(n=7)
    y = torch.tensor([0, 0, 0, 1, 2, 2, 3])  # classes 1 and 3 have a single row
    reg = EntropyRegulariser(2.0, per_class=True)
    xn = torch.nn.functional.normalize(x, dim=1)
    expected = -2.0 * (knn_entropy(xn[:3]) + knn_entropy(xn[4:6])) / 2
    torch.testing.assert_close(reg(x, y), expected)
    # k = 2: only class 0 has three rows
    torch.testing.assert_close(
        EntropyRegulariser(2.0, per_class=True, k=2)(x, y), -2.0 * knn_entropy(xn[:3], k=2)
    )


@pytest.mark.parametrize(
    ("per_class", "x", "y"),
    [
        (True, _points(n=4), torch.arange(4)),  # every class a singleton
        (True, _points(n=1), torch.zeros(1, dtype=torch.long)),
        (False, _points(n=1), None),
    ],
)
def test_too_few_rows_give_zero_with_grad(per_class: bool, x: torch.Tensor, y) -> None:
    x = x.clone().requires_grad_(True)
    out = EntropyRegulariser(1.0, per_class=per_class)(x, y)
    assert out.item() == 0.0 and out.grad_fn is not None
    out.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_duplicates_finite_values_and_grads() -> None:
    x = _points(n=8)
    x = torch.cat([x, x[:4], x[:1]]).requires_grad_(True)  # exact duplicates, one thrice
    for reg in (EntropyRegulariser(1.0), EntropyRegulariser(1.0, normalise=False)):
        out = reg(x, None)
        assert torch.isfinite(out)
        (grad,) = torch.autograd.grad(out, x)
        assert torch.isfinite(grad).all()
    # all rows identical: the floor at eps, still finite
    same = torch.ones(5, 3, requires_grad=True)
    out = EntropyRegulariser(1.0, per_class=True)(same, torch.zeros(5, dtype=torch.long))
    (grad,) = torch.autograd.grad(out, same)
    assert torch.isfinite(out) and torch.isfinite(grad).all()
    assert out.item() > -math.log(1e-2)  # distances at the floor: a very low estimate
    # zero vectors: normalising leaves them at 0, still finite
    zeros = torch.zeros(4, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(EntropyRegulariser(1.0)(zeros, None), zeros)
    assert torch.isfinite(grad).all()


def test_bf16_features() -> None:
    x = _points().bfloat16().requires_grad_(True)
    out = EntropyRegulariser(0.5)(x, None)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, EntropyRegulariser(0.5)(x.detach().float(), None))
    out.backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


def test_autocast_does_not_lower_precision() -> None:
    x = _points()
    expected = EntropyRegulariser(1.0, normalise=False)(x, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = EntropyRegulariser(1.0, normalise=False)(x, None)
    torch.testing.assert_close(out, expected)


def test_weight_scales_and_zero_switches_off() -> None:
    x = _points()
    torch.testing.assert_close(
        EntropyRegulariser(0.3)(x, None), 0.3 * EntropyRegulariser(1.0)(x, None)
    )
    off = EntropyRegulariser(0.0, per_class=True)(x.requires_grad_(True), None)
    assert off.item() == 0.0 and off.grad_fn is not None
    assert EntropyRegulariser(1.0)(x, None).item() == pytest.approx(
        -knn_entropy(torch.nn.functional.normalize(x, dim=1)).item()
    )


def test_per_class_without_labels_raises() -> None:
    with pytest.raises(ValueError, match=r"MixUp/CutMix"):
        EntropyRegulariser(1.0, per_class=True)(_points(), None)
    with pytest.raises(ValueError, match="labels must be"):
        EntropyRegulariser(1.0, per_class=True)(_points(n=8), torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_k_validation(k) -> None:
    with pytest.raises(ValueError, match="k"):
        EntropyRegulariser(1.0, k=k)
    with pytest.raises(ValueError, match="k"):
        EntropyConfig(weight=1.0, k=k)
    with pytest.raises(ValueError, match="k"):
        knn_entropy(_points(), k=k)


def test_validation() -> None:
    with pytest.raises(ValueError, match="weight"):
        EntropyRegulariser(-0.1)
    with pytest.raises(ValueError, match="weight"):
        EntropyConfig(weight=float("nan"))
    with pytest.raises(ValueError, match="at least 4 rows"):
        knn_entropy(_points(n=3), k=3)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        knn_entropy(torch.zeros(4))


def test_config() -> None:
    assert not EntropyConfig().enabled
    config = EntropyConfig(weight=0.1, per_class=True, k=2, normalise=False)
    assert config.enabled
    reg = EntropyRegulariser.from_config(config)
    assert (reg.weight, reg.per_class, reg.k, reg.normalise) == (0.1, True, 2, False)
    assert reg.layer == ""
    assert EntropyRegulariser.from_config(EntropyConfig(0.1, layer="blocks.1")).layer == "blocks.1"


# ------------------------------------------------------------------ where the features are taken


def _net() -> torch.nn.Module:
    """conv stage -> pooled features -> head: the tapped stage's output is 4-D."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1),
        torch.nn.Sequential(torch.nn.Conv2d(6, 5, 1), torch.nn.ReLU()),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(5, 4),
    )


def test_layer_taps_that_module_output_pooled_over_space() -> None:
    net, x = _net(), torch.randn(8, 3, 6, 6)
    reg = EntropyRegulariser(1.0, layer="0")
    with reg.tapping(net):
        features = net[:4](x)  # the penultimate features, which the regulariser must ignore
        out = reg(features, None)
    expected = EntropyRegulariser(1.0)(net[0](x).mean(dim=(2, 3)), None)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, EntropyRegulariser(1.0)(features, None))
    # the gradient reaches the tapped layer and nothing after it
    out.backward()
    assert net[0].weight.grad.abs().sum() > 0
    assert net[1][0].weight.grad is None


def test_layer_keeps_the_real_rows_and_leaves_no_hook() -> None:
    net, x = _net(), torch.randn(8, 3, 6, 6)
    reg = EntropyRegulariser(1.0, layer="1.0")
    with reg.tapping(net):
        both = net[:4](torch.cat([x, torch.flip(x, dims=[0])]))  # real first, then mixed
        out = reg(both[:8], None)
        with torch.no_grad():  # a validation pass does not replace the tapped batch
            net(torch.randn(3, 3, 6, 6))
        torch.testing.assert_close(reg(both[:8], None), out)
    expected = EntropyRegulariser(1.0)(net[1][0](net[0](x)).mean(dim=(2, 3)), None)
    torch.testing.assert_close(out, expected)
    assert all(not m._forward_hooks for m in net.modules())
    assert reg._tapped is None


def test_layer_errors() -> None:
    net = _net()
    missing = EntropyRegulariser(1.0, layer="blocks.5")
    with pytest.raises(ValueError, match=r"'blocks.5' is not a module.*top-level modules: 0, 1"):
        missing.tapping(net).__enter__()
    with pytest.raises(RuntimeError, match="saw no forward pass"):
        EntropyRegulariser(1.0, layer="0")(_points(), None)

    class Pair(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple:
            return x, x

    pairs, reg = torch.nn.Sequential(Pair()), EntropyRegulariser(1.0, layer="0")
    with reg.tapping(pairs), pytest.raises(TypeError, match="returns tuple, not a tensor"):
        pairs(torch.zeros(4, 3))
        reg(torch.zeros(4, 3), None)
    with EntropyRegulariser(1.0).tapping(net):  # no layer: a no-op
        assert all(not m._forward_hooks for m in net.modules())
