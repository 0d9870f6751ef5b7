"""Fine-tuning with a checkpoint pool, resumable at every epoch.

The loop is plain PyTorch on purpose, and composes pieces that each live in their own module:
devices and precision from :mod:`heritage.runtime`, the loss (cross-entropy or focal) from
:mod:`heritage.training.losses`, what a step optimises (plain, MixUp/CutMix, Manifold MixUp,
SynerMix) from :mod:`heritage.training.mixing`, feature regularisers (entropy) from
:mod:`heritage.training.regularisers`, and the class-aware batch sampler from
:mod:`heritage.training.samplers`. The recipe is the model-soups paper's: AdamW and cosine
annealing with warm restarts, so one run visits several minima and leaves diverse ingredients
for :mod:`heritage.soups`.

Run folder written by :func:`train` (everything later commands need)::

    config.yaml       the resolved configuration
    split.csv         the split used (made here, seeded, when the collection had none; with
                      train and test but no val, a share of train carved out for val)
    run.json          the run's fingerprint: a rerun resumes only the same collection,
                      split and options (:mod:`heritage.training.runfolder`)
    skipped.csv       images that could not be read, and why
    history.json      per-epoch metrics
    pool/             checkpoint pool: epoch_NNN.safetensors + .json, pool.json
    state.pt          optimiser, scheduler, RNG and model state for resuming
    .heritage.lock    held while training (:mod:`heritage.locking`): one writer at a time
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from heritage.backbones import (
    Preprocessing,
    architecture_of,
    create_backbone,
    resolve_preprocessing,
)
from heritage.calibration import fit_temperature, softmax
from heritage.collection import Collection, CollectionError
from heritage.config import TrainConfig
from heritage.data import (
    ImageCache,
    ImageDataset,
    eval_transform,
    make_loader,
    train_transform,
)
from heritage.evaluation import evaluate
from heritage.locking import folder_lock
from heritage.model import ModelCard, predict_logits
from heritage.probe import extract_features, init_head_from_probe
from heritage.progress import console
from heritage.runtime import (
    Precision,
    configure_threads,
    hardware_label,
    resolve_device,
    resolve_workers,
    seed_everything,
)
from heritage.training.callbacks import (
    AverageWeights,
    OfferToPool,
    RunLog,
    WriteHistory,
    format_val,
)
from heritage.training.distributed import DataParallel
from heritage.training.engine import (
    Engine,
    SaveState,
    Step,
    Validate,
    create_engine,
    cycle_ends,
    freeze_early_stages,
    load_training_state,
)
from heritage.training.initialisation import init_source, load_init_state, write_init
from heritage.training.losses import create_loss
from heritage.training.mixing import create_objective
from heritage.training.objectives import Objective
from heritage.training.pool import CheckpointPool
from heritage.training.regularisers import EntropyRegulariser
from heritage.training.runfolder import (
    RESUMABLE_CHANGES,
    RunMismatch,
    check_resume,
    clear_run,
    has_checkpoints,
    read_fingerprint,
    run_fingerprint,
    write_run_file,
)
from heritage.training.samplers import ClassAwareBatchSampler, ClassBalancedBatchSampler


@dataclass
class TrainResult:
    run_dir: Path
    pool: CheckpointPool
    history: list[dict[str, float]]
    train_seconds: float
    train_images_per_second: float


@dataclass
class _Loaders:
    """The run's images, decoded once: augmented training batches, validation batches (None
    for a refit without validation) and the training images without augmentation (LP-FT)."""

    train: DataLoader
    val: DataLoader | None
    plain: DataLoader


class Trainer:
    """Fine-tunes one model on one collection into a checkpoint pool.

    Usage: ``Trainer(config).fit(collection, "runs/ich")``. Calling ``fit`` again on the same
    folder resumes after the last finished epoch.
    """

    def __init__(self, config: TrainConfig | None = None) -> None:
        self.config = config or TrainConfig()
        self._parallel: DataParallel | None = None  # set by fit under torchrun

    def fit(
        self,
        collection: Collection,
        run_dir: str | Path,
        *,
        resume: bool = True,
        overwrite: bool = False,
        start_only: bool = False,
    ) -> TrainResult:
        """Train into ``run_dir``, or resume the run there after its last finished epoch.
        ``start_only`` writes the run's starting point (split, head: ``init.json``) and stops
        before the first epoch: the shared start of a sweep (:mod:`heritage.sweep`).

        A run is resumed only with the collection, split and options it started with
        (:class:`~heritage.training.runfolder.RunMismatch` names what differs); a folder
        whose start failed before its first epoch is started again. ``overwrite`` deletes the
        run in the folder first. The folder is locked while training: a second writer gets
        :class:`~heritage.locking.FolderLocked` at once.
        """
        cfg = self.config
        if len(collection.classes) < 2:  # before anything is written
            raise CollectionError(
                f"the collection at {collection.root} has {len(collection.classes)} class(es) "
                f"({', '.join(map(repr, collection.classes))}); a classifier learns to tell "
                "classes apart and needs at least 2"
            )
        objective = create_objective(cfg.mix, len(collection.classes), cfg.label_smoothing)
        # within-class pieces (SynerMix-Intra, per-class entropy) need two images per class
        wants_pairs = objective.needs_class_pairs or (cfg.entropy.enabled and cfg.entropy.per_class)
        if cfg.sampler == "balanced" and wants_pairs:  # refused before anything is written
            raise ValueError(
                "this objective mixes or compares images within a class and needs the "
                "class_pairs sampler, which sampler='balanced' is not (use auto or class_pairs)"
            )
        run_dir = Path(run_dir)
        # one of several processes under torchrun: rank 0 locks and writes the run folder
        self._parallel = DataParallel.from_env(cfg.device)
        main = self._parallel is None or self._parallel.is_main
        try:
            if self._parallel is not None:
                self._parallel.setup()
            with folder_lock(run_dir, "training") if main else contextlib.nullcontext():
                return self._fit(
                    collection, run_dir, objective, wants_pairs, resume, overwrite, start_only
                )
        finally:
            if self._parallel is not None:
                self._parallel.teardown()

    def _fit(
        self,
        collection: Collection,
        run_dir: Path,
        objective: Objective,
        wants_pairs: bool,
        resume: bool,
        overwrite: bool,
        start_only: bool = False,
    ) -> TrainResult:
        cfg, parallel = self.config, self._parallel
        main = parallel is None or parallel.is_main
        state = _state_to_resume(run_dir, resume, overwrite, parallel)
        configure_threads(None if parallel is None else parallel.threads())
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device) if parallel is None else parallel.device
        precision = Precision.resolve(cfg.precision, device)
        collection, fingerprint, source = self._run_collection(collection, run_dir, state)
        classes = collection.classes
        model = create_backbone(
            cfg.backbone, len(classes), weights=cfg.weights, pretrained=cfg.pretrained
        )
        prep = resolve_preprocessing(model, cfg.image_size, cfg.resize_mode)
        frozen = freeze_early_stages(model, cfg.freeze_stages)
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        loaders = self._loaders(collection, prep, wants_pairs, resolve_workers(cfg.workers, device))
        engine = self._engine(
            model, frozen, loaders.train, objective, collection, device, precision
        )

        # the run's files once its start has succeeded: a start that failed before here
        # leaves nothing that a corrected rerun would take for this run
        if main:
            if state is None:
                collection.save_split(run_dir / "split.csv")
                write_run_file(run_dir, fingerprint)
            _write_config(collection, run_dir, cfg)

        def validate(model: nn.Module) -> dict[str, float]:
            return self._validate(model, loaders.val, device, precision, classes)

        if state is not None:
            engine.restore(state)
            log = RunLog(state["history"], state["train_seconds"], state["images_seen"])
            if state["epoch"] < cfg.epochs:
                console.print(
                    f"[bold]resuming[/] {run_dir} after epoch {state['epoch']}/{cfg.epochs}"
                )
        else:
            log = self._start(model, loaders.plain, validate, source, device, precision)
            if main:
                write_init(run_dir, model, cfg, str(source) if source else cfg.head_init)
            if start_only:
                return TrainResult(run_dir, CheckpointPool(run_dir / "pool"), log.history, 0, 0)

        pool = CheckpointPool.open(run_dir / "pool", cfg.keep_top_k)
        card = self._card(collection, prep, run_dir)
        callbacks = self._callbacks(run_dir, pool, card, log, validate, engine, state)
        engine.run(cfg.epochs, start=(state["epoch"] if state else 0) + 1, callbacks=callbacks)
        if not main:  # the run's files are rank 0's
            return TrainResult(run_dir, pool, log.history, log.train_seconds, float("nan"))
        processes = 1 if parallel is None else parallel.world_size
        return _summarise(run_dir, pool, log, device, cfg.epochs, processes)

    def _run_collection(
        self, collection: Collection, run_dir: Path, state: dict[str, Any] | None
    ) -> tuple[Collection, dict[str, Any], Path | None]:
        """The collection with the split the run trains on, the run's fingerprint, and the
        run it starts from (``init_from``; None otherwise or when resuming)."""
        cfg = self.config
        fingerprint = self._check_rerun(collection, run_dir, state)
        source = None
        if cfg.init_from and state is None:
            source = init_source(cfg.init_from, collection, cfg)
        collection = _split_for_run(
            collection, run_dir / "split.csv", cfg, resuming=state is not None, shared=source
        )
        if not len(collection.split("val")) and not cfg.keep_epochs:
            raise ValueError(
                "the validation split is empty: checkpoints and soups need one (a refit on "
                "train + val names the epochs to keep instead: keep_epochs)"
            )
        return collection, fingerprint, source

    def _callbacks(
        self,
        run_dir: Path,
        pool: CheckpointPool,
        card: ModelCard,
        log: RunLog,
        validate: Callable[[nn.Module], dict[str, float]],
        engine: Engine,
        state: dict[str, Any] | None,
    ) -> list[Any]:
        """What runs after each epoch, in order: validate, log, keep the checkpoint (and the
        averaged weights), save the resume state, write the history. In a data-parallel run
        only rank 0 writes."""
        cfg, parallel = self.config, self._parallel
        main = parallel is None or parallel.is_main
        ends = set(cycle_ends(cfg))
        averages = []
        if cfg.average != "none" and main:
            averages.append(
                AverageWeights(
                    cfg.average, pool, card, ends, validate, cfg.average_epochs, cfg.epochs
                )
            )
            if state is not None:
                averages[0].restore(engine, state)
        classes = card.classes

        def resume_extra(_: Any) -> dict[str, Any]:
            return self._resume_extra(log, classes, averages)

        writers = [OfferToPool(pool, card, ends, set(cfg.keep_epochs)), *averages] if main else []
        history = [WriteHistory(run_dir / "history.json", log, cfg.epochs)] if main else []
        saver = SaveState(run_dir / "state.pt", resume_extra, write=main)
        return [Validate(validate), log, *writers, saver, *history]

    def _start(
        self,
        model: nn.Module,
        plain: DataLoader,
        validate: Callable[[nn.Module], dict[str, float]],
        source: Path | None,
        device: torch.device,
        precision: Precision,
    ) -> RunLog:
        """The head a fresh run starts from: another run's (``init_from``), a linear probe's
        (LP-FT) or the random one; its validation scores are epoch 0 of the history."""
        if source is not None:
            load_init_state(model, source)
            what = f"the start of {source}"
        elif self.config.head_init == "probe":
            features, y = extract_features(model, plain, device, precision)
            head = model.get_classifier()
            init_head_from_probe(head, features, y, head.out_features)
            what = "linear probe head"
        else:
            return RunLog()
        log = RunLog([{"epoch": 0, **validate(model)}])
        console.print(f"epoch   0 ({what}){format_val(log.history[-1])}")
        return log

    def _check_rerun(
        self, collection: Collection, run_dir: Path, state: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The run's fingerprint; a resumed run must match the one it started with."""
        cfg = self.config
        options = {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES}
        fingerprint = run_fingerprint(collection, options)
        if state is not None:
            check_resume(run_dir, read_fingerprint(run_dir), fingerprint, collection)
            _check_resumable(state, cfg, collection.classes, run_dir)
        elif has_checkpoints(run_dir):
            raise RunMismatch(
                f"{run_dir} holds checkpoints but no state.pt to resume from.",
                "Start afresh with --overwrite (overwrite=True; deletes them) or choose "
                "another --out.",
            )
        return fingerprint

    def _loaders(
        self, collection: Collection, prep: Preprocessing, wants_pairs: bool, workers: int
    ) -> _Loaders:
        """Decode the train and val images once; batches of them for training, validation and
        the linear probe."""
        cfg = self.config
        train_set, val_set = collection.split("train"), collection.split("val")
        cache = ImageCache(prep)
        cache.load(train_set.paths() + val_set.paths())
        train_ds = ImageDataset(
            train_set.paths(), train_set.targets(), cache, train_transform(prep, cfg.augment)
        )
        batch_size = min(cfg.batch_size, len(train_ds))
        val = None
        if len(val_set):
            val_ds = ImageDataset(val_set.paths(), val_set.targets(), cache, eval_transform(prep))
            val = make_loader(val_ds, batch_size * 2, shuffle=False, workers=0)
        plain = ImageDataset(train_set.paths(), train_set.targets(), cache, eval_transform(prep))
        train = _train_loader(train_ds, batch_size, cfg, workers, wants_pairs)
        if self._parallel is not None:  # this process's slice of every batch
            train = self._parallel.shard(train, batch_size)
        return _Loaders(
            train,
            val,
            make_loader(plain, batch_size * 2, shuffle=False, workers=0),
        )

    def _engine(
        self,
        model: nn.Module,
        frozen: list[nn.Module],
        loader: DataLoader,
        objective: Objective,
        collection: Collection,
        device: torch.device,
        precision: Precision,
    ) -> Engine:
        """The loop over the objective's step, with the configured loss and regularisers."""
        cfg = self.config
        counts = np.bincount(collection.split("train").targets(), minlength=len(collection.classes))
        criterion = create_loss(
            cfg.loss, label_smoothing=cfg.label_smoothing, class_counts=counts.tolist()
        ).to(device)
        regularisers = [EntropyRegulariser.from_config(cfg.entropy)] if cfg.entropy.enabled else []
        for regulariser in regularisers:
            with regulariser.tapping(model):  # a layer name that is not in the model fails now
                pass
        return create_engine(
            model,
            model.get_classifier(),
            loader,
            _classifier_step(objective, criterion, regularisers),
            cfg,
            device=device,
            precision=precision,
            frozen=frozen,
            channels_last=cfg.channels_last,
            taps=[partial(r.tapping, model) for r in regularisers],
            parallel=self._parallel,
        )

    def _card(self, collection: Collection, prep: Preprocessing, run_dir: Path) -> ModelCard:
        cfg = self.config
        return ModelCard(
            architecture=architecture_of(cfg.backbone),
            classes=list(collection.classes),
            preprocessing=prep,
            provenance={
                "run": str(run_dir),
                "source": str(collection.root),
                "label_column": collection.label_column,
                "seed": cfg.seed,
                "backbone": cfg.backbone,
            },
        )

    def _resume_extra(
        self, log: RunLog, classes: list[str], averages: list[AverageWeights]
    ) -> dict[str, Any]:
        """What the resume state holds beside the engine's: counters, options, classes and
        the weights averaged so far."""
        extra = {**log.counters(), "config": self.config.to_dict(), "classes": list(classes)}
        for average in averages:
            extra.update(average.state())
        return extra

    def _validate(self, model, loader, device, precision, classes) -> dict[str, float]:
        """Validation metrics; none for a run without a validation split (a refit)."""
        if loader is None:
            return {}
        logits, targets = predict_logits(
            model, loader, device, precision, channels_last=self.config.channels_last
        )
        ev = evaluate(targets, softmax(logits), classes)
        temperature = fit_temperature(logits, targets)
        return {
            "val_loss": ev.nll,
            "val_top1": ev.top1,
            "val_macro_f1": ev.macro_f1,
            "val_ece": ev.ece,
            "val_temperature": temperature,  # the checkpoint's calibration (its card)
        }


