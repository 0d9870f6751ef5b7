"""Tests for heritage.model: model files and ImageClassifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heritage.backbones import Preprocessing
from heritage.model import (
    ImageClassifier,
    ModelCard,
    load_card,
    load_state,
    save_model_file,
)
from heritage.modelfile import model_paths
from heritage.run import Run


def _card(classes: list[str] | None = None) -> ModelCard:
    return ModelCard(
        "test_efficientnet",
        classes or ["a", "b", "c"],
        Preprocessing(32, (0.5,) * 3, (0.5,) * 3, crop_pct=0.9),
        metrics={"val_top1": 0.5},
        provenance={"seed": 3},
    )


def test_model_paths() -> None:
    expected = (Path("d/m.safetensors"), Path("d/m.json"))
    assert model_paths("d/m") == expected
    assert model_paths("d/m.json") == expected
    assert model_paths(Path("d/m.safetensors")) == expected


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    state = {"a": torch.randn(2, 3), "b": torch.arange(4), "c": torch.randn(3, 2).t()}
    card = _card()
    weights = save_model_file(tmp_path / "sub" / "m", state, card)
    assert weights == tmp_path / "sub" / "m.safetensors"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["m.json", "m.safetensors"]
    loaded = load_card(tmp_path / "sub" / "m.safetensors")
    assert loaded == card
    assert loaded.provenance["seed"] == 3 and "created" in loaded.provenance
    assert "heritage_version" in loaded.provenance
    assert json.loads((tmp_path / "sub" / "m.json").read_text())["format_version"] == 1
    got = load_state(tmp_path / "sub" / "m.json")
    assert got.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(got[k], v)


def test_names_with_dots_do_not_collide(tmp_path: Path) -> None:
    save_model_file(tmp_path / "m.v1", {"w": torch.zeros(1)}, _card())
    save_model_file(tmp_path / "m.v2", {"w": torch.ones(1)}, _card())
    assert torch.equal(load_state(tmp_path / "m.v1")["w"], torch.zeros(1))


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="model card not found"):
        load_card(tmp_path / "absent")
    with pytest.raises(FileNotFoundError):
        ImageClassifier.load(tmp_path / "absent", "cpu")
    (tmp_path / "card_only.json").write_text(json.dumps(_card().to_dict()))
    with pytest.raises(FileNotFoundError, match="weights not found"):
        ImageClassifier.load(tmp_path / "card_only", "cpu")
    # a run folder is not a model: the message names the models it holds
    run = tmp_path / "run"
    save_model_file(run / "soups" / "greedy_soup", {"w": torch.zeros(1)}, _card())
    with pytest.raises(
        FileNotFoundError, match=r"is a folder, not a model file; models in it: .*greedy_soup"
    ):
        load_card(run)
    with pytest.raises(FileNotFoundError, match=r"e\.g\. RUN/soups/greedy_soup"):
        load_card(tmp_path)  # holds no model file at its top or under soups/


@pytest.fixture(scope="module")
def best_checkpoint(trained_run: Path) -> Path:
    return Run.open(trained_run).model_path("best_checkpoint")


def test_classifier_paths_and_pil_agree(best_checkpoint: Path, image_folder: Path) -> None:
    clf = ImageClassifier.load(best_checkpoint, "cpu")
    assert clf.classes_ == ["amber", "blue", "green"]
    paths = [image_folder / c / f"{c}_0.png" for c in clf.classes_]
    from_paths = clf.predict_proba(paths)
    from_str = clf.predict_proba([str(p) for p in paths])
    pils = [Image.open(p) for p in paths]
    from_pil = clf.predict_proba(pils)
    mixed = clf.predict_proba([pils[0], str(paths[1]), pils[2]])
    assert from_paths.shape == (3, 3)
    np.testing.assert_allclose(from_paths.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(from_pil, from_paths, atol=1e-6)
    np.testing.assert_allclose(from_str, from_paths, atol=1e-6)
    np.testing.assert_allclose(mixed, from_paths, atol=1e-6)
    labels = clf.predict(paths)
    assert set(labels) <= set(clf.classes_) and len(labels) == 3


def test_classifier_learnt_the_colours(best_checkpoint: Path, trained_run: Path) -> None:
    run = Run.open(trained_run)
    test = run.collection.split("test")
    clf = ImageClassifier.load(best_checkpoint, "cpu")
    predicted = clf.predict(test.paths())
    truth = list(test.records["label"])
    assert np.mean([p == t for p, t in zip(predicted, truth, strict=True)]) >= 0.5


def test_classifier_save_reload(best_checkpoint: Path, image_folder: Path, tmp_path: Path) -> None:
    clf = ImageClassifier.load(best_checkpoint, "cpu")
    clf.save(tmp_path / "copy")
    again = ImageClassifier.load(tmp_path / "copy", "cpu")
    assert again.card.preprocessing == clf.card.preprocessing
    paths = sorted(image_folder.rglob("*.png"))[:4]
    np.testing.assert_allclose(again.predict_proba(paths), clf.predict_proba(paths), atol=1e-6)


def test_classifier_scores_a_collection_of_its_classes(
    best_checkpoint: Path, trained_run: Path
) -> None:
    from heritage.evaluation import expected_calibration_error

    test = Run.open(trained_run).collection.split("test")
    clf = ImageClassifier.load(best_checkpoint, "cpu")
    evaluation, extra = clf.evaluate(test, "the test split")
    labels = list(test.records["label"])
    assert evaluation.n == len(labels) and evaluation.classes == clf.classes_
    y = clf.label_indices(labels)
    assert [clf.classes_[i] for i in y] == labels
    raw = clf.predict_proba(test.paths(), calibrated=False)
    assert extra["temperature"] == clf.temperature_
    assert extra["ece_raw"] == pytest.approx(expected_calibration_error(y, raw), abs=1e-6)
    with pytest.raises(ValueError, match=r"photos: labels \['red'\] are not among the model's"):
        clf.label_indices(["amber", "red"], "photos")


def test_predict_proba_of_no_images_is_empty(tmp_path: Path) -> None:
    from heritage.model import ImageClassifier, build_model

    card = _card()
    clf = ImageClassifier(build_model(card), card, device="cpu")
    assert clf.predict_proba([]).shape == (0, len(card.classes))
