"""Temperature scaling: fitted on validation, kept in model cards, used wherever a classifier's
probabilities are read (predict, evaluate, soups, soft voting, refits)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from heritage.calibration import TemperatureScaling, apply_temperature, fit_temperature, softmax
from heritage.evaluation import expected_calibration_error
from heritage.model import ImageClassifier, ModelCard, load_card
from heritage.run import Run


def overconfident(n: int = 4000, k: int = 5, scale: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(z): z is calibrated, z * scale is over-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k))
    p = softmax(z)
    y = np.array([rng.choice(k, p=row) for row in p])
    return z * scale, y


def test_temperature_undoes_over_and_under_confidence() -> None:
    logits, y = overconfident(scale=3.0)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(y, softmax(logits))
    after = expected_calibration_error(y, softmax(logits, t))
    assert after < 0.03 < before
    under, y2 = overconfident(scale=0.4, seed=1)
    assert fit_temperature(under, y2) == pytest.approx(0.4, rel=0.15)
    # never changes the predicted class
    assert (softmax(logits, t).argmax(1) == logits.argmax(1)).all()


def test_probabilities_and_logits_give_the_same_temperature() -> None:
    logits, y = overconfident(n=1000, scale=2.0, seed=2)
    from_proba = TemperatureScaling().fit(softmax(logits), y).temperature_
    assert from_proba == pytest.approx(fit_temperature(logits, y), rel=1e-3)
    calibrated = apply_temperature(np.vstack([softmax(logits[:3]), np.full(5, np.nan)]), 2.0)
    np.testing.assert_allclose(calibrated[:3], softmax(logits[:3], 2.0), rtol=1e-6)
    assert np.isnan(calibrated[3]).all()  # a row without a prediction stays one
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, int)) == 1.0


def test_an_older_card_without_temperature_loads_as_uncalibrated(trained_run: Path) -> None:
    run = Run.open(trained_run)
    card = load_card(run.pool.folder / run.pool.entries[0].name)
    data = card.to_dict()
    data.pop("temperature")
    assert ModelCard.from_dict(data).temperature == 1.0


def test_checkpoints_carry_their_validation_temperature(trained_run: Path) -> None:
    history = {h["epoch"]: h for h in json.loads((trained_run / "history.json").read_text())}
    run = Run.open(trained_run)
    for entry in run.pool.entries:
        card = load_card(run.pool.folder / entry.name)
        assert card.temperature == pytest.approx(history[entry.epoch]["val_temperature"])
        assert card.temperature != 1.0
    clf = ImageClassifier.load(run.pool.folder / run.pool.entries[0].name, "cpu")
    paths = run.collection.split("test").paths()[:4]
    logits = clf.predict_logits(paths)
    np.testing.assert_allclose(clf.predict_proba(paths), softmax(logits, clf.temperature_))
    np.testing.assert_allclose(clf.predict_proba(paths, calibrated=False), softmax(logits))
    _, proba, _ = clf.predict_files(paths)
    np.testing.assert_allclose(proba, softmax(logits, clf.temperature_), rtol=1e-5)


def test_soups_soft_voting_and_evaluation_are_calibrated(run_copy: Path) -> None:
    run = Run.open(run_copy)
    soups = run.cook_soups()
    summary = json.loads((run_copy / "soups" / "soups.json").read_text())
    for recipe, soup in soups.items():
        card = load_card(run.model_path(f"{recipe}_soup"))
        assert card.temperature == soup.temperature_ != 1.0
    assert summary["soft_voting"]["temperature"] != 1.0
    results = run.evaluate("test")
    rows = {
        r["method"]: r for r in json.loads((run_copy / "eval/test/comparison.json").read_text())
    }
    for method, ev in results.items():
        assert rows[method]["ece"] == pytest.approx(ev.ece)
        assert rows[method]["ece_raw"] != pytest.approx(ev.ece)  # the temperature acted
    assert "ECE before temperature" in (run_copy / "eval/test/comparison.md").read_text()
