"""Robustness on bad input: every malformed collection, record table, triplet file or option
we tried, run through the ``heritage`` command line, and what the user sees.

    .venv/bin/python benchmarks/robustness.py            # writes docs/robustness.md
    .venv/bin/python benchmarks/robustness.py --only one-class --out /tmp/r.md

Each case builds tiny files in a temporary folder (32×32 PNGs, a few CSV rows), runs one
command in process (typer's CliRunner on ``heritage.cli.app``) and records its exit code and
output. A bad input should end with heritage's own message (exit code 2) naming the file, row
or column at fault and what to do; a case that ends in an uncaught exception is shown as
``TRACEBACK`` with the exception. The only training is one tiny run (a 2-epoch CPU model on
the generated images, a few seconds) that the soup, refit, evaluate and predict cases start
from, and a tiny metadata model (TF-IDF + tabular) for ``metadata predict``. The table in
docs/robustness.md is generated from these runs, never written by hand: rerun the script
after changing a message. ``--only`` runs the cases whose name contains a word (a quick check
while fixing one).
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ENV = {"COLUMNS": "200", "HERITAGE_NO_PROGRESS": "1", "NO_COLOR": "1"}
TINY = {
    "backbone": "test_efficientnet",
    "pretrained": False,
    "image_size": 32,
    "epochs": 2,
    "batch_size": 4,
    "restart_epochs": 1,
    "device": "cpu",
}
COLOURS = {"amber": (210, 140, 20), "blue": (20, 40, 200), "green": (30, 190, 60)}


# ----------------------------------------------------------------------------- tiny data
def png(path: Path, colour: tuple[int, int, int] = (128, 128, 128), seed: int = 0) -> Path:
    """A 32×32 PNG of one colour plus a little noise."""
    rng = np.random.default_rng(seed)
    arr = np.clip(np.asarray(colour) + rng.integers(-20, 21, (32, 32, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


def image_folder(root: Path, classes: dict[str, int] | None = None) -> Path:
    """root/<class>/<i>.png; ``classes`` maps a class name to its image count."""
    classes = classes or dict.fromkeys(COLOURS, 4)
    for n, (label, count) in enumerate(classes.items()):
        colour = COLOURS.get(label, (40 * n % 255, 90, 160))
        for i in range(count):
            png(root / label / f"{label}_{i}.png", colour, seed=i)
    return root


def manifest(root: Path, rows: list[dict], name: str = "manifest.csv") -> Path:
    """A CSV manifest beside images written on demand (``image`` cells naming .png files that
    do not exist yet are created, unless the cell starts with ``missing``)."""
    root.mkdir(parents=True, exist_ok=True)
    for n, row in enumerate(rows):
        image = str(row.get("image", ""))
        if image.endswith(".png") and not image.startswith("missing"):
            png(root / image, COLOURS.get(str(row.get("label")), (100, 100, 100)), seed=n)
    path = root / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def labelled_rows(classes: dict[str, int], split: Callable[[int], str] | None = None) -> list:
    rows = []
    for label, count in classes.items():
        for i in range(count):
            row = {"image": f"img/{label}_{i}.png", "label": label}
            if split is not None:
                row["split"] = split(i)
            rows.append(row)
    return rows


def records_frame(n: int = 30) -> pd.DataFrame:
    """Object records: technique named in the English text, place decided by the museum."""
    techniques = ["damask", "velvet", "embroidery"]
    museums = {"vam": "GB", "imatex": "ES", "met": "IT"}
    rows = []
    for i in range(n):
        museum = list(museums)[i % 3]
        technique = techniques[(i // 3) % 3]
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


def write_csv(path: Path, frame: pd.DataFrame | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(frame, str):
        path.write_text(frame)
    else:
        frame.to_csv(path, index=False)
    return path


def items_and_triplets(root: Path, n: int = 6) -> tuple[Path, Path]:
    """items.csv (id, image) over ``n`` PNGs and a triplets.csv with valid ids."""
    rows = []
    for i in range(n):
        png(root / "items" / f"m{i}.png", (40 * i, 100, 200 - 30 * i), seed=i)
        rows.append({"id": str(i), "image": f"items/m{i}.png"})
    items = write_csv(root / "items.csv", pd.DataFrame(rows))
    trip = [
        {"reference": str(i), "closer": str((i + 1) % n), "farther": str((i + 3) % n)}
        for i in range(n)
    ]
    return items, write_csv(root / "triplets.csv", pd.DataFrame(trip))


# ----------------------------------------------------------------------------- shared runs
class Shared:
    """Things several cases start from, made once and lazily: a tiny trained run with soups,
    a tiny metadata model, an embedded knowledge-graph store."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._run: Path | None = None
        self._metadata: Path | None = None

    def config(self) -> Path:
        path = self.base / "tiny.yaml"
        if not path.is_file():
            path.write_text(yaml.safe_dump(TINY))
        return path

    def run(self) -> Path:
        """A finished 2-epoch run on 3 classes × 4 images, with its soups cooked."""
        if self._run is None:
            from heritage.collection import Collection
            from heritage.config import TrainConfig
            from heritage.run import Run
            from heritage.training.trainer import Trainer

            folder = image_folder(self.base / "shared-images")
            self._run = self.base / "shared-run"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                Trainer(TrainConfig(**TINY)).fit(Collection.from_folder(folder), self._run)
                Run.open(self._run).cook_soups()
        return self._run

    def index(self) -> Path:
        """A search index of three images (the default, offline backbone)."""
        folder = self.base / "shared-index"
        if not folder.is_dir():
            from heritage.similarity import build_index

            for i in range(3):
                png(self.base / "shared-index-images" / f"{i}.png", seed=i)
            build_index(self.base / "shared-index-images", folder, cache_dir=self.base / "cache")
        return folder

    def metadata(self) -> Path:
        """A metadata model (TF-IDF + tabular) on 30 records."""
        if self._metadata is None:
            from heritage.metadata import FusionConfig, MetadataPredictor, RecordSpec, RecordTable

            df = records_frame(30)
            spec = RecordSpec.infer(df.columns, ["technique", "place"], id_column="object")
            table = RecordTable.from_frame(df, spec)
            predictor = MetadataPredictor(["tfidf", "tabular"], FusionConfig(folds=3))
            predictor.fit(table)
            self._metadata = self.base / "shared-metadata"
            predictor.save(self._metadata)
        return self._metadata


