"""When a run folder may be resumed, and starting one afresh.

A rerun of ``heritage train`` on a folder resumes the run there, so it must be the same run:
the same collection (the images and their labels), the same source of the split and the same
options, except those a resumed run may change (:data:`RESUMABLE_CHANGES`). A run's
fingerprint of these is written to ``run.json`` when the run starts and compared on every
rerun; a rerun that differs is refused with a message naming what differs, so that a fixed
manifest never trains on a stale ``split.csv``.

Only a run that has finished an epoch (``state.pt``) is resumed: a folder left by a start that
failed before its first epoch is started again from scratch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from heritage.collection import Collection

__all__ = [
    "GROUP_FILE",
    "RESUMABLE_CHANGES",
    "RUN_FILE",
    "RUN_OUTPUTS",
    "RunMismatch",
    "check_resume",
    "clear_run",
    "collection_difference",
    "group_members",
    "has_checkpoints",
    "read_group",
    "run_fingerprint",
    "write_run_file",
]

RUN_FILE = "run.json"
#: what makes a folder a group of runs (:mod:`heritage.group`) rather than one run
GROUP_FILE = "group.json"
#: options that may change when a run is resumed (more epochs, another machine)
RESUMABLE_CHANGES = frozenset({"epochs", "device", "precision", "workers"})
#: what heritage writes into a run folder (training, soups, reports, the demo's graph);
#: starting afresh deletes these and nothing else
RUN_OUTPUTS = (
    "config.yaml",
    "split.csv",
    "skipped.csv",
    "history.json",
    RUN_FILE,
    "state.pt",
    "state.pt.tmp",
    "train_summary.json",
    "init.json",
    "init.safetensors",
    "pool",
    "soups",
    "eval",
    "analysis",
    "published",
    "kg-store",
    "kg-store.explorer",
    "index",
)
_START_AFRESH = (
    "Rerun with the run's collection and options to resume it, start afresh with --overwrite "
    "(overwrite=True in Python; deletes this run's checkpoints and results), or choose "
    "another --out."
)


class RunMismatch(ValueError):
    """A rerun into a folder that holds another run; the message names what differs, then how
    to go on. ``what`` is the first part alone, for a caller that offers other remedies than
    the command line's ``--overwrite`` (a sweep)."""

    def __init__(self, what: str, advice: str = _START_AFRESH) -> None:
        super().__init__(f"{what}\n{advice}")
        self.what, self.advice = what, advice

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # pickled as it was made
        return type(self), (self.what, self.advice)


def read_group(folder: str | Path) -> dict[str, Any] | None:
    """``group.json`` of a group folder (:mod:`heritage.group`); None for an ordinary run."""
    path = Path(folder) / GROUP_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def group_members(folder: str | Path) -> list[str] | None:
    """The runs a group folder gathers, as ``heritage soup`` was given them; None for an
    ordinary run. Here, below the group module, so that whatever expects one run (a start to
    copy, a run to gather) can say it was given a group and name the runs to give instead."""
    group = read_group(folder)
    if group is None:
        return None
    return [str(m["run"]) for m in group.get("members", []) if isinstance(m, dict)]


def _relative(path: str, root: Path) -> str:
    """``path`` relative to ``root`` (as ``split.csv`` holds it), else absolute."""
    path, base = os.path.normpath(path), os.path.normpath(root)
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def _labelled(collection: Collection) -> dict[str, str]:
    """Image (relative to the collection's root) -> label."""
    records = collection.records
    return {
        _relative(p, collection.root): str(label)
        for p, label in zip(records["path"], records["label"], strict=True)
    }


def run_fingerprint(collection: Collection, options: dict[str, Any]) -> dict[str, Any]:
    """What a run is: its collection, its split's source and the options that change results.

    ``collection`` is the collection as given to the trainer (before a split is drawn or a
    validation share carved); ``options`` the training options without
    :data:`RESUMABLE_CHANGES`.
    """
    labelled = _labelled(collection)
    if collection.has_split:
        records = collection.records
        assigned = [
            f"{_relative(p, collection.root)}\t{s}"
            for p, s in zip(records["path"], records["split"], strict=True)
        ]
        split = {"source": "collection", "sha256": _digest(assigned)}
    else:
        split = {"source": "drawn", "sha256": None}
    return {
        "collection": {
            "sha256": _digest([f"{p}\t{label}" for p, label in labelled.items()]),
            "images": len(labelled),
            "classes": list(collection.classes),
        },
        "split": split,
        "options": json.loads(json.dumps(options, default=str)),
    }


