"""The root command and what its commands share: command groups, option types, the YAML
``--config`` merge, error reporting.

Options may also come from a YAML file (``--config``); an option given on the command line wins
over the file, and the file wins over the defaults. An option that sets a configuration field
takes its default (and its choices) from the configuration dataclass, so help never restates a
value that :mod:`heritage.config` owns.

Help must answer at once, so this module (and every command module) imports only typer, rich
and :mod:`heritage.config` when it loads; everything else is imported inside the commands. The
command modules evaluate their annotations when they load (no ``from __future__ import
annotations``): typer would otherwise evaluate every one of them twice for each help.
"""

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from heritage.progress import console

app = typer.Typer(
    help="Trustworthy machine learning for small cultural-heritage collections.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",  # markdown renders slower; reflow_help rewraps the paragraphs
)


def group(name: str, help: str) -> typer.Typer:
    """A command group (``heritage NAME COMMAND``) registered on the root command."""
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


def prepare_help(commands: typer.Typer) -> None:
    """Once every command is registered: each command's help from its docstring
    (:func:`reflow_help`), and boolean defaults for the flags of the root command and of each
    group (:func:`flag_defaults`)."""
    reflow_help(commands)
    settings = commands.info.context_settings or {}
    commands.info.context_settings = {**settings, "default_map": flag_defaults(commands)}


def reflow_help(commands: typer.Typer) -> None:
    """Give every command of ``commands`` (and of its groups) its docstring as help, each
    paragraph on one line and rich markup escaped.

    Rich markup mode rewraps a paragraph only when it is one line, and reads brackets as style
    tags (``[value, p]`` would vanish); so the docstrings stay wrapped at the source's line
    length for readers of the code, and help still fits the terminal and shows what they say.
    """
    from rich.markup import escape

    for info in commands.registered_commands:
        doc = info.callback.__doc__ if info.callback is not None else None
        if info.help is None and doc:
            paragraphs = inspect.cleandoc(doc).split("\n\n")
            info.help = escape("\n\n".join(" ".join(p.split()) for p in paragraphs))
    for sub in commands.registered_groups:
        if sub.typer_instance is not None:
            reflow_help(sub.typer_instance)


def flag_defaults(commands: typer.Typer, root: bool = True) -> dict[str, Any]:
    """click's ``default_map`` for the flags a command line's groups have: ``--help`` on each,
    and the completion flags on the root, all False.

    typer (0.29) gives them no default and, parsing a group's flags on the way to a command,
    builds a pydantic validator for each unset one: importing pydantic costs every
    ``heritage COMMAND --help`` a tenth of a second. A boolean default needs no validator."""
    defaults: dict[str, Any] = {"help": False}
    if root:
        defaults |= {"install_completion": False, "show_completion": False}
    for sub in commands.registered_groups:
        if sub.typer_instance is not None and sub.name:
            defaults[sub.name] = flag_defaults(sub.typer_instance, root=False)
    return defaults


def command_paths(commands: typer.Typer) -> list[list[str]]:
    """Every visible command and group, as the words that call it (``[]`` for the root,
    ``["kg", "export"]``), groups before their commands: what help is checked and timed over."""
    found: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:  # typer vendors click: duck-typed
        found.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                walk(sub, [*path, name])

    walk(typer.main.get_command(commands), [])
    return found


# defaults and choices from the configuration -----------------------------------------------
def default(name: str, config: type | None = None) -> str:
    """`` (default: X)`` for field ``name`` of ``config`` (TrainConfig unless given), read from
    the dataclass: option help never restates a value the configuration owns. ``name`` may
    name a section's field, ``mix.alpha``."""
    from dataclasses import MISSING, fields

    from heritage.config import TrainConfig

    head, _, rest = name.partition(".")
    field = next(f for f in fields(config or TrainConfig) if f.name == head)
    value = field.default if field.default is not MISSING else field.default_factory()  # type: ignore[misc]
    for part in rest.split(".") if rest else ():
        value = getattr(value, part)
    if callable(value):  # augment.preset is a preset's name, not a field
        from heritage.config import DEFAULT_PRESET

        value = DEFAULT_PRESET
    return f" (default: {value})"


def explained(values: Iterable[str], notes: dict[str, str]) -> str:
    """Allowed values (``allowed(Literal)``, a preset table), in their order, each followed
    by its note if it has one: ``crop: shorter side first; squash; pad``. A value added to the
    configuration shows up in help without a change here."""
    return "; ".join(f"{v}: {notes[v]}" if v in notes else v for v in values)


# shared option types -----------------------------------------------------------------------
def out_option(help: str) -> Any:
    """``--out`` / ``-o``: what a command writes."""
    return typer.Option("--out", "-o", help=help)


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
Split = Annotated[str, typer.Option(help="Split to score: train, val or test.")]
RecordIdColumn = Annotated[
    str | None, typer.Option(help="Record id column of the records CSV (default: the first).")
]
Port = Annotated[int, typer.Option(help="Port the explorer listens on.")]
EXPLORER_PORT = 8765

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
        "YAML file: a `data:` section (source, image_column, label_column, split_column, "
        "ignore_splits, min_images_per_class) and training options at the top level or "
        f"under `train:` ({names}; e.g. augment: {{preset: glyphs, rotate: 5}}). Relative "
        "paths in it are relative to its folder. Command-line options win over the file."
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


# what commands share when they run ---------------------------------------------------------
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
