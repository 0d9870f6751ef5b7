"""One writer per folder: every heritage command that writes a folder or a store locks it.

Two processes writing the same run folder, model folder, index or knowledge graph would
interleave their files (two trainings offering checkpoints to one pool, two loads into one
store). :func:`folder_lock` takes an exclusive lock on ``FOLDER/.heritage.lock`` (the
`filelock <https://py-filelock.readthedocs.io>`_ package: ``flock`` on POSIX, released by
the operating system when the holder dies, so a killed process never leaves a stale lock)
and writes who holds it (pid, host, command, start time) into ``FOLDER/.heritage.lock.json``,
so that a second writer stops at once with a message naming the holder instead of waiting.
Both files go when the lock is released, and so does a folder the lock created and nothing
filled (a command that failed at its start leaves nothing behind).

Within one process the lock is re-entrant: a refit that locks its folder and then trains
into it, or the demo that locks its run and then cooks soups in it, do not lock themselves
out. Reading needs no lock.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_FILE",
    "LOCK_INFO_FILE",
    "FolderLock",
    "FolderLocked",
    "folder_lock",
    "holder",
    "locks_folder",
]

LOCK_FILE = ".heritage.lock"
#: the lock's companion: who holds it, for the message a second writer gets
LOCK_INFO_FILE = ".heritage.lock.json"


class FolderLocked(OSError):
    """Another process is writing the folder; the message names it and what to do.

    An ``OSError`` (the folder is busy), so that code catching file errors reports it too.
    """

    def __init__(self, folder: Path, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.folder = folder
        self.holder = holder


@dataclass
class _Held:
    lock: Any  # filelock.FileLock
    count: int
    pid: int
    created: bool  # the folder did not exist before the lock


_held: dict[str, _Held] = {}
_guard = threading.Lock()


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def _command() -> str:
    """This process's command line as a user would type it (``heritage train ...``)."""
    argv = list(sys.argv) or [""]
    head = ["python", "-c", "..."] if argv[0] == "-c" else [Path(argv[0]).name or "python"]
    return shlex.join([*head, *argv[1:]])


def holder(folder: str | Path) -> dict[str, Any] | None:
    """Who last took the lock of ``folder`` (pid, host, command, started, what), or None
    when nothing is recorded. The lock itself says whether they still hold it."""
    path = Path(folder) / LOCK_INFO_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def describe_holder(info: dict[str, Any] | None) -> str:
    """``pid 123 on host since 2026-01-05 10:31:02, `heritage train ...` (training)``."""
    if not info:
        return "another process (it has not said which yet: it may be starting)"
    pid = info.get("pid")
    this = " (this very process)" if pid == os.getpid() and info.get("host") == _host() else ""
    what = f" ({info['what']})" if info.get("what") else ""
    return (
        f"pid {pid} on {info.get('host')}{this} since {info.get('started')}, "
        f"`{info.get('command')}`{what}"
    )


def locked_message(folder: Path, info: dict[str, Any] | None) -> str:
    """What a second writer is told: who holds ``folder`` and what to do."""
    pid = (info or {}).get("pid")
    stop = f" (kill {pid})" if pid and (info or {}).get("host") == _host() else ""
    return (
        f"{folder} is in use by another writer: {describe_holder(info)}. Wait for it to "
        f"finish or stop it{stop}, or write to another folder."
    )


def _host() -> str:
    return socket.gethostname()


class FolderLock:
    """A held lock on a folder; :meth:`release` (or leaving a ``with`` block, or garbage
    collection) gives it back. Made by :func:`folder_lock`."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = folder
        self._key = key
        self._released = False

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def __del__(self) -> None:
        # at interpreter shutdown this may fail: the operating system releases the lock
        with contextlib.suppress(Exception):
            self.release()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        with _guard:
            held = _held.get(self._key)
            if held is None or held.pid != os.getpid():
                return
            held.count -= 1
            if held.count > 0:
                return
            del _held[self._key]
            # the record and the lock file go while the lock is still held (filelock notices
            # a lock taken on an unlinked file and takes it again), so nothing is left behind
            info = holder(self.folder)
            if info and info.get("pid") == os.getpid():
                with contextlib.suppress(OSError):
                    (self.folder / LOCK_INFO_FILE).unlink()
            with contextlib.suppress(OSError):
                (self.folder / LOCK_FILE).unlink()
            held.lock.release(force=True)
            if held.created:  # a command that failed before writing anything leaves no folder
                with contextlib.suppress(OSError):
                    self.folder.rmdir()  # only when empty


def folder_lock(folder: str | Path, what: str) -> FolderLock:
    """Lock ``folder`` (created if absent) for writing, now, or raise :class:`FolderLocked`
    at once naming the process that holds it. ``what`` says what the holder does ("heritage
    train", "a knowledge-graph load") for the message another writer gets.

    Use as ``with folder_lock(run, "heritage train"): ...`` or keep the returned
    :class:`FolderLock` and :meth:`~FolderLock.release` it. Re-entrant within a process.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    key = _key(folder)
    with _guard:
        held = _held.get(key)
        if held is not None and held.pid == os.getpid():
            held.count += 1
            return FolderLock(folder, key)
        lock = FileLock(folder / LOCK_FILE, thread_local=False)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            info = holder(folder)
            raise FolderLocked(folder, locked_message(folder, info), info) from None
        _held[key] = _Held(lock, 1, os.getpid(), created)
        info = {
            "what": what,
            "pid": os.getpid(),
            "host": _host(),
            "command": _command(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        tmp = folder / f"{LOCK_INFO_FILE}.{os.getpid()}.tmp"
        with contextlib.suppress(OSError):  # an unwritten record is no reason to refuse
            tmp.write_text(json.dumps(info, indent=1) + "\n")
            os.replace(tmp, folder / LOCK_INFO_FILE)
        return FolderLock(folder, key)


def locks_folder(what: str, folder_of: Callable[..., str | Path]) -> Callable:
    """Decorator: the function holds the lock of the folder ``folder_of(*args, **kwargs)``
    (e.g. ``lambda self, folder, *a, **k: folder``) while it runs."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with folder_lock(folder_of(*args, **kwargs), what):
                return fn(*args, **kwargs)

        return locked

    return decorate
