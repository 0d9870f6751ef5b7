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
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from heritage.backbones import (
    architecture_of,
    batchnorm_layers,
    create_backbone,
    resolve_preprocessing,
)
from heritage.calibration import fit_temperature, softmax
from heritage.collection import Collection, CollectionError
from heritage.config import TrainConfig
from heritage.data import ImageCache, ImageDataset, eval_transform, train_transform
from heritage.evaluation import evaluate
from heritage.locking import folder_lock
from heritage.model import ModelCard, predict_logits
from heritage.probe import LinearProbe, extract_features
from heritage.progress import console, progress_bar
from heritage.runtime import (
    Precision,
    configure_threads,
    hardware_label,
    resolve_device,
    resolve_workers,
    seed_everything,
)
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


def cycle_ends(config: TrainConfig) -> list[int]:
    """Epochs at which a warm-restart cycle ends (those checkpoints join the pool)."""
    ends, length, at = [], config.restart_epochs, 0
    while at + length <= config.epochs:
        at += length
        ends.append(at)
        length *= config.restart_mult
    return ends


def freeze_early_stages(model: nn.Module, n_stages: int) -> list[nn.Module]:
    """Freeze the stem and the first ``n_stages`` stages; returns the frozen modules (kept in
    eval mode so BatchNorm statistics stay pretrained). Supports timm's ``blocks`` / ``stages``
    / ResNet ``layerN`` layouts."""
    if n_stages <= 0:
        return []
    stages = getattr(model, "blocks", None) or getattr(model, "stages", None)
    if stages is None and hasattr(model, "layer1"):
        stages = [getattr(model, f"layer{i}") for i in range(1, 5)]
    if stages is None:
        raise ValueError(f"freeze_stages is not supported for {type(model).__name__}")
    stage_ids = {id(m) for m in stages}
    stem = []
    for child in model.children():  # everything before the first stage is the stem
        if id(child) in stage_ids or child is stages:
            break
        stem.append(child)
    frozen = stem + list(stages)[:n_stages]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    # parameters held by the model itself belong to the stem too (a ViT's position embedding
    # and class token): left trainable, they would move under a frozen patch embedding
    for p in model.parameters(recurse=False):
        p.requires_grad_(False)
    return frozen


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` that a killed process never leaves half-written."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_training_state(path: Path) -> dict[str, Any]:
    """A resume state written by :func:`atomic_torch_save`, read with ``weights_only=True``:
    tensors and plain Python values only, so a file that asks for anything else (a crafted
    pickle, a state written by an older heritage) is refused rather than run."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(
            f"{path} is not a resume state this heritage reads: it asks for more than tensors "
            "and plain values (as states saved by an older heritage do) or is damaged, so it "
            "was not opened further. Remove it, or start in a new folder, to train from the "
            f"beginning ({type(exc).__name__})"
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a resume state (it holds a {type(state).__name__})")
    return state


def _numpy_rng_state() -> dict[str, Any]:
    """NumPy's global generator state as a tensor and plain values (loadable with
    ``weights_only=True``, unlike the tuple holding an array that NumPy returns)."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "bit_generator": str(name),
        "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_rng_state(state: dict[str, Any]) -> None:
    key = state["key"].numpy().astype(np.uint32)
    np.random.set_state(
        (state["bit_generator"], key, state["pos"], state["has_gauss"], state["cached_gaussian"])
    )


@dataclass
class ResumableLoop:
    """The parts of a training loop a resumed run must get back: weights, optimiser,
    schedule, loss scaler and every random generator (augmentation, data order, SynerMix and
    dropout on the GPU), so that it continues as the uninterrupted run would have."""

    model: nn.Module
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loader: DataLoader
    device: torch.device

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimiser.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
                "numpy": _numpy_rng_state(),
                "loader": self.loader.generator.get_state(),
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        """The inverse of :meth:`state`."""
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimizer"])
        if state.get("scaler"):  # empty when the run so far was not fp16
            self.scaler.load_state_dict(state["scaler"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        _set_numpy_rng_state(state["rng"]["numpy"])
        self.loader.generator.set_state(state["rng"]["loader"])


def make_loader(
    dataset: ImageDataset,
    batch_size: int,
    *,
    shuffle: bool,
    workers: int,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        drop_last=drop_last,
        generator=generator,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


@dataclass
class _LoopParts:
    """What one training epoch needs, built once by :meth:`Trainer.fit`."""

    model: nn.Module
    frozen: list[nn.Module]
    loader: DataLoader
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    objective: Objective
    regularisers: list[EntropyRegulariser]
    device: torch.device
    precision: Precision


class Trainer:
    """Fine-tunes one model on one collection into a checkpoint pool.

    Usage: ``Trainer(config).fit(collection, "runs/ich")``. Calling ``fit`` again on the same
    folder resumes after the last finished epoch.
    """

    def __init__(self, config: TrainConfig | None = None) -> None:
        self.config = config or TrainConfig()

    def fit(
        self,
        collection: Collection,
        run_dir: str | Path,
        *,
        resume: bool = True,
        overwrite: bool = False,
    ) -> TrainResult:
        """Train into ``run_dir``, or resume the run there after its last finished epoch.

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
        with folder_lock(run_dir, "training"):
            return self._fit(collection, run_dir, objective, wants_pairs, resume, overwrite)

    def _fit(
        self,
        collection: Collection,
        run_dir: Path,
        objective: Objective,
        wants_pairs: bool,
        resume: bool,
        overwrite: bool,
    ) -> TrainResult:
        cfg = self.config
        state_path = run_dir / "state.pt"
        if overwrite:
            deleted = clear_run(run_dir)
            if deleted:
                console.print(f"[bold]overwrite[/]: deleted {', '.join(deleted)} in {run_dir}")
        if state_path.exists() and not resume:
            raise FileExistsError(
                f"{run_dir} already holds a run; resume it, start afresh with --overwrite "
                "(overwrite=True), or choose another folder"
            )
        configure_threads()
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        precision = Precision.resolve(cfg.precision, device)
        workers = resolve_workers(cfg.workers, device)

        state = load_training_state(state_path) if state_path.exists() else None
        options = {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES}
        fingerprint = run_fingerprint(collection, options)
        if state is not None:
            check_resume(run_dir, read_fingerprint(run_dir), fingerprint, collection)
            _check_resumable(state, cfg, collection.classes, run_dir)
        elif has_checkpoints(run_dir):
            raise RunMismatch(
                f"{run_dir} holds checkpoints but no state.pt to resume from; start afresh "
                "with --overwrite (overwrite=True; deletes them) or choose another --out"
            )
        collection = _split_for_run(
            collection, run_dir / "split.csv", cfg, resuming=state is not None
        )

        train_set, val_set = collection.split("train"), collection.split("val")
        validating = len(val_set) > 0
        if not validating and not cfg.keep_epochs:
            raise ValueError(
                "the validation split is empty: checkpoints and soups need one (a refit on "
                "train + val names the epochs to keep instead: keep_epochs)"
            )
        classes = collection.classes
        model = create_backbone(
            cfg.backbone, len(classes), weights=cfg.weights, pretrained=cfg.pretrained
        )
        prep = resolve_preprocessing(model, cfg.image_size, cfg.resize_mode)
        frozen = freeze_early_stages(model, cfg.freeze_stages)
        model.to(device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)

        cache = ImageCache(prep)
        cache.load(train_set.paths() + val_set.paths())
        train_ds = ImageDataset(
            train_set.paths(), train_set.targets(), cache, train_transform(prep, cfg.augment)
        )
        val_ds = ImageDataset(val_set.paths(), val_set.targets(), cache, eval_transform(prep))
        batch_size = min(cfg.batch_size, len(train_ds))
        if cfg.sampler == "balanced":
            balanced = ClassBalancedBatchSampler(
                train_ds.targets,
                batch_size,
                power=cfg.balance_power,
                seed=cfg.seed,
                drop_last=len(train_ds) > batch_size,
            )
            train_loader = _batch_sampler_loader(train_ds, balanced, workers, cfg.seed)
        elif cfg.sampler == "class_pairs" or (cfg.sampler == "auto" and wants_pairs):
            per_class = cfg.entropy.k + 1 if cfg.entropy.enabled and cfg.entropy.per_class else 2
            train_loader = _class_pairs_loader(
                train_ds, batch_size, workers, cfg.seed, max(2, per_class)
            )
        else:
            train_loader = make_loader(
                train_ds,
                batch_size,
                shuffle=True,
                workers=workers,
                seed=cfg.seed,
                drop_last=len(train_ds) > batch_size,
            )
        val_loader = (
            make_loader(val_ds, batch_size * 2, shuffle=False, workers=0) if validating else None
        )
        steps_per_epoch = len(train_loader)

        optimiser = _adamw(model, cfg)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimiser,
            T_0=cfg.restart_epochs * steps_per_epoch,
            T_mult=cfg.restart_mult,
            eta_min=cfg.lr * cfg.min_lr_ratio,
        )
        class_counts = np.bincount(train_set.targets(), minlength=len(classes))
        criterion = create_loss(
            cfg.loss, label_smoothing=cfg.label_smoothing, class_counts=class_counts.tolist()
        )
        regularisers = [EntropyRegulariser.from_config(cfg.entropy)] if cfg.entropy.enabled else []
        for regulariser in regularisers:
            with regulariser.tapping(model):  # a layer name that is not in the model fails now
                pass
        scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype is torch.float16)
        parts = _LoopParts(
            model,
            frozen,
            train_loader,
            optimiser,
            scheduler,
            scaler,
            criterion.to(device),
            objective,
            regularisers,
            device,
            precision,
        )
        resumable = ResumableLoop(model, optimiser, scheduler, scaler, train_loader, device)

        # the run's files once its start has succeeded: a start that failed before here
        # leaves nothing that a corrected rerun would take for this run
        if state is None:
            collection.save_split(run_dir / "split.csv")
            write_run_file(run_dir, fingerprint)
        _write_skipped(collection, run_dir / "skipped.csv")
        (run_dir / "config.yaml").write_text(
            yaml.safe_dump(
                {
                    **cfg.to_dict(),
                    "source": str(collection.root),
                    "label_column": collection.label_column,
                },
                sort_keys=False,
            )
        )
        pool = CheckpointPool.open(run_dir / "pool", cfg.keep_top_k)
        history: list[dict[str, float]] = []
        start_epoch, train_seconds, images_seen = 0, 0.0, 0
        if state is not None:
            resumable.restore(state)
            start_epoch, history = state["epoch"], state["history"]
            train_seconds, images_seen = state["train_seconds"], state["images_seen"]
            if start_epoch < cfg.epochs:
                console.print(f"[bold]resuming[/] {run_dir} after epoch {start_epoch}/{cfg.epochs}")
        elif cfg.head_init == "probe":
            plain = ImageDataset(
                train_set.paths(), train_set.targets(), cache, eval_transform(prep)
            )
            metrics = self._init_head_from_probe(
                model,
                make_loader(plain, batch_size * 2, shuffle=False, workers=0),
                val_loader,
                device,
                precision,
                classes,
            )
            history.append({"epoch": 0, **metrics})
            console.print(f"epoch   0 (linear probe head){_format_val(metrics)}")

        card = ModelCard(
            architecture=architecture_of(cfg.backbone),
            classes=list(classes),
            preprocessing=prep,
            provenance={
                "run": str(run_dir),
                "source": str(collection.root),
                "label_column": collection.label_column,
                "seed": cfg.seed,
                "backbone": cfg.backbone,
            },
        )
        cycle_end_epochs = set(cycle_ends(cfg))
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            loss, seen = self._train_epoch(parts, epoch)
            epoch_seconds = time.perf_counter() - t0
            train_seconds += epoch_seconds
            images_seen += seen
            metrics = self._validate(model, val_loader, device, precision, classes)
            metrics = {
                "epoch": epoch,
                "train_loss": loss,
                **metrics,
                "lr": optimiser.param_groups[0]["lr"],
                "epoch_seconds": epoch_seconds,
                "step_seconds": epoch_seconds / steps_per_epoch,
            }
            history.append(metrics)
            joined = pool.offer(
                epoch,
                {k: v for k, v in metrics.items() if k.startswith("val_")},
                model.state_dict(),
                replace(card, temperature=metrics.get("val_temperature", 1.0)),
                cycle_end=epoch in cycle_end_epochs,
                pinned=epoch in cfg.keep_epochs,
            )
            atomic_torch_save(
                {
                    **resumable.state(),
                    "epoch": epoch,
                    "history": history,
                    "train_seconds": train_seconds,
                    "images_seen": images_seen,
                    "config": cfg.to_dict(),
                    "classes": list(classes),
                },
                state_path,
            )
            (run_dir / "history.json").write_text(json.dumps(history, indent=2))
            console.print(
                f"epoch {epoch:>3}/{cfg.epochs}  loss {loss:.4f}{_format_val(metrics)}"
                f"  {epoch_seconds:.0f}s{'  → pool' if joined else ''}"
            )
        throughput = images_seen / train_seconds if train_seconds else float("nan")
        summary = {
            "train_seconds": train_seconds,
            "train_images_per_second": throughput,
            "hardware": hardware_label(device),
            "epochs": cfg.epochs,
            "pool": [e.name for e in pool.entries],
        }
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
        return TrainResult(run_dir, pool, history, train_seconds, throughput)

    def _train_epoch(self, parts: _LoopParts, epoch: int) -> tuple[float, int]:
        """One pass over the loader; returns the mean loss and the images trained on."""
        model, loader, optimiser, scaler = parts.model, parts.loader, parts.optimiser, parts.scaler
        device, precision, steps_per_epoch = parts.device, parts.precision, len(parts.loader)
        model.train()
        set_epoch = getattr(loader.batch_sampler, "set_epoch", None)  # heritage's samplers
        if set_epoch is not None:
            set_epoch(epoch)  # same batches again when resumed
        for module in parts.frozen:
            module.eval()
        if self.config.freeze_bn_stats:
            for module in batchnorm_layers(model):
                module.eval()
        total, count = 0.0, 0
        with progress_bar() as bar, contextlib.ExitStack() as taps:
            for regulariser in parts.regularisers:  # hooks on the layers they act on
                taps.enter_context(regulariser.tapping(model))
            task = bar.add_task(f"epoch {epoch}", total=steps_per_epoch)
            for step, (x, y) in enumerate(loader):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if self.config.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with precision.autocast(device):
                    out = parts.objective(model, x, y, parts.criterion)
                loss = out.loss
                for regulariser in parts.regularisers:
                    loss = loss + regulariser(out.features, out.labels)
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(
                        f"loss became {loss.item()} at epoch {epoch}, step {step}: lower the "
                        "learning rate; the pool and the last finished epoch are kept"
                    )
                optimiser.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()  # a no-op scaler unless training in fp16
                scaler.step(optimiser)
                scaler.update()
                parts.scheduler.step((epoch - 1) * steps_per_epoch + step + 1)
                total += loss.item() * len(x)
                count += len(x)
                bar.update(task, advance=1, info=f"loss {total / count:.4f}")
        return total / max(count, 1), count

    def _init_head_from_probe(
        self, model, train_loader, val_loader, device, precision, classes
    ) -> dict[str, float]:
        """LP-FT: fit a linear probe on frozen features, copy it into the head."""
        features, y = extract_features(model, train_loader, device, precision)
        weight, bias = LinearProbe().fit(features, y, len(classes)).head_weights()
        head = model.get_classifier()
        with torch.no_grad():
            head.weight.copy_(weight.to(head.weight))
            head.bias.copy_(bias.to(head.bias))
        return self._validate(model, val_loader, device, precision, classes)

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


def _format_val(metrics: dict[str, float]) -> str:
    """The validation part of an epoch's line (empty for a run without validation)."""
    return "".join(
        f"  {key} {metrics[key]:.4f}"
        for key in ("val_loss", "val_top1", "val_macro_f1")
        if key in metrics
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
    collection: Collection, split_path: Path, cfg: TrainConfig, *, resuming: bool
) -> Collection:
    """The split a run trains on: the saved one when resuming (never re-drawn, so no test image
    can move into training), else the collection's own, with a validation share carved out
    of train when it has none, or a new seeded stratified one."""
    if resuming:
        if not split_path.is_file():
            raise RunMismatch(
                f"{split_path.parent} holds a run without its split.csv, so it cannot be "
                "resumed; start afresh with --overwrite or choose another --out"
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


def _adamw(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; the head may get a larger learning rate."""
    head = list(model.get_classifier().parameters())
    head_ids = set(map(id, head))
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    return torch.optim.AdamW(
        [{"params": body, "lr": cfg.lr}, {"params": head, "lr": cfg.lr * cfg.head_lr_mult}],
        weight_decay=cfg.weight_decay,
    )


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
