"""Progress bars with live metrics (rich), one style for the whole toolkit."""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress

console = Console(stderr=True, soft_wrap=True)


@functools.cache
def _progress_class() -> type[Progress]:
    """rich's Progress with an ``info`` field every task has; built on first use, so that
    importing :data:`console` (the command line does, for its help) loads no progress
    columns."""
    from rich.progress import Progress

    class _Progress(Progress):
        def add_task(self, description: str, *args, info: str = "", **kwargs):  # type: ignore[override]
            return super().add_task(description, *args, info=info, **kwargs)

    return _Progress


def progress_bar(transient: bool = True) -> Progress:
    """A bar with a free-form ``info`` field for live loss and metrics.

    Disabled when stderr is not a terminal (CI logs, pipes) or ``HERITAGE_NO_PROGRESS`` is set,
    so logs stay readable; the trainer prints one line per epoch there instead.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    disable = not sys.stderr.isatty() or bool(os.environ.get("HERITAGE_NO_PROGRESS"))
    return _progress_class()(
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
