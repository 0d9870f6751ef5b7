"""Tests for heritage.soups: averaging, BatchNorm recalibration, uniform/greedy soups, voting."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from heritage.evaluation import evaluate
from heritage.model import (
    ImageClassifier,
    build_model,
    load_card,
    load_state,
    predict_logits,
    softmax,
)
from heritage.modelfile import model_paths
from heritage.run import Run
from heritage.soups import (
    ModelSoup,
    SoftVoting,
    average_state_dicts,
    batchnorm_layers_that_differ,
    recalibrate_batchnorm,
)

CPU = torch.device("cpu")


# ------------------------------------------------------------------ pure functions


def test_average_state_dicts() -> None:
    a = {
        "w": torch.tensor([1.0, 2.0]),
        "h": torch.tensor([1.0], dtype=torch.float16),
        "n": torch.tensor(3),
    }
    b = {
        "w": torch.tensor([3.0, 6.0]),
        "h": torch.tensor([2.0], dtype=torch.float16),
        "n": torch.tensor(7),
    }
    c = {
        "w": torch.tensor([5.0, 1.0]),
        "h": torch.tensor([4.0], dtype=torch.float16),
        "n": torch.tensor(9),
    }
    out = average_state_dicts([a, b, c])
    assert torch.allclose(out["w"], torch.tensor([3.0, 3.0]))
    assert out["h"].dtype == torch.float16
    assert torch.allclose(out["h"].float(), torch.tensor([7 / 3]), atol=1e-2)
    assert out["n"].dtype == a["n"].dtype and int(out["n"]) == 3  # integer buffer: first
    out["n"] += 1
    assert int(a["n"]) == 3  # a copy, not the first state's tensor
    single = average_state_dicts([a])
    assert torch.equal(single["w"], a["w"])


def test_average_state_dicts_errors() -> None:
    with pytest.raises(ValueError, match="zero"):
        average_state_dicts([])
    with pytest.raises(ValueError, match="different parameters"):
        average_state_dicts([{"w": torch.zeros(1)}, {"v": torch.zeros(1)}])


def test_batchnorm_layers_that_differ() -> None:
    base = {
        "conv.weight": torch.zeros(2),
        "bn.running_mean": torch.zeros(2),
        "bn.running_var": torch.ones(2),
    }
    other_weights = {**base, "conv.weight": torch.ones(2)}
    assert not batchnorm_layers_that_differ([base, other_weights])
    assert batchnorm_layers_that_differ([base, {**base, "bn.running_var": torch.full((2,), 2.0)}])
    assert batchnorm_layers_that_differ([base, base, {**base, "bn.running_mean": torch.ones(2)}])
    assert not batchnorm_layers_that_differ([base])
    trained = {**base, "head.bn.running_mean": torch.zeros(2), "head.bn.running_var": torch.ones(2)}
    moved = {**trained, "head.bn.running_var": torch.full((2,), 3.0)}
    assert batchnorm_layers_that_differ([trained, moved]) == {"head.bn"}


def test_recalibrate_only_named_layers_keeps_the_others_in_use() -> None:
    """A layer left out keeps its statistics *and* normalises with them during the pass, so
    the recomputed layer after it sees what it was trained on."""
    loader, x = _constant_mean_loader()
    model = nn.Sequential(nn.BatchNorm2d(3), nn.BatchNorm2d(3))
    model[0].running_mean.fill_(10.0)  # "pretrained" statistics, far from the data's
    recalibrate_batchnorm(model, loader, CPU, only={"1"})
    assert torch.equal(model[0].running_mean, torch.full((3,), 10.0))
    assert torch.equal(model[0].running_var, torch.ones(3))
    expected = (x - 10.0).mean(dim=(0, 2, 3))  # layer 0 in eval: x - 10 (var 1, eps aside)
    assert torch.allclose(model[1].running_mean, expected, atol=1e-3)


def test_recalibrate_rewinds_a_shuffling_loader() -> None:
    _, x = _constant_mean_loader()
    loader = DataLoader(
        TensorDataset(x, torch.zeros(len(x))),
        batch_size=10,  # unequal last batch: the result depends on the batching
        shuffle=True,
        generator=torch.Generator().manual_seed(3),
    )
    runs = []
    for _ in range(2):
        model = nn.Sequential(nn.BatchNorm2d(3))
        recalibrate_batchnorm(model, loader, CPU)
        runs.append(model[0].running_var.clone())
    assert torch.equal(runs[0], runs[1])


def _constant_mean_loader(
    means: tuple[float, ...] = (1.0, -2.0, 5.0), n: int = 64, batch: int = 16
) -> tuple[DataLoader, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, len(means), 4, 4, generator=g) + torch.tensor(means).view(1, -1, 1, 1)
    return DataLoader(TensorDataset(x, torch.zeros(n)), batch_size=batch), x


def test_recalibrate_batchnorm_to_data_statistics() -> None:
    loader, x = _constant_mean_loader()
    model = nn.Sequential(nn.BatchNorm2d(3, momentum=0.1))
    model.eval()
    recalibrate_batchnorm(model, loader, CPU)
    bn = model[0]
    data_mean = x.mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, data_mean, atol=1e-5)  # equal batches: exact mean
    assert torch.allclose(bn.running_var, x.var(dim=(0, 2, 3)), atol=0.1)
    assert bn.momentum == 0.1
    assert not model.training  # mode restored


def test_recalibrate_batchnorm_max_batches_and_no_bn() -> None:
    loader, x = _constant_mean_loader()
    model = nn.Sequential(nn.BatchNorm2d(3))
    model.train()
    recalibrate_batchnorm(model, loader, CPU, max_batches=1)
    assert torch.allclose(model[0].running_mean, x[:16].mean(dim=(0, 2, 3)), atol=1e-5)
    assert model.training
    plain = nn.Sequential(nn.Conv2d(3, 3, 1))
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    assert recalibrate_batchnorm(plain, loader, CPU) is plain
    assert all(torch.equal(v, before[k]) for k, v in plain.state_dict().items())


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="recipe"):
        ModelSoup("stew")
    with pytest.raises(ValueError, match="metric"):
        ModelSoup("greedy", metric="accuracy")
    with pytest.raises(ValueError, match="at least one"):
        ModelSoup("uniform", device="cpu").fit([], val_loader=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        SoftVoting([], device="cpu")


# ------------------------------------------------------------------ on the tiny run


@pytest.fixture(scope="module")
def opened(trained_run: Path) -> Run:
    return Run.open(trained_run)


def test_pool_bn_statistics_are_frozen(opened: Run) -> None:
    """freeze_bn_stats (default) leaves every checkpoint with the same BatchNorm statistics."""
    assert len(opened.pool.entries) >= 2
    assert not batchnorm_layers_that_differ([load_state(p) for p in opened.pool.paths()])


def test_uniform_soup_is_the_average(opened: Run, tmp_path: Path) -> None:
    paths = opened.pool.paths()
    soup = ModelSoup("uniform", recalibrate_bn=False, device="cpu")
    soup.fit(paths, opened.loader("val"), opened.bn_loader())
    assert soup.ingredients_ == [p.name for p in paths]
    assert len(soup.steps_) == len(paths) and all(s.accepted for s in soup.steps_)
    saved = soup.save(tmp_path / "uniform_soup")
    assert saved == model_paths(tmp_path / "uniform_soup")[0]
    expected = average_state_dicts([load_state(p) for p in paths])
    got = load_state(tmp_path / "uniform_soup")
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)
    card = load_card(tmp_path / "uniform_soup")
    assert card.provenance["recipe"] == "uniform_soup"
    assert card.provenance["bn_recalibrated"] is False
    assert card.metrics == {"val_macro_f1": pytest.approx(soup.val_score_)}
    assert "epoch" not in card.provenance


def test_uniform_soup_default_skips_recalibration(opened: Run) -> None:
    soup = ModelSoup("uniform", device="cpu").fit(
        opened.pool.paths(), opened.loader("val"), opened.bn_loader()
    )
    assert soup.card_.provenance["bn_recalibrated"] is False
    expected = average_state_dicts([load_state(p) for p in opened.pool.paths()])
    for k, v in soup.model_.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_forced_recalibration_needs_training_images(opened: Run) -> None:
    with pytest.raises(ValueError, match="bn_loader"):
        ModelSoup("uniform", recalibrate_bn=True, device="cpu").fit(
            opened.pool.paths(), opened.loader("val"), None
        )


def _own_scores(opened: Run, metric: str) -> dict[str, float]:
    loader = opened.loader("val")
    scores = {}
    for path in opened.pool.paths():
        model = build_model(load_card(path), load_state(path))
        logits, targets = predict_logits(model, loader, CPU)
        ev = evaluate(targets, softmax(logits), opened.collection.classes)
        scores[path.name] = {"macro_f1": ev.macro_f1, "loss": ev.nll}[metric]
    return scores


@pytest.mark.parametrize("metric", ["macro_f1", "loss"])
def test_greedy_soup_starts_from_best_checkpoint(opened: Run, metric: str) -> None:
    own = _own_scores(opened, metric)
    soup = ModelSoup("greedy", metric, device="cpu").fit(
        opened.pool.paths(), opened.loader("val"), opened.bn_loader()
    )
    names = list(own)
    if metric == "loss":
        best = min(own.values())
        first = names[int(np.argmin(list(own.values())))]
        assert soup.val_score_ <= best * (1 + 1e-5)  # float32 re-evaluation
    else:
        best = max(own.values())
        first = names[int(np.argmax(list(own.values())))]  # ties: the earliest
        assert soup.val_score_ >= best - 1e-9
    assert soup.ingredients_[0] == first
    assert soup.steps_[0].candidate == first and soup.steps_[0].accepted
    # float32 forward passes: the same weights may sum in another order on another run
    assert soup.steps_[0].score == pytest.approx(own[first], rel=1e-5)
    assert sorted(s.candidate for s in soup.steps_) == sorted(names)
    assert soup.ingredients_ == [first] + [s.candidate for s in soup.steps_[1:] if s.accepted]
    assert soup.card_.provenance["ingredients"] == soup.ingredients_
    proba = soup.predict_proba(opened.loader("val"))
    assert proba.shape == (len(opened.collection.split("val")), len(opened.collection.classes))


def test_soup_rejects_other_classes(opened: Run, tmp_path: Path) -> None:
    first = opened.pool.paths()[0]
    alien = tmp_path / "alien"
    for src, dst in zip(model_paths(first), model_paths(alien), strict=True):
        shutil.copy(src, dst)
    card_path = model_paths(alien)[1]
    card_path.write_text(card_path.read_text().replace('"amber"', '"zebra"'))
    with pytest.raises(ValueError, match="same architecture and classes"):
        ModelSoup("uniform", device="cpu").fit([first, alien], opened.loader("val"))


def test_soft_voting_is_mean_of_members(opened: Run) -> None:
    loader = opened.loader("test")
    members = []
    for path in opened.pool.paths():
        clf = ImageClassifier.load(path, "cpu")
        logits, _ = predict_logits(clf.model, loader, CPU)
        members.append(softmax(logits))
    voting = SoftVoting(opened.pool.paths(), device="cpu")
    proba = voting.predict_proba(loader)
    np.testing.assert_allclose(proba, np.mean(members, axis=0), atol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