# ----------------------------------------------------------------------------- the cases
@dataclass(frozen=True)
class Case:
    """A bad input, the command it is given to, and how to build it: ``make(folder, shared)``
    writes the files into ``folder`` (the working directory) and returns the arguments."""

    name: str
    bad_input: str
    make: Callable[[Path, Shared], list[str]]


def _train(source: str, *extra: str) -> Callable[[Path, Shared], list[str]]:
    return lambda d, s: ["train", source, "--out", "run", "--config", str(s.config()), *extra]


def _one_class(d: Path, s: Shared) -> list[str]:
    image_folder(d / "photos", {"dance": 6})
    return ["train", "photos", "--out", "run", "--config", str(s.config())]


def _one_class_manifest(d: Path, s: Shared) -> list[str]:
    manifest(d, labelled_rows({"amber": 3, "blue": 3}))
    rows = labelled_rows({"amber": 3, "blue": 3})
    for row in rows:
        row["kind"] = "textile"
    manifest(d, rows)
    return [
        "train",
        "manifest.csv",
        "--label-column",
        "kind",
        "--out",
        "run",
        "--config",
        str(s.config()),
    ]


def _all_unreadable(d: Path, s: Shared) -> list[str]:
    for label in ("amber", "blue"):
        for i in range(3):
            (d / "photos" / label).mkdir(parents=True, exist_ok=True)
            (d / "photos" / label / f"{i}.png").write_text("not an image")
    return ["train", "photos", "--out", "run", "--config", str(s.config())]


def _non_images(d: Path, s: Shared) -> list[str]:
    for label in ("amber", "blue"):
        (d / "photos" / label).mkdir(parents=True, exist_ok=True)
        (d / "photos" / label / "notes.txt").write_text("scanned 2024")
    return ["train", "photos", "--out", "run", "--config", str(s.config())]


def _loose_images(d: Path, s: Shared) -> list[str]:
    for i in range(4):
        png(d / "photos" / f"{i}.png")
    return ["train", "photos", "--out", "run", "--config", str(s.config())]


def _label_all_empty(d: Path, s: Shared) -> list[str]:
    rows = labelled_rows({"amber": 3, "blue": 3})
    for row in rows:
        row["label"] = ""
    manifest(d, rows)
    return ["train", "manifest.csv", "--out", "run", "--config", str(s.config())]


def _blank_cells(d: Path, s: Shared) -> list[str]:
    rows = labelled_rows({"amber": 4, "blue": 4, "green": 4})
    rows[0]["label"] = ""
    rows[5]["image"] = ""
    manifest(d, rows)
    path = d / "manifest.csv"
    path.write_text(path.read_text().replace("green\n", "NaN\n", 1))
    return ["train", "manifest.csv", "--out", "run", "--config", str(s.config())]


def _missing_files(d: Path, s: Shared) -> list[str]:
    rows = labelled_rows({"amber": 3, "blue": 3})
    for row in rows:
        row["image"] = "missing/" + row["image"]
    manifest(d, rows)
    return ["train", "manifest.csv", "--out", "run", "--config", str(s.config())]


def _empty_csv(d: Path, s: Shared) -> list[str]:
    write_csv(d / "manifest.csv", "")
    return ["train", "manifest.csv", "--out", "run", "--config", str(s.config())]


def _header_only(d: Path, s: Shared) -> list[str]:
    write_csv(d / "manifest.csv", "image,label,split\n")
    return ["train", "manifest.csv", "--out", "run", "--config", str(s.config())]


def _duplicate_images(d: Path, s: Shared) -> list[str]:
    rows = labelled_rows({"amber": 3, "blue": 3}, lambda i: ("train", "val", "test")[i % 3])
    rows.append({**rows[0], "label": "blue", "split": "test"})  # the same file again
    manifest(d, rows)
    return ["train", "manifest.csv", "--out", "run", "--config", str(s.config())]


def _only_train_test(d: Path, s: Shared) -> list[str]:
    manifest(d, labelled_rows({"amber": 4, "blue": 4}, lambda i: "test" if i == 0 else "train"))
    return ["train", "manifest.csv", "--out", "run", "--config", str(s.config())]


def _only_train(d: Path, s: Shared) -> list[str]:
    manifest(d, labelled_rows({"amber": 4, "blue": 4}, lambda i: "train"))
    return ["train", "manifest.csv", "--out", "run", "--config", str(s.config())]


def _only_test(d: Path, s: Shared) -> list[str]:
    manifest(d, labelled_rows({"amber": 3, "blue": 3}, lambda i: "test"))
    return ["train", "manifest.csv", "--out", "run", "--config", str(s.config())]


def _class_only_in_test(d: Path, s: Shared) -> list[str]:
    rows = labelled_rows({"amber": 4, "blue": 4}, lambda i: ("train", "train", "val", "test")[i])
    rows += labelled_rows({"green": 2}, lambda i: "test")
    manifest(d, rows)
    return ["train", "manifest.csv", "--out", "run", "--config", str(s.config())]


