"""The checkpoint pool: the ingredients that soups are cooked from.

One fine-tuning run with warm restarts visits several minima. The pool keeps, on disk, the
best ``k`` checkpoints by each validation criterion, the end of every restart cycle and any
epoch pinned by the run (a refit keeps the epochs its recipe names); a checkpoint that no
criterion wants any more is deleted. ``pool.json`` is the index and is
written atomically after each change, so a killed run never loses or corrupts the pool.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from heritage.model import ModelCard, load_card, save_model_file
from heritage.modelfile import model_paths

#: criterion name -> (metric key, higher is better)
CRITERIA: dict[str, tuple[str, bool]] = {
    "val_loss": ("val_loss", False),
    "val_top1": ("val_top1", True),
    "val_macro_f1": ("val_macro_f1", True),
}


def checkpoint_name(epoch: int) -> str:
    """The file stem of the checkpoint saved at the end of ``epoch``, e.g. ``epoch_007``."""
    return f"epoch_{epoch:03d}"


def epoch_of(name: str) -> int | None:
    """The epoch in a checkpoint's name (``epoch_007`` -> 7); None for any other model."""
    match = re.fullmatch(r"epoch_(\d+)", name)
    return int(match.group(1)) if match else None


@dataclass
class PoolEntry:
    name: str  # file stem inside the pool folder, e.g. "epoch_007"
    epoch: int
    metrics: dict[str, float]
    reasons: list[str] = field(default_factory=list)


@dataclass
class CheckpointPool:
    folder: Path
    keep_top_k: int = 2
    entries: list[PoolEntry] = field(default_factory=list)

    @property
    def index_path(self) -> Path:
        return self.folder / "pool.json"

    @classmethod
    def open(cls, folder: str | Path, keep_top_k: int = 2) -> CheckpointPool:
        """Open an existing pool (resume) or start an empty one."""
        folder = Path(folder)
        pool = cls(folder, keep_top_k)
        if pool.index_path.is_file():
            data = json.loads(pool.index_path.read_text())
            pool.keep_top_k = data.get("keep_top_k", keep_top_k)
            for entry in data["entries"]:
                e = PoolEntry(**entry)
                if all(p.is_file() for p in model_paths(folder / e.name)):
                    pool.entries.append(e)
                else:
                    warnings.warn(
                        f"{folder}: checkpoint {e.name} is listed but its files are "
                        "missing; leaving it out of the pool",
                        stacklevel=2,
                    )
        return pool

    def paths(self) -> list[Path]:
        return [self.folder / e.name for e in self.entries]

    def _reasons(self, candidate: PoolEntry, cycle_end: bool, pinned: bool) -> dict[str, list[str]]:
        """Which criteria each entry (existing and candidate) satisfies."""
        everyone = [*self.entries, candidate]
        reasons: dict[str, list[str]] = {e.name: [] for e in everyone}
        for crit, (key, higher) in CRITERIA.items():
            ranked = sorted(
                (e for e in everyone if key in e.metrics),
                key=lambda e, k=key, h=higher: (-e.metrics[k] if h else e.metrics[k], e.epoch),
            )
            for e in ranked[: self.keep_top_k]:
                reasons[e.name].append(f"top{self.keep_top_k}_{crit}")
        for e in everyone:
            previous = [r for r in e.reasons if r in ("cycle_end", "pinned")]
            reasons[e.name] += previous
        if cycle_end:
            reasons[candidate.name].append("cycle_end")
        if pinned:
            reasons[candidate.name].append("pinned")
        return reasons

    def offer(
        self,
        epoch: int,
        metrics: dict[str, float],
        state_dict: dict[str, torch.Tensor],
        card: ModelCard,
        cycle_end: bool = False,
        pinned: bool = False,
        name: str | None = None,
    ) -> bool:
        """Consider the model at the end of ``epoch``; returns True if it joined the pool.
        ``metrics`` may be empty (a run without validation): then only ``cycle_end`` and
        ``pinned`` keep a checkpoint. ``name`` replaces ``epoch_NNN`` for weights that are not
        the epoch's own (``ema_NNN``, averaged along the trajectory)."""
        candidate = PoolEntry(name or checkpoint_name(epoch), epoch, dict(metrics))
        # an epoch re-run after a resume replaces its earlier entry
        self.entries = [e for e in self.entries if e.name != candidate.name]
        reasons = self._reasons(candidate, cycle_end, pinned)
        joined = bool(reasons[candidate.name])
        if joined:
            card = replace(
                card, metrics=dict(metrics), provenance={**card.provenance, "epoch": epoch}
            )
            save_model_file(self.folder / candidate.name, state_dict, card)
        kept, dropped = [], []
        for e in [*self.entries, candidate]:
            e.reasons = reasons[e.name]
            (kept if e.reasons else dropped).append(e)
        self.entries = sorted(kept, key=lambda e: e.epoch)
        # index first, files second: a kill in between leaves stray files, never an index
        # entry without its file
        self._write_index()
        for e in dropped:
            self._delete(e.name)
        return joined

    def adopt(self, model: Path, name: str, *, epoch: int, reason: str) -> PoolEntry:
        """Copy an existing model file into the pool as ``name``, with the validation metrics
        of its card (a group's member: :mod:`heritage.group`)."""
        card = load_card(model)
        for source, target in zip(model_paths(model), model_paths(self.folder / name), strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        metrics = {k: v for k, v in card.metrics.items() if k.startswith("val_")}
        entry = PoolEntry(name, epoch, metrics, [reason])
        self.entries = sorted([*self.entries, entry], key=lambda e: e.epoch)
        self._write_index()
        return entry

    def _delete(self, name: str) -> None:
        for path in model_paths(self.folder / name):
            path.unlink(missing_ok=True)

    def _write_index(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {"keep_top_k": self.keep_top_k, "entries": [asdict(e) for e in self.entries]}
        tmp = self.index_path.with_name("pool.json.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.index_path)

    def best(self, key: str = "val_macro_f1") -> PoolEntry:
        """The single best checkpoint by a validation metric (ties: later epoch loses)."""
        if not self.entries:
            raise ValueError(f"the checkpoint pool in {self.folder} is empty")
        scored = [e for e in self.entries if key in e.metrics]
        if not scored:
            raise ValueError(
                f"the checkpoints in {self.folder} have no {key} (a run without validation, "
                "e.g. a refit): there is no best one to pick"
            )
        higher = CRITERIA.get(key, (key, True))[1]
        return sorted(
            scored, key=lambda e: (-e.metrics[key] if higher else e.metrics[key], e.epoch)
        )[0]
