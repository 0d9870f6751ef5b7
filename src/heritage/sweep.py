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

Relative paths in the file (``data: source``, ``train: weights``) are relative to the file's
folder, as in a config file, so every job of an array finds the same collection.
``DIR/sweep.json`` lists the runs (index, folder, values): every step rewrites it when the
grid changed, unless that would renumber a finished run (refused, naming it); a kept start or
run that the file no longer describes is refused with what differs.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heritage.collection import Collection, CollectionSpec
from heritage.config import PATH_OPTIONS, TrainConfig, paths_relative_to_file, read_yaml_mapping
from heritage.progress import console
from heritage.training.initialisation import SHAPING, read_init, shaping_changes
from heritage.training.runfolder import RunMismatch, collection_difference

PLAN_FILE = "sweep.json"


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
    file: Path = Path("sweep.yaml")  # the sweep file, named in messages

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
        data = paths_relative_to_file(data, PATH_OPTIONS["data"], path)
        options = paths_relative_to_file(
            dict(loaded.get("train") or {}), PATH_OPTIONS["train"], path
        )
        try:  # the shared options on their own, before any grid point
            TrainConfig.from_dict(dict(options))
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
        sweep = cls(CollectionSpec.from_dict(data), options, grid, Path(out), Path(path))
        sweep.runs()  # every grid point is a valid configuration, checked now
        return sweep

    @property
    def start_dir(self) -> Path:
        return self.out / "start"

    def run_dir(self, run: SweepRun | str) -> Path:
        """The run's folder; ``run`` may be its name, as ``sweep.json`` records it."""
        return self.out / "runs" / (run if isinstance(run, str) else run.name)

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
        """The shared start (split and LP-FT head) in ``start/``; kept if already there and
        still what the sweep file describes."""
        from heritage.training.trainer import Trainer

        collection = collection or self.collection()
        if read_init(self.start_dir) is None:
            Trainer(TrainConfig.from_dict(self.options)).fit(
                collection, self.start_dir, start_only=True
            )
        else:
            self._check_start(collection)
        self._sync_plan()
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
        collection = collection or self.collection()
        self._check_start(collection)
        self._sync_plan()
        run = runs[index]
        try:
            Trainer(run.config).fit(collection, self.run_dir(run))
        except RunMismatch as exc:  # its remedy names train's --overwrite, which sweep lacks
            raise SweepError(
                f"{exc.what}\nTo go on: restore {self.file} as it was when that run started "
                f"(to resume it), delete {self.run_dir(run)} (it holds this run alone) to train "
                "the run afresh, or give the changed sweep another --out."
            ) from None
        return self.run_dir(run)

    def finished(self, run: SweepRun | str) -> bool:
        """Whether the run has trained all its epochs (it wrote its summary)."""
        return (self.run_dir(run) / "train_summary.json").is_file()

    def cook(self, member: str = "best_checkpoint") -> Any:
        """The finished runs gathered into ``soup/`` with their soups cooked; returns the
        group's :class:`~heritage.run.Run`. Unfinished runs are named and left out."""
        from heritage.group import gather_runs

        self._sync_plan()
        runs = self.runs()
        done = [r for r in runs if self.finished(r)]
        waiting = [r for r in runs if not self.finished(r)]
        todo = ", ".join(f"{r.name} (--index {r.index})" for r in waiting)
        if len(done) < 2:
            raise SweepError(
                f"{len(done)} of the sweep's {len(runs)} runs have finished; a soup across runs "
                f"needs two. Not finished: {todo}"
            )
        if waiting:
            console.print(
                f"[yellow]note[/]: {len(waiting)} of the sweep's {len(runs)} runs have not "
                f"finished and are left out of the soup: {todo}; --cook again once they have"
            )
        group = gather_runs(
            [self.run_dir(r) for r in done],
            self.out / "soup",
            member,  # type: ignore[arg-type]
        )
        group.cook_soups()
        return group

    def run_all(self) -> Any:
        """Every step on this machine, one run after another."""
        collection = self.collection()
        self.prepare(collection)
        for run in self.runs():
            self.train(run.index, collection)
        return self.cook()

    def _check_start(self, collection: Collection) -> None:
        """Refuse a kept start that the sweep file no longer describes (another collection,
        or options that shape the starting model): new runs could not start there, and could
        not be averaged with the runs that did."""
        info = read_init(self.start_dir)
        if info is None:
            return
        problems = shaping_changes(info, TrainConfig.from_dict(self.options))
        differs = collection_difference(collection, self.start_dir / "split.csv")
        problems += [differs] if differs is not None else []
        if problems:
            lines = "\n".join(f"  - {p}" for p in problems)
            raise SweepError(
                f"{self.start_dir} is the shared start of this sweep's runs, made from "
                f"another collection or model than {self.file} now describes:\n{lines}\n"
                "Restore the file's data: and train: sections to go on with this sweep, or "
                "give the changed sweep another --out (its runs need a start of their own)."
            )

    def _plan(self) -> list[dict[str, Any]]:
        """What ``sweep.json`` holds: the runs, their values and folders, as JSON reads them
        back (so that a plan read from the file compares equal)."""
        plan = [
            {"index": r.index, "name": r.name, "values": r.values, "folder": str(self.run_dir(r))}
            for r in self.runs()
        ]
        return json.loads(json.dumps(plan, default=str))

    def _sync_plan(self) -> None:
        """Keep ``sweep.json`` (what a job array indexes) the file's grid: written by the
        first step, rewritten by any step after the grid changed, unless that renumbers a
        finished run (:meth:`_check_renumbered`)."""
        path = self.out / PLAN_FILE
        plan = self._plan()
        try:
            old = json.loads(path.read_text()) if path.is_file() else None
        except ValueError:
            old = None  # unreadable: rewritten from the file
        if old == plan:
            return
        if isinstance(old, list):
            old = [q for q in old if isinstance(q, dict)]
            self._check_renumbered(old, plan)
            before, now = [str(q.get("name")) for q in old], [p["name"] for p in plan]
            added = [n for n in now if n not in before]
            gone = [n for n in before if n not in now]
            console.print(
                f"[bold]grid changed[/] in {self.file}: {path} rewritten, {len(plan)} runs "
                f"(new: {', '.join(added) or 'none'}; no longer in the grid, their folders "
                f"kept but left out of the soup: {', '.join(gone) or 'none'})"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{PLAN_FILE}.{os.getpid()}.tmp")  # jobs of an array may race
        tmp.write_text(json.dumps(plan, indent=1) + "\n")
        os.replace(tmp, path)

    def _check_renumbered(self, old: list[dict[str, Any]], plan: list[dict[str, Any]]) -> None:
        """Refuse a new grid that gives a finished run's values another number: its folder
        would be left out and the run trained again under the new name."""
        new_names = {json.dumps(p["values"], sort_keys=True): p["name"] for p in plan}
        kept = {p["name"] for p in plan}
        moved = []
        for entry in old:
            if entry.get("name") in kept:
                continue
            name = str(entry.get("name"))
            renamed = new_names.get(json.dumps(entry.get("values"), sort_keys=True))
            if renamed and self.finished(name):
                moved.append(f"{name} would be {renamed}")
        if moved:
            first = next(iter(self.grid))
            raise SweepError(
                f"the grid in {self.file} changed since {self.out / PLAN_FILE} was written, "
                f"and it numbers finished runs otherwise ({'; '.join(moved)}): they would be "
                f"trained again. Keep the runs' order (add values at the end of the grid's "
                f"first list, {first}:) or give the changed sweep another --out."
            )
