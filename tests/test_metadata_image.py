"""The image modality of heritage.metadata on the tiny colour images from conftest (a tiny
randomly initialised backbone, so this runs in seconds on a CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import COLOURS

from heritage.collection import CollectionWarning
from heritage.metadata import (
    FusionConfig,
    ImageConfig,
    ImageModel,
    MetadataPredictor,
    RecordSpec,
    RecordTable,
    Targets,
    aggregate_images,
)

TINY = ImageConfig(
    backbone="test_efficientnet", pretrained=False, image_size=32, device="cpu", batch_size=8
)


def test_aggregate_mean_and_max_confidence() -> None:
    proba = np.array([[0.6, 0.4], [0.1, 0.9], [0.5, 0.5]])
    owner = np.array([0, 0, 2])
    mean = aggregate_images(proba, owner, 3, "mean")
    np.testing.assert_allclose(mean[0], [0.35, 0.65])
    assert np.isnan(mean[1]).all()  # record 1 has no image
    np.testing.assert_allclose(mean[2], [0.5, 0.5])
    top = aggregate_images(proba, owner, 3, "max_confidence")
    np.testing.assert_allclose(top[0], [0.1, 0.9])  # the surer image decides


def test_unknown_aggregate_is_refused() -> None:
    with pytest.raises(ValueError, match="aggregate"):
        ImageConfig(aggregate="vote")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def image_records(image_folder: Path) -> RecordTable:
    """One record per pair of same-colour images (two paths in one cell), plus a record
    without images and one whose only image is unreadable."""
    rows = []
    for colour in COLOURS:
        files = sorted((image_folder / colour).glob("*.png"))
        for j in range(0, len(files), 2):
            pair = "|".join(f"{colour}/{f.name}" for f in files[j : j + 2])
            rows.append({"id": f"{colour}{j}", "images": pair, "room": "a", "colour": colour})
    df = pd.DataFrame(rows)
    df["split"] = ["train" if i % 4 else "val" for i in range(len(df))]
    extra = pd.DataFrame(
        [
            {"id": "none", "images": "", "room": "", "colour": "", "split": "test"},
            {"id": "broken", "images": "missing.png", "room": "", "colour": "", "split": "test"},
        ]
    )
    df = pd.concat([df, extra], ignore_index=True)
    spec = RecordSpec.infer(df.columns, ["colour"], id_column="id")
    assert spec.image_columns == ("images",)
    return RecordTable.from_frame(df, spec, image_root=image_folder)


def test_image_model_fits_and_abstains_without_images(image_records: RecordTable) -> None:
    train = image_records.split("train")
    model = ImageModel(TINY).fit(train, Targets.learn(train))
    with pytest.warns(CollectionWarning, match=r"skipped 1 unreadable image"):
        proba = model.predict_proba(image_records)["colour"]
    assert np.isnan(proba[-2:]).all()  # no image, unreadable image
    assert not np.isnan(proba[:-2]).any()
    np.testing.assert_allclose(proba[:-2].sum(axis=1), 1.0, rtol=1e-6)  # float32 softmax
    assert "missing.png" in next(iter(model.store.failed))
    labels = Targets.encode(image_records, model.classes_).codes["colour"][:-2]
    assert (proba[:-2].argmax(axis=1) == labels).mean() > 0.5  # 3 colours: chance is 1/3


@pytest.mark.filterwarnings("ignore:skipped 1 unreadable image")
def test_predictor_with_images_says_no_prediction_without_them(image_records: RecordTable):
    predictor = MetadataPredictor([ImageModel(TINY)], FusionConfig(folds=3)).fit(image_records)
    out = predictor.predict(image_records).set_index("record")
    assert out.loc["none", "status"] == "no prediction"
    assert out.loc["broken", "status"] == "no prediction"
    assert out.loc[f"{next(iter(COLOURS))}0", "modalities"] == "image"
