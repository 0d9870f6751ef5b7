"""The root command and what its commands share: option types, the YAML ``--config`` merge,
error reporting.

Options may also come from a YAML file (``--config``); an option given on the command line wins
over the file, and the file wins over the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from heritage.progress import console

app = typer.Typer(
    help="Trustworthy machine learning for small cultural-heritage collections.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",  # docstrings' line breaks rewrap; a blank line starts a paragraph
)

# shared option types ----------------------------------------------------------------------
Source = Annotated[
    str,
    typer.Argument(
        help="A folder with one sub-folder per class, a folder holding manifest.csv, or a CSV "
        "manifest with image, label and (optional) split columns."
    ),
]
RunDir = Annotated[Path, typer.Argument(help="Run folder written by `heritage train`.")]
Device = Annotated[
    str | None, typer.Option(help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1, mps.")
]


# collection options, shared by every command that reads a collection
ImageColumn = Annotated[
    str | None, typer.Option(help="Manifest column with image paths (default: image).")
]
LabelColumn = Annotated[
    str | None, typer.Option(help="Manifest column to learn or score (default: label).")
]
SplitColumn = Annotated[
    str | None,
    typer.Option(
        help="Manifest column with train/val/test; if the manifest has none, a stratified seeded "
        "split is made and saved in the run (default: split)."
    ),
]
IgnoreSplit = Annotated[
    list[str] | None,
    typer.Option(
        help="Split values whose rows are left out (repeatable), e.g. --ignore-split unused."
    ),
]
MinPerClass = Annotated[
    int | None, typer.Option(help="Fewest usable images a class may have (default: 2).")
]
Overwrite = Annotated[
    bool,
    typer.Option(
        help="Start afresh: delete the run already in --out (checkpoints, soups, reports) "
        "instead of resuming it. Without it, a rerun resumes only the same collection, split "
        "and options, and refuses otherwise."
    ),
]


def _config_help() -> str:
    from dataclasses import fields

    from heritage.config import TrainConfig

    names = ", ".join(f.name for f in fields(TrainConfig))
    return (
        "YAML file: a `data:` section (image_column, label_column, split_column, "
        "ignore_splits, min_images_per_class) and training options at the top level or "
        f"under `train:` ({names}; e.g. augment: {{preset: glyphs, rotate: 5}}). Command-line "
        "options win over the file."
    )


ConfigFile = Annotated[Path | None, typer.Option(help=_config_help())]


def collection_spec(
    source: str | None,
    config: Path | None,
    columns: tuple[str | None, str | None, str | None, list[str] | None],
    **options: Any,
):
    """Collection options: command line over the YAML ``data:`` section over defaults.
    ``columns``: the shared options (image, label and split column, splits to ignore), in
    the order every command declares them."""
    from heritage.collection import CollectionSpec
    from heritage.config import read_config_file

    image_column, label_column, split_column, ignore_splits = columns
    given_options = {
        "source": source,
        "image_column": image_column,
        "label_column": label_column,
        "split_column": split_column,
        "ignore_splits": ignore_splits or None,
        **options,
    }
    data = read_config_file(config)["data"]
    data.update({k: v for k, v in given_options.items() if v is not None})
    return CollectionSpec.from_dict(data)


def given(**options: Any) -> dict[str, Any] | None:
    """The options the user gave (not None), or None when none was."""
    given = {k: v for k, v in options.items() if v is not None}
    return given or None


def fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(code=2)


def names(values: list[str] | None) -> list[str] | None:
    """Repeated and/or comma-separated option values, in order; None when none was given."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def default(name: str, config: type | None = None) -> str:
    """`` (default: X)`` for a field of ``config`` (TrainConfig unless given), read from the
    dataclass: option help never restates a value the configuration owns."""
    from dataclasses import MISSING, fields

    from heritage.config import TrainConfig

    field = next(f for f in fields(config or TrainConfig) if f.name == name)
    value = field.default if field.default is not MISSING else field.default_factory()  # type: ignore[misc]
    return f" (default: {value})"