def _classifier_step(
    objective: Objective, criterion: nn.Module, regularisers: list[EntropyRegulariser]
) -> Step:
    """The single-label step: the objective's loss (plain, mixed or SynerMix) plus the feature
    regularisers on the same forward pass's features."""

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = objective(model, x, y.to(x.device, non_blocking=True), criterion)
        if not regularisers:
            return out.loss
        with torch.autocast(x.device.type, enabled=False):  # as the regularisers expect
            return out.loss + sum(r(out.features, out.labels) for r in regularisers)

    return step


def _state_to_resume(
    run_dir: Path, resume: bool, overwrite: bool, parallel: DataParallel | None = None
) -> dict[str, Any] | None:
    """The resume state in ``run_dir`` (None for a fresh start), after ``overwrite`` cleared
    the folder; a run there that may not be resumed is refused."""
    state_path = run_dir / "state.pt"
    if overwrite and (parallel is None or parallel.is_main):
        deleted = clear_run(run_dir)
        if deleted:
            console.print(f"[bold]overwrite[/]: deleted {', '.join(deleted)} in {run_dir}")
    if parallel is not None:
        parallel.barrier()  # the others read the folder once rank 0 has cleared it
    if state_path.exists() and not resume:
        raise FileExistsError(
            f"{run_dir} already holds a run; resume it, start afresh with --overwrite "
            "(overwrite=True), or choose another folder"
        )
    return load_training_state(state_path) if state_path.exists() else None


