"""Tests for heritage.collection: loading, validation, splitting and image decoding."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from heritage.collection import (
    SPLITS,
    Collection,
    CollectionError,
    CollectionWarning,
    check_image,
    load_image,
)

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _img(
    path: Path, size: tuple[int, int] = (16, 12), seed: int = 0, fmt: str | None = None
) -> Path:
    """Write a small noisy RGB image (noise so that truncating the file cuts pixel data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def _folder(root: Path, counts: dict[str, int], suffix: str = ".png") -> Path:
    for label, n in counts.items():
        for i in range(n):
            _img(root / label / f"{label}_{i}{suffix}", seed=i)
    return root


def _manifest(tmp_path: Path, rows: list[dict[str, str]], name: str = "manifest.csv") -> Path:
    for r in rows:
        if r.get("image") and not (tmp_path / r["image"]).exists():
            _img(tmp_path / r["image"], seed=len(r["image"]))
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --------------------------------------------------------------------------- folders


def test_from_folder_basic(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", {"cat": 3, "dog": 2})
    _img(root / "dog" / "nested" / "deep.JPG")  # recursive, case-insensitive suffix
    (root / "dog" / "notes.txt").write_text("not an image")
    _img(root / "cat" / ".hidden.png")
    _img(root / ".cache" / "x.png")
    coll = Collection.from_folder(root)
    assert coll.classes == ["cat", "dog"]
    assert len(coll) == 6
    assert not coll.has_split
    assert set(coll.records["split"]) == {""}
    assert (coll.records["row"] == -1).all()
    assert all(Path(p).is_absolute() for p in coll.paths())
    assert list(coll.targets()) == [0, 0, 0, 1, 1, 1]
    assert coll.targets().dtype == np.int64
    assert isinstance(coll.records.index, pd.RangeIndex)
    assert coll.summary()["total"].to_dict() == {"cat": 3, "dog": 3}


def test_from_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="does not exist"):
        Collection.from_folder(tmp_path / "nope")
    _img(tmp_path / "flat" / "a.png")
    with pytest.raises(CollectionError, match="directly inside"):
        Collection.from_folder(tmp_path / "flat")


def test_too_few_images_names_class(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", {"big": 3, "tiny": 1})
    (root / "empty").mkdir()
    with pytest.raises(CollectionError) as err:
        Collection.from_folder(root)
    msg = str(err.value)
    assert "'tiny': 1" in msg and "'empty': 0" in msg and "'big'" not in msg
    with pytest.raises(CollectionError, match="'empty': 0"):
        Collection.from_folder(root, min_images_per_class=1)


# --------------------------------------------------------------------------- manifests


def test_manifest_keeps_extra_columns(tmp_path: Path) -> None:
    rows = [
        {"image": f"img/{i}.png", "sign": "A1" if i % 2 else "B2", "page": str(i), "split": s}
        for i, s in enumerate(["train", "train", "Valid", "dev", " TEST ", "train"])
    ]
    rows.append({"image": "img/6.png", "sign": "", "page": "6", "split": "train"})
    path = _manifest(tmp_path, rows)
    with pytest.warns(CollectionWarning) as caught:
        coll = Collection.from_manifest(path, label_column="sign")
    messages = " ".join(str(w.message) for w in caught)
    assert "row 7" in messages and "no label" in messages
    assert "split 'test' has no images of 1 class(es): 'A1'" in messages
    assert coll.label_column == "sign"
    assert list(coll.records.columns) == ["path", "label", "split", "row", "page"]
    assert list(coll.records["page"]) == ["0", "1", "2", "3", "4", "5"]
    assert list(coll.records["split"]) == ["train", "train", "val", "val", "test", "train"]
    assert list(coll.records["row"]) == [1, 2, 3, 4, 5, 6]
    assert coll.skipped[0].row == 7 and coll.skipped[0].reason == "no label"
    assert coll.root == tmp_path
    assert len(coll.split("validation")) == 2
    assert coll.split("test").classes == coll.classes
    summary = coll.summary()
    assert list(summary.columns) == [*SPLITS, "total"]
    assert summary.loc["A1", "train"] == 2


def test_missing_column_lists_available(tmp_path: Path) -> None:
    path = _manifest(tmp_path, [{"image": "a.png", "sign": "x"}, {"image": "b.png", "sign": "x"}])
    with pytest.raises(CollectionError) as err:
        Collection.from_manifest(path)
    assert "'label'" in str(err.value) and "'image', 'sign'" in str(err.value)
    with pytest.raises(CollectionError, match="'fold'"):
        Collection.from_manifest(path, label_column="sign", split_column="fold")
    coll = Collection.from_manifest(path, label_column="sign")  # default split absent: no split
    assert not coll.has_split


def test_missing_and_truncated_files_skipped(tmp_path: Path) -> None:
    rows = [{"image": f"ok/{i}.png", "label": "a"} for i in range(2)]
    rows += [{"image": f"ok/{i}.jpg", "label": "b"} for i in range(2)]
    rows += [
        {"image": "gone.png", "label": "a"},
        {"image": "bad.jpg", "label": "b"},
        {"image": "bad.png", "label": "a"},
    ]
    path = _manifest(tmp_path, [r for r in rows if r["image"] != "gone.png"])
    rows_df = pd.DataFrame(rows)
    rows_df.to_csv(path, index=False)
    _img(tmp_path / "bad.jpg", size=(64, 64))
    _img(tmp_path / "bad.png", size=(64, 64))
    _truncate(tmp_path / "bad.jpg")
    _truncate(tmp_path / "bad.png")
    assert check_image(tmp_path / "bad.jpg") is not None
    assert check_image(tmp_path / "bad.png") is not None
    assert check_image(tmp_path / "ok" / "0.png") is None

    with pytest.warns(CollectionWarning, match="skipped 3 image"):
        coll = Collection.from_manifest(path, progress=True)
    assert len(coll) == 4
    by_path = {s.path.rsplit("/", 1)[-1]: s for s in coll.skipped}
    assert by_path["gone.png"].reason == "file not found" and by_path["gone.png"].row == 5
    assert by_path["bad.jpg"].reason.startswith("truncated or corrupt image")
    assert by_path["bad.png"].row == 7

    with pytest.warns(CollectionWarning, match="skipped 1 image"):
        quick = Collection.from_manifest(path, check_images=False)
    assert len(quick) == 6


def test_bad_split_value_names_row(tmp_path: Path) -> None:
    rows = [{"image": f"{i}.png", "label": "a", "split": "train"} for i in range(3)]
    rows[2]["split"] = "holdout"
    path = _manifest(tmp_path, rows)
    with pytest.raises(CollectionError, match=r"row 3: 'split' value 'holdout'.*ignore_splits"):
        Collection.from_manifest(path)
    coll = Collection.from_manifest(path, ignore_splits=("Holdout",))
    assert len(coll) == 2 and list(coll.records["row"]) == [1, 2]

    rows[2]["split"] = ""
    path = _manifest(tmp_path, rows)
    with pytest.raises(CollectionError, match="row 3: empty 'split'"):
        Collection.from_manifest(path)


def test_class_without_train_is_error(tmp_path: Path) -> None:
    rows = [{"image": f"{i}.png", "label": "a", "split": "train"} for i in range(2)]
    rows += [{"image": f"b{i}.png", "label": "b", "split": "val"} for i in range(2)]
    with pytest.raises(CollectionError, match="no 'train' image"):
        Collection.from_manifest(_manifest(tmp_path, rows))


def test_load_dispatch(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", {"a": 2, "b": 2})
    assert len(Collection.load(root)) == 4
    rows = [{"image": f"{i}.png", "label": "ab"[i % 2]} for i in range(4)]
    path = _manifest(tmp_path / "m", rows)
    assert len(Collection.load(path.parent)) == 4
    assert len(Collection.load(path)) == 4
    with pytest.raises(CollectionError, match="neither"):
        Collection.load(_img(tmp_path / "x.png"))
    with pytest.raises(CollectionError, match="label_column"):
        Collection.load(root, label_column="sign")


# --------------------------------------------------------------------------- splitting


def test_with_split_stratified_and_seeded(tmp_path: Path) -> None:
    coll = Collection.from_folder(_folder(tmp_path / "d", {"a": 20, "b": 10, "c": 10}))
    s0 = coll.with_split(seed=0)
    assert s0.has_split and not coll.has_split
    table = s0.summary()
    assert table.loc["a"].to_dict() == {"train": 12, "val": 4, "test": 4, "total": 20}
    assert table.loc["b", "train"] == 6
    assert s0.with_split(seed=5) is s0
    assert list(coll.with_split(seed=0).records["split"]) == list(s0.records["split"])
    assert list(coll.with_split(seed=1).records["split"]) != list(s0.records["split"])

    out = tmp_path / "split.csv"
    s0.save_split(out)
    saved = pd.read_csv(out)
    assert list(saved.columns) == ["path", "label", "split"]
    assert saved["path"][0] == "a/a_0.png"


def test_with_split_small_classes(tmp_path: Path) -> None:
    coll = Collection.from_folder(_folder(tmp_path / "d", {"a": 12, "b": 2, "c": 3, "d": 4}))
    for seed in range(5):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            s = coll.with_split(seed=seed)
        table = s.summary()
        assert (table["train"] >= 1).all()
        assert table["total"].to_dict() == {"a": 12, "b": 2, "c": 3, "d": 4}
        assert len(s.split("train")) + len(s.split("val")) + len(s.split("test")) == 21
    with pytest.raises(CollectionError, match="with_split"):
        coll.split("train")


def test_limit_per_class(tmp_path: Path) -> None:
    coll = Collection.from_folder(_folder(tmp_path / "d", {"a": 20, "b": 10, "c": 3}))
    with pytest.raises(CollectionError, match="with_split"):
        coll.limit_per_class(2)
    full = coll.with_split(seed=0)
    low = full.limit_per_class(4, seed=0)

    assert low.classes == full.classes
    assert full.summary()["train"].to_dict() == {"a": 12, "b": 6, "c": 2}
    assert low.summary()["train"].to_dict() == {"a": 4, "b": 4, "c": 2}  # c had only 2
    for name in ("val", "test"):  # evaluation splits are untouched, in order
        assert low.split(name).paths() == full.split(name).paths()
    assert set(low.split("train").paths()) <= set(full.split("train").paths())
    # seeded: same seed, same subset; another seed, another subset; smaller n nests
    assert low.paths() == full.limit_per_class(4, seed=0).paths()
    assert low.paths() != full.limit_per_class(4, seed=1).paths()
    assert set(full.limit_per_class(2, seed=0).paths()) <= set(low.paths())
    assert len(full.limit_per_class(100)) == len(full)
    # another split can be limited instead, leaving train alone
    low_val = full.limit_per_class(1, split="validation")
    assert low_val.summary()["val"].max() == 1
    assert low_val.split("train").paths() == full.split("train").paths()
    with pytest.raises(CollectionError, match="at least 1"):
        full.limit_per_class(0)
    with pytest.raises(CollectionError, match="Unknown split"):
        full.limit_per_class(2, split="holdout")


def test_move_split_folds_val_into_train(tmp_path: Path) -> None:
    full = Collection.from_folder(_folder(tmp_path / "d", {"a": 10, "b": 10})).with_split(seed=0)
    merged = full.move_split("validation", "train")
    assert len(merged.split("val")) == 0
    assert sorted(merged.split("train").paths()) == sorted(
        full.split("train").paths() + full.split("val").paths()
    )
    assert merged.split("test").paths() == full.split("test").paths()
    assert len(full.split("val")) > 0  # the original is untouched
    with pytest.raises(CollectionError, match="Unknown split"):
        full.move_split("val", "holdout")


def test_keep_fraction_shrinks_every_class_in_proportion(tmp_path: Path) -> None:
    coll = Collection.from_folder(_folder(tmp_path / "d", {"a": 20, "b": 10, "c": 3}))
    with pytest.raises(CollectionError, match="with_split"):
        coll.keep_fraction(0.5)
    full = coll.with_split(seed=0)
    half = full.keep_fraction(0.5, seed=0)

    assert half.classes == full.classes
    # every class shrinks (ceil), unlike limit_per_class; a class keeps at least one image
    assert half.summary()["train"].to_dict() == {"a": 6, "b": 3, "c": 1}
    for name in ("val", "test"):
        assert half.split(name).paths() == full.split(name).paths()
    assert set(half.split("train").paths()) <= set(full.split("train").paths())
    assert half.paths() == full.keep_fraction(0.5, seed=0).paths()
    assert half.paths() != full.keep_fraction(0.5, seed=1).paths()
    assert full.keep_fraction(1.0).paths() == full.paths()
    # no float round-up: 0.07 * 100 is 7.000000000000001 in floating point
    big = Collection.from_folder(_folder(tmp_path / "big", {"a": 50, "b": 50})).with_split()
    big = big.move_split("val", "train").move_split("test", "train")  # 50 train images each
    assert big.keep_fraction(0.14).summary()["train"].to_dict() == {"a": 7, "b": 7}
    for bad in (0, -0.5, 1.5, True, "half"):
        with pytest.raises(CollectionError, match=r"\(0, 1\]"):
            full.keep_fraction(bad)


# --------------------------------------------------------------------------- load_image


def test_load_image_exif_orientation(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.new("RGB", (40, 20), "red").save(path, exif=exif)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (20, 40)


def test_load_image_modes(tmp_path: Path) -> None:
    Image.new("L", (4, 4), 128).save(tmp_path / "grey.png")

    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "pal.png", transparency=0)

    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 255, 0))
    rgba.save(tmp_path / "rgba.png")

    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode in ("I;16", "I")

    out = {p.stem: load_image(p) for p in tmp_path.iterdir()}
    assert all(im.mode == "RGB" for im in out.values())
    assert out["grey"].getpixel((0, 0)) == (128, 128, 128)
    assert out["pal"].getpixel((0, 0)) == (255, 255, 255)
    assert out["pal"].getpixel((1, 1)) == (255, 0, 0)
    assert out["rgba"].getpixel((0, 0)) == (255, 255, 255)
    assert out["rgba"].getpixel((1, 1)) == (255, 0, 0)
    r, g, b = out["cmyk"].getpixel((0, 0))
    assert r > 200 and g < 60 and b < 60
    assert out["g16"].getpixel((0, 0)) == (255, 255, 255)


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_ich_mekong() -> None:
    manifest = DATASETS / "ich-mekong" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"real dataset not available at {manifest}")
    coll = Collection.from_manifest(manifest)
    assert len(coll) == 354 and len(coll.classes) == 4 and not coll.skipped
    counts = coll.records["split"].value_counts().to_dict()
    assert counts == {"train": 212, "val": 71, "test": 71}