def write_run_file(run_dir: Path, fingerprint: dict[str, Any]) -> None:
    """``run.json``: the fingerprint a rerun is compared with, and when the run started."""
    info = {"fingerprint": fingerprint, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    tmp = run_dir / f"{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    tmp.replace(run_dir / RUN_FILE)


def read_fingerprint(run_dir: Path) -> dict[str, Any] | None:
    """The fingerprint in ``run.json``; None for a run written before heritage kept one."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["fingerprint"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RunMismatch(f"{path} is unreadable ({exc}).") from exc


def has_checkpoints(run_dir: Path) -> bool:
    """Whether the run's pool holds a checkpoint (an epoch was finished)."""
    return any((run_dir / "pool").glob("*.safetensors"))


def clear_run(run_dir: Path) -> list[str]:
    """Delete what heritage wrote into ``run_dir`` (:data:`RUN_OUTPUTS`; other files and the
    folder's lock stay). Returns the names deleted."""
    deleted = []
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        deleted.append(name)
    return deleted


def _examples(paths: list[str], n: int = 3) -> str:
    shown = ", ".join(paths[:n])
    return shown + (", ..." if len(paths) > n else "")


def collection_difference(collection: Collection, split_path: Path) -> str | None:
    """How the collection differs from a run's (its ``split.csv``); None: it does not. A
    rerun is compared with it, and so is a run that starts from another's start and split
    (:func:`heritage.training.initialisation.init_source`, a sweep's shared start)."""
    now = _labelled(collection)
    if not split_path.is_file():
        return f"the collection cannot be compared: {split_path} is missing"
    saved_table = pd.read_csv(split_path, dtype=str, keep_default_na=False)
    saved = {
        _relative(p, collection.root) if os.path.isabs(p) else p: label
        for p, label in zip(saved_table["path"], saved_table["label"], strict=True)
    }
    added = sorted(set(now) - set(saved))
    removed = sorted(set(saved) - set(now))
    relabelled = sorted(p for p in set(now) & set(saved) if now[p] != saved[p])
    if not (added or removed or relabelled):
        return None
    parts = [f"{len(now)} images now, {len(saved)} in the run"]
    if added:
        parts.append(f"{len(added)} added ({_examples(added)})")
    if removed:
        parts.append(f"{len(removed)} gone ({_examples(removed)})")
    if relabelled:
        changes = [f"{p}: {saved[p]} → {now[p]}" for p in relabelled]
        parts.append(f"{len(relabelled)} relabelled ({_examples(changes)})")
    return "the collection differs: " + "; ".join(parts)


def _split_difference(before: dict[str, Any], now: dict[str, Any]) -> str:
    if before.get("source") == now.get("source") == "collection":
        return "the collection's split column assigns images differently than when it started"
    if before.get("source") == "drawn":
        return "the run drew its own split (the collection had none); the collection now has one"
    return "the run used the collection's split column; the collection now has none"


def check_resume(
    run_dir: Path,
    saved: dict[str, Any] | None,
    now: dict[str, Any],
    collection: Collection,
) -> None:
    """Refuse to resume the run in ``run_dir`` with another collection, split or options.

    ``saved``: the run's fingerprint (None for a run from before fingerprints: then the
    collection is compared with ``split.csv`` and the options by the caller)."""
    split_path = run_dir / "split.csv"
    problems: list[str] = []
    if saved is None or saved.get("collection", {}).get("sha256") != now["collection"]["sha256"]:
        differs = collection_difference(collection, split_path)
        if differs is not None:
            problems.append(differs)
        elif saved is not None:  # same images and labels, another order or spelling
            problems.append("the collection differs from the one the run started on")
    if saved is not None:
        if saved.get("split") != now["split"]:
            problems.append(_split_difference(saved.get("split", {}), now["split"]))
        before, after = saved.get("options", {}), now["options"]
        changed = sorted(k for k in after if before.get(k, after[k]) != after[k])
        if changed:
            detail = ", ".join(f"{k}: {before[k]!r} → {after[k]!r}" for k in changed)
            problems.append(f"other options ({detail})")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise RunMismatch(
            f"{run_dir} holds a run started on other data or with other options, so this "
            f"command cannot resume it:\n{lines}"
        )
