"""Tests for heritage.training.mixing: MixConfig, MixUp/CutMix, SynerMix, create_objective."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

from heritage.config import MixConfig
from heritage.training.losses import CrossEntropy
from heritage.training.mixing import MixUpCutMix, SynerMix, _sample_beta, create_objective
from heritage.training.objectives import Supervised

N_CLASSES = 3


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", num_classes=N_CLASSES)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Seven images (odd on purpose): class 0 x3, class 1 x1, class 2 x3."""
    x = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return x, torch.tensor([0, 2, 0, 1, 2, 0, 2])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


def _count_backbone_calls(model: nn.Module, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch forward_features to record the batch size of every call."""
    rows: list[int] = []
    original = model.forward_features

    def counted(x: torch.Tensor) -> torch.Tensor:
        rows.append(x.shape[0])
        return original(x)

    monkeypatch.setattr(model, "forward_features", counted)
    return rows


# --------------------------------------------------------------------------- MixConfig


def test_mix_config_validation() -> None:
    assert not MixConfig().enabled
    assert MixConfig(method="synermix", beta=0.0).enabled
    for bad, match in [
        ({"method": "mixup_synermix"}, "method="),
        ({"alpha": 0.0}, "alpha=0.0 must be"),
        ({"cutmix_alpha": -1.0}, "cutmix_alpha"),
        ({"beta": 1.5}, "beta=1.5 must be between 0 and 1"),
        ({"inter": "none"}, "inter="),
        ({"prob": 2.0}, "prob=2.0"),
        ({"switch_prob": -0.1}, "switch_prob"),
    ]:
        with pytest.raises(ValueError, match=match):
            MixConfig(**bad)
    with pytest.raises(ValueError, match=r"alpha.*; beta"):  # every problem in one message
        MixConfig(alpha=-1, beta=2)


def test_create_objective_mapping() -> None:
    plain = create_objective(MixConfig(), N_CLASSES)
    assert isinstance(plain, Supervised) and plain.batch_transform is None
    assert not plain.needs_class_pairs

    alphas = {}
    for method in ("mixup", "cutmix", "mixup_cutmix"):
        cfg = MixConfig(method=method, alpha=0.4, cutmix_alpha=0.8, prob=0.7)
        obj = create_objective(cfg, N_CLASSES, label_smoothing=0.1)
        assert isinstance(obj, Supervised) and isinstance(obj.batch_transform, MixUpCutMix)
        timm_mixup = obj.batch_transform._mixup
        alphas[method] = (timm_mixup.mixup_alpha, timm_mixup.cutmix_alpha)
        assert timm_mixup.mix_prob == 0.7 and timm_mixup.label_smoothing == 0.1
        assert not obj.needs_class_pairs
    assert alphas == {"mixup": (0.4, 0.0), "cutmix": (0.0, 0.8), "mixup_cutmix": (0.4, 0.8)}

    def synermix(cfg: MixConfig) -> tuple[float, float, str, bool]:
        obj = create_objective(cfg, N_CLASSES)
        assert isinstance(obj, SynerMix)
        return obj.beta, obj.alpha, obj.inter, obj.needs_class_pairs

    assert synermix(MixConfig(method="manifold_mixup", alpha=2.0)) == (0.0, 2.0, "manifold", False)
    assert synermix(MixConfig(method="synermix")) == (0.1, 1.0, "manifold", True)
    assert synermix(MixConfig(method="synermix", beta=0.3, inter="input")) == (
        0.3,
        1.0,
        "input",
        True,
    )
    assert synermix(MixConfig(method="synermix_intra")) == (0.5, 1.0, "none", True)
    assert synermix(MixConfig(method="synermix_intra", beta=0.2)) == (0.2, 1.0, "none", True)


def test_mixupcutmix_soft_targets_and_odd_batch() -> None:
    mixer = MixUpCutMix(0.2, 0.0, num_classes=N_CLASSES)
    x, y = mixer(torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1]))
    assert x.shape[0] == y.shape[0] == 4 and y.shape[1] == N_CLASSES
    assert torch.allclose(y.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="mixup_alpha > 0 or cutmix_alpha > 0"):
        MixUpCutMix(0.0, 0.0, num_classes=N_CLASSES)


# --------------------------------------------------------------------------- SynerMix


def test_synermix_validation() -> None:
    for kwargs, match in [
        ({"beta": -0.1}, "beta"),
        ({"alpha": 0.0}, "alpha"),
        ({"inter": "cutmix"}, "inter"),
    ]:
        with pytest.raises(ValueError, match=match):
            SynerMix(**kwargs)
    assert SynerMix(beta=0.1).needs_class_pairs and not SynerMix(beta=0.0).needs_class_pairs


@pytest.mark.parametrize("inter", ["manifold", "input", "none"])
def test_synermix_loss_finite_and_reaches_backbone(model, batch, inter) -> None:
    x, y = batch
    criterion = CrossEntropy(label_smoothing=0.1)
    out = SynerMix(beta=0.1, inter=inter)(model.train(), x, y, criterion)
    assert out.loss.dim() == 0 and math.isfinite(out.loss.item())
    assert out.features.shape == (7, model.num_features) and torch.equal(out.labels, y)
    out.loss.backward()
    stem = model.conv_stem.weight.grad
    assert stem is not None and stem.abs().sum() > 0
    assert model.get_classifier().weight.grad.abs().sum() > 0


def test_beta0_without_inter_is_plain_criterion(model, batch) -> None:
    x, y = batch
    model.eval()  # dropout and batch statistics out of the way
    criterion = CrossEntropy()
    out = SynerMix(beta=0.0, inter="none")(model, x, y, criterion)
    with torch.no_grad():
        expected = criterion(model(x), y)
    torch.testing.assert_close(out.loss.detach(), expected)
    torch.testing.assert_close(out.features.detach(), _features(model, x).detach())


def test_manifold_mixup_matches_hand_computation(model, batch) -> None:
    x, y = batch
    model.eval()
    criterion = CrossEntropy()
    out = SynerMix(beta=0.0, alpha=0.4, generator=_gen(5))(model, x, y, criterion)
    g = _gen(5)  # replay the draws: λ first, then the permutation
    lam = _sample_beta(0.4, x.device, g)
    perm = torch.randperm(7, generator=g)
    with torch.no_grad():
        f = _features(model, x)
        logits = model.get_classifier()(lam * f + (1 - lam) * f[perm])
        expected = lam * criterion(logits, y) + (1 - lam) * criterion(logits, y[perm])
    torch.testing.assert_close(out.loss.detach(), expected)


def test_beta1_counts_only_the_intra_term(model, batch) -> None:
    x, y = batch
    model.eval()
    criterion = CrossEntropy()
    head = model.get_classifier()
    for inter in ("manifold", "input", "none"):  # the inter-class part has no say
        out = SynerMix(beta=1.0, inter=inter, generator=_gen(3))(model, x, y, criterion)
        with torch.no_grad():
            classes, synth = SynerMix(generator=_gen(3)).synthesise(_features(model, x), y)
            expected = criterion(head(synth), classes)
        torch.testing.assert_close(out.loss.detach(), expected)

    # one image per class: each synthesised feature is that image's own feature, so the
    # intra loss is the plain loss of the batch
    x1, y1 = x[[1, 3, 0]], y[[1, 3, 0]]
    out = SynerMix(beta=1.0)(model, x1, y1, criterion)
    with torch.no_grad():
        torch.testing.assert_close(out.loss.detach(), criterion(model(x1), y1))


def test_synthesised_features_are_convex_combinations_of_their_class() -> None:
    y = torch.tensor([0, 2, 0, 1, 2, 0, 2])
    features = torch.eye(7)  # row i marks image i, so a synthesised row shows its weights
    classes, synth = SynerMix(generator=_gen(0)).synthesise(features, y)
    assert classes.tolist() == [0, 1, 2]
    assert (synth >= 0).all()
    torch.testing.assert_close(synth.sum(1), torch.ones(3))
    for row, c in zip(synth, classes, strict=True):
        assert (row[y != c] == 0).all()  # only the class's own images
    assert synth[1].tolist() == features[3].tolist()  # the lone image, weight 1
    assert (synth[0][y == 0] > 0).all()  # every member takes part
    _, again = SynerMix(generator=_gen(1)).synthesise(features, y)
    assert not torch.equal(synth, again)  # fresh weights each draw


@pytest.mark.parametrize(
    ("beta", "inter", "rows"),
    [
        (0.1, "manifold", [7]),
        (0.0, "manifold", [7]),
        (0.1, "none", [7]),
        (0.1, "input", [14]),  # [x; x_mixed] in one pass
        (0.0, "input", [14]),
        (1.0, "input", [7]),  # no inter-class term: no mixed images
    ],
)
def test_one_backbone_pass_per_step(model, batch, monkeypatch, beta, inter, rows) -> None:
    x, y = batch
    calls = _count_backbone_calls(model, monkeypatch)
    SynerMix(beta=beta, inter=inter)(model.train(), x, y, CrossEntropy()).loss.backward()
    assert calls == rows


def test_input_mixup_features_are_the_real_images(model, batch) -> None:
    x, y = batch
    model.eval()
    out = SynerMix(beta=0.1, inter="input")(model, x, y, CrossEntropy())
    torch.testing.assert_close(out.features.detach(), _features(model, x).detach())


def test_global_rng_reproducible(model, batch) -> None:
    x, y = batch
    model.eval()
    losses = []
    for _ in range(2):
        torch.manual_seed(7)
        losses.append(SynerMix(beta=0.1, inter="input")(model, x, y, CrossEntropy()).loss.item())
    torch.manual_seed(8)
    other = SynerMix(beta=0.1, inter="input")(model, x, y, CrossEntropy()).loss.item()
    assert losses[0] == losses[1] != other


def test_soft_targets_rejected(model, batch) -> None:
    x, y = batch
    soft = nn.functional.one_hot(y, N_CLASSES).float()
    with pytest.raises(ValueError, match="class indices"):
        SynerMix()(model, x, soft, CrossEntropy())


def test_beta_samples() -> None:
    g = _gen(0)
    draws = torch.stack([_sample_beta(0.4, torch.device("cpu"), g) for _ in range(400)])
    assert ((draws >= 0) & (draws <= 1)).all()
    assert abs(draws.mean().item() - 0.5) < 0.06
    assert abs(draws.var().item() - 1 / (4 * (2 * 0.4 + 1))) < 0.03  # Beta(α, α) variance
    torch.manual_seed(0)
    plain = torch.stack([_sample_beta(0.4, torch.device("cpu"), None) for _ in range(400)])
    assert abs(plain.mean().item() - 0.5) < 0.06
