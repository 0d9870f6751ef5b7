"""Bad input ends in heritage's own message, never in a library's exception.

Part 1: one test per bad input that used to reach the user as a traceback or as another
library's message (scikit-learn's "needs samples of at least 2 classes", pandas' "No columns
to parse from file", torch's device string, PyYAML's parser, rdflib's BadSyntax, ...): each
now exits with code 2 and one line naming the file, row or column and what to do.

Part 2: property-based tests (hypothesis) over generated collections, record tables and
triplet files, driven through the command line: whatever the input, the outcome is success
(exit 0) or heritage's error (exit 2 with a message), never an uncaught exception. Commands
that need a trained run or a server (soup, refit, analyse, demo, kg, explore) are checked by
the explicit tests and by benchmarks/robustness.py, not fuzzed: each example would train.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TINY_OPTIONS
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from heritage.cli import app

ENV = {"COLUMNS": "200", "HERITAGE_NO_PROGRESS": "1", "NO_COLOR": "1"}
COLOURS = [(210, 140, 20), (20, 40, 200), (30, 190, 60), (200, 30, 120)]
FUZZ = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure reproduces
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV, prog_name="heritage")


def _refused(result, *fragments: str) -> str:
    """Exit code 2, heritage's message (every fragment in it), no traceback; the message."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}\n{result.output}"
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in: {text}"
    return text


def _handled(result) -> None:
    """Success, or heritage's error with a message: never an uncaught exception."""
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (
        f"uncaught {type(exc).__name__}: {exc}\n{result.output}"
    )
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert "error:" in result.output, result.output
        reason = result.output.split("error:", 1)[1].split()
        event(f"exit 2: {' '.join(w for w in reason[1:7] if '/' not in w)}")
    else:
        event("exit 0")


