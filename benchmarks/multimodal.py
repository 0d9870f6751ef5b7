"""Multimodal metadata benchmark (issue: multimodal metadata assignment, SILKNOW): each
modality alone and their late fusion, test macro-F1 per property, ECE of the fused
confidences, fit + predict time.

    python benchmarks/multimodal.py                                  # everything, seeds 0 1 2
    python benchmarks/multimodal.py --methods text_tfidf tabular fusion --seeds 0 --dry-run

silknow-records: the records' own train/dev/test split; train fits the modalities and the
stacker (out of fold), dev chooses the stacker and calibrates, test is read once per method.
hieroglyphs-unas: one record per crop (its image), properties `category` and `sign`, the
source `page` as a tabular field; a seeded share of each property's values is hidden in every
split (as catalogue gaps), the model sees only what is left, and test is scored against the
true labels. Seeds change the fold split and LightGBM's seeds (and, for hieroglyphs, which
labels are hidden); the text models are deterministic. `--dry-run` prints the records
instead of writing benchmarks/results/multimodal.json.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from heritage.evaluation import evaluate, expected_calibration_error
from heritage.metadata import (
    FusionConfig,
    ImageConfig,
    ImageModel,
    MetadataPredictor,
    Modality,
    RecordSpec,
    RecordTable,
    Targets,
    make_modality,
)
from heritage.progress import console
from heritage.runtime import configure_threads, hardware_label, resolve_device

try:  # run as a script (python benchmarks/multimodal.py) or as a module
    from records import RecordBook
except ImportError:
    from benchmarks.records import RecordBook

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("HERITAGE_DATA", ROOT.parent / "shared" / "datasets"))
RUNS = ROOT / "benchmarks" / "runs" / "multimodal"

SILKNOW = "silknow-records"
GLYPHS = "hieroglyphs-unas"
SILKNOW_PROPERTIES = ("place", "timespan", "technique", "material")
GLYPH_PROPERTIES = ("category", "sign")
TEXT_METHODS = {"text_tfidf": "tfidf", "text_e5": "e5", "text_use": "use"}
METHODS = (*TEXT_METHODS, "tabular", "fusion", "peer_autogluon")


# --------------------------------------------------------------------------- scoring


def _prior_fill(proba: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Rows a method abstained on (NaN) get the training prior: a method is scored on every
    labelled test record, and abstaining must not be free."""
    proba = proba.copy()
    absent = np.isnan(proba).any(axis=1)
    proba[absent] = prior
    return proba


def score(
    truth: RecordTable,
    proba: dict[str, np.ndarray],
    classes: dict[str, list[str]],
    priors: dict[str, np.ndarray],
) -> tuple[dict[str, float], dict[str, float]]:
    """Macro-F1 and ECE per property on the records whose value is known in ``truth``."""
    targets = Targets.encode(truth, classes)
    f1, ece = {}, {}
    for prop, p in proba.items():
        y = targets.codes[prop]
        rows = y >= 0
        filled = _prior_fill(p[rows], priors[prop])
        f1[prop] = evaluate(y[rows], filled, classes[prop]).macro_f1
        ece[prop] = expected_calibration_error(y[rows], filled)
    return f1, ece


def uncalibrated(predictor: MetadataPredictor, table: RecordTable) -> dict[str, np.ndarray]:
    """The stacker's probabilities before temperature scaling (to show what calibration did)."""
    blocks = predictor.modality_proba(table)
    return {
        prop: predictor.stackers_[prop].predict_proba(
            [blocks[m.name][prop] for m in predictor.modalities_]
        )
        for prop in predictor.classes_
    }


def priors_of(train: RecordTable, classes: dict[str, list[str]]) -> dict[str, np.ndarray]:
    targets = Targets.encode(train, classes)
    out = {}
    for prop, codes in targets.codes.items():
        counts = np.bincount(codes[codes >= 0], minlength=len(classes[prop])).astype(float)
        out[prop] = counts / counts.sum()
    return out


def record(
    book: RecordBook,
    dataset: str,
    method: str,
    f1: dict[str, float],
    ece: dict[str, float] | None = None,
) -> None:
    for prop, value in f1.items():
        book.add(dataset, method, f"macro_f1_{prop}", value)
    book.add(dataset, method, "macro_f1_avg", float(np.mean(list(f1.values()))))
    if ece is not None:
        for prop, value in ece.items():
            book.add(dataset, method, f"ece_{prop}", value)
        book.add(dataset, method, "ece", float(np.mean(list(ece.values()))))


