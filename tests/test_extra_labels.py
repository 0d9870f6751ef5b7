"""Tests for extra labels (``--extra-labels``): reviewed values from ``heritage kg reviews``
fill empty record cells and add images to a collection's train split; the catalogue wins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from heritage.cli import app
from heritage.collection import Collection, CollectionError
from heritage.metadata import RecordError, RecordSpec, RecordTable

ENV = {"COLUMNS": "200", "HERITAGE_NO_PROGRESS": "1"}
LABEL_COLUMNS = ["record", "property", "value", "decision", "reviewer", "reviewed_at"]


def _labels(rows: list[tuple[str, str, str]], path: Path | None = None) -> pd.DataFrame:
    """A labels table like `heritage kg reviews` writes (reviewed_at in row order)."""
    df = pd.DataFrame(
        [
            (r, p, v, "corrected", "ana", f"2026-01-01T00:00:{i:02d}Z")
            for i, (r, p, v) in enumerate(rows)
        ],
        columns=LABEL_COLUMNS,
    )
    if path is not None:
        df.to_csv(path, index=False)
    return df


# --------------------------------------------------------------------------- records


def _table() -> RecordTable:
    df = pd.DataFrame(
        {
            "object": ["o1", "o2", "o3"],
            "museum": ["vam", "met", "vam"],
            "place": ["GB", "", ""],
            "technique": ["", "damask", ""],
        }
    )
    spec = RecordSpec.infer(df.columns, ["place", "technique"], split_column=None)
    return RecordTable.from_frame(df, spec)


def test_records_fill_empty_cells_only() -> None:
    table = _table()
    labels = _labels(
        [
            ("o2", "place", "IT"),  # empty: filled
            ("o1", "place", "ES"),  # catalogued GB: kept
            ("o3", "technique", "velvet"),  # empty: filled
            ("o2", "technique", "velvet"),  # catalogued damask: kept
        ]
    )
    new, report = table.with_extra_labels(labels, source="reviewed.csv")
    assert list(new.labels("place")) == ["GB", "IT", ""]
    assert list(new.labels("technique")) == ["", "damask", "velvet"]
    assert (report.filled, report.kept_catalogued) == (2, 2)
    assert list(table.labels("place")) == ["GB", "", ""]  # the original is untouched
    assert "2 filled, 2 kept catalogued" in report.summary()


def test_records_ignore_unknown_record_other_property_and_empty_value() -> None:
    labels = _labels(
        [
            ("o9", "place", "IT"),
            ("o3", "colour", "red"),
            ("o3", "museum", "met"),  # a tabular column is not a learned property
            ("o3", "place", ""),  # a rejection
        ]
    )
    new, report = _table().with_extra_labels(labels)
    assert list(new.labels("place")) == ["GB", "", ""]
    assert list(new.tabular()["museum"]) == ["vam", "met", "vam"]
    assert (report.filled, report.unknown_record, report.other_property, report.no_value) == (
        0,
        1,
        2,
        1,
    )


def test_records_latest_review_wins() -> None:
    labels = _labels([("o3", "place", "IT"), ("o3", "place", "ES")])
    new, report = _table().with_extra_labels(labels.iloc[::-1])  # file order does not matter
    assert new.labels("place")[2] == "ES"
    assert (report.filled, report.superseded) == (1, 1)


def test_records_read_a_labels_file(tmp_path: Path) -> None:
    path = tmp_path / "reviewed.csv"
    _labels([("o2", "place", "IT")], path)
    new, report = _table().with_extra_labels(path)
    assert new.labels("place")[1] == "IT"
    assert str(path) in report.summary()


def test_bad_labels_files_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match=r"missing\.csv not found"):
        _table().with_extra_labels(tmp_path / "missing.csv")
    binary = tmp_path / "reviewed.xlsx"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00\x81\x9c" * 50)
    with pytest.raises(RecordError, match=r"reviewed\.xlsx could not be read as CSV"):
        _table().with_extra_labels(binary)
    wrong = tmp_path / "wrong.csv"
    pd.DataFrame({"object": ["o1"], "place": ["GB"]}).to_csv(wrong, index=False)
    with pytest.raises(RecordError, match=r"wrong\.csv.*'record', 'property', 'value'.*'object'"):
        _table().with_extra_labels(wrong)
    with pytest.raises(CollectionError, match="not found"):
        _collection(tmp_path / "c").with_extra_labels(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- collections


def _img(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _collection(root: Path) -> Collection:
    """A manifest of 2 classes x 3 images, split train/train/val, with an extra column."""
    rows = []
    for label in ("cat", "dog"):
        for i, split in enumerate(("train", "train", "val")):
            _img(root / "images" / f"{label}_{i}.png", seed=i)
            rows.append(
                {"image": f"images/{label}_{i}.png", "kind": label, "split": split, "note": "x"}
            )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return Collection.from_manifest(root / "manifest.csv", label_column="kind")


def test_collection_adds_new_images_to_train_and_keeps_catalogued(tmp_path: Path) -> None:
    coll = _collection(tmp_path / "coll")
    reviews = tmp_path / "reviews"
    _img(reviews / "new" / "a.png", seed=7)  # relative to the labels file
    _img(tmp_path / "coll" / "images" / "b.png", seed=8)  # relative to the collection root
    labels = _labels(
        [
            ("new/a.png", "kind", "dog"),
            ("images/b.png", "label", "cat"),
            ("images/cat_2.png", "kind", "dog"),  # catalogued val image: kept as it is
            ("images/cat_0.png", "place", "GB"),
        ],
        reviews / "reviewed.csv",
    )
    assert len(labels) == 4
    new, report = coll.with_extra_labels(reviews / "reviewed.csv")
    assert (report.added, report.kept, report.other_property) == (2, 1, 1)
    assert len(new) == len(coll) + 2
    rec = new.records.set_index("path")
    a, b = str(reviews / "new" / "a.png"), str(tmp_path / "coll" / "images" / "b.png")
    assert (rec.loc[a, "label"], rec.loc[a, "split"], rec.loc[a, "row"]) == ("dog", "train", -1)
    assert (rec.loc[b, "label"], rec.loc[b, "split"]) == ("cat", "train")
    cat2 = str(tmp_path / "coll" / "images" / "cat_2.png")
    assert (rec.loc[cat2, "label"], rec.loc[cat2, "split"]) == ("cat", "val")
    assert new.classes == coll.classes and new.label_column == "kind"
    assert new.records["row"].dtype == np.int64
    # the run's split.csv lists the added images as train rows
    new.save_split(tmp_path / "split.csv")
    saved = pd.read_csv(tmp_path / "split.csv").set_index("path")
    assert saved.loc[a, "split"] == "train"  # outside the root: absolute
    assert (saved.loc["images/b.png", "label"], saved.loc["images/b.png", "split"]) == (
        "cat",
        "train",
    )


def test_collection_skips_unknown_class_and_missing_file(tmp_path: Path) -> None:
    coll = _collection(tmp_path / "coll")
    _img(tmp_path / "coll" / "images" / "bird.png")
    (tmp_path / "coll" / "images" / "broken.png").write_bytes(b"not an image")
    labels = _labels(
        [
            ("images/bird.png", "kind", "bird"),
            ("images/gone.png", "kind", "cat"),
            ("images/broken.png", "kind", "cat"),
            ("images/cat_0.png", "kind", ""),
        ]
    )
    new, report = coll.with_extra_labels(labels)
    assert len(new) == len(coll)
    assert (report.unknown_class, report.missing_file, report.unreadable, report.no_value) == (
        1,
        1,
        1,
        1,
    )
    assert report.unknown_classes == ("bird",)
    assert "new class cannot be added" in report.summary()


def test_collection_without_split_is_split_before_adding(tmp_path: Path) -> None:
    for label in ("cat", "dog"):
        for i in range(5):
            _img(tmp_path / "folder" / label / f"{i}.png", seed=i)
    coll = Collection.from_folder(tmp_path / "folder")
    extra = _img(tmp_path / "extra.png", seed=9)
    new, report = coll.with_extra_labels(_labels([(str(extra), "label", "dog")]), seed=3)
    assert report.added == 1
    drawn = coll.with_split(seed=3).records
    catalogued = new.records.iloc[: len(coll)]
    assert list(catalogued["split"]) == list(drawn["split"])  # val/test as without extras
    assert new.records.iloc[-1]["split"] == "train"


# --------------------------------------------------------------------------- command line


def test_cli_metadata_fit_with_extra_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    words = {"damask": "damask weave", "velvet": "cut velvet pile"}
    rows = [
        {
            "object": f"o{i}",
            "text_en": f"{words[t]} {' '.join(rng.choice(['silk', 'red', 'gold'], 2))}",
            "technique": t if i % 4 else "",
        }
        for i, t in enumerate(["damask", "velvet"] * 12)
    ]
    csv = tmp_path / "records.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    labels = tmp_path / "reviewed.csv"
    _labels(
        [("o0", "technique", "damask"), ("o1", "technique", "damask"), ("zz", "technique", "x")],
        labels,
    )
    args = ["metadata", "fit", str(csv), "-o", str(tmp_path / "m"), "--properties", "technique"]
    args += ["--modalities", "tfidf", "--folds", "2", "--extra-labels", str(labels)]
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 0, result.output
    assert "1 filled, 1 kept catalogued, 1 unknown record, 0 other property" in result.output

    bad = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "nope.csv")], env=ENV)
    assert bad.exit_code == 2
    assert "nope.csv not found" in bad.output