def _png(path: Path, colour: tuple[int, int, int] = (128, 128, 128), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.asarray(colour) + rng.integers(-20, 21, (32, 32, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for n, (label, count) in enumerate(counts.items()):
        for i in range(count):
            _png(root / label / f"{label}_{i}.png", COLOURS[n % 4], seed=i)
    return root


def _manifest(root: Path, rows: list[dict]) -> Path:
    """manifest.csv in ``root``; a .png named on a row is written unless it starts 'gone'."""
    for n, row in enumerate(rows):
        image = str(row.get("image", ""))
        if image.endswith(".png") and not image.startswith("gone") and not (root / image).exists():
            _png(root / image, COLOURS[n % 4], seed=n)
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _rows(counts: dict[str, int], split: Callable[[int], str] | None = None) -> list[dict]:
    rows = []
    for label, count in counts.items():
        for i in range(count):
            row = {"image": f"img/{label}_{i}.png", "label": label}
            if split is not None:
                row["split"] = split(i)
            rows.append(row)
    return rows


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_OPTIONS, "epochs": 1}))
    return path


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run on 2 classes x 4 images (amber, blue), soups cooked. Read
    only: copy it before writing."""
    from heritage.collection import Collection
    from heritage.config import TrainConfig
    from heritage.run import Run
    from heritage.training.trainer import Trainer

    base = tmp_path_factory.mktemp("small")
    photos = _folder(base / "photos", {"amber": 4, "blue": 4})
    run = base / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HERITAGE_NO_PROGRESS", "1")
        Trainer(TrainConfig(**TINY_OPTIONS)).fit(Collection.from_folder(photos), run)
        Run.open(run).cook_soups()
    return run


@pytest.fixture(scope="module")
def model_file(small_run: Path) -> Path:
    return small_run / "soups" / "greedy_soup"


def records_frame(n: int = 30) -> pd.DataFrame:
    techniques = ["damask", "velvet", "embroidery"]
    museums = {"vam": "GB", "imatex": "ES", "met": "IT"}
    rows = []
    for i in range(n):
        museum, technique = list(museums)[i % 3], techniques[(i // 3) % 3]
        rows.append(
            {
                "object": f"obj{i:03d}",
                "museum": museum,
                "technique": technique,
                "place": museums[museum],
                "text_en": f"a silk {technique} fragment number {i}",
                "split": ("train", "train", "train", "val", "test")[i % 5],
            }
        )
    return pd.DataFrame(rows)


def _fit(csv: Path, out: Path, *extra: str):
    modalities = [] if "--modalities" in extra else ["--modalities", "tfidf,tabular"]
    return _invoke(
        "metadata",
        "fit",
        csv,
        "--out",
        out,
        "--id-column",
        "object",
        *modalities,
        "--folds",
        "2",
        *extra,
    )


def _items(root: Path, n: int = 6) -> Path:
    rows = []
    for i in range(n):
        _png(root / "items" / f"m{i}.png", (40 * i, 100, 200 - 30 * i), seed=i)
        rows.append({"id": str(i), "image": f"items/m{i}.png"})
    pd.DataFrame(rows).to_csv(root / "items.csv", index=False)
    return root / "items.csv"


# ------------------------------------------------------------------------- collections
def test_one_class_folder_is_refused_before_training(tmp_path: Path, tiny_yaml: Path) -> None:
    photos = _folder(tmp_path / "photos", {"dance": 4})
    out = tmp_path / "run"
    result = _invoke("train", photos, "--out", out, "--config", tiny_yaml)
    text = _refused(result, str(photos), "1 class sub-folder", "'dance' (4 images)")
    assert "needs at least 2" in text and "add one sub-folder of images per class" in text
    assert "solver" not in text and not out.exists()


def test_one_class_manifest_names_the_label_column(tmp_path: Path, tiny_yaml: Path) -> None:
    rows = [{**row, "kind": "textile"} for row in _rows({"amber": 3, "blue": 3})]
    manifest = _manifest(tmp_path, rows)
    result = _invoke(
        "train",
        manifest,
        "--label-column",
        "kind",
        "--out",
        tmp_path / "run",
        "--config",
        tiny_yaml,
    )
    _refused(result, "manifest.csv", "label column 'kind' has 1 value(s)", "--label-column")


def test_demo_on_one_class_is_refused(tmp_path: Path, tiny_yaml: Path) -> None:
    photos = _folder(tmp_path / "photos", {"dance": 4})
    result = _invoke(
        "demo", photos, "--out", tmp_path / "demo", "--config", tiny_yaml, "--no-serve"
    )
    _refused(result, "1 class sub-folder", "needs at least 2")


def test_label_column_empty_on_every_row(tmp_path: Path, tiny_yaml: Path) -> None:
    rows = [{**row, "label": ""} for row in _rows({"amber": 3, "blue": 3})]
    result = _invoke(
        "train", _manifest(tmp_path, rows), "--out", tmp_path / "run", "--config", tiny_yaml
    )
    _refused(result, "manifest.csv", "label column 'label' is empty on every row", "--label-column")


def test_every_image_unreadable(tmp_path: Path, tiny_yaml: Path) -> None:
    for label in ("amber", "blue"):
        for i in range(3):
            (tmp_path / "photos" / label).mkdir(parents=True, exist_ok=True)
            (tmp_path / "photos" / label / f"{i}.png").write_text("not an image")
    result = _invoke("train", tmp_path / "photos", "--out", tmp_path / "run", "--config", tiny_yaml)
    _refused(
        result,
        "no usable images (all 6 skipped",
        "not a recognised image format",
        "Replace the unreadable files",
    )


def test_missing_files_name_rows_and_the_folder_they_are_read_from(
    tmp_path: Path, tiny_yaml: Path
) -> None:
    rows = [{**row, "image": "gone/" + row["image"]} for row in _rows({"amber": 3, "blue": 3})]
    result = _invoke(
        "train", _manifest(tmp_path, rows), "--out", tmp_path / "run", "--config", tiny_yaml
    )
    _refused(
        result,
        "row 1: ",
        "gone/img/amber_0.png (file not found)",
        f"Relative image paths are read from {tmp_path}",
    )


def test_an_image_on_two_rows_is_refused(tmp_path: Path, tiny_yaml: Path) -> None:
    rows = _rows({"amber": 3, "blue": 3}, lambda i: ("train", "val", "test")[i])
    rows.append({**rows[0], "label": "blue", "split": "test"})  # the same file, in test
    result = _invoke(
        "train", _manifest(tmp_path, rows), "--out", tmp_path / "run", "--config", tiny_yaml
    )
    _refused(
        result,
        "1 image(s) appear on more than one row",
        "rows 1, 7: img/amber_0.png (labelled 'amber' in train, 'blue' in test)",
    )
    assert not (tmp_path / "run").exists()


def test_unknown_backbone_stops_before_the_collection_is_read(tmp_path: Path) -> None:
    photos = _folder(tmp_path / "photos", {"amber": 3, "blue": 3})
    result = _invoke("train", photos, "--out", tmp_path / "run", "--backbone", "efficientnet_b99")
    _refused(result, "unknown backbone 'efficientnet_b99'", "efficientnet_lite0")
    assert not (tmp_path / "run").exists()


def test_unknown_device_name(tmp_path: Path, tiny_yaml: Path) -> None:
    photos = _folder(tmp_path / "photos", {"amber": 3, "blue": 3})
    result = _invoke(
        "train", photos, "--out", tmp_path / "run", "--config", tiny_yaml, "--device", "tpu"
    )
    _refused(result, "device 'tpu' is not a device name", "cuda:N")


def test_config_file_that_is_not_yaml(tmp_path: Path) -> None:
    photos = _folder(tmp_path / "photos", {"amber": 3, "blue": 3})
    (tmp_path / "bad.yaml").write_text("epochs: [2\nbatch_size 4\n")
    result = _invoke("train", photos, "--out", tmp_path / "run", "--config", tmp_path / "bad.yaml")
    _refused(result, "bad.yaml is not valid YAML (line 3, column 1)", "option: value")


# ------------------------------------------------------------------------- runs and models
def test_refit_recipe_must_be_a_soup(small_run: Path, tmp_path: Path) -> None:
    result = _invoke("refit", small_run, "--out", tmp_path / "refit", "--recipe", "best")
    _refused(result, "--recipe 'best' is not a soup to refit", "greedy_soup or uniform_soup")


def test_refit_refuses_a_training_run_then_overwrite_replaces_it(
    small_run: Path, tmp_path: Path
) -> None:
    import shutil

    run_copy = Path(shutil.copytree(small_run, tmp_path / "run"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text(yaml.safe_dump({**TINY_OPTIONS, "keep_epochs": []}))
    result = _invoke("refit", run_copy, "--out", other)
    _refused(result, "already holds a run that is not a refit", "--overwrite")
    assert _invoke("refit", run_copy, "--out", run_copy, "--overwrite").exit_code == 2
    assert (run_copy / "split.csv").is_file()  # --overwrite never deletes the run itself
    result = _invoke("refit", run_copy, "--out", other, "--overwrite")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((other / "config.yaml").read_text())["keep_epochs"]


@pytest.mark.parametrize(
    ("option", "fragment"),
    [("--recipe", "recipe must be one of ('greedy', 'uniform'), got 'stew'"),
     ("--metric", "metric must be one of ('macro_f1', 'top1', 'loss'), got 'stew'")],
)  # fmt: skip
def test_soup_options_are_checked_before_cooking(
    small_run: Path, option: str, fragment: str
) -> None:
    text = _refused(_invoke("soup", small_run, option, "stew"), fragment)
    assert "soup from" not in text  # nothing started cooking


def test_evaluate_a_model_on_other_classes(model_file: Path, tmp_path: Path) -> None:
    photos = _folder(tmp_path / "photos", {"red": 2})
    result = _invoke("evaluate", model_file, "--data", photos, "--out", tmp_path / "report")
    _refused(
        result, f"{photos}: labels ['red'] are not among the model's classes ['amber', 'blue']"
    )


def test_evaluate_a_model_on_a_manifest_without_that_split(
    model_file: Path, tmp_path: Path
) -> None:
    manifest = _manifest(tmp_path, _rows({"amber": 2, "blue": 2}, lambda i: "train"))
    result = _invoke("evaluate", model_file, "--data", manifest, "--out", tmp_path / "report")
    _refused(result, "manifest.csv has no 'test' images (its splits: train)", "--split train")


def test_evaluate_a_model_on_one_class_is_allowed(model_file: Path, tmp_path: Path) -> None:
    photos = _folder(tmp_path / "photos", {"amber": 2})
    result = _invoke("evaluate", model_file, "--data", photos, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output


def test_predict_with_a_missing_list(model_file: Path, tmp_path: Path) -> None:
    result = _invoke("predict", model_file, tmp_path / "todo.txt", "--out", tmp_path / "p.csv")
    _refused(result, "list of images", "todo.txt not found", "one image path per line")


def test_predict_top_k_must_be_positive(model_file: Path, tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    result = _invoke("predict", model_file, tmp_path / "a.png", "--top-k", "0")
    _refused(result, "--top-k")
    assert not (tmp_path / "predictions.csv").exists()


# ------------------------------------------------------------------------- metadata
def test_metadata_fit_on_an_empty_csv(tmp_path: Path) -> None:
    (tmp_path / "records.csv").write_text("")
    result = _fit(tmp_path / "records.csv", tmp_path / "m", "--properties", "technique")
    _refused(result, "records.csv could not be read as CSV", "header row")


def test_metadata_modality_without_a_column_to_read(tmp_path: Path) -> None:
    csv = tmp_path / "records.csv"
    records_frame()[["object", "technique", "split"]].to_csv(csv, index=False)
    result = _fit(csv, tmp_path / "m", "--properties", "technique", "--modalities", "tabular")
    _refused(result, "records.csv: modality 'tabular' has no column to read", "--modalities")


def test_metadata_property_with_one_value(tmp_path: Path) -> None:
    csv = tmp_path / "records.csv"
    records_frame().assign(technique="damask").to_csv(csv, index=False)
    result = _fit(csv, tmp_path / "m", "--properties", "technique")
    _refused(
        result,
        "property 'technique' has 1 distinct known value(s) ['damask']",
        "leave it out of --properties",
    )


def test_metadata_text_column_empty_for_a_text_modality(tmp_path: Path) -> None:
    csv = tmp_path / "records.csv"
    records_frame().assign(text_en="").to_csv(csv, index=False)
    result = _fit(csv, tmp_path / "m", "--properties", "technique", "--modalities", "tfidf")
    _refused(
        result,
        "records.csv: property 'technique' has 0 value(s) []",
        "the modalities (text_tfidf) can read",
        "--modalities",
    )


def test_metadata_image_config_with_an_unknown_backbone(tmp_path: Path) -> None:
    csv = tmp_path / "records.csv"
    records_frame().assign(image="img/a.png").to_csv(csv, index=False)
    (tmp_path / "image.yaml").write_text("backbone: resnet9000\n")
    result = _fit(
        csv,
        tmp_path / "m",
        "--properties",
        "technique",
        "--modalities",
        "tfidf,image",
        "--image-config",
        tmp_path / "image.yaml",
    )
    _refused(result, "image config: unknown backbone 'resnet9000'")


def test_tabular_modality_without_feature_columns_abstains() -> None:
    from heritage.metadata import RecordSpec, RecordTable, TabularModel, Targets

    df = records_frame(12)[["object", "technique", "split"]]
    table = RecordTable.from_frame(df, RecordSpec.infer(df.columns, ["technique"]))
    model = TabularModel().fit(table, Targets.learn(table))
    assert model.models_ == {"technique": None}
    assert np.isnan(model.predict_proba(table)["technique"]).all()


def test_kg_export_with_an_empty_records_file(metadata_model: Path, tmp_path: Path) -> None:
    """Predictions of a metadata model exported with its catalogue, read by the model's spec."""
    from heritage.metadata import MetadataPredictor

    new = tmp_path / "new.csv"
    records_frame(4).to_csv(new, index=False)
    predictions = tmp_path / "predictions.csv"
    MetadataPredictor.load(metadata_model).predict(new).to_csv(predictions, index=False)
    (tmp_path / "records.csv").write_text("")
    result = _invoke(
        "kg", "export", predictions, "--records", tmp_path / "records.csv",
        "--model", metadata_model, "-o", tmp_path / "r.ttl",
    )  # fmt: skip
    _refused(result, "Records file", "records.csv could not be read as CSV", "header row")


