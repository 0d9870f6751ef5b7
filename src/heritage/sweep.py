"""A sweep: a grid of training options whose runs share one starting point, so that they can
be averaged into one model afterwards (DiWA, model ratatouille).

A sweep file is YAML with the collection (``data:``, as in a config file), the options every
run shares (``train:``) and the grid (``grid:``, option -> list of values; runs are the
Cartesian product)::

    data: {source: ../shared/datasets/ich-mekong}
    train: {epochs: 12, image_size: 224}
    grid: {seed: [0, 1, 2, 3], lr: [1.0e-4, 3.0e-5]}

Three steps, each one process, so that a cluster can run the middle one as a job array:

1. :meth:`Sweep.prepare` (``heritage sweep FILE --out DIR --prepare``): the shared start in
   ``DIR/start`` (the split and the LP-FT head; no epoch is trained);
2. :meth:`Sweep.train` (``... --index I``, e.g. ``I=$SLURM_ARRAY_TASK_ID``): run I in
   ``DIR/runs/NAME``, started from ``DIR/start``; rerunning it resumes;
3. :meth:`Sweep.cook` (``... --cook``, or ``heritage soup DIR/runs/* --out DIR/soup``): the
   runs gathered into ``DIR/soup`` (:mod:`heritage.group`) and their soups cooked.

Without any of these options ``heritage sweep`` runs the three steps in turn.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heritage.collection import Collection, CollectionSpec
from heritage.config import TrainConfig, read_yaml_mapping
from heritage.training.initialisation import SHAPING, read_init


class SweepError(ValueError):
    """A sweep file or step that cannot run; the message says what to change."""


@dataclass
class SweepRun:
    """One point of the grid."""

    index: int
    name: str  # the run's folder under runs/
    values: dict[str, Any]  # the grid's values for this run
    config: TrainConfig


def _name(index: int, values: dict[str, Any]) -> str:
    parts = [f"{k}{v}" for k, v in values.items()]
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", f"{index:02d}_" + "_".join(parts))


@dataclass
class Sweep:
    """A grid of runs over one collection; see the module's docstring."""

    data: CollectionSpec
    options: dict[str, Any]  # shared by every run (the file's train: section)
    grid: dict[str, list[Any]]
    out: Path

    @classmethod
    def from_yaml(cls, path: str | Path, out: str | Path) -> Sweep:
        try:
            loaded = read_yaml_mapping(path, "sweep file")
        except ValueError as exc:
            raise SweepError(str(exc)) from None
        if set(loaded) - {"data", "train", "grid"}:
            raise SweepError(
                f"{path}: a sweep file has the sections data:, train: and grid: (found "
                f"{sorted(loaded)})"
            )
        data = loaded.get("data") or {}
        if isinstance(data, str):  # data: PATH, the collection's source alone
            data = {"source": data}
        if not isinstance(data, dict):
            raise SweepError(f"{path}: data: is the collection, e.g. data: {{source: FOLDER}}")
        try:  # the shared options on their own, before any grid point
            TrainConfig.from_dict(dict(loaded.get("train") or {}))
        except (TypeError, ValueError) as exc:
            raise SweepError(f"{path}: train: {exc}") from None
        grid = loaded.get("grid") or {}
        if not isinstance(grid, dict) or not grid:
            raise SweepError(f"{path}: grid: must map options to lists of values")
        grid = {k: v if isinstance(v, list) else [v] for k, v in grid.items()}
        shaping = sorted(set(grid) & {*SHAPING, "init_from"})
        if shaping:
            raise SweepError(
                f"{path}: {', '.join(shaping)} cannot vary in a sweep: its runs start from one "
                "model, so that they can be averaged (sweep them as separate sweeps)"
            )
        sweep = cls(
            CollectionSpec.from_dict(data),
            dict(loaded.get("train") or {}),
            grid,
            Path(out),
        )
        sweep.runs()  # every grid point is a valid configuration, checked now
        return sweep

    @property
    def start_dir(self) -> Path:
        return self.out / "start"

    def run_dir(self, run: SweepRun) -> Path:
        return self.out / "runs" / run.name

    def runs(self) -> list[SweepRun]:
        """The grid's runs, in a fixed order (the job array's indices)."""
        keys = list(self.grid)
        out = []
        for i, values in enumerate(itertools.product(*(self.grid[k] for k in keys))):
            chosen = dict(zip(keys, values, strict=True))
            try:
                config = TrainConfig.from_dict(
                    {**self.options, **chosen, "init_from": str(self.start_dir)}
                )
            except (TypeError, ValueError) as exc:
                raise SweepError(f"grid point {chosen}: {exc}") from exc
            out.append(SweepRun(i, _name(i, chosen), chosen, config))
        return out

    def collection(self) -> Collection:
        return self.data.load()

    def prepare(self, collection: Collection | None = None) -> Path:
        """The shared start (split and LP-FT head) in ``start/``; kept if already there."""
        from heritage.training.trainer import Trainer

        if read_init(self.start_dir) is None:
            Trainer(TrainConfig.from_dict(self.options)).fit(
                collection or self.collection(), self.start_dir, start_only=True
            )
        self._write_plan()
        return self.start_dir

    def train(self, index: int, collection: Collection | None = None) -> Path:
        """Train (or resume) run ``index`` from the shared start."""
        from heritage.training.trainer import Trainer

        runs = self.runs()
        if not 0 <= index < len(runs):
            raise SweepError(
                f"--index {index} is outside the sweep's {len(runs)} runs (0..{len(runs) - 1})"
            )
        if read_init(self.start_dir) is None:
            raise SweepError(
                f"{self.start_dir} holds no shared start yet: run the sweep with --prepare "
                "once before its runs"
            )
        run = runs[index]
        Trainer(run.config).fit(collection or self.collection(), self.run_dir(run))
        return self.run_dir(run)

    def cook(self, member: str = "best_checkpoint") -> Any:
        """The finished runs gathered into ``soup/`` with their soups cooked; returns the
        group's :class:`~heritage.run.Run`."""
        from heritage.group import gather_runs

        done = [
            self.run_dir(r)
            for r in self.runs()
            if (self.run_dir(r) / "train_summary.json").is_file()
        ]
        if len(done) < 2:
            raise SweepError(
                f"{len(done)} of the sweep's runs have finished; a soup across runs needs two"
            )
        group = gather_runs(done, self.out / "soup", member)  # type: ignore[arg-type]
        group.cook_soups()
        return group

    def run_all(self) -> Any:
        """Every step on this machine, one run after another."""
        collection = self.collection()
        self.prepare(collection)
        for run in self.runs():
            self.train(run.index, collection)
        return self.cook()

    def _write_plan(self) -> None:
        """``sweep.json``: the runs, their options and folders (what a job array indexes)."""
        plan = [
            {"index": r.index, "name": r.name, "values": r.values, "folder": str(self.run_dir(r))}
            for r in self.runs()
        ]
        (self.out / "sweep.json").write_text(json.dumps(plan, indent=1, default=str) + "\n")
