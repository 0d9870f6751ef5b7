"""`heritage similarity`, `heritage index` and `heritage similar`: similarity learnt from
people's judgements, and search by example."""

from pathlib import Path
from typing import Annotated

import typer

from heritage.cli.base import Device, ImageColumn, app, fail, given, group, names, out_option
from heritage.config import DEFAULT_BACKBONE
from heritage.progress import console

similarity_app = group(
    "similarity",
    "Image similarity that agrees with people: measure and learn it from triplet judgements "
    "(is A or B closer to R?), with context models and their ensembles.",
)
index_app = group("index", "Search a collection by example: build or grow its index.")

Triplets = Annotated[
    Path,
    typer.Argument(
        help="CSV of judgements: reference, closer, farther (item ids), optional votes_closer, "
        "votes_farther and a context column.",
        exists=True,  # checked by the parser, before anything heavy loads
        dir_okay=False,
    ),
]
ItemsCsv = Annotated[
    Path,
    typer.Option(
        help="CSV of items: an id column and one column of image paths per image group (e.g. "
        "materials.csv with ennis and stpeters).",
        exists=True,
        dir_okay=False,
    ),
]
ItemImageColumns = Annotated[
    list[str] | None,
    typer.Option(
        "--image-column",
        help="Image column(s) of the item table (repeatable or comma-separated; default: every "
        "column of image paths).",
    ),
]
ItemIdColumn = Annotated[
    str | None, typer.Option(help="Id column of the item table (default: the first column).")
]
BackboneName = Annotated[
    str | None,
    typer.Option(help=f"Backbone for image features (default: {DEFAULT_BACKBONE}, offline)."),
]
FeatureCache = Annotated[Path, typer.Option(help="Folder caching image features between runs.")]
_FEATURE_CACHE = Path("~/.cache/heritage/features")


def _judged(
    triplets: Path,
    items: Path,
    columns: tuple[str | None, list[str] | None],
    context_column: str | None = None,
):
    """The item table and the triplets judged over its items (``columns``: the id column and
    the image columns options)."""
    from heritage.similarity import ItemTable, TripletTable

    id_column, image_columns = columns
    table = ItemTable.from_csv(items, id_column=id_column, image_columns=names(image_columns))
    return table, TripletTable.from_csv(triplets, table.ids, context_column=context_column)


