"""Progress bars with live metrics (rich), one style for the whole toolkit."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, soft_wrap=True)


class _Progress(Progress):
    def add_task(self, description: str, *args, info: str = "", **kwargs):  # type: ignore[override]
        return super().add_task(description, *args, info=info, **kwargs)


def progress_bar(transient: bool = True) -> Progress:
    """A bar with a free-form ``info`` field for live loss and metrics.

    Disabled when stderr is not a terminal (CI logs, pipes) or ``HERITAGE_NO_PROGRESS`` is set,
    so logs stay readable; the trainer prints one line per epoch there instead.
    """
    disable = not sys.stderr.isatty() or bool(os.environ.get("HERITAGE_NO_PROGRESS"))
    return _Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=transient,
        disable=disable,
    )