# ------------------------------------------------------------------------- similarity
def test_item_table_that_is_empty(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text("")
    (tmp_path / "triplets.csv").write_text("reference,closer,farther\n0,1,2\n")
    result = _invoke(
        "similarity",
        "agreement",
        tmp_path / "triplets.csv",
        "--items",
        tmp_path / "items.csv",
        "--cache-dir",
        tmp_path / "cache",
    )
    _refused(result, "item table", "items.csv could not be read as CSV")


def test_triplets_whose_ids_are_all_unknown(tmp_path: Path) -> None:
    items = _items(tmp_path)
    rows = [{"reference": f"x{i}", "closer": f"y{i}", "farther": f"z{i}"} for i in range(4)]
    pd.DataFrame(rows).to_csv(tmp_path / "triplets.csv", index=False)
    result = _invoke(
        "similarity",
        "agreement",
        tmp_path / "triplets.csv",
        "--items",
        items,
        "--cache-dir",
        tmp_path / "cache",
    )
    _refused(
        result,
        "none of the 12 item ids its triplets use (e.g. 'x0', 'x1', 'x2')",
        "(whose ids are e.g. '0', '1', '2')",
        "--id-column",
    )


@pytest.mark.parametrize("command", ["similarity", "index"])
def test_unknown_backbone_for_features(command: str, tmp_path: Path) -> None:
    items = _items(tmp_path)
    pd.DataFrame([{"reference": "0", "closer": "1", "farther": "2"}]).to_csv(
        tmp_path / "triplets.csv", index=False
    )
    args = (
        ["similarity", "agreement", tmp_path / "triplets.csv", "--items", items]
        if command == "similarity"
        else ["index", "build", tmp_path / "items", "--out", tmp_path / "index"]
    )
    result = _invoke(*args, "--backbone", "resnet9000", "--cache-dir", tmp_path / "cache")
    _refused(result, "unknown backbone 'resnet9000'")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "coll.csv could not be read as CSV"),
        ("image,label\n", "coll.csv has no data rows"),
        ("image\ngone/a.png\ngone/b.png\n", "no image could be embedded (all 2 skipped"),
    ],
)
def test_index_build_on_a_manifest_with_nothing_to_index(
    content: str, fragment: str, tmp_path: Path
) -> None:
    (tmp_path / "coll.csv").write_text(content)
    result = _invoke(
        "index",
        "build",
        tmp_path / "coll.csv",
        "--out",
        tmp_path / "index",
        "--cache-dir",
        tmp_path / "cache",
    )
    _refused(result, fragment)
    assert not (tmp_path / "index").exists()  # no empty index left behind


