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
    pool/          one model file per run, named after its folder (numbered 01_, 02_, ...
                   only when two runs share a folder name)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

from heritage.locking import folder_lock
from heritage.modelfile import model_paths
from heritage.run import METHODS, Run, RunError
from heritage.training.initialisation import read_init
from heritage.training.pool import CheckpointPool, epoch_of
from heritage.training.runfolder import GROUP_FILE, group_members, read_group

__all__ = ["GROUP_FILE", "GroupError", "Member", "check_averageable", "gather_runs", "read_group"]

Member = Literal["best_checkpoint", "uniform_soup", "greedy_soup"]
#: names a member may not take in the pool: the methods a group's reports compare, and the
#: pool's own index (pool/pool.json)
_TAKEN = frozenset({*METHODS, "pool"})


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


def _refuse_groups(runs: list[Run]) -> None:
    """A group given as one of the runs: it has no start of its own (it gathers finished
    runs), so the message names its runs and the command with them in its place."""
    given = [(run.folder, group_members(run.folder)) for run in runs]
    groups = [(folder, members) for folder, members in given if members is not None]
    if not groups:
        return
    expanded = " ".join(" ".join(members or [str(f)]) for f, members in given)
    named = "; ".join(f"{f} gathers {', '.join(m) or 'no recorded runs'}" for f, m in groups)
    raise GroupError(
        f"{', '.join(str(f) for f, _ in groups)}: a group of runs, not a run ({named}). "
        f"Give its runs instead: heritage soup {expanded} --out OUT"
    )


def check_averageable(runs: Sequence[Run]) -> None:
    """Refuse runs whose weights cannot be averaged: another backbone, classes, preprocessing,
    split or starting state (:mod:`heritage.training.initialisation`), or a group of runs in
    place of a run."""
    runs = list(runs)
    _refuse_groups(runs)
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


def _member_names(runs: list[Run]) -> list[str]:
    """Each member's name in the group's pool: its run's folder name, as the user knows it (a
    sweep's run folders are numbered already). All are numbered in order instead when two
    runs share a folder name, or a name would pass for a checkpoint (``epoch_003``), a method
    the reports compare, or the pool's index."""
    names = [run.folder.name for run in runs]
    clash = len(set(names)) < len(names) or any(
        epoch_of(name) is not None or name in _TAKEN for name in names
    )
    return [f"{i:02d}_{name}" for i, name in enumerate(names, start=1)] if clash else names


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
        names = _member_names(opened)
        for i, (run, path, name) in enumerate(zip(opened, paths, names, strict=True), start=1):
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