def _bad_split_value(d: Path, s: Shared) -> list[str]:
    manifest(d, labelled_rows({"amber": 3, "blue": 3}, lambda i: ("train", "val", "tset")[i]))
    return ["train", "manifest.csv", "--out", "run", "--config", str(s.config())]


def _wrong_column(d: Path, s: Shared) -> list[str]:
    manifest(d, labelled_rows({"amber": 3, "blue": 3}))
    return [
        "train",
        "manifest.csv",
        "--label-column",
        "kind",
        "--out",
        "run",
        "--config",
        str(s.config()),
    ]


def _two_per_class_no_split(d: Path, s: Shared) -> list[str]:
    image_folder(d / "photos", {"amber": 2, "blue": 2})
    return ["train", "photos", "--out", "run", "--config", str(s.config())]


def _option(flag: str, value: str) -> Callable[[Path, Shared], list[str]]:
    def make(d: Path, s: Shared) -> list[str]:
        image_folder(d / "photos", {"amber": 4, "blue": 4})
        return ["train", "photos", "--out", "run", "--config", str(s.config()), flag, value]

    return make


def _bad_yaml(d: Path, s: Shared) -> list[str]:
    image_folder(d / "photos", {"amber": 4, "blue": 4})
    (d / "bad.yaml").write_text("epochs: [2\nbatch_size 4\n")
    return ["train", "photos", "--out", "run", "--config", "bad.yaml"]


def _extra_labels_empty(d: Path, s: Shared) -> list[str]:
    image_folder(d / "photos", {"amber": 4, "blue": 4})
    write_csv(d / "reviewed.csv", "")
    return [
        "train",
        "photos",
        "--out",
        "run",
        "--config",
        str(s.config()),
        "--extra-labels",
        "reviewed.csv",
    ]


def _soup_no_pool(d: Path, s: Shared) -> list[str]:
    (d / "run").mkdir()
    (d / "run" / "config.yaml").write_text("epochs: 2\n")
    return ["soup", "run"]


def _soup_bad_metric(d: Path, s: Shared) -> list[str]:
    return ["soup", str(s.run()), "--metric", "accuracy"]


def _soup_bad_recipe(d: Path, s: Shared) -> list[str]:
    return ["soup", str(s.run()), "--recipe", "stew"]


def _refit_into_itself(d: Path, s: Shared) -> list[str]:
    return ["refit", str(s.run()), "--out", str(s.run())]


def _refit_bad_recipe(d: Path, s: Shared) -> list[str]:
    return ["refit", str(s.run()), "--out", "refit", "--recipe", "best"]


def _refit_over_other_run(d: Path, s: Shared) -> list[str]:
    other = d / "other"
    image_folder(d / "photos", {"amber": 4, "blue": 4})
    from heritage.collection import Collection
    from heritage.config import TrainConfig
    from heritage.training.trainer import Trainer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(TrainConfig(**{**TINY, "epochs": 1})).fit(
            Collection.from_folder(d / "photos"), other
        )
    return ["refit", str(s.run()), "--out", "other"]


def _evaluate_bad_split(d: Path, s: Shared) -> list[str]:
    return ["evaluate", str(s.run()), "--split", "holdout"]


def _evaluate_model_unknown_labels(d: Path, s: Shared) -> list[str]:
    image_folder(d / "photos", {"red": 2, "white": 2})
    return ["evaluate", str(s.run() / "soups" / "greedy_soup"), "--data", "photos"]


def _evaluate_model_no_split_value(d: Path, s: Shared) -> list[str]:
    manifest(d, labelled_rows({"amber": 2, "blue": 2}, lambda i: "train"))
    return ["evaluate", str(s.run() / "soups" / "greedy_soup"), "--data", "manifest.csv"]


def _predict_non_images(d: Path, s: Shared) -> list[str]:
    (d / "docs").mkdir()
    (d / "docs" / "a.png").write_text("not an image")
    (d / "docs" / "b.jpg").write_bytes(b"\x00" * 10)
    return ["predict", str(s.run() / "soups" / "greedy_soup"), "docs", "--out", "p.csv"]


def _predict_empty_folder(d: Path, s: Shared) -> list[str]:
    (d / "empty").mkdir()
    return ["predict", str(s.run() / "soups" / "greedy_soup"), "empty", "--out", "p.csv"]


def _predict_missing_list(d: Path, s: Shared) -> list[str]:
    return ["predict", str(s.run() / "soups" / "greedy_soup"), "todo.txt", "--out", "p.csv"]


def _predict_not_a_model(d: Path, s: Shared) -> list[str]:
    png(d / "a.png")
    (d / "model.json").write_text("{}")
    (d / "model.safetensors").write_text("")
    return ["predict", "model", "a.png", "--out", "p.csv"]


def _predict_top_k(d: Path, s: Shared) -> list[str]:
    png(d / "a.png")
    return ["predict", str(s.run() / "soups" / "greedy_soup"), "a.png", "--top-k", "0"]


def _analyze_not_a_run(d: Path, s: Shared) -> list[str]:
    (d / "folder").mkdir()
    return ["analyse", "folder"]


def _analyze_bad_split(d: Path, s: Shared) -> list[str]:
    return ["analyse", str(s.run()), "--split", "holdout", "--out", "analysis"]


def _demo_one_class(d: Path, s: Shared) -> list[str]:
    image_folder(d / "photos", {"dance": 6})
    return ["demo", "photos", "--out", "run", "--config", str(s.config()), "--no-serve"]


