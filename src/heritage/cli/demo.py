"""`heritage demo`: the whole path on one collection, ending in the explorer."""

from pathlib import Path
from typing import Annotated

import typer

from heritage.cli.base import (
    EXPLORER_PORT,
    ConfigFile,
    IgnoreSplit,
    ImageColumn,
    LabelColumn,
    Overwrite,
    Port,
    Source,
    SplitColumn,
    app,
    collection_spec,
    default,
    fail,
    out_option,
)
from heritage.progress import console


@app.command()
def demo(
    source: Source = "../shared/datasets/ich-mekong",
    out: Annotated[Path, out_option("Run folder.")] = Path("runs/demo"),
    config: ConfigFile = None,
    image_column: ImageColumn = None,
    label_column: LabelColumn = None,
    split_column: SplitColumn = None,
    ignore_split: IgnoreSplit = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs" + default("epochs"))] = None,
    records: Annotated[
        Path | None,
        typer.Option(
            help="Records CSV whose metadata is predicted into the knowledge graph too "
            "(default: silknow-records/records.csv beside SOURCE, when it is there)."
        ),
    ] = None,
    serve: Annotated[
        bool, typer.Option(help="End by serving the explorer on the graph (Ctrl-C stops it).")
    ] = True,
    port: Port = EXPLORER_PORT,
    overwrite: Overwrite = False,
) -> None:
    """Train, cook soups, evaluate, analyse, publish a knowledge graph of the predictions and
    open it in the explorer (the README's main job); rerun to resume (--overwrite: afresh)."""
    from heritage.analysis import analyse as analyse_run
    from heritage.backbones import BackboneError
    from heritage.collection import CollectionError
    from heritage.config import load_config
    from heritage.locking import FolderLocked, folder_lock
    from heritage.run import Run, RunError
    from heritage.training.trainer import Trainer

    try:
        # one writer for the whole pipeline, taken first (each step takes it again); released
        # before the explorer serves, so the run can be read or scored meanwhile
        with folder_lock(out, "heritage demo"):
            cfg = load_config(config, {"epochs": epochs})
            collection = collection_spec(
                source,
                config,
                (image_column, label_column, split_column, ignore_split),
            ).load()
            console.print(collection.summary().to_string())
            Trainer(cfg).fit(collection, out, overwrite=overwrite)
            run = Run.open(out)
            run.cook_soups()
            run.evaluate("test")
            analysis = analyse_run(out, "test")
            console.print((out / "eval" / "test" / "comparison.md").read_text(), markup=False)
            for sentence in analysis.summary:
                console.print(sentence, markup=False)
            console.print(f"report (open in a browser): {analysis.report}")
            published = _publish(out, source, records)
    except (
        BackboneError,
        CollectionError,
        RunError,
        ValueError,
        FileNotFoundError,
        FolderLocked,
    ) as exc:
        fail(exc)
    except KeyboardInterrupt:
        console.print(f"\n[yellow]interrupted[/]: rerun the same command to resume {out}")
        raise typer.Exit(code=130) from None
    _explore(published, serve, port)


def _publish(out: Path, source: str, records: Path | None):
    """The demo's last step but one: its predictions as a knowledge graph."""
    from heritage.run import RunError
    from heritage.showcase import publish_run

    if records is None:  # the demo data's neighbour, when it is there
        sibling = Path(source).expanduser().resolve().parent / "silknow-records" / "records.csv"
        records = sibling if sibling.is_file() else None
    try:
        published = publish_run(out, records=records)
    except (RunError, ValueError, FileNotFoundError, OSError) as exc:
        fail(exc)
    for note in published.notes:
        console.print(f"[yellow]note[/]: {note}")
    console.print(
        f"knowledge graph: {published.store} ({published.triples:,} triples; predictions in "
        + ", ".join(str(p) for p in published.predictions.values())
        + ")"
    )
    return published


def _explore(published, serve: bool, port: int) -> None:
    """The demo's last step: the published graph served in the explorer."""
    import getpass

    from heritage.explore import Explorer, ExplorerConfig

    command = (
        f"heritage explore --store {published.store} --index {published.index} "
        f"--images {published.images}"
    )
    if not serve:
        console.print(f"browse it: {command}")
        return
    from heritage.explore.app import serve as serve_explorer

    explorer = Explorer.open(
        ExplorerConfig(
            store=published.store,
            index=published.index,
            images=(published.images,),
            curator=getpass.getuser(),
        )
    )
    try:
        serve_explorer(explorer, port=port)
    finally:
        explorer.close()
    console.print(f"explorer stopped; start it again with: {command}")
