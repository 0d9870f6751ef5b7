"""The one fine-tuning loop: a plain PyTorch epoch over a *step*, with resume and per-epoch
work plugged in as callbacks.

Every fine-tune heritage runs goes through :class:`Engine`: the single-label trainer
(:class:`heritage.training.trainer.Trainer`, a step that calls a mixing objective and adds
feature regularisers) and the multi-task image model of the metadata predictor
(:mod:`heritage.metadata.multitask`, a step with one masked loss per property). What differs
between them is the step and what happens after each epoch; the rest is the recipe of the
model-soups paper and lives here once:

* AdamW with a larger learning rate for the head (:func:`create_engine`), cosine annealing
  with warm restarts (so one run visits several minima: :func:`cycle_ends` names the epochs
  that end a cycle), mixed precision with a loss scaler for fp16;
* frozen early stages and frozen BatchNorm statistics kept in eval mode during training;
* a non-finite loss stops the run at once, the last finished epoch kept;
* everything a resumed run needs to continue exactly as the uninterrupted one would
  (:meth:`Engine.state`): weights, optimiser, schedule, scaler and every random generator.

After each epoch the engine hands an :class:`EpochRecord` to its callbacks in order
(Lightning / fastai style): one validates, one offers the checkpoint to a pool, one saves the
resume state, one writes the history. Devices and precision come from
:mod:`heritage.runtime`.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from heritage.backbones import batchnorm_layers
from heritage.config import TrainConfig
from heritage.progress import progress_bar
from heritage.runtime import Precision

#: a training step: (model, images on the device, the batch's targets as the loader gave them)
#: -> the loss to minimise
Step = Callable[[nn.Module, torch.Tensor, Any], torch.Tensor]


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
class EpochRecord:
    """What one finished epoch hands its callbacks; they read it and add to ``metrics``
    (validation scores, whether the checkpoint joined the pool) in the order they run."""

    epoch: int
    loss: float  # mean training loss per image
    images: int  # images trained on
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)
    #: what a callback tells later ones that is no metric (whether the checkpoint was kept)
    notes: dict[str, Any] = field(default_factory=dict)


class Callback(Protocol):
    """Work done after each epoch: validate, keep a checkpoint, save the resume state, log."""

    def on_epoch_end(self, engine: Engine, record: EpochRecord) -> None: ...


@dataclass
class Engine:
    """A fine-tuning loop over ``step``, resumable after any finished epoch.

    ``taps`` are context managers entered around each epoch (the entropy regulariser's forward
    hooks); ``frozen`` modules, and every BatchNorm layer when ``freeze_bn_stats``, stay in eval
    mode so their statistics stay pretrained.
    """

    model: nn.Module
    loader: DataLoader
    step: Step
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: Precision
    frozen: list[nn.Module] = field(default_factory=list)
    freeze_bn_stats: bool = True
    channels_last: bool = True
    taps: Sequence[Callable[[], contextlib.AbstractContextManager]] = ()

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def train_epoch(self, epoch: int) -> tuple[float, int]:
        """One pass over the loader; returns the mean loss per image and the images seen."""
        self._train_mode()
        set_epoch = getattr(self.loader.batch_sampler, "set_epoch", None)  # heritage's samplers
        if set_epoch is not None:
            set_epoch(epoch)  # the same batches again when resumed
        total, count, steps = 0.0, 0, self.steps_per_epoch
        with progress_bar() as bar, contextlib.ExitStack() as taps:
            for tap in self.taps:
                taps.enter_context(tap())
            task = bar.add_task(f"epoch {epoch}", total=steps)
            for i, (x, target) in enumerate(self.loader):
                x = x.to(self.device, non_blocking=True)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                loss = self._optimise(x, target, epoch, i)
                self.scheduler.step((epoch - 1) * steps + i + 1)
                total += loss * len(x)
                count += len(x)
                bar.update(task, advance=1, info=f"loss {total / count:.4f}")
        return total / max(count, 1), count

    def _train_mode(self) -> None:
        self.model.train()
        for module in self.frozen:
            module.eval()
        if self.freeze_bn_stats:
            for module in batchnorm_layers(self.model):
                module.eval()

    def _optimise(self, x: torch.Tensor, target: Any, epoch: int, step: int) -> float:
        """One optimiser step on one batch; returns its loss."""
        with self.precision.autocast(self.device):
            loss = self.step(self.model, x, target)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"loss became {value} at epoch {epoch}, step {step}: lower the learning rate; "
                "the last finished epoch is kept"
            )
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # a no-op scaler unless training in fp16
        self.scaler.step(self.optimiser)
        self.scaler.update()
        return value

    def run(self, epochs: int, *, start: int = 1, callbacks: Iterable[Callback] = ()) -> None:
        """Train epochs ``start`` .. ``epochs``, calling each callback after every epoch."""
        callbacks = list(callbacks)
        for epoch in range(start, epochs + 1):
            t0 = time.perf_counter()
            loss, images = self.train_epoch(epoch)
            record = EpochRecord(epoch, loss, images, time.perf_counter() - t0)
            for callback in callbacks:
                callback.on_epoch_end(self, record)

    def state(self) -> dict[str, Any]:
        """What a resumed run must get back: weights, optimiser, schedule, loss scaler and
        every random generator (augmentation, data order, SynerMix, dropout on the GPU)."""
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


def create_engine(
    model: nn.Module,
    head: nn.Module,
    loader: DataLoader,
    step: Step,
    config: TrainConfig,
    *,
    device: torch.device,
    precision: Precision,
    frozen: list[nn.Module] | None = None,
    channels_last: bool = True,
    taps: Sequence[Callable[[], contextlib.AbstractContextManager]] = (),
) -> Engine:
    """An engine with the recipe's optimiser and schedule: AdamW over the trainable parameters,
    ``head`` at ``head_lr_mult`` times the learning rate, cosine annealing with warm restarts
    every ``restart_epochs`` (times ``restart_mult``) epochs, stepped per batch."""
    head_params = list(head.parameters())
    head_ids = set(map(id, head_params))
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    optimiser = torch.optim.AdamW(
        [
            {"params": body, "lr": config.lr},
            {"params": head_params, "lr": config.lr * config.head_lr_mult},
        ],
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimiser,
        T_0=config.restart_epochs * len(loader),
        T_mult=config.restart_mult,
        eta_min=config.lr * config.min_lr_ratio,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype is torch.float16)
    return Engine(
        model,
        loader,
        step,
        optimiser,
        scheduler,
        scaler,
        device,
        precision,
        frozen=frozen or [],
        freeze_bn_stats=config.freeze_bn_stats,
        channels_last=channels_last,
        taps=taps,
    )


@dataclass
class SaveState:
    """Callback: the engine's resume state plus ``extra()`` (history, pool, counters) written
    atomically to ``path`` after every epoch, so a killed run loses at most the epoch it was
    in."""

    path: Path
    extra: Callable[[EpochRecord], dict[str, Any]]

    def on_epoch_end(self, engine: Engine, record: EpochRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(
            {**engine.state(), "epoch": record.epoch, **self.extra(record)}, self.path
        )


@dataclass
class Validate:
    """Callback: ``score(model)`` (a dict of validation metrics, empty without validation
    images) added to the epoch's metrics; the model is put back in training mode by the next
    epoch."""

    score: Callable[[nn.Module], dict[str, Any]]

    def on_epoch_end(self, engine: Engine, record: EpochRecord) -> None:
        record.metrics.update(self.score(engine.model))
