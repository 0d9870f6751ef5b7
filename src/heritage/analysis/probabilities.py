"""Each model's probabilities on a split, computed once and cached on disk.

Every number and plot of the analysis derives from these arrays, so a report over ~8
checkpoints, two soups and ~700 test images costs one forward pass per model — and none on a
second run. The cache is ``RUN/analysis/probs_<split>.npz``, keyed by model name; an entry is
recomputed when its model file has changed since (its modification time or size differs from
the one recorded), and the whole cache is dropped when the split's images or classes differ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from heritage.model import build_model, load_card, load_state, predict_proba
from heritage.modelfile import model_paths
from heritage.progress import progress_bar
from heritage.runtime import Precision, resolve_device

__all__ = ["ProbabilityCache", "SplitProbabilities", "model_proba", "split_probabilities"]


def model_proba(
    path: Path, loader: DataLoader, device: torch.device, precision: Precision
) -> np.ndarray:
    """Load one model file and return its softmax probabilities over ``loader`` (n, C).

    The only place the analysis runs a network (one model in memory at a time)."""
    model = build_model(load_card(path), load_state(path)).to(device)
    model = model.to(memory_format=torch.channels_last).eval()
    return predict_proba(model, loader, device, precision)


def _stamp(path: Path) -> np.ndarray:
    """What identifies a model file's version: mtime (ns) and size of weights and card."""
    stats = [p.stat() for p in model_paths(path)]
    return np.array([v for s in stats for v in (s.st_mtime_ns, s.st_size)], dtype=np.int64)


@dataclass
class ProbabilityCache:
    """``probs_<split>.npz``: per model name its probabilities and file stamp, plus the image
    paths, targets and classes they belong to."""

    path: Path
    paths: list[str]
    targets: np.ndarray
    classes: list[str]
    entries: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def open(
        cls, path: Path, paths: list[str], targets: np.ndarray, classes: list[str]
    ) -> ProbabilityCache:
        """Read the cache if it belongs to these images and classes, else start empty."""
        cache = cls(Path(path), list(paths), np.asarray(targets), list(classes))
        if not cache.path.is_file():
            return cache
        try:
            with np.load(cache.path, allow_pickle=False) as data:
                same = (
                    data["__paths__"].tolist() == cache.paths
                    and np.array_equal(data["__targets__"], cache.targets)
                    and data["__classes__"].tolist() == cache.classes
                )
                if same:
                    for key in data.files:
                        if key.startswith("p__"):
                            name = key[3:]
                            cache.entries[name] = (data[key], data[f"s__{name}"])
        except (OSError, KeyError, ValueError):  # unreadable or foreign: recompute
            cache.entries.clear()
        return cache

    def get(self, name: str, model: Path) -> np.ndarray | None:
        """The cached probabilities of ``model``, or None if missing or stale."""
        entry = self.entries.get(name)
        if entry is None or not np.array_equal(entry[1], _stamp(model)):
            return None
        return entry[0]

    def put(self, name: str, model: Path, proba: np.ndarray) -> None:
        self.entries[name] = (np.asarray(proba, dtype=np.float32), _stamp(model))

    def save(self) -> None:
        """Write atomically (a killed process leaves the old cache, never half a file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "__paths__": np.array(self.paths, dtype=str),
            "__targets__": self.targets,
            "__classes__": np.array(self.classes, dtype=str),
        }
        for name, (proba, stamp) in self.entries.items():
            arrays[f"p__{name}"], arrays[f"s__{name}"] = proba, stamp
        tmp = self.path.with_name(self.path.stem + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, self.path)


def _device(asked: str | None, trained_on: str) -> torch.device:
    """The device asked for; else the run's own, unless it is not here (a run trained on a GPU
    analysed on a laptop), then the best available."""
    if asked:
        return resolve_device(asked)
    try:
        return resolve_device(trained_on)
    except (ValueError, RuntimeError):
        return resolve_device("auto")


@dataclass
class SplitProbabilities:
    """The probabilities of several models on one split, aligned with ``paths``/``targets``."""

    split: str
    paths: list[str]
    targets: np.ndarray
    probas: dict[str, np.ndarray]
    computed: list[str]  # models that needed a forward pass this time
    reused: list[str]  # models read from the cache


def split_probabilities(
    run,
    split: str,
    models: Mapping[str, Path],
    cache_path: Path,
    device: str | None = None,
) -> SplitProbabilities:
    """Probabilities of ``models`` (name → model file) on a split of ``run`` (a
    :class:`~heritage.run.Run`), from the cache where it is fresh, else one forward pass each.

    Images are decoded only if some model has to be run."""
    part = run.collection.split(split)
    paths, targets = part.paths(), part.targets()
    cache = ProbabilityCache.open(cache_path, paths, targets, run.collection.classes)
    probas: dict[str, np.ndarray] = {}
    todo = []
    for name, path in models.items():
        cached = cache.get(name, path)
        if cached is None:
            todo.append(name)
        else:
            probas[name] = cached.astype(np.float64)
    if todo:
        loader = run.loader(split)
        dev = _device(device, run.config.device)
        precision = Precision.resolve(run.config.precision, dev)
        with progress_bar() as bar:
            task = bar.add_task(f"probabilities on {split}", total=len(todo))
            for name in todo:
                bar.update(task, info=name)
                proba = model_proba(models[name], loader, dev, precision)
                cache.put(name, models[name], proba)
                probas[name] = proba.astype(np.float64)
                bar.advance(task)
        cache.save()
    ordered = {name: probas[name] for name in models}
    reused = [n for n in models if n not in todo]
    return SplitProbabilities(split, paths, targets, ordered, todo, reused)
