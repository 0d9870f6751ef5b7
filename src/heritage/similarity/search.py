"""Search a collection by example: build (and grow) an index of its images, query it with an
image, and show the answers as a self-contained HTML page of thumbnails.

Images are embedded with a backbone's frozen features, or with the head of a model fitted by
``heritage similarity fit`` (an embedding that agrees with people's judgements). The index
remembers how its vectors were made, so a query is embedded the same way, and a second build
over the same collection only embeds the images it has not seen.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heritage.collection import IMAGE_SUFFIXES, read_csv_strings
from heritage.locking import folder_lock
from heritage.similarity.embedding import EmbeddingConfig, ImageEmbedder
from heritage.similarity.index import IndexKind, SimilarityIndex
from heritage.similarity.learn import TripletEmbedding

__all__ = [
    "BuildReport",
    "Hit",
    "SearchEmbedder",
    "build_index",
    "hits_html",
    "list_images",
    "search_similar",
]


def list_images(
    source: str | Path, *, image_column: str | None = None, id_column: str | None = None
) -> list[tuple[str, str]]:
    """(id, absolute path) of every image of a collection, sorted by id.

    A folder is searched recursively and ids are paths relative to it; a CSV manifest names
    the images in ``image_column`` (default ``image``, else the first column of image paths),
    relative to the CSV's folder, with ids from ``id_column`` (default: the path as written).
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(
            p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise ValueError(f"{source} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return [(p.relative_to(source).as_posix(), str(p.resolve())) for p in files]
    if not source.is_file():
        raise FileNotFoundError(f"collection not found: {source}")
    frame = read_csv_strings(
        source,
        ValueError,
        str(source),
        "pass a folder of images, or a UTF-8 CSV manifest with a header row and a column of "
        "image paths",
    )
    if len(frame) == 0:
        raise ValueError(f"{source} has no data rows; add one row per image")
    if image_column is None:
        looks = [
            c
            for c in frame.columns
            if len(frame) and frame[c].str.strip().str.lower().str.endswith(IMAGE_SUFFIXES).all()
        ]
        image_column = "image" if "image" in frame.columns else (looks[0] if looks else None)
    if image_column is None or image_column not in frame.columns:
        raise ValueError(
            f"{source}: no image column (found {', '.join(frame.columns)}); name it with "
            "--image-column"
        )
    if id_column is not None and id_column not in frame.columns:
        raise ValueError(f"{source}: no id column {id_column!r}")
    paths = frame[image_column].str.strip()
    ids = frame[id_column].str.strip() if id_column else paths
    empty = (paths == "") | (ids == "")
    if empty.any():
        rows = ", ".join(str(r + 1) for r in empty.to_numpy().nonzero()[0][:10])
        raise ValueError(
            f"{source}: row(s) {rows} have an empty image path or id (row = data row, 1-based); "
            "fill them in or remove those rows"
        )
    dup = ids[ids.duplicated()]
    if len(dup):
        raise ValueError(f"{source}: duplicate id {dup.iloc[0]!r} (row {dup.index[0] + 1})")
    out = []
    for i, p in zip(ids, paths, strict=True):
        path = Path(p).expanduser()
        path = path if path.is_absolute() else source.parent / path
        out.append((str(i), str(path.resolve())))
    return sorted(out)


class SearchEmbedder:
    """Images → vectors: backbone features, through a fitted head when ``model`` is given
    (a folder written by ``heritage similarity fit``; its global model is used)."""

    def __init__(
        self,
        embedding: EmbeddingConfig | None = None,
        model: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.model_dir = Path(model).resolve() if model is not None else None
        self.head: TripletEmbedding | None = None
        if self.model_dir is not None:
            card = self.model_dir / "similarity.json"
            if not card.is_file():
                raise FileNotFoundError(f"{self.model_dir} is not a similarity model folder")
            saved = json.loads(card.read_text())
            embedding = EmbeddingConfig.from_dict(saved["embedding"])
            self.head = TripletEmbedding.load(self.model_dir, "global")
        self.embedding = embedding or EmbeddingConfig()
        self.backbone = ImageEmbedder(self.embedding, cache_dir)

    def describe(self) -> dict:
        """What an index records, to embed its queries the same way."""
        return {
            "embedding": self.embedding.identity(),
            "model": str(self.model_dir) if self.model_dir else None,
        }

    @property
    def dim(self) -> int:
        return self.head.config.dim if self.head is not None else self.backbone.dim

    def embed(self, paths: Sequence[str]) -> tuple[np.ndarray, dict[str, str]]:
        """Vectors of the readable images (in order) and ``{path: reason}`` for the others."""
        feats, failed = self.backbone.try_features(paths, "embedding images")
        if self.head is not None and len(feats):
            feats = self.head.transform(feats)
        return feats, failed


@dataclass
class BuildReport:
    """What a build did: ids added, images skipped (unreadable) and the index size."""

    added: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    total: int = 0
    already: int = 0


def build_index(
    source: str | Path,
    out: str | Path,
    *,
    embedding: EmbeddingConfig | None = None,
    model: str | Path | None = None,
    kind: IndexKind = "auto",
    image_column: str | None = None,
    id_column: str | None = None,
    cache_dir: str | Path | None = None,
    batch: int = 512,
) -> BuildReport:
    """Build the index of a collection at ``out``, or add to it the images it lacks.

    An existing index keeps its own embedding (backbone, head): asking for another is an
    error, since vectors made two ways cannot be compared. Images are embedded and added
    ``batch`` at a time and the index saved after each, so an interrupted build resumes.
    The folder is locked meanwhile (another writer gets :class:`~heritage.locking.FolderLocked`).
    """
    out = Path(out)
    images = list_images(source, image_column=image_column, id_column=id_column)
    with folder_lock(out, "building an index"):
        return _grow_index(images, out, embedding, model, kind, cache_dir, batch)


def _grow_index(
    images: list[tuple[str, str]],
    out: Path,
    embedding: EmbeddingConfig | None,
    model: str | Path | None,
    kind: IndexKind,
    cache_dir: str | Path | None,
    batch: int,
) -> BuildReport:
    if (out / "index.json").is_file():
        index = SimilarityIndex.load(out)
        recorded = index.meta
        embedder = SearchEmbedder(
            EmbeddingConfig(**recorded["embedding"]), recorded.get("model"), cache_dir
        )
        wanted = (
            SearchEmbedder(embedding, model, cache_dir).describe()
            if (embedding is not None or model is not None)
            else embedder.describe()
        )
        if wanted != embedder.describe():
            raise ValueError(
                f"{out} was built with {recorded}; this build asks for {wanted}. Use another "
                "--out, or the same backbone and model."
            )
    else:
        embedder = SearchEmbedder(embedding, model, cache_dir)
        index = SimilarityIndex(embedder.dim, kind, meta=embedder.describe())
    paths = _read_paths(out)
    report = BuildReport()
    todo = [(i, p) for i, p in images if i not in index]
    report.already = len(images) - len(todo)
    for start in range(0, len(todo), batch):
        chunk = todo[start : start + batch]
        vectors, failed = embedder.embed([p for _, p in chunk])
        ok = [(i, p) for i, p in chunk if p not in failed]
        report.skipped.update({p: r for p, r in failed.items()})
        if ok:
            index.add(vectors, [i for i, _ in ok])
            paths.update(dict(ok))
            report.added += [i for i, _ in ok]
        if len(index):
            index.save(out)
            (out / "paths.json").write_text(json.dumps(paths))
    if len(index) == 0:  # nothing to search: say why instead of saving an empty index
        shown = "; ".join(f"{p} ({r})" for p, r in list(report.skipped.items())[:3])
        raise ValueError(
            f"no image could be embedded (all {len(report.skipped)} skipped, e.g. {shown}); "
            "check the paths and that the files are images"
        )
    if not (out / "index.json").is_file():
        index.save(out)
        (out / "paths.json").write_text(json.dumps(paths))
    report.total = len(index)
    return report


def _read_paths(folder: str | Path) -> dict[str, str]:
    """Image path per id (``paths.json``: for thumbnails; the index itself needs only ids)."""
    path = Path(folder) / "paths.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@dataclass(frozen=True)
class Hit:
    """One answer: the item id, its image path (when known) and its cosine distance.
    ``is_query``: the answer is the query's own file (it is in the index)."""

    id: str
    path: str | None
    distance: float
    is_query: bool = False


def search_similar(
    image: str | Path, index_dir: str | Path, k: int = 10, cache_dir: str | Path | None = None
) -> list[Hit]:
    """The ``k`` images of the index nearest to ``image``, nearest first. When the query
    file is itself in the index it comes back too (distance 0), marked ``is_query``."""
    index = SimilarityIndex.load(index_dir)
    embedder = SearchEmbedder(
        EmbeddingConfig(**index.meta["embedding"]), index.meta.get("model"), cache_dir
    )
    query = str(Path(image).resolve())
    vectors, failed = embedder.embed([query])
    if failed:
        raise ValueError(f"cannot read {image}: {next(iter(failed.values()))}")
    ids, distances = index.search(vectors, k)
    paths = _read_paths(index_dir)
    found = distances[0][: len(ids[0])]  # IVF may find fewer than k
    return [
        Hit(i, paths.get(i), float(d), is_query=paths.get(i) == query)
        for i, d in zip(ids[0], found, strict=True)
    ]


def hits_html(image: str | Path, hits: Sequence[Hit], out: str | Path, title: str = "") -> Path:
    """A self-contained page: the query image, then each answer's thumbnail, id and distance."""
    from heritage.analysis.diagnostics import thumbnail_data_uri
    from heritage.analysis.html import render

    def uri(path: str | None) -> str | None:
        return thumbnail_data_uri(path, 160) if path else None

    name = Path(image).name
    page = render(
        "hits.html",
        title=title or "Similar images",
        query={"uri": uri(str(image)), "alt": name, "rank": None},
        hits=[
            {
                "uri": uri(h.path),
                "alt": h.id,
                "rank": n,
                "distance": h.distance,
                "is_query": h.is_query,
            }
            for n, h in enumerate(hits, start=1)
        ],
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