def test_similar_k_must_be_positive(tmp_path: Path) -> None:
    _png(tmp_path / "q.png")
    result = _invoke("similar", tmp_path / "q.png", "--index", tmp_path, "--k", "0")
    _refused(result, "--k")


# ------------------------------------------------------------------------- knowledge graph
def test_kg_validate_a_file_that_is_not_rdf(tmp_path: Path) -> None:
    (tmp_path / "data.ttl").write_text("not turtle at all <<<")
    result = _invoke("kg", "validate", tmp_path / "data.ttl")
    _refused(result, "data.ttl is not valid turtle RDF", "line 1")


# ------------------------------------------------------------------------- property-based
#: mostly sound values, so that some examples get past validation (and train)
SPLIT_VALUES = ["train"] * 6 + ["val", "val", "test", "test", "", "dev", "tset"]
ROW_KINDS = ["ok"] * 12 + ["blank", "gone", "broken"]


@st.composite
def manifests(draw) -> dict:
    """A collection: 1-3 classes of 1-4 images, maybe a split column (values from
    SPLIT_VALUES, 'missing val' included), some blank labels, missing or unreadable files, a
    repeated row; given as a class folder or a manifest; maybe --min-per-class 1."""
    counts = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    with_split = draw(st.booleans())
    rows = []
    for c, count in enumerate(counts):
        for i in range(count):
            row = {"image": f"img/c{c}_{i}.png", "label": f"c{c}"}
            kind = draw(st.sampled_from(ROW_KINDS))
            if kind == "blank":
                row["label"] = ""
            elif kind == "gone":
                row["image"] = f"gone/c{c}_{i}.png"
            elif kind == "broken":
                row["image"] = f"img/broken_{c}_{i}.png"
            if with_split:
                row["split"] = draw(st.sampled_from(SPLIT_VALUES))
            rows.append(row)
    if draw(st.integers(0, 5)) == 0:
        rows.append(dict(rows[0]))  # a repeated row
    return {
        "rows": rows,
        "as_folder": draw(st.booleans()) and not with_split,
        "min_per_class": draw(st.sampled_from([None, None, "1"])),
    }