def _write_config(collection: Collection, run_dir: Path, cfg: TrainConfig) -> None:
    """``config.yaml`` (the resolved options and where the images came from) and
    ``skipped.csv``."""
    _write_skipped(collection, run_dir / "skipped.csv")
    config = {
        **cfg.to_dict(),
        "source": str(collection.root),
        "label_column": collection.label_column,
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _summarise(
    run_dir: Path,
    pool: CheckpointPool,
    log: RunLog,
    device: torch.device,
    epochs: int,
    processes: int = 1,
) -> TrainResult:
    """``train_summary.json``: time, throughput and hardware, read by the benchmarks; a
    data-parallel run's hardware names its processes (throughput is theirs together)."""
    seconds = log.train_seconds
    throughput = log.images_seen / seconds if seconds else float("nan")
    summary = {
        "train_seconds": seconds,
        "train_images_per_second": throughput,
        "hardware": hardware_label(device, processes),
        "processes": processes,
        "epochs": epochs,
        "pool": [e.name for e in pool.entries],
    }
    (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return TrainResult(run_dir, pool, log.history, seconds, throughput)


def _train_loader(
    dataset: ImageDataset, batch_size: int, cfg: TrainConfig, workers: int, wants_pairs: bool
) -> DataLoader:
    """Training batches: class-balanced, with pairs of each class present (SynerMix-Intra,
    per-class entropy), or shuffled."""
    drop_last = len(dataset) > batch_size
    if cfg.sampler == "balanced":
        balanced = ClassBalancedBatchSampler(
            dataset.targets, batch_size, power=cfg.balance_power, seed=cfg.seed, drop_last=drop_last
        )
        return _batch_sampler_loader(dataset, balanced, workers, cfg.seed)
    if cfg.sampler == "class_pairs" or (cfg.sampler == "auto" and wants_pairs):
        per_class = cfg.entropy.k + 1 if cfg.entropy.enabled and cfg.entropy.per_class else 2
        return _class_pairs_loader(dataset, batch_size, workers, cfg.seed, max(2, per_class))
    return make_loader(
        dataset, batch_size, shuffle=True, workers=workers, seed=cfg.seed, drop_last=drop_last
    )


def _class_pairs_loader(
    dataset: ImageDataset, batch_size: int, workers: int, seed: int, images_per_class: int = 2
) -> DataLoader:
    """Batches where every class present has at least ``images_per_class`` images (SynerMix-
    Intra mixes features within a class; per-class entropy needs k + 1 of them)."""
    sampler = ClassAwareBatchSampler(
        dataset.targets,
        batch_size,
        images_per_class=images_per_class,
        seed=seed,
        drop_last=len(dataset) > batch_size,
    )
    return _batch_sampler_loader(dataset, sampler, workers, seed)


def _batch_sampler_loader(
    dataset: ImageDataset, sampler: torch.utils.data.Sampler, workers: int, seed: int
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed),
    )


def _split_for_run(
    collection: Collection,
    split_path: Path,
    cfg: TrainConfig,
    *,
    resuming: bool,
    shared: Path | None = None,
) -> Collection:
    """The split a run trains on: the saved one when resuming (never re-drawn, so no test image
    can move into training), the run's it starts from (``shared``), else the collection's own,
    with a validation share carved out of train when it has none, or a new seeded stratified
    one."""
    if shared is not None:
        reopened = Collection.from_split_file(
            shared / "split.csv", collection.root, collection.label_column
        )
        reopened.skipped = collection.skipped
        return reopened
    if resuming:
        if not split_path.is_file():
            raise RunMismatch(
                f"{split_path.parent} holds a run without its split.csv, so it cannot be resumed.",
                "Start afresh with --overwrite (overwrite=True) or choose another --out.",
            )
        reopened = Collection.from_split_file(split_path, collection.root, collection.label_column)
        reopened.skipped = collection.skipped
        return reopened
    if not collection.has_split:
        fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
        return collection.with_split(seed=cfg.seed, fractions=fractions)
    if cfg.keep_epochs or len(collection.split("val")):  # a refit trains without val
        return collection
    return _carve_val(collection, cfg)


def _carve_val(collection: Collection, cfg: TrainConfig) -> Collection:
    """Train and test but no val (how many datasets are published): a stratified, seeded
    share of train becomes val, test stays as it is; said on the console."""
    train = collection.split("train")
    if not 0 < cfg.val_fraction < 1:
        raise ValueError(
            "the collection has train and test splits but no val, and val_fraction is "
            f"{cfg.val_fraction}: set --val-fraction (e.g. 0.2) to carve a validation share "
            "out of train, or add val rows to the split column"
        )
    carved = collection.with_val_from_train(cfg.val_fraction, seed=cfg.seed)
    val = carved.split("val")
    if len(val) == 0:
        raise ValueError(
            "the collection has train and test splits but no val, and no class has the 3 "
            "train images it takes to give one to validation and keep two for training: add "
            "val rows to the split column, or more images"
        )
    console.print(
        f"[bold]no val split[/]: {len(val)} of the {len(train)} train images "
        f"({cfg.val_fraction:.0%} of each class, seed {cfg.seed}) set aside for validation "
        "and saved in the run's split.csv; test images untouched (--val-fraction sets the "
        "share)"
    )
    without = sorted(set(collection.classes) - set(val.records["label"]))
    if without:
        from rich.markup import escape

        shown = ", ".join(without[:8]) + (", ..." if len(without) > 8 else "")
        console.print(
            f"[yellow]note[/]: {len(without)} class(es) have fewer than 3 train images and "
            f"keep them all for training, so they get no validation score: {escape(shown)}"
        )
    return carved


def _check_resumable(state: dict, cfg: TrainConfig, classes: list[str], run_dir: Path) -> None:
    """Refuse to continue a run with other options or classes than it started with."""
    before, now = state.get("config", {}), cfg.to_dict()
    # the same options as this version writes them (older runs stored mix differently)
    with contextlib.suppress(TypeError, ValueError):
        before = TrainConfig.from_dict(before).to_dict()
    changed = sorted(
        k for k in now if k not in RESUMABLE_CHANGES and before.get(k, now[k]) != now[k]
    )
    if changed:
        detail = ", ".join(f"{k}: {before[k]!r} → {now[k]!r}" for k in changed)
        raise ValueError(
            f"{run_dir} was started with other options ({detail}); rerun "
            "with the original options to resume, or choose a new --out"
        )
    if "classes" in state and list(state["classes"]) != list(classes):
        raise ValueError(f"{run_dir} was trained on other classes; choose a new --out")


def _write_skipped(collection: Collection, path: Path) -> None:
    import pandas as pd

    rows = [{"path": s.path, "row": s.row, "reason": s.reason} for s in collection.skipped]
    pd.DataFrame(rows, columns=["path", "row", "reason"]).to_csv(path, index=False)
