"""`heritage similarity`, `heritage index` and `heritage similar`: similarity learnt from
people's judgements, and search by example."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from heritage.cli.base import (
    Device,
    app,
    fail,
    given,
    names,
)
from heritage.progress import console

similarity_app = typer.Typer(
    help="Image similarity that agrees with people: measure and learn it from triplet "
    "judgements (is A or B closer to R?), with context models and their ensembles.",
    no_args_is_help=True,
)
app.add_typer(similarity_app, name="similarity")
index_app = typer.Typer(
    help="Search a collection by example: build or grow its index.", no_args_is_help=True
)
app.add_typer(index_app, name="index")

Triplets = Annotated[
    Path,
    typer.Argument(
        help="CSV of judgements: reference, closer, farther (item ids), optional votes_closer, "
        "votes_farther and a context column."
    ),
]
ItemsCsv = Annotated[
    Path,
    typer.Option(
        help="CSV of items: an id column and one column of image paths per image group (e.g. "
        "materials.csv with ennis and stpeters)."
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
    typer.Option(help="Backbone for image features (default: efficientnet_lite0, offline)."),
]
FeatureCache = Annotated[
    Path,
    typer.Option(help="Folder caching image features between runs."),
]
_FEATURE_CACHE = Path("~/.cache/heritage/features")


def _item_features(items, ids, groups, embedding, cache_dir: Path) -> dict:
    """Features per image group, one row per id in ``ids`` order."""
    from heritage.similarity import ImageEmbedder

    position = {i: n for n, i in enumerate(items.ids)}
    missing = [i for i in ids if i not in position]
    if missing:
        raise ValueError(f"{items.source} lacks the model's item ids, e.g. {missing[:5]}")
    embedder = ImageEmbedder(embedding, cache_dir)
    return {
        g: embedder.features([items.paths(g)[position[i]] for i in ids], f"features {g}")
        for g in groups
    }


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
    import json

    from heritage.backbones import BackboneError
    from heritage.similarity import (
        EmbeddingConfig,
        ItemTable,
        Member,
        SimilarityModel,
        TripletError,
        TripletTable,
    )

    try:
        table = ItemTable.from_csv(items, id_column=id_column, image_columns=names(image_column))
        judged = TripletTable.from_csv(triplets, table.ids)
        if model is not None:
            card_path = model / "similarity.json"
            if not card_path.is_file():
                raise FileNotFoundError(f"{model} is not a similarity model (no similarity.json)")
            card = json.loads(card_path.read_text())
            embedding = EmbeddingConfig.from_dict(card["embedding"])
            if device:
                embedding = EmbeddingConfig(**{**embedding.to_dict(), "device": device})
            features = _item_features(table, card["items"], card["groups"], embedding, cache_dir)
            scores = SimilarityModel.load(model, features).evaluate(judged)
        else:
            embedding = EmbeddingConfig(**given(backbone=backbone, device=device) or {})
            features = _item_features(table, table.ids, table.groups, embedding, cache_dir)
            views = list(features.values())
            judged = judged.with_items(table.ids)
            scores = {
                f"pretrained_{g}": Member(g, f).agreement(judged) for g, f in features.items()
            }
            if len(views) > 1:
                scores["pretrained_embedding"] = Member("all", views).agreement(judged)
    except (TripletError, BackboneError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    _agreement_table(scores, f"agreement with {triplets.name}")


@similarity_app.command("fit")
def similarity_fit(
    triplets: Triplets,
    items: ItemsCsv,
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
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
        ItemTable,
        SimilarityConfig,
        SimilarityModel,
        TripletError,
        TripletTable,
    )

    try:
        table = ItemTable.from_csv(items, id_column=id_column, image_columns=names(image_column))
        judged = TripletTable.from_csv(triplets, table.ids, context_column=context_column)
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
            features = _item_features(table, table.ids, table.groups, embedding, cache_dir)
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
    out: Annotated[Path, typer.Option("--out", "-o", help="Index folder (grown if it exists).")],
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
    image_column: Annotated[
        str | None, typer.Option(help="Manifest column with image paths (default: image).")
    ] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Manifest column with ids (default: the image path).")
    ] = None,
    cache_dir: FeatureCache = _FEATURE_CACHE,
    device: Device = None,
) -> None:
    """Embed a collection's images into a FAISS index; rerun after adding images and only
    the new ones are embedded."""
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
    from rich.markup import escape

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
    from rich.table import Table

    from heritage.similarity import hits_html, search_similar

    try:
        hits = search_similar(image, index, k, cache_dir=cache_dir)
    except (ValueError, FileNotFoundError) as exc:
        fail(exc)
    from rich.markup import escape

    table = Table(title=f"nearest to {escape(image.name)}")
    for column in ("rank", "id", "distance"):
        table.add_column(column, justify="left" if column == "id" else "right")
    for n, hit in enumerate(hits, start=1):
        note = " (the query itself)" if hit.is_query else ""
        table.add_row(str(n), escape(hit.id) + note, f"{hit.distance:.4f}")
    console.print(table)
    if html is not None:
        console.print(f"page: {hits_html(image, hits, html, f'Images like {image.name}')}")


if __name__ == "__main__":
    app()
