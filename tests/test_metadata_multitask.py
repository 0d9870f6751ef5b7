"""The fine-tuned multi-task image modality on the tiny colour images from conftest (a tiny
randomly initialised backbone, so a fine-tune takes seconds on a CPU)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import COLOURS, TINY_OPTIONS

from heritage.collection import CollectionWarning
from heritage.config import TrainConfig
from heritage.metadata import (
    FusionConfig,
    MetadataPredictor,
    MultiTaskConfig,
    MultiTaskImageModel,
    RecordSpec,
    RecordTable,
    Targets,
    make_modality,
    multitask,
)
from heritage.metadata.multitask import MultiTaskNet, fit_key, holdout_records, train_config

pytestmark = pytest.mark.filterwarnings("ignore:skipped 1 unreadable image")


def tiny(**changes) -> MultiTaskConfig:
    train = TrainConfig(**{**TINY_OPTIONS, "epochs": 4, "restart_epochs": 1, "lr": 3e-3})
    return MultiTaskConfig(train=train, **changes)


def test_single_label_pieces_are_refused() -> None:
    refused = (
        {"mix": "mixup"},
        {"entropy": 0.1},
        {"sampler": "class_pairs"},
        {"sampler": "balanced"},
    )
    for change in refused:
        with pytest.raises(ValueError, match="single-label"):
            MultiTaskConfig(train=TrainConfig.from_dict(change))
    with pytest.raises(ValueError, match="val_fraction"):
        MultiTaskConfig(val_fraction=0.7)
    with pytest.raises(ValueError, match="soup"):
        MultiTaskConfig(soup="best_of_three")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def records(image_folder: Path) -> RecordTable:
    """Per colour one record of two images and six of one; property `colour` and a coarser
    `warm` (amber vs the rest) hidden on a third of the records; one record without images,
    one with an unreadable image."""
    rows = []
    for colour in COLOURS:
        files = sorted((image_folder / colour).glob("*.png"))
        groups = [files[:2]] + [[f] for f in files[2:]]
        for j, group in enumerate(groups):
            rows.append(
                {
                    "id": f"{colour}{j}",
                    "images": "|".join(f"{colour}/{f.name}" for f in group),
                    "colour": colour,
                    "warm": "yes" if colour == "amber" else "no",
                }
            )
    df = pd.DataFrame(rows)
    df.loc[df.index % 3 == 1, "warm"] = ""
    df["split"] = ["train" if i % 4 else "val" for i in range(len(df))]
    extra = [
        {"id": "none", "images": "", "colour": "", "warm": "", "split": "test"},
        {"id": "broken", "images": "missing.png", "colour": "", "warm": "", "split": "test"},
    ]
    df = pd.concat([df, pd.DataFrame(extra)], ignore_index=True).fillna("")
    spec = RecordSpec.infer(df.columns, ["colour", "warm"], id_column="id")
    return RecordTable.from_frame(df, spec, image_root=image_folder)


@pytest.fixture(scope="module")
def fitted(records: RecordTable) -> MultiTaskImageModel:
    train = records.split("train")
    return MultiTaskImageModel(tiny()).fit(train, Targets.learn(train))


def test_one_model_predicts_every_property(fitted, records: RecordTable) -> None:
    with pytest.warns(CollectionWarning, match="unreadable"):
        proba = fitted.predict_proba(records)
    assert set(proba) == {"colour", "warm"}
    for block in proba.values():
        assert np.isnan(block[-2:]).all()  # no image, unreadable image: absent, not a guess
        np.testing.assert_allclose(block[:-2].sum(axis=1), 1.0, atol=1e-5)
    truth = Targets.encode(records, fitted.classes_).codes["colour"][:-2]
    assert (proba["colour"][:-2].argmax(axis=1) == truth).mean() > 0.6  # chance is 1/3


def test_soup_is_cooked_from_the_run(fitted) -> None:
    report = fitted.report_
    epochs = [h["epoch"] for h in report["history"]]
    assert epochs == [1, 2, 3, 4]
    assert report["ingredients"] and set(report["ingredients"]) <= set(epochs)
    best = max(report["history"], key=lambda h: h["val_macro_f1"])["epoch"]
    assert report["ingredients"][0] == best  # greedy starts from the best checkpoint
    assert report["val_macro_f1"] >= max(h["val_macro_f1"] for h in report["history"]) - 1e-9


def test_uniform_soup_takes_every_snapshot(records: RecordTable) -> None:
    train = records.split("train")
    model = MultiTaskImageModel(tiny(soup="uniform")).fit(train, Targets.learn(train))
    assert sorted(model.report_["ingredients"]) == [1, 2, 3, 4]  # every cycle end


def test_property_without_labels_gives_no_prediction(records: RecordTable) -> None:
    train = records.split("train")
    targets = Targets.learn(train)
    hidden = Targets(targets.classes, {**targets.codes, "warm": np.full(len(train), -1)})
    model = MultiTaskImageModel(tiny(soup="best")).fit(train, hidden)
    assert model.trained_ == {"colour": True, "warm": False}
    proba = model.predict_proba(train)
    assert np.isnan(proba["warm"]).all()
    assert not np.isnan(proba["colour"]).any()


def test_pickled_model_predicts_the_same(fitted, records: RecordTable) -> None:
    test = records.split("val")
    before = fitted.predict_proba(test)
    again = pickle.loads(pickle.dumps(fitted))
    assert again._shared == {}  # decoded images are not saved with the model
    after = again.predict_proba(test)
    for prop in before:
        np.testing.assert_allclose(after[prop], before[prop], atol=1e-5)


def test_predictor_fuses_the_multitask_image_model(records: RecordTable, tmp_path: Path) -> None:
    options = {"train": {**TINY_OPTIONS, "epochs": 2, "restart_epochs": 1}, "soup": "best"}
    modality = make_modality("image_multitask", seed=3, **options)
    assert modality.config.train.seed == 3
    assert modality.config.train.loss.name == "focal"  # the modality's default is kept
    frame = records.frame.drop(columns="warm")  # too few labels left for 2 folds
    spec = RecordSpec.infer(frame.columns, ["colour"], id_column="id")
    records = RecordTable.from_frame(frame, spec, image_root=records.image_root)
    predictor = MetadataPredictor([modality], FusionConfig(folds=2)).fit(records)
    out = predictor.predict(records).set_index(["record", "property"])
    assert out.loc[("none", "colour"), "status"] == "no prediction"
    assert out.loc[("amber0", "colour"), "modalities"] == "image_multitask"
    predictor.save(tmp_path / "p")
    again = (
        MetadataPredictor.load(tmp_path / "p").predict(records).set_index(["record", "property"])
    )
    pd.testing.assert_series_equal(again["value"], out["value"])


def test_unknown_image_option_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown image_multitask options \['epochs'\]"):
        make_modality("image_multitask", epochs=3)  # belongs under train:
    with pytest.raises(ValueError, match=r"unknown image options \['soup'\]"):
        make_modality("image", soup="greedy")


def test_cli_fits_the_multitask_image_model_from_a_yaml(records: RecordTable, tmp_path: Path):
    import yaml
    from typer.testing import CliRunner

    from heritage.cli import app

    frame = records.frame.drop(columns="warm")
    root = records.image_root
    frame["images"] = ["|".join(f"{root}/{p}" for p in c.split("|") if p) for c in frame["images"]]
    frame.to_csv(tmp_path / "records.csv", index=False)
    multitask = {
        "train": {**TINY_OPTIONS, "epochs": 1},
        "soup": "best",
        "aggregate": "max_confidence",
    }
    config = {"image_multitask": multitask, "image": {"backbone": "test_efficientnet"}}
    (tmp_path / "image.yaml").write_text(yaml.safe_dump(config))
    args = ["metadata", "fit", str(tmp_path / "records.csv"), "-o", str(tmp_path / "m")]
    args += ["--properties", "colour", "--id-column", "id", "--modalities", "image_multitask"]
    args += ["--image-config", str(tmp_path / "image.yaml"), "--folds", "2"]
    result = CliRunner().invoke(app, args, env={"HERITAGE_NO_PROGRESS": "1"})
    assert result.exit_code == 0, result.output
    model = MetadataPredictor.load(tmp_path / "m").modalities_[0]
    assert model.config.aggregate == "max_confidence"
    assert model.config.train.epochs == 1
    assert model.report_["history"][0]["epoch"] == 1
    # 2 out-of-fold fine-tunes + the final one, each resumable, kept beside the model
    assert len(list((tmp_path / "m" / "fine-tunes").glob("*.pt"))) == 3


def test_holdout_takes_whole_records() -> None:
    owner = np.repeat(np.arange(20), 3)  # 20 records of 3 images
    held = holdout_records(owner, 0.25, seed=0)
    assert held.sum() == 15  # 5 records, every image of each
    for record in np.unique(owner):
        assert len(set(held[owner == record])) == 1
    assert not holdout_records(np.arange(9), 0.25, seed=0).any()  # too few to hold out


def test_heads_fit_the_width_of_pre_logits() -> None:
    import timm
    import torch

    backbone = timm.create_model("mobilenetv3_small_050", pretrained=False)  # widens pre_logits
    backbone.reset_classifier(0)
    net = MultiTaskNet(backbone, [3, 5]).eval()
    out = net(torch.zeros(2, 3, 64, 64))
    assert [o.shape for o in out] == [(2, 3), (2, 5)]


def test_training_options_update_the_modality_defaults() -> None:
    t = train_config({"loss": {"gamma": 1.0}, "epochs": 2})
    assert (t.loss.name, t.loss.gamma, t.epochs) == ("focal", 1.0, 2)
    assert train_config({"loss": "ce"}).loss.name == "ce"
    assert MultiTaskConfig(train={"epochs": 3}).train.loss.name == "focal"
    with pytest.raises(ValueError, match="alpha"):
        MultiTaskConfig(train={"loss": {"alpha": [1.0, 2.0]}})


def test_inverse_frequency_survives_a_class_missing_from_training(records: RecordTable) -> None:
    train = records.split("train")
    targets = Targets.learn(train)
    first = targets.codes["colour"] == 0
    codes = {**targets.codes, "colour": np.where(first, -1, targets.codes["colour"])}
    config = tiny(soup="best")
    config.train = TrainConfig.from_dict(
        {**config.train.to_dict(), "loss": {"name": "focal", "alpha": "inverse_frequency"}}
    )
    model = MultiTaskImageModel(config).fit(train, Targets(targets.classes, codes))
    assert model.trained_["colour"]
    assert model.predict_proba(train)["colour"][:, 0].max() < 0.5  # never seen, rarely chosen


def test_killed_fine_tune_resumes_and_a_finished_one_is_reused(
    records: RecordTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = records.split("train")
    targets = Targets.learn(train)
    straight = MultiTaskImageModel(tiny()).fit(train, targets)

    score, calls = multitask._score, []

    def killed_in_epoch_3(*args):
        calls.append(1)
        if len(calls) == 3:  # epoch 3's validation: epochs 1 and 2 are saved
            raise KeyboardInterrupt
        return score(*args)

    monkeypatch.setattr(multitask, "_score", killed_in_epoch_3)
    config = tiny(checkpoint_dir=str(tmp_path / "fine-tunes"))
    with pytest.raises(KeyboardInterrupt):
        MultiTaskImageModel(config).fit(train, targets)
    (saved,) = (tmp_path / "fine-tunes").glob("*.pt")
    assert torch.load(saved, weights_only=True)["epoch"] == 2

    monkeypatch.setattr(multitask, "_score", score)
    resumed = MultiTaskImageModel(config).fit(train, targets)
    # the same run as without the interruption: same epochs, losses and soup
    assert [h["epoch"] for h in resumed.report_["history"]] == [1, 2, 3, 4]
    for a, b in zip(resumed.report_["history"], straight.report_["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    assert resumed.report_["ingredients"] == straight.report_["ingredients"]
    for name, tensor in straight.state_.items():
        torch.testing.assert_close(resumed.state_[name], tensor, atol=1e-5, rtol=1e-4)
    assert "soup" in torch.load(saved, weights_only=True)  # finished: the result only

    def no_training(*args):
        raise AssertionError("a finished fine-tune was trained again")

    monkeypatch.setattr(multitask, "_score", no_training)
    again = MultiTaskImageModel(config).fit(train, targets)
    assert again.report_ == resumed.report_


def test_fit_key_follows_what_the_fine_tune_learns(tmp_path: Path) -> None:
    paths, owner, codes = ["a.png", "b.png"], np.array([0, 1]), np.array([[0], [1]])
    base = fit_key(paths, owner, codes, tiny())
    assert base == fit_key(paths, owner, codes, tiny(checkpoint_dir="elsewhere"))
    same_run = tiny()
    same_run.train = TrainConfig.from_dict({**same_run.train.to_dict(), "device": "cuda"})
    assert base == fit_key(paths, owner, codes, same_run)  # where it runs: same model
    assert base != fit_key(paths, owner, codes, tiny(soup="uniform"))
    assert base != fit_key(paths, owner, np.array([[1], [0]]), tiny())
    assert base != fit_key(["a.png", "c.png"], owner, codes, tiny())
    # an image replaced in place (same path, new contents) is another fine-tune
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    for f in files:
        f.write_bytes(b"first")
    on_disk = fit_key([str(f) for f in files], owner, codes, tiny())
    assert on_disk == fit_key([str(f) for f in files], owner, codes, tiny())
    files[1].write_bytes(b"second version")
    assert on_disk != fit_key([str(f) for f in files], owner, codes, tiny())
