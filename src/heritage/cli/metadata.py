"""`heritage metadata`: predict missing catalogue fields of object records."""

from pathlib import Path
from typing import Annotated

import typer

from heritage.cli.base import IgnoreSplit, RecordIdColumn, fail, group, names, out_option
from heritage.progress import console

metadata_app = group(
    "metadata",
    "Predict missing metadata of object records (place, date, technique, …) from their texts, "
    "tabular fields and images, with calibrated confidences.",
)


@metadata_app.command("fit")
def metadata_fit(
    records: Annotated[
        Path,
        typer.Argument(
            help="CSV with one row per record: an id, texts (text_<lang> columns), image paths, "
            "tabular fields and the properties (empty cell = unknown)."
        ),
    ],
    out: Annotated[Path, out_option("Model folder to write.")],
    properties: Annotated[
        list[str], typer.Option(help="Columns to predict (repeatable or comma-separated).")
    ],
    id_column: RecordIdColumn = None,
    text_columns: Annotated[
        list[str] | None,
        typer.Option(help="Text columns as COLUMN:LANG (default: every text_<lang> column)."),
    ] = None,
    image_columns: Annotated[
        list[str] | None,
        typer.Option(help="Image path columns; several paths in a cell are joined by '|'."),
    ] = None,
    tabular_columns: Annotated[
        list[str] | None,
        typer.Option(help="Other fields used as features (default: every remaining column)."),
    ] = None,
    split_column: Annotated[
        str,
        typer.Option(
            help="train/val/test column (used if present): val chooses the stacker and "
            "calibrates; test rows are not used."
        ),
    ] = "split",
    ignore_split: IgnoreSplit = None,
    modalities: Annotated[
        list[str] | None,
        typer.Option(
            help="tfidf, flat (TF-IDF of texts and fields together), use, e5, tabular, image "
            "(frozen features), image_multitask (a fine-tuned model, one head per property: "
            "folds + 1 fine-tunes, kept in OUT/fine-tunes/ so that a rerun resumes or reuses "
            "them) (default: tfidf+use for texts, tabular, flat, image for image columns)."
        ),
    ] = None,
    image_config: Annotated[
        Path | None,
        typer.Option(
            help="YAML options of the image modality; with both image modalities, one section "
            "each (image: ..., image_multitask: ...). image: backbone, image_size, "
            "resize_mode, aggregate (mean or max_confidence), C. image_multitask: train "
            "(a mapping of heritage train options: epochs, image_size, augment, loss, ...), "
            "val_fraction, soup (greedy, uniform, best), aggregate."
        ),
    ] = None,
    folds: Annotated[int, typer.Option(help="Out-of-fold splits for the stacker.")] = 5,
    stacker: Annotated[
        str,
        typer.Option(
            help="auto (per property, the best on held-out data of every stacker and every "
            "single modality), or one stacker: logistic, pool (a weight per modality), "
            "lightgbm, blend (mean of logistic and LightGBM)."
        ),
    ] = "auto",
    calibration: Annotated[str, typer.Option(help="temperature or none.")] = "temperature",
    top_k: Annotated[int, typer.Option(help="Alternatives listed per prediction.")] = 3,
    seed: Annotated[int, typer.Option(help="Fold split and LightGBM seed.")] = 0,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Text-embedding cache (default: ~/.cache/heritage/embeddings)."),
    ] = None,
    extra_labels: Annotated[
        Path | None,
        typer.Option(
            help="Labels CSV from `heritage kg reviews`: reviewed values fill empty property "
            "cells of matching records; a catalogued value is never overwritten."
        ),
    ] = None,
) -> None:
    """Fit every modality, the out-of-fold stacker and the calibration; save the predictor
    (predictor.json + predictor.safetensors: data only, safe to share) and its card
    (card.json)."""
    from heritage.backbones import BackboneError
    from heritage.locking import FolderLocked, folder_lock
    from heritage.metadata import FusionConfig, MetadataPredictor, RecordSpec, RecordTable
    from heritage.metadata.predictor import chosen_modalities
    from heritage.metadata.records import read_columns, text_columns_from

    try:
        spec = RecordSpec.infer(
            read_columns(records),
            names(properties) or [],
            id_column=id_column,
            text_columns=text_columns_from(names(text_columns)),
            image_columns=names(image_columns),
            tabular_columns=names(tabular_columns),
            split_column=split_column,
        )
        table = RecordTable.from_csv(records, spec, ignore_splits=names(ignore_split) or ())
        if extra_labels is not None:
            table, report = table.with_extra_labels(extra_labels)
            console.print(report.summary(), markup=False)
        fusion = FusionConfig(folds=folds, stacker=stacker, calibration=calibration, seed=seed)  # type: ignore[arg-type]
        chosen = chosen_modalities(
            names(modalities),
            table,
            seed=seed,
            image_config=image_config,
            fine_tunes=out / "fine-tunes",
        )
        # the folder is locked from the start: the image fine-tunes write into it too
        with folder_lock(out, "heritage metadata fit"):
            predictor = MetadataPredictor(chosen, fusion, top_k=top_k, cache_dir=cache_dir)
            predictor.fit(table)
            predictor.save(out)
    except (ValueError, BackboneError, FileNotFoundError, ImportError, FolderLocked) as exc:
        fail(exc)
    for line in predictor.summary():
        console.print(line, markup=False)
    console.print(
        f"[green]done[/] in {predictor.fit_seconds_:.0f} s: {out} "
        f"({', '.join(m.name for m in predictor.modalities_)}). "
        f"Next: heritage metadata predict {out} RECORDS.csv"
    )


@metadata_app.command("predict")
def metadata_predict(
    model: Annotated[Path, typer.Argument(help="Folder written by `heritage metadata fit`.")],
    records: Annotated[
        Path, typer.Argument(help="CSV with the training columns; property columns optional.")
    ],
    out: Annotated[Path, out_option("CSV to write.")] = Path("predictions.csv"),
    top_k: Annotated[
        int | None, typer.Option(help="Alternatives listed (default: as fitted).")
    ] = None,
) -> None:
    """Write one row per record and property: value, calibrated confidence, alternatives
    (JSON [value, p] pairs), contributing modalities and status (predicted, catalogued,
    no prediction)."""
    from heritage.metadata import MetadataPredictor

    try:
        predictor = MetadataPredictor.load(model)
        if top_k is not None:
            predictor.top_k = top_k
        table = predictor.predict(records)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    counts = table["status"].value_counts()
    console.print(
        f"{len(table)} rows written to {out}: "
        + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in counts.index)
    )