# --------------------------------------------------------------------------- runs


def run_predictor(
    book: RecordBook,
    dataset: str,
    table: RecordTable,
    truth: RecordTable,
    modalities: Sequence[Modality],
    methods: dict[str, str],
    seed: int,
    with_fusion: bool,
) -> dict[str, float]:
    """Fit one predictor with every requested modality; score each modality alone (its
    refit on all training records) and the fusion on test. ``methods``: benchmark method
    name -> modality name. Returns the average macro-F1 per method, for the log."""
    t0 = time.perf_counter()
    predictor = MetadataPredictor(list(modalities), FusionConfig(seed=seed)).fit(table)
    predictor.predict(table)  # every record, as `heritage metadata predict` does
    seconds = time.perf_counter() - t0

    test = table.split("test")
    test_truth = truth.split("test")
    priors = priors_of(table.split("train"), predictor.classes_)
    single = predictor.modality_proba(test)
    summary = {}
    for method, name in methods.items():
        f1, _ = score(test_truth, single[name], predictor.classes_, priors)
        record(book, dataset, method, f1)
        summary[method] = float(np.mean(list(f1.values())))
    if with_fusion:
        f1, ece = score(test_truth, predictor.predict_proba(test), predictor.classes_, priors)
        record(book, dataset, "fusion", f1, ece)
        _, raw_ece = score(test_truth, uncalibrated(predictor, test), predictor.classes_, priors)
        book.add(dataset, "fusion", "ece_uncalibrated", float(np.mean(list(raw_ece.values()))))
        book.add(dataset, "fusion", "fit_predict_seconds", seconds)
        for prop, sel in predictor.selection_.items():
            book.add(
                dataset, "fusion", f"stacker_lightgbm_{prop}", float(sel["chosen"] == "lightgbm")
            )
        summary["fusion"] = float(np.mean(list(f1.values())))
        summary["ece"] = float(np.mean(list(ece.values())))
        summary["seconds"] = seconds
        for line in predictor.summary():
            console.print(f"  {line}", markup=False)
    return summary


