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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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