@FUZZ
@given(case=manifests())
def test_fuzz_collections_through_train(case: dict, tiny_yaml: Path) -> None:
    """Generated collections (a folder or a manifest) given to `heritage train`: exit 0 (a
    one-epoch run) or exit 2 with heritage's message."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if case["as_folder"]:
            for n, row in enumerate(case["rows"]):
                if row["label"] and row["image"].startswith("img/"):
                    path = root / "photos" / row["label"] / Path(row["image"]).name
                    if "broken" in row["image"]:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_text("not an image")
                    else:
                        _png(path, COLOURS[n % 4], seed=n)
            (root / "photos").mkdir(exist_ok=True)
            source = root / "photos"
        else:
            for row in case["rows"]:
                if "broken" in row["image"]:
                    (root / row["image"]).parent.mkdir(parents=True, exist_ok=True)
                    (root / row["image"]).write_text("not an image")
            source = _manifest(root, case["rows"])
        extra = ["--min-per-class", case["min_per_class"]] if case["min_per_class"] else []
        _handled(_invoke("train", source, "--out", root / "run", "--config", tiny_yaml, *extra))


WORDS = ["silk", "damask", "velvet", "gold", "woven", "the", "of", "seda", ""]


@st.composite
def record_tables(draw) -> dict:
    """A records table with random texts, fields and properties. Half are sound (unique ids,
    two or more values per property, a text column): those fit. The others add blank cells,
    one-valued or empty properties, empty text columns, repeated or blank ids, odd split
    values, modalities with nothing to read."""
    sound = draw(st.booleans())
    n = draw(st.integers(4, 16))
    frame: dict[str, list[str]] = {}
    ids = [f"r{i}" for i in range(n)]
    if not sound and draw(st.booleans()):
        ids[-1] = draw(st.sampled_from([ids[0], ""]))
    frame["object"] = ids
    texts = draw(st.sets(st.sampled_from(["text_en", "text_es"]), min_size=sound, max_size=2))
    for column in sorted(texts):
        frame[column] = [
            " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=4))) for _ in range(n)
        ]
    for column in sorted(draw(st.sets(st.sampled_from(["museum", "year"]), max_size=2))):
        values = ["vam", "met", ""] if column == "museum" else ["1700", "1850", "", "c. 1900"]
        frame[column] = [draw(st.sampled_from(values)) for _ in range(n)]
    properties = sorted(draw(st.sets(st.sampled_from(["technique", "place"]), min_size=1)))
    choices = [["a", "b"], ["a", "b", "c", ""], ["b", "a", ""]]
    for prop in properties:
        values = draw(st.sampled_from(choices if sound else [*choices, ["a"], [""]]))
        frame[prop] = draw(st.permutations([values[k % len(values)] for k in range(n)]))
        if sound:  # both values on training rows, whatever the permutation
            frame[prop][:2] = ["a", "b"]
    if draw(st.booleans()):
        frame["split"] = [
            "train",
            "train",
            *[("val", "train", "test")[k % 3] for k in range(n - 2)],
        ]
        if not sound and draw(st.booleans()):  # one odd cell
            frame["split"][draw(st.integers(0, n - 1))] = draw(st.sampled_from(["dev", "", "x"]))
    options = ["tfidf", "flat"] if sound else ["tfidf", "tabular", "flat"]
    modalities = sorted(draw(st.sets(st.sampled_from(options), min_size=1)))
    return {"frame": pd.DataFrame(frame), "properties": properties, "modalities": modalities}


@settings(FUZZ, max_examples=20)
@given(case=record_tables())
def test_fuzz_record_tables_through_metadata_fit(case: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "records.csv"
        case["frame"].to_csv(csv, index=False)
        result = _invoke(
            "metadata",
            "fit",
            csv,
            "--out",
            Path(tmp) / "model",
            "--id-column",
            "object",
            "--properties",
            ",".join(case["properties"]),
            "--modalities",
            ",".join(case["modalities"]),
            "--folds",
            "2",
        )
        _handled(result)


@pytest.fixture(scope="module")
def metadata_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from heritage.metadata import FusionConfig, MetadataPredictor, RecordSpec, RecordTable

    df = records_frame(24)
    spec = RecordSpec.infer(df.columns, ["technique", "place"], id_column="object")
    folder = tmp_path_factory.mktemp("metadata") / "model"
    predictor = MetadataPredictor(["tfidf", "tabular"], FusionConfig(folds=2))
    predictor.fit(RecordTable.from_frame(df, spec)).save(folder)
    return folder


@settings(FUZZ, max_examples=15)
@given(
    drop=st.sets(st.sampled_from(["text_en", "museum", "technique", "place", "split"]), max_size=1),
    blanks=st.lists(
        st.tuples(st.integers(0, 7), st.sampled_from(["text_en", "museum", "technique", "place"])),
        max_size=8,
    ),
    odd=st.sampled_from([None, None, None, "repeated id", "blank id", "blank split", "new museum"]),
    rows=st.integers(0, 8),
)
def test_fuzz_record_tables_through_metadata_predict(
    metadata_model: Path, drop: set, blanks: list, odd: str | None, rows: int
) -> None:
    """New records for a fitted model: columns missing, blank cells, unseen categories, a
    repeated or blank id, a blank split cell."""
    frame = records_frame(8).head(rows).drop(columns=sorted(drop))
    for row, column in blanks:
        if row < len(frame) and column in frame:
            frame.loc[row, column] = ""
    if odd and len(frame) > 1:
        row, column, value = {
            "repeated id": (1, "object", frame.iloc[0]["object"]),
            "blank id": (1, "object", ""),
            "blank split": (1, "split", ""),
            "new museum": (1, "museum", "louvre"),
        }[odd]
        if column in frame:
            frame.loc[row, column] = value
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "new.csv"
        frame.to_csv(csv, index=False)
        _handled(_invoke("metadata", "predict", metadata_model, csv, "--out", Path(tmp) / "p.csv"))


@pytest.fixture(scope="module")
def item_table(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("items")
    return {"items": _items(root, 8), "cache": root / "cache"}


ID_CHOICES = [str(i) for i in range(8)] + ["99", "x", "", " 3", "3.0"]


@st.composite
def triplet_rows(draw) -> list[list[str]]:
    """Up to 40 judgements over the 8 items: clean, with one unknown id, with every id
    unknown, or messy (blank, repeated, unknown and oddly written ids)."""
    n = draw(st.integers(0, 40))
    mode = draw(st.sampled_from(["clean", "clean", "one unknown", "all unknown", "messy"]))
    if mode == "messy":
        return [[draw(st.sampled_from(ID_CHOICES)) for _ in range(3)] for _ in range(n)]
    rows = [[str(i) for i in draw(st.permutations(range(8)))[:3]] for _ in range(n)]
    if mode == "one unknown" and rows:
        rows[draw(st.integers(0, n - 1))][draw(st.integers(0, 2))] = "99"
    elif mode == "all unknown":
        rows = [[f"x{a}", f"y{b}", f"z{c}"] for a, b, c in rows]
    return rows


@settings(FUZZ, max_examples=20)
@given(
    triplets=triplet_rows(),
    votes=st.sampled_from([None, "ok", "odd"]),
    context=st.booleans(),
    fit=st.booleans(),
)
def test_fuzz_triplet_files_through_similarity(
    item_table: dict, triplets: list, votes: str | None, context: bool, fit: bool
) -> None:
    """Random ids (some or all unknown, blank, repeated within a triplet), votes that may be
    negative or not numbers, a context column: `similarity agreement`, or `fit`."""
    frame = pd.DataFrame(triplets, columns=["reference", "closer", "farther"])
    rng = np.random.default_rng(len(triplets))
    if votes is not None:
        frame["votes_closer"] = rng.integers(1, 4, len(frame))
        frame["votes_farther"] = rng.integers(0, 2, len(frame))
        if votes == "odd" and len(frame):
            frame["votes_closer"] = frame["votes_closer"].astype(object)
            frame.loc[0, "votes_closer"] = rng.choice(["-1", "two", "1.5"])
    if context:
        frame["light"] = rng.choice(["day", "night", ""], len(frame), p=[0.5, 0.45, 0.05])
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "triplets.csv"
        frame.to_csv(csv, index=False)
        common = ["--items", item_table["items"], "--cache-dir", item_table["cache"]]
        if fit:
            extra = ["--context-column", "light"] if context else []
            args = [
                "similarity",
                "fit",
                csv,
                *common,
                "--out",
                Path(tmp) / "m",
                "--epochs",
                "3",
                "--dim",
                "4",
                "--val-fraction",
                "0.3",
                *extra,
            ]
        else:
            args = ["similarity", "agreement", csv, *common]
        _handled(_invoke(*args))


@settings(FUZZ, max_examples=10)
@given(
    cells=st.lists(
        st.tuples(
            st.sampled_from(["items/m0.png", "items/m1.png", "gone/x.png", "", "a.txt"]),
            st.sampled_from(["i1", "i2", "", "i1"]),
        ),
        max_size=5,
    ),
    with_id=st.booleans(),
)
def test_fuzz_manifests_through_index_build(item_table: dict, cells: list, with_id: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        csv = item_table["items"].parent / f"index_{abs(hash((tuple(cells), with_id)))}.csv"
        pd.DataFrame(cells, columns=["image", "id"]).to_csv(csv, index=False)
        extra = ["--id-column", "id"] if with_id else []
        result = _invoke(
            "index",
            "build",
            csv,
            "--out",
            Path(tmp) / "index",
            "--cache-dir",
            item_table["cache"],
            *extra,
        )
        csv.unlink()
        _handled(result)


def test_a_broken_model_card_is_named(model_file: Path, tmp_path: Path) -> None:
    import shutil

    for i, text in enumerate(('{"architecture": "x"}', "{not json")):
        stem = tmp_path / f"broken{i}"
        shutil.copy(model_file.with_name(model_file.name + ".safetensors"), f"{stem}.safetensors")
        Path(f"{stem}.json").write_text(text)
        _refused(_invoke("predict", stem, _png(tmp_path / "a.png"), "-o", tmp_path / "p.csv"),
                 "model card", f"broken{i}.json")  # fmt: skip