@pytest.mark.slow
def test_real_hieroglyphs() -> None:
    manifest = DATASETS / "hieroglyphs-unas" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"real dataset not available at {manifest}")
    coll = Collection.from_manifest(
        manifest, label_column="sign", ignore_splits=("unused",), check_images=False
    )
    assert len(coll) == 3674 and len(coll.classes) == 59
    assert {"category", "page"} <= set(coll.records.columns)


# --------------------------------------------------------------------------- scoring
def test_images_given_lists_or_says_what_it_looked_for(tmp_path: Path) -> None:
    from heritage.collection import images_given

    root = _folder(tmp_path / "data", {"cat": 2})
    assert [Path(p).name for p in images_given([root])] == ["cat_0.png", "cat_1.png"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(CollectionError, match=r"no images given \(folders are searched for .jpg"):
        images_given([tmp_path / "empty"])


def test_scoring_images_take_the_split_or_warn_without_one(tmp_path: Path) -> None:
    from heritage.collection import scoring_images

    folder = Collection.from_folder(_folder(tmp_path / "data", {"cat": 2, "dog": 2}))
    every, warning = scoring_images(folder, "test", "data")
    assert len(every) == 4 and "no split column" in warning  # may include training images
    rows = [{"image": f"{c}{i}.png", "label": c, "split": s} for c in ("cat", "dog")
            for i, s in enumerate(("train", "train", "test"))]  # fmt: skip
    manifest = Collection.from_manifest(_manifest(tmp_path, rows))
    test, warning = scoring_images(manifest, "test", "manifest.csv")
    assert len(test) == 2 and set(test.records["split"]) == {"test"} and warning == ""
    with pytest.raises(CollectionError, match=r"manifest.csv has no 'val' images \(its splits: "):
        scoring_images(manifest, "val", "manifest.csv")
