"""The end of the main job: what a run made, published as a knowledge graph a curator can open.

``heritage demo`` trains, cooks soups and evaluates; then :func:`publish_run` turns its
results into the graph ``heritage explore`` serves:

* the classifier's predictions on the test images (the run's greedy soup), as machine
  suggestions; the catalogue holds every image's split and the train and validation
  images' labels — the test images' labels are left out, as gaps the model fills, so that
  their review queue is the one a curator would face with new acquisitions;
* metadata predictions for a records table (silknow-records beside the demo data, when
  present): a TF-IDF + tabular :class:`~heritage.metadata.MetadataPredictor` fitted on its
  train split predicts every property for every record, next to the catalogue;
* a similarity index of the collection's images, for "similar objects" and search by image.

Everything is written under the run folder (``kg-store/``, ``index/``, ``published/``), and a
rerun reuses what is there: the graph's URIs are deterministic, so loading it again adds
nothing, and the index only embeds images it has not seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["PublishedRun", "publish_run"]

#: properties the demo predicts for a records table that has them (silknow-records does)
RECORD_PROPERTIES = ("place", "timespan", "technique", "material")


@dataclass
class PublishedRun:
    """Where :func:`publish_run` put things, and what it counted."""

    store: Path
    index: Path | None
    images: Path
    predictions: dict[str, Path] = field(default_factory=dict)
    triples: int = 0
    notes: list[str] = field(default_factory=list)


def publish_run(
    run_dir: str | Path,
    *,
    records: str | Path | None = None,
    recipe: str = "greedy_soup",
    index: bool = True,
) -> PublishedRun:
    """Publish the run at ``run_dir`` and, optionally, metadata predictions for the records
    CSV ``records``, into ``run_dir/kg-store``."""
    from heritage.explore import build_tables, default_cache
    from heritage.kg import ExportConfig, GraphBuilder, KnowledgeGraph
    from heritage.progress import console
    from heritage.run import Run

    run_dir = Path(run_dir)
    run = Run.open(run_dir)
    folder = run_dir / "published"
    folder.mkdir(parents=True, exist_ok=True)
    out = PublishedRun(run_dir / "kg-store", None, Path(run.collection.root).resolve())
    builder = GraphBuilder(ExportConfig())
    console.print(f"publishing: the {recipe}'s predictions on the test images")
    out.predictions["classifier"] = _classifier_part(builder, run, recipe, folder)
    if records is not None:
        records = Path(records)
        if records.is_file():
            console.print(f"publishing: metadata predictions for {records} (fitted once)")
            out.predictions["metadata"] = _metadata_part(builder, records, folder)
        else:
            out.notes.append(f"no records table at {records}: metadata predictions skipped")
    export = builder.build()
    graph = KnowledgeGraph(out.store)
    out.triples = graph.load(export, graph=f"{builder.uris.base}graph/demo", replace=True)
    build_tables(graph, default_cache(out.store))  # the explorer then starts at once
    graph.close()
    if index:
        from heritage.similarity import build_index

        out.index = run_dir / "index"
        console.print(f"publishing: a similarity index of the images in {out.images}")
        build_index(out.images, out.index)
    return out


def _relative(path: str, root: Path) -> str:
    """An image's id: its path inside the collection's folder (as the index names it)."""
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _classifier_part(builder, run, recipe: str, folder: Path) -> Path:
    """Test-image predictions of the run's model, and the collection as catalogue."""
    from heritage.evaluation import write_predictions_csv
    from heritage.kg import Activity, Catalogue, ModelEntity, read_predictions
    from heritage.model import ImageClassifier

    model = run.model_path(recipe)
    if not model.with_name(model.name + ".safetensors").is_file():
        from heritage.run import RunError

        raise RunError(
            f"{run.folder} has no {recipe} yet: cook it first (`heritage soup {run.folder}`)"
        )
    root = Path(run.collection.root)
    frame = run.collection.records
    ids = [_relative(p, root) for p in frame["path"]]
    label = run.collection.label_column or "label"
    split = frame["split"].astype(str).to_numpy()
    catalogue = pd.DataFrame(
        {
            "record": ids,
            label: [v if s != "test" else "" for v, s in zip(frame["label"], split, strict=True)],
            "split": split,
        }
    )
    builder.add_catalogue(Catalogue(catalogue, "record", (label, "split"), {}, str(run.folder)))
    test = [p for p, s in zip(frame["path"], split, strict=True) if s == "test"]
    classifier = ImageClassifier.load(model, "auto")
    done, proba, _ = classifier.predict_files(test)
    csv = folder / "classifier-predictions.csv"
    write_predictions_csv([_relative(p, root) for p in done], proba, classifier.classes_, csv, k=3)
    activity = Activity.from_file(csv, ModelEntity.from_path(model), "heritage predict")
    builder.add_predictions(read_predictions(csv, prop=label), activity, prop=label)
    return csv


def _metadata_part(builder, records: Path, folder: Path) -> Path:
    """A TF-IDF + tabular metadata model fitted on the records' train split; its
    predictions for every record and property, next to the records as catalogue."""
    from heritage.kg import Activity, Catalogue, ModelEntity, read_predictions
    from heritage.metadata import FusionConfig, MetadataPredictor, RecordSpec, RecordTable

    df = pd.read_csv(records, dtype=str, keep_default_na=False)
    properties = [p for p in RECORD_PROPERTIES if p in df.columns]
    model_dir, csv = folder / "metadata-model", folder / "metadata-predictions.csv"
    if not csv.is_file():
        spec = RecordSpec.infer(df.columns, properties)
        table = RecordTable.from_frame(df, spec, source=str(records))
        predictor = MetadataPredictor(["tfidf", "tabular"], FusionConfig(seed=0)).fit(table)
        predictor.save(model_dir)
        predictor.predict(table).to_csv(csv, index=False)
    builder.add_catalogue(Catalogue.from_model(records, model_dir))
    activity = Activity.from_file(
        csv, ModelEntity.from_path(model_dir), "heritage metadata predict"
    )
    builder.add_predictions(read_predictions(csv), activity)
    return csv
