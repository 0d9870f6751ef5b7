"""What the trainer does after each epoch, as :class:`~heritage.training.engine.Engine`
callbacks: keep the run's history and counters (:class:`RunLog`), offer the checkpoint to the
pool (:class:`OfferToPool`), and write ``history.json`` and the epoch's console line
(:class:`WriteHistory`). The resume state is written by
:class:`~heritage.training.engine.SaveState`, validation by
:class:`~heritage.training.engine.Validate`.

Their order in the trainer is the order of the run folder's guarantees: the checkpoint joins
the pool before the resume state names its epoch as finished, so a killed run never resumes
past a checkpoint it did not keep.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from heritage.model import ModelCard
from heritage.progress import console
from heritage.training.engine import Engine, EpochRecord
from heritage.training.pool import CheckpointPool


@dataclass
class RunLog:
    """Callback: the run's per-epoch history (``history.json``'s rows) and its training time
    and images, carried over from the resume state when a run is resumed."""

    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    images_seen: int = 0

    def on_epoch_end(self, engine: Engine, record: EpochRecord) -> None:
        self.train_seconds += record.seconds
        self.images_seen += record.images
        row = {
            "epoch": record.epoch,
            "train_loss": record.loss,
            **record.metrics,
            "lr": engine.optimiser.param_groups[0]["lr"],
            "epoch_seconds": record.seconds,
            "step_seconds": record.seconds / engine.steps_per_epoch,
        }
        record.metrics = row
        self.history.append(row)

    def counters(self) -> dict[str, Any]:
        """What the resume state keeps of this log."""
        return {
            "history": self.history,
            "train_seconds": self.train_seconds,
            "images_seen": self.images_seen,
        }


@dataclass
class OfferToPool:
    """Callback: the epoch's weights offered to the checkpoint pool, with its validation
    metrics and a model card carrying the temperature fitted on validation. Cycle ends and
    ``pinned`` epochs (a refit's ``keep_epochs``) are always kept."""

    pool: CheckpointPool
    card: ModelCard
    cycle_ends: set[int]
    pinned: set[int]

    def on_epoch_end(self, engine: Engine, record: EpochRecord) -> None:
        metrics = record.metrics
        record.notes["joined"] = self.pool.offer(
            record.epoch,
            {k: v for k, v in metrics.items() if k.startswith("val_")},
            engine.model.state_dict(),
            replace(self.card, temperature=metrics.get("val_temperature", 1.0)),
            cycle_end=record.epoch in self.cycle_ends,
            pinned=record.epoch in self.pinned,
        )


@dataclass
class WriteHistory:
    """Callback: ``history.json`` rewritten and one line printed per epoch."""

    path: Path
    log: RunLog
    epochs: int

    def on_epoch_end(self, engine: Engine, record: EpochRecord) -> None:
        self.path.write_text(json.dumps(self.log.history, indent=2))
        joined = record.notes.get("joined", False)
        console.print(
            f"epoch {record.epoch:>3}/{self.epochs}  loss {record.loss:.4f}"
            f"{format_val(record.metrics)}  {record.seconds:.0f}s{'  → pool' if joined else ''}"
        )


def format_val(metrics: dict[str, float]) -> str:
    """The validation part of an epoch's line (empty for a run without validation)."""
    return "".join(
        f"  {key} {metrics[key]:.4f}"
        for key in ("val_loss", "val_top1", "val_macro_f1")
        if key in metrics
    )


@dataclass
class AverageWeights:
    """Callback: weights averaged along the trajectory (``torch.optim.swa_utils``), offered to
    the pool at the end of every restart cycle, and after the last epoch, as ``ema_NNN`` or
    ``swa_NNN``.

    ``ema``: an exponential moving average updated after every step, with a horizon of about
    ``horizon_epochs`` epochs whatever the collection's size (decay 1 − 1 / steps). ``swa``: the
    equal average of the cycle's epoch ends, restarted with each cycle (a warm restart jumps
    to another basin, and weights from two basins do not average). Nearly free: one forward
    pass over validation per cycle, one more model in memory."""

    kind: str  # "ema" or "swa"
    pool: CheckpointPool
    card: ModelCard
    cycle_ends: set[int]
    validate: Callable[[nn.Module], dict[str, Any]]
    horizon_epochs: float = 1.0
    last_epoch: int = 0  # the run's last epoch, which offers its average whatever the cycle
    averaged: Any = None  # torch.optim.swa_utils.AveragedModel, made on first use

    def _average(self, engine: Engine) -> Any:
        if self.averaged is None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            decay = 1.0 - 1.0 / max(1.0, self.horizon_epochs * engine.steps_per_epoch)
            multi = get_ema_multi_avg_fn(decay) if self.kind == "ema" else None
            self.averaged = AveragedModel(engine.model, multi_avg_fn=multi, use_buffers=True)
        return self.averaged

    def on_step_end(self, engine: Engine) -> None:
        if self.kind == "ema":
            self._average(engine).update_parameters(engine.model)

    def on_epoch_end(self, engine: Engine, record: EpochRecord) -> None:
        averaged = self._average(engine)
        if self.kind == "swa":
            averaged.update_parameters(engine.model)
        if record.epoch not in self.cycle_ends and record.epoch != self.last_epoch:
            return
        metrics = self.validate(averaged.module)
        self.pool.offer(
            record.epoch,
            {k: v for k, v in metrics.items() if k.startswith("val_")},
            averaged.module.state_dict(),
            replace(self.card, temperature=metrics.get("val_temperature", 1.0)),
            cycle_end=True,
            name=f"{self.kind}_{record.epoch:03d}",
        )
        if "val_macro_f1" in metrics:
            record.metrics[f"{self.kind}_val_macro_f1"] = metrics["val_macro_f1"]
        if self.kind == "swa":  # the next cycle averages its own epochs
            averaged.n_averaged.zero_()

    def state(self) -> dict[str, Any]:
        """For the resume state: the average so far."""
        return {} if self.averaged is None else {"average": self.averaged.state_dict()}

    def restore(self, engine: Engine, state: dict[str, Any]) -> None:
        if "average" in state:
            self._average(engine).load_state_dict(state["average"])
