"""Sweeps: a grid of runs from one shared start, ready to be averaged."""

from pathlib import Path
from typing import Annotated

import typer

from heritage.cli.base import app, fail, out_option
from heritage.progress import console


@app.command()
def sweep(
    file: Annotated[
        Path,
        typer.Argument(
            help="Sweep YAML: data: (the collection), train: (options every run shares) and "
            "grid: (option: a list of values; the runs are every combination). Relative paths "
            "in it are relative to its folder.",
            metavar="FILE",
        ),
    ],
    out: Annotated[Path, out_option("Sweep folder: start/, runs/NAME/, soup/, sweep.json.")],
    prepare: Annotated[
        bool, typer.Option(help="Only write the shared start (once, before the runs).")
    ] = False,
    index: Annotated[
        int | None,
        typer.Option(help="Only train run I (0-based; e.g. a job array's task id); resumes."),
    ] = None,
    cook: Annotated[
        bool,
        typer.Option(help="Only gather the finished runs into --out/soup and cook its soups."),
    ] = False,
) -> None:
    """Train a grid of runs that share one start, then cook soups across them.

    Without --prepare, --index or --cook, every step runs here in turn. On a cluster: --prepare
    once, then one job per run with --index, then --cook; each is one process and may be
    rerun (an interrupted run resumes).
    """
    from heritage.backbones import BackboneError
    from heritage.collection import CollectionError
    from heritage.locking import FolderLocked
    from heritage.run import RunError
    from heritage.sweep import Sweep

    if sum([prepare, index is not None, cook]) > 1:
        fail(ValueError("give one of --prepare, --index and --cook (or none: every step)"))
    try:
        plan = Sweep.from_yaml(file, out)
        if prepare:
            console.print(f"shared start: {plan.prepare()}; runs: {len(plan.runs())}")
        elif index is not None:
            console.print(f"run {index}: {plan.train(index)}")
        else:
            group = plan.cook() if cook else plan.run_all()
            console.print(
                f"soups across runs in {group.folder}\nNext: heritage evaluate {group.folder}"
            )
    except (ValueError, CollectionError, BackboneError, RunError, FolderLocked) as exc:
        fail(exc)
