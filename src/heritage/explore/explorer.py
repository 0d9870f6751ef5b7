"""What the explorer's pages show, as Python: search, object pages, similar objects, reviews.

:class:`Explorer` holds the graph (the embedded store or a SPARQL server), the facet table and
text index read from it at start, an optional similarity index, and the review graph. The web
app (:mod:`heritage.explore.app`) only turns its answers into HTML, so everything a page shows
can be asked and tested from Python::

    from heritage.explore import Explorer, ExplorerConfig, SearchState
    ex = Explorer.open(ExplorerConfig(store="kg-store", curator="Ana García"))
    page = ex.search(SearchState(text="damask", threshold=0.8))
    view = ex.record(page.records[0].id)
    ex.review(view.fields[0].predictions[0].uri, "corrected", "velvet")
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlencode

import numpy as np

from heritage.explore.facets import SOURCES, FacetTable, GraphFrames, Source
from heritage.explore.fulltext import FullTextIndex
from heritage.explore.images import ImageRoots
from heritage.kg.queries import (
    PREFIX_BLOCK,
    alternatives_query,
    record_predictions_query,
    record_values_query,
    sparql_string,
)
from heritage.kg.reviews import DECISIONS, Review, review_graph, review_lines, reviews_query
from heritage.kg.vocabulary import DEFAULT_BASE, UriScheme

#: record list orders: by id, least confident first (what to review), most confident first
Sort = Literal["id", "confidence", "-confidence"]
SORTS: tuple[str, ...] = get_args(Sort)
PAGE_SIZE = 24  # records per page
FACET_VALUES_SHOWN = 8  # values per facet before "more"

__all__ = [
    "Explorer",
    "ExplorerConfig",
    "ExplorerError",
    "SearchState",
    "build_tables",
    "cached_tables",
    "default_cache",
]


class ExplorerError(ValueError):
    """Bad input to the explorer (unknown record or prediction, bad option); the message
    says what to do."""


@dataclass(frozen=True)
class ExplorerConfig:
    """Where the graph is and what the explorer may do.

    ``store``: an embedded store folder (``heritage kg load``), or ``endpoint``: a SPARQL 1.1
    query URL (``endpoint_user``/``endpoint_password`` for a server that writes reviews).
    ``index``: a ``heritage index build`` folder for similar objects and search by image.
    ``images``: folders images are served from. ``curator``: the reviewer's name (required to
    review). ``read_only``: no reviews. ``cache``: where the facet table and text index are
    kept (default: ``STORE.explorer`` beside the store). ``base_uri``: where review nodes
    are minted, when it cannot be read off the graph's own record URIs.
    """

    store: Path | None = None
    endpoint: str | None = None
    endpoint_user: str | None = None
    endpoint_password: str | None = None
    index: Path | None = None
    images: tuple[Path, ...] = ()
    curator: str | None = None
    read_only: bool = False
    cache: Path | None = None
    base_uri: str | None = None
    page_size: int = PAGE_SIZE

    def __post_init__(self) -> None:
        if (self.store is None) == (self.endpoint is None):
            raise ExplorerError("give a store folder (--store) or a SPARQL endpoint (--endpoint)")
        if self.page_size < 1:
            raise ExplorerError("page_size must be at least 1")


@dataclass(frozen=True)
class SearchState:
    """Everything a search page shows, as URL parameters (a permalink is its query string).

    ``filters``: (property, concept URI) pairs; values of one property are alternatives
    (OR), properties must all match (AND).
    """

    text: str = ""
    filters: tuple[tuple[str, str], ...] = ()
    threshold: float = 0.5
    source: Source = "both"
    sort: Sort = "id"
    page: int = 1
    language: str = "en"

    @classmethod
    def from_params(cls, params: Any) -> SearchState:
        """From a request's query parameters (anything with ``get`` and ``getlist``);
        malformed values fall back to the defaults instead of failing the page."""
        filters = []
        for item in params.getlist("f"):
            prop, sep, concept = str(item).rpartition("|")  # a label may hold "|"; an IRI not
            if sep and prop and concept:
                filters.append((prop, concept))
        try:
            threshold = float(params.get("t", cls.threshold))
        except ValueError:
            threshold = cls.threshold
        threshold = min(max(threshold, 0.0), 1.0) if math.isfinite(threshold) else cls.threshold
        try:
            page = max(1, int(params.get("page", 1)))
        except ValueError:
            page = 1
        source = params.get("source", "both")
        sort = params.get("sort", "id")
        return cls(
            text=str(params.get("q", ""))[:500],
            filters=tuple(dict.fromkeys(filters)),
            threshold=round(threshold, 3),
            source=source if source in SOURCES else "both",  # type: ignore[arg-type]
            sort=sort if sort in SORTS else "id",  # type: ignore[arg-type]
            page=page,
            language=str(params.get("lang", "en"))[:12],
        )

    def params(self, **changes: Any) -> str:
        """This state (with ``changes``) as a query string; defaults are left out."""
        state = replace(self, **changes)
        items: list[tuple[str, str]] = []
        if state.text:
            items.append(("q", state.text))
        items += [("f", f"{p}|{c}") for p, c in state.filters]
        items.append(("t", f"{state.threshold:g}"))
        if state.source != "both":
            items.append(("source", state.source))
        if state.sort != "id":
            items.append(("sort", state.sort))
        if state.page != 1:
            items.append(("page", str(state.page)))
        if state.language != "en":
            items.append(("lang", state.language))
        return urlencode(items)

    def toggled(self, prop: str, concept: str) -> str:
        """The query string with the filter (prop, concept) added or removed, page 1."""
        pair = (prop, concept)
        filters = tuple(f for f in self.filters if f != pair)
        if pair not in self.filters:
            filters += (pair,)
        return self.params(filters=filters, page=1)


@dataclass
class RecordCard:
    id: str
    title: str
    image: str | None
    min_confidence: float | None


@dataclass
class FacetValue:
    concept: str
    label: str
    catalogued: int
    predicted: int
    selected: bool
    link: str


@dataclass
class Facet:
    property: str
    values: list[FacetValue]


@dataclass
class SearchPage:
    state: SearchState
    total: int
    pages: int
    records: list[RecordCard]
    facets: list[Facet]
    confidences: np.ndarray
    elapsed_ms: float


@dataclass
class PredictionView:
    uri: str
    property: str
    value: str
    value_label: str
    confidence: float
    alternatives: list[tuple[str, float]]
    modalities: str
    activity: dict[str, Any]
    reviews: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FieldView:
    property: str
    catalogued: list[str]
    predictions: list[PredictionView]


@dataclass
class RecordView:
    id: str
    uri: str
    title: str
    fields: list[FieldView]
    texts: list[tuple[str, str, str]]
    literals: list[tuple[str, str]]
    images: list[tuple[int, str]]
    in_index: bool


@dataclass
class QueueItem:
    prediction: str
    record: str
    title: str
    property: str
    value: str
    confidence: float


@dataclass
class SimilarHit:
    id: str
    distance: float
    image: tuple[int, str] | None
    in_graph: bool


class Explorer:
    """The explorer's model: one per served graph (thread-safe for concurrent pages)."""

    def __init__(
        self,
        config: ExplorerConfig,
        graph: Any,
        table: FacetTable,
        text: FullTextIndex,
        startup_seconds: float = 0.0,
    ) -> None:
        self.config = config
        self.graph = graph
        self.table = table
        self.text = text
        self.startup_seconds = startup_seconds
        self.images = ImageRoots(config.images)
        self.base = config.base_uri or _base_of(table.record_uris) or DEFAULT_BASE
        self.review_graph = review_graph(self.base)
        self._lock = threading.Lock()
        self._reviews: dict[str, list[dict[str, Any]]] = {}
        self._reviewed = np.zeros(len(table.pred_uri), bool)
        self._queue_order = np.argsort(table.pred_conf, kind="stable")
        self._index: Any = None
        self._index_paths: dict[str, str] = {}
        self._embedder: Any = None
        self._load_reviews()
        if config.index is not None:
            self._load_index(config.index)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, config: ExplorerConfig) -> Explorer:
        """Open the graph and reuse its cached facet table and text index (``heritage kg
        load`` builds them), or read them from the graph."""
        start = time.perf_counter()
        graph = _open_graph(config)
        cache = config.cache
        if cache is None and config.store is not None:
            cache = default_cache(config.store)
        tables = cached_tables(cache, graph.generation())
        if tables is None:
            if cache is None:
                import tempfile

                cache = Path(tempfile.mkdtemp(prefix="heritage-explorer-"))
            tables = build_tables(graph, cache)
        return cls(config, graph, *tables, time.perf_counter() - start)

    def _load_reviews(self) -> None:
        frame = self.graph.select(reviews_query(self.review_graph), typed=False)
        # one row per review (a concept labelled in several languages repeats it)
        frame = frame.drop_duplicates("review")
        for row in frame.sort_values(["time", "review"]).to_dict("records"):
            # a review without a corrected value reads back as NaN: make it None
            self._remember({key: _text(value) or None for key, value in row.items()})

    def _remember(self, row: dict[str, Any]) -> None:
        self._reviews.setdefault(row["prediction"], []).append(row)
        k = self.table.prediction_index(row["prediction"])
        if k is not None:
            self._reviewed[k] = True

    def _load_index(self, folder: Path) -> None:
        from heritage.similarity.index import SimilarityIndex

        self._index = SimilarityIndex.load(folder)
        paths = Path(folder) / "paths.json"
        self._index_paths = json.loads(paths.read_text()) if paths.is_file() else {}

    def close(self) -> None:
        """Release the store (another process may then write to it)."""
        close = getattr(self.graph, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Explorer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def can_review(self) -> bool:
        return not self.config.read_only and bool((self.config.curator or "").strip())

    @property
    def has_index(self) -> bool:
        return self._index is not None

    # ------------------------------------------------------------------ search
    def matching(self, state: SearchState) -> np.ndarray:
        """The mask of records the state's text and filters keep."""
        mask, by_property = self._masks(state)
        for kept in by_property.values():
            mask = mask & kept
        return mask

    def _masks(self, state: SearchState) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The text search's mask, and per filtered property the mask of records that have
        one of its chosen values (values of one property are alternatives)."""
        table = self.table
        mask = self.text.search(state.text, table.n_records) if state.text.strip() else None
        if mask is None:
            mask = np.ones(table.n_records, bool)
        valid = table.valid_facts(state.threshold, state.source)
        concepts: dict[str, set[str]] = {}
        for prop, concept in state.filters:
            concepts.setdefault(prop, set()).update(table.narrower_closure(concept))
        by_property = {}
        for prop, chosen in concepts.items():
            pvs = [k for c in chosen if (k := table.value_index(prop, c)) is not None]
            by_property[prop] = table.records_with(pvs, valid)
        return mask, by_property

    def _facet_counts(
        self, state: SearchState, text: np.ndarray, by_property: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Counts per property value under every filter except its own property's, so the
        other values of a filtered property stay on offer as alternatives (OR)."""
        table = self.table
        full = text.copy()
        for kept in by_property.values():
            full &= kept
        cat, pred = table.counts(full, state.threshold)
        for prop in by_property:
            others = text.copy()
            for other, kept in by_property.items():
                if other != prop:
                    others &= kept
            own_cat, own_pred = table.counts(others, state.threshold)
            values = table.values_of(prop)
            cat[values], pred[values] = own_cat[values], own_pred[values]
        return cat, pred

    def search(self, state: SearchState) -> SearchPage:
        """One page of results, the facets with their counts, and the confidences of the
        results' predictions (for the histogram)."""
        start = time.perf_counter()
        table = self.table
        text, by_property = self._masks(state)
        mask = text.copy()
        for kept in by_property.values():
            mask &= kept
        ids = np.flatnonzero(mask)
        if state.sort != "id":
            conf = table.rec_min_conf[ids]
            key = conf if state.sort == "confidence" else -conf
            ids = ids[np.argsort(np.where(np.isnan(key), np.inf, key), kind="stable")]
        size = self.config.page_size
        pages = max(1, -(-len(ids) // size))
        page = min(state.page, pages)
        chosen = ids[(page - 1) * size : page * size]
        cards = [self._card(int(r), state.language) for r in chosen]
        facets = self._facets(state, *self._facet_counts(state, text, by_property))
        in_results = mask[table.pred_rec]
        return SearchPage(
            replace(state, page=page),
            len(ids),
            pages,
            cards,
            facets,
            table.pred_conf[in_results],
            1000 * (time.perf_counter() - start),
        )

    def _card(self, rec: int, language: str) -> RecordCard:
        table = self.table
        conf = table.rec_min_conf[rec]
        return RecordCard(
            table.record_ids[rec],
            table.title(rec, language),
            self._image_of(table.record_ids[rec]),
            None if np.isnan(conf) else float(conf),
        )

    def _facets(self, state: SearchState, cat: np.ndarray, pred: np.ndarray) -> list[Facet]:
        table = self.table
        selected = set(state.filters)
        out = []
        for prop in table.properties:
            values = []
            for k in table.values_of(prop):
                concept = table.values[k][1]
                is_selected = (prop, concept) in selected
                if cat[k] or pred[k] or is_selected:
                    values.append(
                        FacetValue(
                            concept,
                            table.label(concept, state.language),
                            int(cat[k]),
                            int(pred[k]),
                            is_selected,
                            state.toggled(prop, concept),
                        )
                    )
            values.sort(key=lambda v: (not v.selected, -(v.catalogued + v.predicted), v.label))
            if values:
                out.append(Facet(prop, values))
        return out

    def sparql(self, state: SearchState) -> str:
        """A SPARQL query for the records of ``state`` (its text as a case-insensitive
        CONTAINS over the records' literals: the explorer's own word index has no SPARQL
        equivalent). Every user string is escaped; concept URIs come from the graph."""
        blocks = []
        by_property: dict[str, set[str]] = {}
        for prop, concept in state.filters:
            by_property.setdefault(prop, set()).update(self.table.narrower_closure(concept))
        for n, (prop, concepts) in enumerate(sorted(by_property.items())):
            values = " ".join(f"<{c}>" for c in sorted(concepts) if _is_iri(c))
            catalogued = f"{{ ?r ?p{n} ?v{n} }}"
            predicted = (
                f"{{ ?x{n} rdf:subject ?r ; rdf:predicate ?p{n} ; rdf:object ?v{n} ; "
                f"her:confidence ?c{n} . FILTER(?c{n} >= {state.threshold!r}) }}"
            )
            match = {
                "both": f"{catalogued} UNION {predicted}",
                "catalogued": catalogued,
                "predicted": predicted,
            }[state.source]
            blocks.append(
                f"  ?p{n} rdfs:label {sparql_string(prop)} .\n  VALUES ?v{n} {{ {values} }}\n"
                f"  {match}\n"
            )
        if state.text.strip():
            blocks.append(
                "  ?r ?anyProperty ?text . FILTER(isLiteral(?text) && "
                f"CONTAINS(LCASE(STR(?text)), LCASE({sparql_string(state.text.strip())})))\n"
            )
        return (
            f"{PREFIX_BLOCK}SELECT DISTINCT ?record WHERE {{\n  ?r a her:Record ; "
            f"dcterms:identifier ?record .\n{''.join(blocks)}}}\nORDER BY ?record\n"
        )

    # ------------------------------------------------------------------ records
    def record(self, record_id: str, language: str = "en") -> RecordView:
        """A record's catalogued and predicted values side by side, with everything the
        graph says of each prediction (alternatives, inputs, model, software, reviews)."""
        table = self.table
        rec = table.record_index(record_id)
        if rec is None:
            raise ExplorerError(f"no record {record_id!r} in the graph")
        uri = table.record_uris[rec]
        values = self.graph.select(record_values_query(uri), typed=False)
        preds = self.graph.select(record_predictions_query(uri), typed=False)
        catalogued: dict[str, list[str]] = {}
        texts, literals = [], []
        for column, value, is_iri, lang in zip(
            values["column"], values["value"], values["isIri"], values["language"], strict=True
        ):
            if str(is_iri) in ("true", "1", "True"):
                catalogued.setdefault(column, []).append(table.label(value, language))
            elif lang or (isinstance(value, str) and len(value) > 80):
                texts.append((column, lang or "", str(value)))
            else:
                literals.append((column, str(value)))
        predictions: dict[str, dict[str, PredictionView]] = {}
        views: dict[str, PredictionView] = {}
        for row in preds.drop_duplicates("prediction").to_dict("records"):
            k = table.prediction_index(row["prediction"])
            act = table.pred_activity[k] if k is not None else -1
            view = PredictionView(
                row["prediction"],
                row["column"],
                row["value"],
                table.label(row["value"], language),
                _number(row["confidence"]),
                [],
                _text(row.get("modalities")),
                table.activities[act] if act >= 0 else {},
                list(self._reviews.get(row["prediction"], ())),
            )
            predictions.setdefault(row["column"], {})[row["prediction"]] = view
            views[row["prediction"]] = view
        if views:
            alternatives = self.graph.select(alternatives_query(list(views)), typed=False)
            for p, value, conf in zip(
                alternatives["prediction"],
                alternatives["alternative"],
                alternatives["altConfidence"],
                strict=True,
            ):
                if math.isfinite(confidence := _number(conf)):
                    views[p].alternatives.append((table.label(value, language), confidence))
        fields = [
            FieldView(
                prop,
                sorted(catalogued.get(prop, [])),
                sorted(
                    predictions.get(prop, {}).values(),
                    key=lambda p: -p.confidence if math.isfinite(p.confidence) else 1.0,
                ),
            )
            for prop in sorted(set(catalogued) | set(predictions))
        ]
        texts.sort(key=lambda t: (t[1] != language, t[0]))
        images = [loc for loc in [self._image_location(record_id)] if loc is not None]
        images += [
            loc
            for _, value in literals
            if (loc := self._image_location(value)) is not None and loc not in images
        ]
        return RecordView(
            record_id,
            uri,
            table.title(rec, language),
            fields,
            texts,
            sorted(literals),
            images,
            self._index is not None and record_id in self._index,
        )

    def record_sparql(self, record_id: str) -> str:
        rec = self.table.record_index(record_id)
        if rec is None:
            raise ExplorerError(f"no record {record_id!r} in the graph")
        uri = self.table.record_uris[rec]
        return (
            record_values_query(uri) + "\n# and its predictions:\n" + record_predictions_query(uri)
        )

    def _image_location(self, name: str) -> tuple[int, str] | None:
        if not self.images or not isinstance(name, str):
            return None
        if not name.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff",
                                      ".webp")):  # fmt: skip
            return None
        return self.images.locate(name)

    def _image_of(self, record_id: str) -> str | None:
        loc = self._image_location(record_id)
        if loc is None and record_id in self._index_paths:
            loc = self.images.locate(self._index_paths[record_id]) if self.images else None
        return None if loc is None else f"{loc[0]}/{loc[1]}"

    # ------------------------------------------------------------------ similarity
    def similar(self, record_id: str, k: int = 12) -> list[SimilarHit]:
        """The index's nearest neighbours of a record (its id must be an index id)."""
        if self._index is None:
            raise ExplorerError("no similarity index: start the explorer with --index INDEX")
        if record_id not in self._index:
            raise ExplorerError(f"{record_id!r} is not in the similarity index")
        vector = self._index.vectors[self._index._positions[record_id]][None, :]
        ids, distances = self._index.search(vector, k + 1)
        return [
            self._hit(i, float(d))
            for i, d in zip(ids[0], distances[0][: len(ids[0])], strict=True)
            if i != record_id
        ][:k]

    def similar_to_image(self, data: bytes, k: int = 12) -> list[SimilarHit]:
        """Nearest neighbours of an uploaded image, embedded the way the index was built."""
        import tempfile

        from heritage.explore.images import check_upload

        if self._index is None:
            raise ExplorerError("no similarity index: start the explorer with --index INDEX")
        check_upload(data)
        embedder = self._search_embedder()
        with tempfile.NamedTemporaryFile(suffix=".img") as fh:
            fh.write(data)
            fh.flush()
            vectors, failed = embedder.embed([fh.name])
        if failed:
            raise ExplorerError(f"the image could not be read: {next(iter(failed.values()))}")
        ids, distances = self._index.search(vectors, k)
        return [self._hit(i, float(d)) for i, d in zip(ids[0], distances[0], strict=False)]

    def _search_embedder(self) -> Any:
        with self._lock:
            if self._embedder is None:
                from heritage.similarity.embedding import EmbeddingConfig
                from heritage.similarity.search import SearchEmbedder

                meta = self._index.meta
                self._embedder = SearchEmbedder(
                    EmbeddingConfig(**meta["embedding"]), meta.get("model"), None
                )
            return self._embedder

    def _hit(self, item_id: str, distance: float) -> SimilarHit:
        path = self._index_paths.get(item_id)
        loc = self.images.locate(path) if (path and self.images) else None
        loc = loc or self._image_location(item_id)
        return SimilarHit(item_id, distance, loc, self.table.record_index(item_id) is not None)

    # ------------------------------------------------------------------ reviews
    def review(
        self, prediction: str, decision: str, value: str | None = None, curator: str | None = None
    ) -> Review:
        """Record a curator's decision on a prediction as a PROV activity in the review
        graph. The prediction and the catalogue are left as they are."""
        if self.config.read_only:
            raise ExplorerError("the explorer is read-only: reviews are disabled")
        curator = (curator or self.config.curator or "").strip()
        if not curator:
            raise ExplorerError("reviews need a curator's name: start with --curator NAME")
        if decision not in DECISIONS:
            raise ExplorerError(f"decision must be one of {', '.join(DECISIONS)}")
        k = self.table.prediction_index(prediction)
        if k is None:
            raise ExplorerError(f"no prediction {prediction!r} in the graph")
        table = self.table
        prop, concept = table.values[table.pred_pv[k]]
        corrected_uri = corrected_label = None
        if decision == "corrected":
            corrected_label = " ".join((value or "").split())
            if not corrected_label:
                raise ExplorerError("a correction needs the corrected value")
            if len(corrected_label) > 500:
                raise ExplorerError("the corrected value is longer than 500 characters")
            corrected_uri = self._concept_for(prop, corrected_label)
        review = Review(
            prediction=prediction,
            record=table.record_uris[table.pred_rec[k]],
            property=self._property_uri(prop),
            predicted=concept,
            decision=decision,  # type: ignore[arg-type]
            curator=curator,
            time=datetime.now(timezone.utc),
            value=corrected_uri,
            value_label=corrected_label,
        )
        with self._lock:
            self.graph.add_lines(review_lines(review, self.base), self.review_graph)
            self._remember(
                {
                    "review": f"{UriScheme(self.base).base}review/{review.key()}",
                    "prediction": prediction,
                    "decision": decision,
                    "time": review.stamp(),
                    "curator": curator,
                    "valueLabel": corrected_label,
                    "valueUri": corrected_uri,
                }
            )
        return review

    def _concept_for(self, prop: str, label: str) -> str:
        """The property's concept with this label (any language, case-insensitive), else a
        URI minted for it the way exports mint them."""
        table = self.table
        wanted = label.casefold()
        for k in table.values_of(prop):
            concept = table.values[k][1]
            if any(text.casefold() == wanted for text in table.labels.get(concept, {}).values()):
                return concept
        return UriScheme(self.base).concept(prop, label)

    def _property_uri(self, prop: str) -> str:
        cached = getattr(self, "_property_uris", None)
        if cached is None:
            frame = self.graph.select(
                f"{PREFIX_BLOCK}SELECT ?p ?label WHERE {{ ?p a rdf:Property ; rdfs:label ?label }}",
                typed=False,
            )
            cached = dict(zip(frame["label"], frame["p"], strict=True))
            self._property_uris = cached
        return cached.get(prop) or UriScheme(self.base).property(prop)

    def property_values(self, prop: str, language: str = "en") -> list[tuple[str, str]]:
        """(concept, label) of every value the graph has for ``prop``, by label."""
        table = self.table
        pairs = [(table.values[k][1], table.label(table.values[k][1], language)) for k in
                 table.values_of(prop)]  # fmt: skip
        return sorted(pairs, key=lambda p: p[1].casefold())

    def reviews_of(self, prediction: str) -> list[dict[str, Any]]:
        return list(self._reviews.get(prediction, ()))

    def queue(
        self,
        prop: str | None = None,
        concept: str | None = None,
        page: int = 1,
        language: str = "en",
    ) -> tuple[list[QueueItem], int]:
        """Predictions nobody has reviewed that fill a gap in the catalogue (where the museum
        has a value, it wins anyway), least confident first, optionally of one property or
        one value of it; returns one page and the number left."""
        table = self.table
        order = self._queue_order
        keep = ~self._reviewed[order] & table.pred_gap[order]
        if prop:
            pvs = table.values_of(prop)
            if concept:
                pvs = [k for k in pvs if table.values[k][1] in table.narrower_closure(concept)]
            keep &= np.isin(table.pred_pv[order], pvs)
        rows = order[keep]
        size = self.config.page_size
        chosen = rows[(max(page, 1) - 1) * size : max(page, 1) * size]
        items = []
        for k in chosen:
            rec = int(table.pred_rec[k])
            p, c = table.values[table.pred_pv[k]]
            items.append(
                QueueItem(
                    table.pred_uri[k],
                    table.record_ids[rec],
                    table.title(rec, language),
                    p,
                    table.label(c, language),
                    float(table.pred_conf[k]),
                )
            )
        return items, len(rows)


def default_cache(store: str | Path) -> Path:
    """Where the explorer keeps the tables of the store ``store``: ``STORE.explorer``."""
    path = Path(store).absolute()
    return path.with_name(path.name + ".explorer")


def cached_tables(
    cache: Path | None, generation: str | None
) -> tuple[FacetTable, FullTextIndex] | None:
    """The tables cached in ``cache`` if they were built for the store's ``generation``."""
    if cache is None or generation is None:
        return None
    key = cache / "generation"
    if not key.is_file() or key.read_text().strip() != generation:
        return None
    table = FacetTable.load(cache)
    if table is None or not (cache / "text.sqlite").is_file():
        return None
    return table, FullTextIndex(cache / "text.sqlite")


def build_tables(graph: Any, cache: Path) -> tuple[FacetTable, FullTextIndex]:
    """Read the facet table and the text index from ``graph`` into ``cache``, marked with the
    graph's generation (``heritage kg load`` calls this, so the explorer starts at once)."""
    frames = GraphFrames.read(graph)
    table = FacetTable.from_frames(frames)
    table.save(cache)
    text = FullTextIndex.build(cache / "text.sqlite", frames.text_rows(table))
    (cache / "generation").write_text((graph.generation() or "") + "\n")
    return table, text


def _open_graph(config: ExplorerConfig) -> Any:
    if config.endpoint is not None:
        from heritage.kg.endpoint import SparqlEndpoint

        url = config.endpoint.rstrip("/")
        if config.endpoint_user is not None and url.endswith("/sparql"):
            # Virtuoso: queries on /sparql, authenticated review writes through its Graph Store
            return SparqlEndpoint.virtuoso(
                url.removesuffix("/sparql"), config.endpoint_user, config.endpoint_password
            )
        return SparqlEndpoint(url, user=config.endpoint_user, password=config.endpoint_password)
    from heritage.kg.store import KnowledgeGraph

    store = Path(config.store)  # type: ignore[arg-type]
    if not store.is_dir():
        raise FileNotFoundError(
            f"no store at {store}; create one with `heritage kg load FILE --store {store}`"
        )
    return KnowledgeGraph(store, read_only=config.read_only)


def _base_of(record_uris: list[str]) -> str | None:
    """The base URI exports used (``{base}object/{id}``), read off the first record."""
    for uri in record_uris[:1]:
        cut = uri.rfind("/object/")
        if cut > 0:
            return uri[: cut + 1]
    return None


def _is_iri(value: str) -> bool:
    from heritage.kg.terms import check_iri

    try:
        check_iri(value)
    except ValueError:
        return False
    return True


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def _number(value: object) -> float:
    """A confidence read from the graph; NaN when it is missing or not a number (a graph
    written by another tool), so that one bad literal does not take the page down."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