# metadata ---------------------------------------------------------------------------------
def _records(transform: Callable[[pd.DataFrame], pd.DataFrame | str], *extra: str):
    def make(d: Path, s: Shared) -> list[str]:
        write_csv(d / "records.csv", transform(records_frame()))
        modalities = [] if "--modalities" in extra else ["--modalities", "tfidf,tabular"]
        return [
            "metadata",
            "fit",
            "records.csv",
            "--out",
            "model",
            "--id-column",
            "object",
            *modalities,
            "--folds",
            "3",
            *extra,
        ]

    return make


def _records_image_config(d: Path, s: Shared) -> list[str]:
    (d / "image.yaml").write_text("backbone: resnet9000\n")
    args = _records(
        _with_images(False),
        "--properties",
        "technique",
        "--modalities",
        "tfidf,image",
        "--image-config",
        "image.yaml",
    )(d, s)
    return args


def _blank_inputs(df: pd.DataFrame) -> pd.DataFrame:
    """Every third cell of the texts, fields and properties blank, a literal NaN here and there."""
    for n, column in enumerate(["museum", "technique", "place", "text_en"]):
        df.loc[(df.index + n) % 3 == 0, column] = ""
    df.loc[1, "museum"] = "NaN"
    return df


def _rare_value(df: pd.DataFrame) -> pd.DataFrame:
    df["technique"] = ["damask"] * (len(df) - 1) + ["velvet"]
    df.loc[len(df) - 1, "split"] = "train"
    return df


def _with_images(missing: bool) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df["image"] = [f"{'gone' if missing else 'img'}/{o}.png" for o in df["object"]]
        return df

    return change


