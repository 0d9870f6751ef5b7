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
true labels; methods `image` (frozen features), `tabular`, `fusion`, and `image_multitask` /
`fusion_multitask` (the fine-tuned multi-task image model, alone and fused with `tabular`;
3 out-of-fold splits, so 4 fine-tunes per seed). `hieroglyphs-unas/grouped-test` scores the
fitted image models on multi-image records (every test crop of one sign on one page) with
each aggregation, `mean` and `max_confidence`. Seeds change the fold split and LightGBM's
seeds (and, for hieroglyphs, which labels are hidden and the fine-tunes' seeds); the text
models are deterministic. `--dry-run` prints the records
instead of writing benchmarks/results/multimodal.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from heritage.evaluation import (
    confidence_ece,
    ece_noise_floor,
    evaluate,
    expected_calibration_error,
)
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
from heritage.metadata.fusion import Stacker, fold_indices
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
TEXT_METHODS = {"text_tfidf": "tfidf", "text_e5": "e5", "text_use": "use", "text_flat": "flat"}
METHODS = (*TEXT_METHODS, "tabular", "tabular_weighting", "fusion", "peer_autogluon")


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
    """Macro-F1 and calibration per property on the records whose value is known in
    ``truth``. The calibration dict holds ``ece_<property>``; ``ece``, pooled over every
    property's predictions (all the confidences a curator is shown, binned together); and
    the noise floors: what a perfectly calibrated model with the same confidences would
    measure on samples this size (``ece_floor`` pooled, ``ece_floor_property_mean``)."""
    targets = Targets.encode(truth, classes)
    f1, ece = {}, {}
    conf, correct, floors = [], [], []
    for prop, p in proba.items():
        y = targets.codes[prop]
        rows = y >= 0
        filled = _prior_fill(p[rows], priors[prop])
        f1[prop] = evaluate(y[rows], filled, classes[prop]).macro_f1
        ece[f"ece_{prop}"] = expected_calibration_error(y[rows], filled)
        floors.append(ece_noise_floor(filled))
        conf.append(filled.max(axis=1))
        correct.append(filled.argmax(axis=1) == y[rows])
    ece["ece_property_mean"] = float(np.mean([ece[f"ece_{prop}"] for prop in proba]))
    ece["ece_floor_property_mean"] = float(np.mean(floors))
    # pooled: one binary "was the shown value right" problem over all properties
    pooled = np.concatenate(conf)
    ece["ece"] = confidence_ece(pooled, np.concatenate(correct))
    ece["ece_floor"] = ece_noise_floor(pooled)
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
    for metric, value in (ece or {}).items():
        book.add(dataset, method, metric, value)


# --------------------------------------------------------------------------- runs


def stacker_cv(predictor: MetadataPredictor, train: RecordTable, seed: int) -> dict[str, float]:
    """Each stacker kind's average macro-F1 under 5-fold cross-validation over the training
    records' out-of-fold modality inputs: evidence for the default stacker drawn from
    training data alone (no validation or test record is involved)."""
    targets = Targets.encode(train, predictor.classes_)
    out: dict[str, list[float]] = {kind: [] for kind in ("logistic", "lightgbm", "blend")}
    for prop, classes in predictor.classes_.items():
        blocks = [predictor.oof_[m.name][prop] for m in predictor.modalities_]
        y = targets.codes[prop]
        rows = (y >= 0) & ~np.all([np.isnan(b).any(axis=1) for b in blocks], axis=0)
        blocks, y = [b[rows] for b in blocks], y[rows]
        proba = {kind: np.zeros((len(y), len(classes))) for kind in ("logistic", "lightgbm")}
        for fit_idx, held_idx in fold_indices(len(y), 5, seed + 1):
            for kind, p in proba.items():
                st = Stacker(kind, len(classes), seed=seed)
                st.fit([b[fit_idx] for b in blocks], y[fit_idx])
                p[held_idx] = st.predict_proba([b[held_idx] for b in blocks])
        proba["blend"] = (proba["logistic"] + proba["lightgbm"]) / 2
        for kind, p in proba.items():
            out[kind].append(evaluate(y, p, classes).macro_f1)
    return {kind: float(np.mean(v)) for kind, v in out.items()}


def run_predictor(
    book: RecordBook,
    dataset: str,
    table: RecordTable,
    truth: RecordTable,
    modalities: Sequence[Modality],
    methods: dict[str, str],
    seed: int,
    with_fusion: bool,
    cross_validate_stackers: bool = False,
    fusion_method: str = "fusion",
    folds: int = 5,
) -> tuple[dict[str, float], MetadataPredictor]:
    """Fit one predictor with every requested modality; score each modality alone (its
    refit on all training records) and the fusion on test. ``methods``: benchmark method
    name -> modality name. Returns the average macro-F1 per method (for the log) and the
    predictor."""
    t0 = time.perf_counter()
    fusion = FusionConfig(seed=seed, folds=folds)
    predictor = MetadataPredictor(list(modalities), fusion).fit(table)
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
        record(book, dataset, fusion_method, f1, ece)
        _, raw = score(test_truth, uncalibrated(predictor, test), predictor.classes_, priors)
        book.add(dataset, fusion_method, "ece_uncalibrated", raw["ece"])
        book.add(dataset, fusion_method, "ece_uncalibrated_property_mean", raw["ece_property_mean"])
        book.add(dataset, fusion_method, "fit_predict_seconds", seconds)
        summary[fusion_method] = float(np.mean(list(f1.values())))
        summary["ece"] = ece["ece"]
        summary["seconds"] = seconds
        if cross_validate_stackers:
            for kind, value in stacker_cv(predictor, table.split("train"), seed).items():
                book.add(dataset, fusion_method, f"stacker_cv_macro_f1_{kind}", value)
                summary[f"cv_{kind}"] = value
        for line in predictor.summary():
            console.print(f"  {line}", markup=False)
    return summary, predictor


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
    peer_python: Path = ROOT / ".venv-peer" / "bin" / "python",
    peer_time_limit: float = 120,
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
        fuse = "fusion" in methods
        summary, _ = run_predictor(book, SILKNOW, table, table, mods, report, seed, fuse, fuse)
        console.print({k: round(v, 4) for k, v in summary.items()})
        if not book.dry_run:
            book.write()  # after every seed: an interrupted benchmark keeps its records
    if "tabular_weighting" in methods:
        tabular_weighting_cv(book, table, seeds)
        if not book.dry_run:
            book.write()
    if "peer_autogluon" in methods:
        autogluon(book, seeds, peer_python, peer_time_limit)


def tabular_weighting_cv(book: RecordBook, table: RecordTable, seeds: Sequence[int]) -> None:
    """How the tabular modality should handle class imbalance, decided on training records
    only: 5-fold out-of-fold average macro-F1 with LightGBM's ``class_weight="balanced"``
    against no weighting (a record with no usable field is scored with the training prior)."""
    from heritage.metadata import TabularConfig, TabularModel, out_of_fold

    train = table.split("train")
    targets = Targets.learn(train)
    priors = priors_of(train, targets.classes)
    for seed in seeds:
        for weight in ("balanced", None):
            model = TabularModel(TabularConfig(class_weight=weight, seed=seed))
            oof = out_of_fold([model], train, targets, 5, seed)["tabular"]
            f1, _ = score(train, oof, targets.classes, priors)
            method = f"tabular_class_weight_{weight or 'none'}"
            book.add(SILKNOW, method, "train_cv_macro_f1_avg", float(np.mean(list(f1.values()))))
            console.print(f"  {method}: {np.mean(list(f1.values())):.4f} (seed {seed})")


def autogluon(book: RecordBook, seeds: Sequence[int], python: Path, time_limit: float) -> None:
    """AutoGluon-Tabular per property on the same features, run by ``peer_autogluon.py`` in
    its own environment (``make peer-venv``; AutoGluon pins an older pandas); skipped with a
    message when that environment is missing."""
    if not python.exists():
        console.print(
            f"[yellow]skipped peer_autogluon[/]: {python} not found; `make peer-venv` creates it"
        )
        return
    script = Path(__file__).with_name("peer_autogluon.py")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peer.json"
        cmd = [str(python), str(script), "--out", str(out), "--time-limit", str(time_limit)]
        subprocess.run([*cmd, "--seeds", *map(str, seeds)], check=True)
        rows = pd.DataFrame(json.loads(out.read_text()))
    for _, per_seed in rows.groupby("seed"):
        f1 = dict(zip(per_seed["property"], per_seed["macro_f1"], strict=True))
        record(book, SILKNOW, "peer_autogluon", f1)
        book.add(SILKNOW, "peer_autogluon", "fit_predict_seconds", float(per_seed["seconds"].sum()))
        console.print({"peer_autogluon": round(float(np.mean(list(f1.values()))), 4)})


def grouped_test(df: pd.DataFrame, spec: RecordSpec, root: Path) -> RecordTable | None:
    """Test crops grouped into multi-image records: every crop of one sign on one page (a
    group's labels are the same by construction), groups of two or more images only. A
    stand-in for objects photographed several times, to compare image aggregations."""
    test = df[df["split"] == "test"]
    rows = [
        {**group.iloc[0].to_dict(), "record": f"{page}:{sign}", "image": "|".join(group["image"])}
        for (page, sign), group in test.groupby(["page", "sign"], sort=True)
        if len(group) >= 2
    ]
    return RecordTable.from_frame(pd.DataFrame(rows), spec, image_root=root) if rows else None


def compare_aggregations(
    book: RecordBook, predictor: MetadataPredictor, grouped: RecordTable, priors: dict
) -> dict[str, float]:
    """Each image modality of ``predictor`` on multi-image records, with each way of
    aggregating a record's images (the same fitted model; only the aggregation changes)."""
    dataset, out = f"{GLYPHS}/grouped-test", {}
    for modality in predictor.modalities_:
        if not modality.name.startswith("image"):
            continue
        before = modality.config.aggregate
        try:
            for how in ("mean", "max_confidence"):
                modality.config.aggregate = how
                proba = modality.predict_proba(grouped)
                f1, _ = score(grouped, proba, predictor.classes_, priors)
                record(book, dataset, f"{modality.name}_{how}", f1)
                out[f"{modality.name}_{how}"] = float(np.mean(list(f1.values())))
        finally:
            modality.config.aggregate = before
    return out


#: the fine-tuned multi-task image model on hieroglyphs: the regularisers benchmark's cheap
#: base (96 px, glyph augmentation without flips), 4 epochs in two restart cycles, and
#: 3 out-of-fold splits (a fine-tune per fold: 4 fine-tunes per seed on two CPU cores)
GLYPH_MULTITASK = {
    "image_size": 96,
    "resize_mode": "pad",
    "augment": "glyphs",
    "epochs": 4,
    "restart_epochs": 2,
}
GLYPH_MULTITASK_FOLDS = 3


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
    image_methods = {"image", "fusion", "image_multitask", "fusion_multitask"}
    grouped = grouped_test(df, spec, manifest.parent) if image_methods & set(methods) else None
    image = ImageModel(ImageConfig(image_size=128, resize_mode="pad"))  # features shared
    base = {}
    if "image" in methods or "fusion" in methods:
        base["image"] = "image"
    if "tabular" in methods or "fusion" in methods:
        base["tabular"] = "tabular"
    if "text_flat" in methods or "fusion" in methods:
        base["text_flat"] = "flat"  # no texts here: the `page` field as a token
    multitask = [m for m in ("image_multitask", "fusion_multitask") if m in methods]
    for seed in seeds:
        console.rule(f"{GLYPHS} · seed {seed} · {hidden:.0%} of labels hidden")
        rng = np.random.default_rng(seed)
        masked = df.copy()
        for prop in GLYPH_PROPERTIES:
            masked.loc[rng.random(len(masked)) < hidden, prop] = ""
        table = RecordTable.from_frame(masked, spec, image_root=manifest.parent)
        if grouped is not None:  # once per seed (the records are the same every time)
            paths = grouped.image_paths()
            book.add(f"{GLYPHS}/grouped-test", "records", "n_records", len(grouped))
            book.add(
                f"{GLYPHS}/grouped-test",
                "records",
                "images_per_record",
                float(np.mean([len(p) for p in paths])),
            )
        if base:
            mods = [
                image if name == "image" else make_modality(name, seed=seed)
                for name in base.values()
            ]
            report = {
                method: mod.name
                for method, mod in zip(base, mods, strict=True)
                if method in methods
            }
            summary, predictor = run_predictor(
                book, GLYPHS, table, truth, mods, report, seed, "fusion" in methods
            )
            if grouped is not None:
                priors = priors_of(table.split("train"), predictor.classes_)
                summary |= compare_aggregations(book, predictor, grouped, priors)
            console.print({k: round(v, 4) for k, v in summary.items()})
        if multitask:
            mods = [make_modality("image_multitask", seed=seed, train=GLYPH_MULTITASK)]
            if "fusion_multitask" in methods:
                mods.append(make_modality("tabular", seed=seed))
            summary, predictor = run_predictor(
                book,
                GLYPHS,
                table,
                truth,
                mods,
                {"image_multitask": "image_multitask"},
                seed,
                "fusion_multitask" in methods,
                fusion_method="fusion_multitask",
                folds=GLYPH_MULTITASK_FOLDS,
            )
            if grouped is not None:
                priors = priors_of(table.split("train"), predictor.classes_)
                summary |= compare_aggregations(book, predictor, grouped, priors)
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
    image_methods = ["image", "image_multitask", "fusion_multitask"]
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[*METHODS, *image_methods],
        choices=[*METHODS, *image_methods],
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--hidden", type=float, default=0.3, help="hieroglyphs: share hidden")
    parser.add_argument("--cache", type=Path, default=RUNS / "embeddings")
    parser.add_argument("--topic", default="multimodal", help="results file name")
    parser.add_argument(
        "--peer-python",
        type=Path,
        default=ROOT / ".venv-peer" / "bin" / "python",
        help="interpreter with autogluon.tabular (make peer-venv)",
    )
    parser.add_argument("--peer-time-limit", type=float, default=120, help="seconds/property")
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
        silknow(
            book,
            args.methods,
            args.seeds,
            args.cache,
            args.limit,
            args.peer_python,
            args.peer_time_limit,
        )
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