def limit_per_split(df: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """The first ``limit`` rows of each split (smoke runs only)."""
    if limit is None:
        return df
    return df.groupby("split", sort=False).head(limit).reset_index(drop=True)


def silknow(
    book: RecordBook,
    methods: Sequence[str],
    seeds: Sequence[int],
    cache: Path,
    limit: int | None = None,
) -> None:
    path = DATA / SILKNOW / "records.csv"
    df = limit_per_split(pd.read_csv(path, dtype=str, keep_default_na=False), limit)
    spec = RecordSpec.infer(df.columns, SILKNOW_PROPERTIES, id_column="object")
    table = RecordTable.from_frame(df, spec, source=str(path))
    base = {m: TEXT_METHODS[m] for m in methods if m in TEXT_METHODS}
    if "tabular" in methods:
        base["tabular"] = "tabular"
    if "fusion" in methods and not base:
        base = {"text_tfidf": "tfidf", "tabular": "tabular"}
    for seed in seeds if base else []:
        console.rule(f"{SILKNOW} · seed {seed}")
        mods = [make_modality(name, seed=seed, cache_dir=cache) for name in base.values()]
        names = {method: mod.name for method, mod in zip(base, mods, strict=True)}
        report = {m: n for m, n in names.items() if m in methods}
        summary = run_predictor(
            book, SILKNOW, table, table, mods, report, seed, "fusion" in methods
        )
        console.print({k: round(v, 4) for k, v in summary.items()})
        if not book.dry_run:
            book.write()  # after every seed: an interrupted benchmark keeps its records
    if "peer_autogluon" in methods:
        autogluon(book, table, seeds)


def autogluon(book: RecordBook, table: RecordTable, seeds: Sequence[int]) -> None:
    """AutoGluon-Tabular per property on the same features (museum, n_images, the other
    properties, both texts as text columns), if it is installed; skipped otherwise."""
    try:
        from autogluon.tabular import TabularPredictor
    except ImportError as exc:
        console.print(
            f"[yellow]skipped peer_autogluon[/]: autogluon.tabular not importable ({exc})"
        )
        return
    import tempfile

    frame = table.frame.replace("", np.nan)
    frame["n_images"] = pd.to_numeric(frame["n_images"])
    train = frame[frame["split"] == "train"]
    tune = frame[frame["split"] == "val"]
    test = frame[frame["split"] == "test"]
    features = ["museum", "n_images", "text_en", "text_es", *SILKNOW_PROPERTIES]
    for seed in seeds:
        f1 = {}
        for prop in SILKNOW_PROPERTIES:
            cols = [c for c in features if c != prop] + [prop]
            with tempfile.TemporaryDirectory() as tmp:
                model = TabularPredictor(
                    label=prop, eval_metric="f1_macro", path=tmp, verbosity=0
                ).fit(
                    train[cols].dropna(subset=[prop]),
                    tuning_data=tune[cols].dropna(subset=[prop]),
                    time_limit=120,
                    ag_args_fit={"random_seed": seed},
                )
                known = test.dropna(subset=[prop])
                pred = model.predict(known[cols[:-1]])
                classes = sorted(set(train[prop].dropna()) | set(known[prop]))
                index = {c: i for i, c in enumerate(classes)}
                y = np.array([index[v] for v in known[prop]])
                onehot = np.eye(len(classes))[[index[v] for v in pred]]
                f1[prop] = evaluate(y, onehot, classes).macro_f1
        record(book, SILKNOW, "peer_autogluon", f1)
        console.print({"peer_autogluon": round(float(np.mean(list(f1.values()))), 4)})


def hieroglyphs(
    book: RecordBook,
    methods: Sequence[str],
    seeds: Sequence[int],
    hidden: float,
    limit: int | None = None,
) -> None:
    manifest = DATA / GLYPHS / "manifest.csv"
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df = limit_per_split(df[df["split"] != "unused"].reset_index(drop=True), limit)
    df.insert(0, "record", df["image"])  # the id; the image column holds the path to read
    spec = RecordSpec(
        id_column="record",
        properties=GLYPH_PROPERTIES,
        image_columns=("image",),
        tabular_columns=("page",),
        split_column="split",
    )
    truth = RecordTable.from_frame(df, spec, image_root=manifest.parent)
    image = ImageModel(ImageConfig(image_size=128, resize_mode="pad"))  # features shared
    base = {}
    if "image" in methods or "fusion" in methods:
        base["image"] = "image"
    if "tabular" in methods or "fusion" in methods:
        base["tabular"] = "tabular"
    for seed in seeds:
        console.rule(f"{GLYPHS} · seed {seed} · {hidden:.0%} of labels hidden")
        rng = np.random.default_rng(seed)
        masked = df.copy()
        for prop in GLYPH_PROPERTIES:
            masked.loc[rng.random(len(masked)) < hidden, prop] = ""
        table = RecordTable.from_frame(masked, spec, image_root=manifest.parent)
        mods = [image if name == "image" else make_modality(name, seed=seed) for name in base]
        report = {m: m for m in base if m in methods}
        summary = run_predictor(book, GLYPHS, table, truth, mods, report, seed, "fusion" in methods)
        console.print({k: round(v, 4) for k, v in summary.items()})
        if not book.dry_run:
            book.write()


class Book(RecordBook):
    """RecordBook that can print instead of write (smoke runs must not touch results/)."""

    def __init__(self, topic: str, hardware: str, dry_run: bool) -> None:
        super().__init__(topic, hardware)
        self.dry_run = dry_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=[SILKNOW, GLYPHS])
    parser.add_argument(
        "--methods", nargs="+", default=[*METHODS, "image"], choices=[*METHODS, "image"]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--hidden", type=float, default=0.3, help="hieroglyphs: share hidden")
    parser.add_argument("--cache", type=Path, default=RUNS / "embeddings")
    parser.add_argument("--topic", default="multimodal", help="results file name")
    parser.add_argument("--dry-run", action="store_true", help="print records, write nothing")
    parser.add_argument(
        "--limit", type=int, help="smoke runs: first N records per split (implies --dry-run)"
    )
    args = parser.parse_args()

    args.dry_run = args.dry_run or args.limit is not None
    configure_threads()
    # the image features use a GPU when there is one; everything else runs on the CPU
    device = resolve_device("auto") if GLYPHS in args.datasets else torch.device("cpu")
    book = Book(args.topic, hardware_label(device), args.dry_run)
    if SILKNOW in args.datasets:
        silknow(book, args.methods, args.seeds, args.cache, args.limit)
    if GLYPHS in args.datasets:
        hieroglyphs(book, args.methods, args.seeds, args.hidden, args.limit)
    if args.dry_run:
        rows = pd.DataFrame(book.records())[["dataset", "method", "metric", "mean", "std"]]
        console.print(rows.to_string(index=False), markup=False)
        console.print("dry run: nothing written")
    else:
        console.print(f"records written to {book.write()}")


if __name__ == "__main__":
    main()