def _with(column: str, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df[column] = value
        return df

    return change


def _few_rows(n: int) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda df: df.head(n)


def _duplicate_ids(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[4, "object"] = df.loc[3, "object"]
    return df


def _metadata_predict(transform: Callable[[pd.DataFrame], pd.DataFrame | str]):
    def make(d: Path, s: Shared) -> list[str]:
        write_csv(d / "new.csv", transform(records_frame(6).drop(columns=["split"])))
        return ["metadata", "predict", str(s.metadata()), "new.csv", "--out", "p.csv"]

    return make


def _one_class_evaluate(d: Path, s: Shared) -> list[str]:
    image_folder(d / "photos", {"amber": 3})
    return ["evaluate", str(s.run() / "soups" / "greedy_soup"), "--data", "photos"]


def _empty_class_folder(d: Path, s: Shared) -> list[str]:
    image_folder(d / "photos", {"amber": 4, "blue": 4})
    (d / "photos" / "green").mkdir()
    return ["train", "photos", "--out", "run", "--config", str(s.config())]


def _refit_overwrite(d: Path, s: Shared) -> list[str]:
    args = _refit_over_other_run(d, s)
    return [*args, "--overwrite"]


def _metadata_predict_not_a_model(d: Path, s: Shared) -> list[str]:
    (d / "model").mkdir()
    write_csv(d / "new.csv", records_frame(6))
    return ["metadata", "predict", "model", "new.csv"]


# similarity ---------------------------------------------------------------------------------
def _similarity(
    command: str,
    triplets: Callable[[pd.DataFrame], pd.DataFrame | str] | None,
    items: Callable[[pd.DataFrame], pd.DataFrame | str] | None = None,
    *extra: str,
):
    def make(d: Path, s: Shared) -> list[str]:
        items_csv, triplets_csv = items_and_triplets(d)
        if triplets is not None:
            write_csv(triplets_csv, triplets(pd.read_csv(triplets_csv, dtype=str)))
        if items is not None:
            write_csv(items_csv, items(pd.read_csv(items_csv, dtype=str)))
        args = [
            "similarity",
            command,
            "triplets.csv",
            "--items",
            "items.csv",
            "--cache-dir",
            "cache",
            *extra,
        ]
        return args + (["--out", "model"] if command == "fit" else [])

    return make


def _unknown_ids(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(
        reference="x" + df["reference"], closer="y" + df["closer"], farther="z" + df["farther"]
    )


def _some_unknown(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[1, "farther"] = "99"
    return df


def _index(make_collection: Callable[[Path], str], *extra: str):
    def make(d: Path, s: Shared) -> list[str]:
        return [
            "index",
            "build",
            make_collection(d),
            "--out",
            "index",
            "--cache-dir",
            "cache",
            *extra,
        ]

    return make


def _index_empty_folder(d: Path) -> str:
    (d / "coll").mkdir()
    (d / "coll" / "readme.txt").write_text("no images here")
    return "coll"


def _index_all_broken(d: Path) -> str:
    (d / "coll").mkdir()
    for i in range(3):
        (d / "coll" / f"{i}.png").write_text("not an image")
    return "coll"


def _index_csv(text: str) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        write_csv(d / "coll.csv", text)
        return "coll.csv"

    return make


def _index_images(d: Path) -> str:
    for i in range(3):
        png(d / "coll" / f"{i}.png", seed=i)
    return "coll"


def _similar(make_query: Callable[[Path], str], index: str = "index", *extra: str):
    def make(d: Path, s: Shared) -> list[str]:
        return ["similar", make_query(d), "--index", index, "--cache-dir", "cache", *extra]

    return make


def _query_png(d: Path) -> str:
    return str(png(d / "q.png").name)


def _query_broken(d: Path) -> str:
    (d / "q.png").write_text("not an image")
    (d / "index").mkdir()
    return "q.png"


def _similar_broken_query(d: Path, s: Shared) -> list[str]:
    (d / "q.png").write_text("not an image")
    return ["similar", "q.png", "--index", str(s.index()), "--cache-dir", "cache"]


# knowledge graph ----------------------------------------------------------------------------
def _kg_load_garbage(d: Path, s: Shared) -> list[str]:
    (d / "data.ttl").write_text("this is not turtle <<< .")
    return ["kg", "load", "data.ttl", "--store", "store"]


def _kg_load_unknown_format(d: Path, s: Shared) -> list[str]:
    (d / "data.xyz").write_text("<a> <b> <c> .")
    return ["kg", "load", "data.xyz", "--store", "store"]


def _kg_export(text: str, *extra: str):
    def make(d: Path, s: Shared) -> list[str]:
        write_csv(d / "predictions.csv", text)
        return [
            "kg",
            "export",
            "predictions.csv",
            "--model",
            str(s.metadata()),
            "-o",
            "p.ttl",
            *extra,
        ]

    return make


def _kg_export_records(text: str, *extra: str):
    def make(d: Path, s: Shared) -> list[str]:
        write_csv(d / "records.csv", text)
        return ["kg", "export", "--records", "records.csv", "-o", "r.ttl", *extra]

    return make


def _kg_export_model_records(d: Path, s: Shared) -> list[str]:
    from heritage.metadata import MetadataPredictor

    write_csv(d / "new.csv", records_frame(4))
    write_csv(d / "predictions.csv", MetadataPredictor.load(s.metadata()).predict(d / "new.csv"))
    write_csv(d / "records.csv", "")
    return ["kg", "export", "predictions.csv", "--records", "records.csv", "--model",
            str(s.metadata()), "-o", "r.ttl"]  # fmt: skip


def _kg_store_command(*args: str):
    def make(d: Path, s: Shared) -> list[str]:
        return [*args, "--store", "nostore"]

    return make


def _kg_query_bad(d: Path, s: Shared) -> list[str]:
    (d / "data.nt").write_text("<http://a/x> <http://a/p> <http://a/y> .\n")
    from heritage.kg import KnowledgeGraph

    kg = KnowledgeGraph(d / "store")
    kg.load(d / "data.nt")
    kg.flush()
    kg.close()
    return ["kg", "query", "SELEKT ?s WHERE { ?s ?p ?o }", "--store", "store"]


def _kg_validate_garbage(d: Path, s: Shared) -> list[str]:
    (d / "data.ttl").write_text("not turtle at all <<<")
    return ["kg", "validate", "data.ttl"]


def _explore_no_store(d: Path, s: Shared) -> list[str]:
    return ["explore", "--store", "nostore", "--read-only", "--port", "0"]


_PNG_ROWS = "image,label\n" + "\n".join(f"img/a{i}.png,a" for i in range(3))
CASES: list[Case] = [
    # collections (train; demo and evaluate --data read them the same way)
    Case("one-class", "a class folder collection with one class", _one_class),
    Case("one-class-manifest", "a manifest whose label column has one value", _one_class_manifest),
    Case(
        "two-per-class",
        "two images per class and no split (too few to split three ways)",
        _two_per_class_no_split,
    ),
    Case("unreadable", "every image unreadable (text saved as .png)", _all_unreadable),
    Case("non-images", "class folders holding only non-image files", _non_images),
    Case("loose-images", "images directly in the folder, no class sub-folders", _loose_images),
    Case("label-empty", "a manifest whose label column is empty on every row", _label_all_empty),
    Case("blank-cells", "blank image and label cells, a literal NaN label", _blank_cells),
    Case("missing-files", "a manifest naming files that do not exist", _missing_files),
    Case("empty-csv", "an empty (0-byte) manifest", _empty_csv),
    Case("header-only", "a manifest with only a header row", _header_only),
    Case(
        "duplicate-images",
        "the same image on two rows, with different labels and splits",
        _duplicate_images,
    ),
    Case(
        "train-test-only", "a manifest with only train and test splits (no val)", _only_train_test
    ),
    Case("train-only", "a manifest whose split column has only train", _only_train),
    Case("test-only", "a manifest whose split column has only test", _only_test),
    Case("class-only-in-test", "a class that appears only in the test split", _class_only_in_test),
    Case("bad-split", "a split value that is a typo (tset)", _bad_split_value),
    Case("wrong-column", "--label-column naming a column the manifest lacks", _wrong_column),
    Case("no-source", "a collection path that does not exist", _train("nowhere")),
    Case("empty-class-folder", "a class sub-folder without images", _empty_class_folder),
    Case(
        "missing-weights",
        "--weights naming a file that does not exist",
        _option("--weights", "gone.pth"),
    ),
    Case(
        "unknown-backbone",
        "--backbone with a name timm does not know",
        _option("--backbone", "efficientnet_b99"),
    ),
    Case("bad-sampler", "--sampler with an unknown name", _option("--sampler", "fair")),
    Case("bad-mix", "--mix with an unknown method", _option("--mix", "blend")),
    Case("bad-loss", "--loss with an unknown name", _option("--loss", "hinge")),
    Case("bad-augment", "--augment with an unknown preset", _option("--augment", "heavy")),
    Case("bad-resize", "--resize-mode with an unknown mode", _option("--resize-mode", "zoom")),
    Case("bad-epochs", "--epochs 0", _option("--epochs", "0")),
    Case("bad-val-fraction", "--val-fraction 1.5", _option("--val-fraction", "1.5")),
    Case("bad-device", "--device with an unknown name", _option("--device", "tpu")),
    Case("bad-precision", "--precision with an unknown name", _option("--precision", "fp8")),
    Case("bad-yaml", "a --config file that is not valid YAML", _bad_yaml),
    Case("extra-labels-empty", "an empty --extra-labels file", _extra_labels_empty),
    Case("demo-one-class", "demo on a collection with one class", _demo_one_class),
    # runs
    Case("soup-no-pool", "soup on a folder that has no checkpoint pool", _soup_no_pool),
    Case("soup-bad-metric", "soup --metric with an unknown metric", _soup_bad_metric),
    Case("soup-bad-recipe", "soup --recipe with an unknown recipe", _soup_bad_recipe),
    Case("refit-itself", "refit --out naming the run itself", _refit_into_itself),
    Case("refit-bad-recipe", "refit --recipe with an unknown soup", _refit_bad_recipe),
    Case("refit-over-run", "refit --out naming another, finished run", _refit_over_other_run),
    Case("evaluate-bad-split", "evaluate --split with an unknown split", _evaluate_bad_split),
    Case(
        "evaluate-new-labels",
        "evaluate a model file on a collection with other classes",
        _evaluate_model_unknown_labels,
    ),
    Case(
        "evaluate-no-test",
        "evaluate a model file on a manifest without test rows",
        _evaluate_model_no_split_value,
    ),
    Case(
        "evaluate-one-class", "evaluate a model file on a folder of one class", _one_class_evaluate
    ),
    Case("refit-overwrite", "refit --out naming another run, with --overwrite", _refit_overwrite),
    Case(
        "predict-non-images",
        "predict on a folder of files that are not images",
        _predict_non_images,
    ),
    Case("predict-empty", "predict on an empty folder", _predict_empty_folder),
    Case(
        "predict-missing-list", "predict on a .txt list that does not exist", _predict_missing_list
    ),
    Case("predict-not-a-model", "predict with a model file that is not one", _predict_not_a_model),
    Case("predict-top-k", "predict --top-k 0", _predict_top_k),
    Case("analyse-not-a-run", "analyse a folder that is not a run", _analyze_not_a_run),
    Case("analyse-bad-split", "analyse --split with an unknown split", _analyze_bad_split),
    # metadata
    Case(
        "records-empty",
        "an empty (0-byte) records CSV",
        _records(lambda df: "", "--properties", "technique"),
    ),
    Case(
        "records-header-only",
        "a records CSV with only a header row",
        _records(lambda df: ",".join(df.columns) + "\n", "--properties", "technique"),
    ),
    Case(
        "records-wrong-property",
        "--properties naming a column the table lacks",
        _records(lambda df: df, "--properties", "colour"),
    ),
    Case(
        "records-property-empty",
        "a property column empty on every row",
        _records(_with("technique", ""), "--properties", "technique"),
    ),
    Case(
        "records-one-value",
        "a property with one value",
        _records(_with("technique", "damask"), "--properties", "technique"),
    ),
    Case(
        "records-one-value-of-two",
        "two properties, one of them with one value",
        _records(_with("technique", "damask"), "--properties", "technique,place"),
    ),
    Case(
        "records-empty-text",
        "a text column empty on every row",
        _records(_with("text_en", ""), "--properties", "technique"),
    ),
    Case(
        "records-empty-text-tfidf",
        "a text column empty on every row, text modality only",
        _records(_with("text_en", ""), "--properties", "technique", "--modalities", "tfidf"),
    ),
    Case(
        "records-blank-cells",
        "blank cells and NaN in every column",
        _records(
            lambda df: df.mask(np.arange(df.size).reshape(df.shape) % 4 == 1, ""),
            "--properties",
            "technique",
        ),
    ),
    Case(
        "records-duplicate-ids",
        "two records with the same id",
        _records(_duplicate_ids, "--properties", "technique"),
    ),
    Case(
        "records-few-rows",
        "ten records, three of them for training",
        _records(_few_rows(10), "--properties", "technique"),
    ),
    Case(
        "records-rare-value",
        "a property value known on one record only",
        _records(_rare_value, "--properties", "technique"),
    ),
    Case(
        "records-all-test",
        "every record in the test split",
        _records(_with("split", "test"), "--properties", "technique"),
    ),
    Case(
        "records-stop-words",
        "texts of stop words only, text modality only",
        _records(
            _with("text_en", "the of and"), "--properties", "technique", "--modalities", "tfidf"
        ),
    ),
    Case(
        "records-blank-inputs",
        "blank cells in texts, fields and properties, a NaN cell",
        _records(_blank_inputs, "--properties", "technique,place"),
    ),
    Case(
        "records-missing-images",
        "an image column naming files that do not exist",
        _records(_with_images(True), "--properties", "technique", "--modalities", "image"),
    ),
    Case(
        "records-image-backbone",
        "an --image-config naming an unknown backbone",
        _records_image_config,
    ),
    Case(
        "records-no-inputs",
        "no text, image or tabular column",
        _records(
            lambda df: df[["object", "technique", "split"]],
            "--properties",
            "technique",
            "--modalities",
            "tabular",
        ),
    ),
    Case(
        "records-bad-modality",
        "--modalities with an unknown name",
        _records(lambda df: df, "--properties", "technique", "--modalities", "bert"),
    ),
    Case(
        "records-bad-stacker",
        "--stacker with an unknown name",
        _records(lambda df: df, "--properties", "technique", "--stacker", "vote"),
    ),
    Case(
        "records-bad-calibration",
        "--calibration with an unknown name",
        _records(lambda df: df, "--properties", "technique", "--calibration", "platt"),
    ),
    Case(
        "records-folds-1",
        "--folds 1",
        _records(lambda df: df, "--properties", "technique", "--folds", "1"),
    ),
    Case(
        "records-wrong-id-column",
        "--id-column naming a column the table lacks",
        _records(lambda df: df, "--properties", "technique", "--id-column", "ref"),
    ),
    Case(
        "records-wrong-text-column",
        "--text-columns naming a column the table lacks",
        _records(lambda df: df, "--properties", "technique", "--text-columns", "text_fr"),
    ),
    Case(
        "records-wrong-split-column",
        "--split-column naming a column the table lacks",
        _records(lambda df: df, "--properties", "technique", "--split-column", "fold"),
    ),
    Case(
        "predict-records-missing-column",
        "metadata predict on a table without a text column",
        _metadata_predict(lambda df: df.drop(columns=["text_en"])),
    ),
    Case(
        "predict-records-empty",
        "metadata predict on an empty CSV",
        _metadata_predict(lambda df: ""),
    ),
    Case(
        "predict-records-header-only",
        "metadata predict on a CSV with only a header",
        _metadata_predict(lambda df: ",".join(df.columns) + "\n"),
    ),
    Case(
        "predict-records-duplicate-ids",
        "metadata predict on a table with a repeated id",
        _metadata_predict(_duplicate_ids),
    ),
    Case(
        "predict-records-not-a-model",
        "metadata predict with a folder that is not a model",
        _metadata_predict_not_a_model,
    ),
    # similarity
    Case(
        "triplets-all-unknown",
        "a triplet file whose ids are all unknown",
        _similarity("agreement", _unknown_ids),
    ),
    Case(
        "triplets-some-unknown",
        "a triplet file with one unknown id",
        _similarity("agreement", _some_unknown),
    ),
    Case(
        "triplets-empty", "an empty (0-byte) triplet file", _similarity("agreement", lambda df: "")
    ),
    Case(
        "triplets-header-only",
        "a triplet file with only a header",
        _similarity("agreement", lambda df: "reference,closer,farther\n"),
    ),
    Case(
        "triplets-wrong-columns",
        "a triplet file with other column names",
        _similarity("agreement", lambda df: df.rename(columns={"closer": "near"})),
    ),
    Case(
        "items-empty", "an empty (0-byte) item table", _similarity("agreement", None, lambda df: "")
    ),
    Case(
        "items-header-only",
        "an item table with only a header",
        _similarity("agreement", None, lambda df: "id,image\n"),
    ),
    Case(
        "items-no-images",
        "an item table without a column of image paths",
        _similarity("agreement", None, lambda df: df.assign(image="x")),
    ),
    Case(
        "items-missing-files",
        "an item table naming files that do not exist",
        _similarity("agreement", None, lambda df: df.assign(image="gone/" + df["image"])),
    ),
    Case(
        "items-duplicate-ids",
        "an item table with a duplicated id",
        _similarity("agreement", None, lambda df: df.assign(id=["0", *df["id"][:-1]])),
    ),
    Case(
        "triplets-too-few",
        "similarity fit on two triplets (too few to hold some out)",
        _similarity("fit", lambda df: df.head(2)),
    ),
    Case(
        "similarity-bad-contexts",
        "similarity fit --contexts with an unknown kind",
        _similarity("fit", None, None, "--contexts", "museums"),
    ),
    Case(
        "similarity-bad-loss",
        "similarity fit --loss with an unknown loss",
        _similarity("fit", None, None, "--loss", "hinge"),
    ),
    Case(
        "similarity-bad-backbone",
        "similarity agreement --backbone with an unknown name",
        _similarity("agreement", None, None, "--backbone", "resnet9000"),
    ),
    Case("index-no-images", "index build on a folder without images", _index(_index_empty_folder)),
    Case(
        "index-all-broken",
        "index build on a folder whose images are all unreadable",
        _index(_index_all_broken),
    ),
    Case("index-empty-csv", "index build on an empty (0-byte) CSV", _index(_index_csv(""))),
    Case(
        "index-header-only",
        "index build on a CSV with only a header",
        _index(_index_csv("image,label\n")),
    ),
    Case(
        "index-missing-files",
        "index build on a CSV naming files that do not exist",
        _index(_index_csv(_PNG_ROWS)),
    ),
    Case(
        "index-bad-kind",
        "index build --kind with an unknown kind",
        _index(_index_images, "--kind", "hnsw"),
    ),
    Case(
        "index-bad-backbone",
        "index build --backbone with an unknown name",
        _index(_index_images, "--backbone", "resnet9000"),
    ),
    Case(
        "similar-no-index",
        "similar with an index folder that does not exist",
        _similar(_query_png, "nowhere"),
    ),
    Case(
        "similar-empty-index", "similar with an empty folder as the index", _similar(_query_broken)
    ),
    Case(
        "similar-broken-query",
        "similar with a query file that is not an image",
        _similar_broken_query,
    ),
    Case("similar-k-0", "similar --k 0", _similar(_query_png, "index", "--k", "0")),
    Case(
        "similarity-context-column",
        "similarity fit --context-column naming a missing column",
        _similarity("fit", None, None, "--context-column", "light"),
    ),
    # knowledge graph
    Case("kg-load-garbage", "kg load on a .ttl file that is not Turtle", _kg_load_garbage),
    Case("kg-load-format", "kg load on a file with an unknown extension", _kg_load_unknown_format),
    Case("kg-export-empty", "kg export on an empty predictions CSV", _kg_export("")),
    Case(
        "kg-export-header-only",
        "kg export on a predictions CSV with only a header",
        _kg_export("record,property,value,confidence\n"),
    ),
    Case(
        "kg-export-wrong-columns",
        "kg export on a CSV that is not a predictions table",
        _kg_export("a,b\n1,2\n"),
    ),
    Case("kg-export-records-empty", "kg export --records on an empty CSV", _kg_export_records("")),
    Case(
        "kg-export-records-dup",
        "kg export --records with duplicated ids",
        _kg_export_records("record,museum\nr1,vam\nr1,met\n", "--concepts", "museum"),
    ),
    Case(
        "kg-export-records-column",
        "kg export --records --concepts naming a missing column",
        _kg_export_records("record,museum\nr1,vam\n", "--concepts", "colour"),
    ),
    Case(
        "kg-export-model-records-empty",
        "kg export of a metadata model's predictions with an empty --records",
        _kg_export_model_records,
    ),
    Case(
        "kg-reviews-no-store",
        "kg reviews on a store that does not exist",
        _kg_store_command("kg", "reviews", "-o", "reviewed.csv"),
    ),
    Case(
        "kg-records-no-store",
        "kg records on a store that does not exist",
        _kg_store_command("kg", "records", "-o", "records.csv"),
    ),
    Case(
        "kg-query-no-store",
        "kg query on a store that does not exist",
        _kg_store_command("kg", "query", "SELECT * WHERE { ?s ?p ?o }"),
    ),
    Case("kg-query-bad", "kg query with a SPARQL syntax error", _kg_query_bad),
    Case("kg-validate-garbage", "kg validate on a file that is not RDF", _kg_validate_garbage),
    Case("explore-no-store", "explore a store that does not exist", _explore_no_store),
]


# ----------------------------------------------------------------------------- running
@dataclass
class Outcome:
    case: Case
    command: str
    exit_code: int
    message: str
    uncaught: str | None  # "Type: message" of an exception that escaped, else None
    seconds: float
    warned: list[str]  # warnings the command printed (CollectionWarning: skipped images, ...)


def _command_line(args: list[str], folder: Path, shared: Path) -> str:
    shown = []
    for a in args:
        a = a.replace(str(shared), "SHARED")
        shown.append(a if re.fullmatch(r"[\w./:=,+-]+", a) else repr(a))
    return "heritage " + " ".join(shown)


def run_case(case: Case, shared: Shared, base: Path) -> Outcome:
    from typer.testing import CliRunner

    from heritage.cli import app

    folder = base / case.name
    folder.mkdir()
    here = Path.cwd()
    os.chdir(folder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = case.make(folder, shared)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = CliRunner().invoke(app, args, env=ENV, prog_name="heritage")
        seconds = time.perf_counter() - start
    finally:
        os.chdir(here)
    exc = result.exception
    uncaught = None
    if exc is not None and not isinstance(exc, SystemExit):
        uncaught = f"{type(exc).__name__}: {exc}"

    def local(text: str) -> str:
        text = text.replace(str(folder) + os.sep, "").replace(str(folder), ".")
        return text.replace(str(shared.base), "SHARED")

    warned = [
        f"{w.category.__name__}: {local(str(w.message))}"
        for w in caught
        if not issubclass(w.category, DeprecationWarning | FutureWarning)
    ]
    return Outcome(
        case,
        _command_line(args, folder, shared.base),
        result.exit_code,
        local(result.output).strip(),
        uncaught,
        seconds,
        list(dict.fromkeys(warned)),
    )


def _cell(text: str, limit: int = 700) -> str:
    """One table cell: one line, the frame click draws round usage errors dropped, a long
    text cut in the middle (its start says what happened, its end how it ended)."""
    text = re.sub("[\u2500-\u257f]", " ", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit // 2] + " … " + text[-(limit // 2) :]
    return text.replace("|", "\\|").replace("<", "&lt;")


def write_markdown(outcomes: list[Outcome], path: Path) -> None:
    uncaught = [o for o in outcomes if o.uncaught]
    lines = [
        "# What the user sees on bad input",
        "",
        "Generated by `benchmarks/robustness.py` (rerun it to refresh this page; do not edit "
        "by hand). Each row is one bad input, made in a temporary folder and run through the "
        "command line in process; `SHARED` is a tiny trained run, metadata model or config "
        "the cases share. Exit code 2 is heritage's own error (one message, no traceback); "
        "TRACEBACK marks an exception that escaped.",
        "",
        f"{len(outcomes)} bad inputs: {sum(o.exit_code == 2 and not o.uncaught for o in outcomes)} "
        f"refused with a heritage message (exit 2), {sum(o.exit_code == 0 for o in outcomes)} "
        f"accepted (exit 0), {len(uncaught)} uncaught exception(s).",
        "",
        "| bad input | command | what the user sees (message, exit code) |",
        "|---|---|---|",
    ]
    for o in outcomes:
        if o.uncaught:
            seen = _cell(f"**TRACEBACK** {o.uncaught} (exit {o.exit_code})")
        else:
            seen = _cell(f"{o.message} (exit {o.exit_code})")
        if o.warned:
            seen += "<br>warned: " + _cell(" ".join(o.warned), 300)
        lines.append(f"| {_cell(o.case.bad_input)} | `{_cell(o.command, 300)}` | {seen} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "robustness.md")
    parser.add_argument("--only", nargs="*", default=None, help="run cases whose name has a word")
    args = parser.parse_args()
    os.environ.update(ENV)
    cases = [c for c in CASES if not args.only or any(w in c.name for w in args.only)]
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="heritage-robustness-") as tmp:
        base = Path(tmp)
        shared = Shared(base / "shared")
        shared.base.mkdir()
        for case in cases:
            outcome = run_case(case, shared, base)
            flag = "UNCAUGHT " + outcome.uncaught if outcome.uncaught else ""
            first = outcome.message.splitlines()[-1][:150] if outcome.message else ""
            print(
                f"{case.name:<32} exit {outcome.exit_code} {outcome.seconds:5.1f}s {flag or first}"
            )
            outcomes.append(outcome)
    write_markdown(outcomes, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