def _agreement_table(scores: dict, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in ("method", "agreement", "clear majority", "triplets"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for method, a in scores.items():
        table.add_row(method, f"{a.all:.4f}", f"{a.clear:.4f}", f"{a.n} ({a.n_clear} clear)")
    console.print(table)


@similarity_app.command("agreement")
def similarity_agreement(
    triplets: Triplets,
    items: ItemsCsv,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Folder written by `heritage similarity fit` (default: score the "
            "pretrained embedding)."
        ),
    ] = None,
    image_column: ItemImageColumns = None,
    id_column: ItemIdColumn = None,
    backbone: BackboneName = None,
    cache_dir: FeatureCache = _FEATURE_CACHE,
    device: Device = None,
) -> None:
    """Share of judgements each model agrees with (closer nearer to the reference than
    farther), on all triplets and on those with a clear majority."""
    from heritage.backbones import BackboneError
    from heritage.similarity import (
        EmbeddingConfig,
        SimilarityModel,
        TripletError,
        pretrained_agreement,
    )

    try:
        table, judged = _judged(triplets, items, (id_column, image_column))
        if model is not None:
            scores = SimilarityModel.open(model, table, cache_dir, device).evaluate(judged)
        else:
            embedding = EmbeddingConfig(**given(backbone=backbone, device=device) or {})
            scores = pretrained_agreement(table, judged, embedding, cache_dir)
    except (TripletError, BackboneError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    _agreement_table(scores, f"agreement with {triplets.name}")


@similarity_app.command("fit")
def similarity_fit(
    triplets: Triplets,
    items: ItemsCsv,
    out: Annotated[Path, out_option("Model folder to write.")],
    image_column: ItemImageColumns = None,
    id_column: ItemIdColumn = None,
    contexts: Annotated[
        list[str] | None,
        typer.Option(
            help="Context models to train (repeatable or comma-separated): groups (one per "
            "image column), column (one per value of --context-column), clusters (of "
            "references). Default: groups, or column when --context-column is given."
        ),
    ] = None,
    context_column: Annotated[
        str | None, typer.Option(help="Triplet column naming each judgement's context.")
    ] = None,
    clusters: Annotated[int, typer.Option(help="Reference clusters for clusters contexts.")] = 3,
    val_fraction: Annotated[
        float,
        typer.Option(help="Share of triplets held out to choose epochs and ensemble weights."),
    ] = 0.15,
    seed: Annotated[int, typer.Option(help="Validation split, initialisation, clusters.")] = 0,
    epochs: Annotated[int, typer.Option(help="Training epochs per model (best kept).")] = 300,
    dim: Annotated[int, typer.Option(help="Embedding dimension.")] = 32,
    loss: Annotated[
        str, typer.Option(help="order (vote shares, default) or triplet (margin loss).")
    ] = "order",
    backbone: BackboneName = None,
    cache_dir: FeatureCache = _FEATURE_CACHE,
    device: Device = None,
) -> None:
    """Learn embeddings from triplets: a global model (every image group mixed), one model per
    context, and their majority-vote and reliability-weighted ensembles."""
    from heritage.backbones import BackboneError
    from heritage.locking import FolderLocked, folder_lock
    from heritage.similarity import (
        EmbeddingConfig,
        HeadConfig,
        SimilarityConfig,
        SimilarityModel,
        TripletError,
    )

    try:
        table, judged = _judged(triplets, items, (id_column, image_column), context_column)
        kinds = names(contexts) or (["column"] if context_column else ["groups"])
        config = SimilarityConfig(
            contexts=tuple(kinds),
            n_clusters=clusters,
            val_fraction=val_fraction,
            seed=seed,
            head=HeadConfig(dim=dim, epochs=epochs, loss=loss),  # type: ignore[arg-type]
        )
        embedding = EmbeddingConfig(**given(backbone=backbone, device=device) or {})
        with folder_lock(out, "heritage similarity fit"):  # before the work, not at its end
            features = table.features(embedding, cache_dir)
            model = SimilarityModel(config, embedding).fit(judged, features)
            model.save(out)
        scores = model.validation()
    except (TripletError, BackboneError, ValueError, FileNotFoundError, FolderLocked) as exc:
        fail(exc)
    _agreement_table(scores, f"validation agreement ({len(model.val_)} held-out triplets)")
    console.print(
        f"[green]saved[/] {out}. Next: heritage similarity agreement TEST.csv --items {items} "
        f"--model {out}; heritage index build COLLECTION --model {out} --out INDEX"
    )


@index_app.command("build")
def index_build(
    collection: Annotated[
        Path,
        typer.Argument(
            help="A folder of images (searched recursively) or a CSV manifest of image paths."
        ),
    ],
    out: Annotated[Path, out_option("Index folder (grown if it exists).")],
    model: Annotated[
        Path | None,
        typer.Option(
            help="Embed with the global model of `heritage similarity fit` (default: "
            "the backbone's pretrained features)."
        ),
    ] = None,
    backbone: BackboneName = None,
    kind: Annotated[
        str,
        typer.Option(help="auto (exact search, inverted lists for large indexes), flat, ivf."),
    ] = "auto",
    image_column: ImageColumn = None,
    id_column: Annotated[
        str | None, typer.Option(help="Manifest column with ids (default: the image path).")
    ] = None,
    cache_dir: FeatureCache = _FEATURE_CACHE,
    device: Device = None,
) -> None:
    """Embed a collection's images into a FAISS index; rerun after adding images and only
    the new ones are embedded."""
    from rich.markup import escape

    from heritage.backbones import BackboneError
    from heritage.locking import FolderLocked
    from heritage.similarity import EmbeddingConfig, build_index

    try:
        options = given(backbone=backbone, device=device)
        report = build_index(
            collection,
            out,
            embedding=EmbeddingConfig(**options) if options else None,
            model=model,
            kind=kind,  # type: ignore[arg-type]
            image_column=image_column,
            id_column=id_column,
            cache_dir=cache_dir,
        )
    except (BackboneError, ValueError, FileNotFoundError, FolderLocked) as exc:
        fail(exc)
    for path, reason in list(report.skipped.items())[:20]:
        console.print(f"[yellow]skipped[/] {escape(path)}: {escape(reason)}")
    console.print(
        f"{len(report.added)} image(s) added, {report.already} already indexed, "
        f"{len(report.skipped)} skipped; {report.total} in {out}"
    )


@app.command()
def similar(
    image: Annotated[Path, typer.Argument(help="The example image.")],
    index: Annotated[Path, typer.Option(help="Index folder from `heritage index build`.")],
    k: Annotated[int, typer.Option(min=1, help="How many similar images to return.")] = 10,
    html: Annotated[
        Path | None,
        typer.Option(help="Also write a self-contained HTML page with thumbnails here."),
    ] = None,
    cache_dir: FeatureCache = _FEATURE_CACHE,
) -> None:
    """The images of an index most like IMAGE: ids and cosine distances, nearest first."""
    from rich.markup import escape
    from rich.table import Table

    from heritage.similarity import hits_html, search_similar

    try:
        hits = search_similar(image, index, k, cache_dir=cache_dir)
    except (ValueError, FileNotFoundError) as exc:
        fail(exc)
    table = Table(title=f"nearest to {escape(image.name)}")
    for column in ("rank", "id", "distance"):
        table.add_column(column, justify="left" if column == "id" else "right")
    for n, hit in enumerate(hits, start=1):
        note = " (the query itself)" if hit.is_query else ""
        table.add_row(str(n), escape(hit.id) + note, f"{hit.distance:.4f}")
    console.print(table)
    if html is not None:
        console.print(f"page: {hits_html(image, hits, html, f'Images like {image.name}')}")
