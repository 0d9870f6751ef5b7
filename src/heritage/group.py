"""Soups across runs: several runs that share an initialisation, gathered into one run folder.

Averaging along one run's trajectory gains little; averaging runs that start from one
linear-probe head but differ in seed or hyper-parameters gains more (DiWA, model
ratatouille). :func:`gather_runs` checks that runs can be averaged and writes a *group*: an
ordinary run folder whose checkpoint pool holds one member from each run (its best checkpoint
by default). Everything that works on a run then works on the group: ``heritage soup`` cooks
the uniform and greedy soups of the members (greedy order on the shared validation split),
soft voting over the pool is the N-model baseline, and ``heritage evaluate`` and
``heritage analyse`` report them.

Group folder::

    group.json     the runs, the member taken from each, and why they may be averaged
    config.yaml    the first run's (source, label column, backbone, preprocessing)
    split.csv      the split every run shares
    pool/          one model file per run, named after it
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

from heritage.locking import folder_lock
from heritage.model import model_paths
from heritage.run import Run, RunError
from heritage.training.initialisation import read_init
from heritage.training.pool import CheckpointPool

Member = Literal["best_checkpoint", "uniform_soup", "greedy_soup"]
GROUP_FILE = "group.json"


class GroupError(RunError):
    """Runs that cannot be averaged together; the message names what differs."""


def _differences(runs: list[Run]) -> list[str]:
    """What keeps the runs from sharing a weight space, one line per difference."""
    first, problems = runs[0], []
    split = (first.folder / "split.csv").read_bytes()
    start = read_init(first.folder)
    for run in runs[1:]:
        name = run.folder
        if run.card.architecture != first.card.architecture:
            problems.append(
                f"{name} is a {run.card.architecture}, {first.folder} a {first.card.architecture}"
            )
        elif run.card.classes != first.card.classes:
            problems.append(f"{name} was trained on other classes than {first.folder}")
        elif run.card.preprocessing != first.card.preprocessing:
            problems.append(f"{name} sees images at another size or normalisation")
        if (run.folder / "split.csv").read_bytes() != split:
            problems.append(f"{name} has another split than {first.folder}")
        other = read_init(run.folder)
        if start is None or other is None:
            missing = first.folder if start is None else name
            problems.append(f"{missing} did not record its starting point (init.json)")
        elif other["digest"] != start["digest"]:
            how = f"{other['source']} vs {start['source']}"
            if other["source"] == start["source"]:  # e.g. two probes, each fitted on its own
                how = f"each fitted its own {start['source']} head"
            problems.append(f"{name} started from another head than {first.folder} ({how})")
    return problems


def check_averageable(runs: Sequence[Run]) -> None:
    """Refuse runs whose weights cannot be averaged: another backbone, classes, preprocessing,
    split or starting state (:mod:`heritage.training.initialisation`)."""
    runs = list(runs)
    if len(runs) < 2:
        raise GroupError("a soup across runs needs at least two runs")
    names = [r.folder.resolve() for r in runs]
    if len(set(names)) < len(names):
        raise GroupError("a run is given twice")
    problems = _differences(runs)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise GroupError(
            f"these runs cannot be averaged:\n{lines}\nRuns started with `heritage train "
            "--init-from RUN` (or a sweep) share a starting point and a split."
        )


def _member_path(run: Run, member: Member) -> Path:
    """The model file a run contributes."""
    path = run.model_path(member)
    if not model_paths(path)[0].is_file():
        raise GroupError(f"{run.folder} has no {member}: run `heritage soup {run.folder}` first")
    return path


def gather_runs(
    runs: Sequence[str | Path], out: str | Path, member: Member = "best_checkpoint"
) -> Run:
    """Write the group of ``runs`` into ``out`` (see the module's docstring) and open it."""
    if member not in get_args(Member):
        raise GroupError(f"--member must be one of {', '.join(get_args(Member))}, got {member!r}")
    opened = [Run.open(r) for r in runs]
    check_averageable(opened)
    paths = [_member_path(run, member) for run in opened]  # all found before anything changes
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / GROUP_FILE).is_file():
        raise GroupError(f"{out} exists and is not a group folder; choose another --out")
    with folder_lock(out, "gathering runs"):
        shutil.rmtree(out / "pool", ignore_errors=True)
        shutil.rmtree(out / "soups", ignore_errors=True)
        first = opened[0].folder
        for name in ("config.yaml", "split.csv"):
            shutil.copyfile(first / name, out / name)
        pool = CheckpointPool(out / "pool", keep_top_k=len(opened))
        members = []
        for i, (run, path) in enumerate(zip(opened, paths, strict=True), start=1):
            name = f"{i:02d}_{run.folder.name}"
            pool.adopt(path, name, epoch=i, reason=f"member ({member} of {run.folder})")
            members.append({"run": str(run.folder), "model": str(path), "name": name})
        info = {"member": member, "members": members, "init": read_init(first)}
        (out / GROUP_FILE).write_text(json.dumps(info, indent=1) + "\n")
        summaries = [r.folder / "train_summary.json" for r in opened]
        seconds = [json.loads(p.read_text())["train_seconds"] for p in summaries if p.is_file()]
        summary = {
            "train_seconds": sum(seconds),
            "runs": len(opened),
            "pool": [e.name for e in pool.entries],
        }
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return Run.open(out)


def read_group(folder: str | Path) -> dict | None:
    """``group.json`` of a group folder; None for an ordinary run."""
    path = Path(folder) / GROUP_FILE
    return json.loads(path.read_text()) if path.is_file() else None
