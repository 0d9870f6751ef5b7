"""The explorer's facet table: the graph's records, values and predictions as numpy arrays.

Faceted search asks the same question on every page — how many records have each value,
catalogued or predicted at or above a threshold, among the records the other filters keep —
and SPARQL answers it in about 185 ms on 100,000 predictions (benchmarks/kg.md). Read once
into arrays, it is a few ``bincount`` calls: a millisecond or two. The table is built from a
handful of SELECT queries at start (:meth:`FacetTable.from_graph`) and cached next to the
store, keyed by the store's generation (a new one at every ``heritage kg load``).

One row of the table is a *fact*: (record, property value, source, confidence), where the
source is catalogued or predicted and the property value a SKOS concept. Each fact is also
counted under every broader concept of its value (``skos:broader``/``skos:narrower`` in the
graph), so that choosing "silk" matches records whose value is a narrower kind of silk. Where
several prediction runs predicted the same value for a record, the most confident counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from heritage.kg.queries import (
    ACTIVITIES_QUERY,
    EXPLORER_PREDICTIONS_QUERY,
    EXPLORER_RECORDS_QUERY,
    EXPLORER_VALUES_QUERY,
    HIERARCHY_QUERY,
    LABELS_QUERY,
)

__all__ = ["SOURCES", "FacetTable", "Source"]

Source = Literal["both", "catalogued", "predicted"]
SOURCES: tuple[str, ...] = get_args(Source)
CATALOGUED, PREDICTED = 0, 1
EXCERPT = 240  # characters of a record's text kept for the results grid
_FORMAT = 2  # bump when the cached layout changes


@dataclass
class GraphFrames:
    """What the explorer reads from a graph, once: the results of its SELECT queries."""

    records: pd.DataFrame
    values: pd.DataFrame
    predictions: pd.DataFrame
    labels: pd.DataFrame
    hierarchy: pd.DataFrame
    activities: pd.DataFrame

    @classmethod
    def read(cls, graph: Any) -> GraphFrames:
        """Run the queries on ``graph`` (anything with ``select``: the embedded store or a
        SPARQL server)."""
        from heritage.progress import progress_bar

        queries = {
            "records": (EXPLORER_RECORDS_QUERY, False),
            "values": (EXPLORER_VALUES_QUERY, False),
            "predictions": (EXPLORER_PREDICTIONS_QUERY, True),
            "labels": (LABELS_QUERY, False),
            "hierarchy": (HIERARCHY_QUERY, False),
            "activities": (ACTIVITIES_QUERY, False),
        }
        out = {}
        with progress_bar() as bar:
            task = bar.add_task("reading the graph", total=len(queries))
            for name, (sparql, typed) in queries.items():
                out[name] = graph.select(sparql, typed=typed)
                bar.advance(task)
        return cls(**out)

    def text_rows(self, table: FacetTable) -> Iterator[tuple[int, str, str]]:
        """(record number, language, text) for the full-text index: every literal with
        letters in it, the titles, the identifiers and the labels (in every language) of the
        record's catalogued concepts; predicted values are not text the record holds."""
        for rec, record_id in enumerate(table.record_ids):
            yield rec, "", record_id
        is_iri = self.values["isIri"].astype(str).isin(["true", "1", "True"]).to_numpy()
        for frame, column, concept in (
            (self.values, "value", is_iri),
            (self.records, "title", np.zeros(len(self.records), bool)),
        ):
            for r, text, lang, is_concept in zip(
                frame["r"], frame[column], frame["language"], concept, strict=True
            ):
                rec = table.record_index_of_uri(r)
                if rec is None or not isinstance(text, str):
                    continue
                if is_concept:
                    for label_lang, label in table.labels.get(text, {}).items():
                        yield rec, label_lang, label
                elif any(c.isalpha() for c in text):
                    yield rec, lang or "", text


@dataclass
class FacetTable:
    """Arrays over records (``rec``), property values (``pv``), facts and predictions.

    Records are indexed 0..n-1 in identifier order; ``values[k]`` is the (property, concept
    URI) pair of property value ``k``. Facts: ``fact_rec``, ``fact_pv``, ``fact_src``
    (0 catalogued, 1 predicted), ``fact_conf`` (1.0 for catalogued facts); rows sorted by
    property value so that one value's facts are the slice ``pv_start[k]:pv_start[k+1]``.
    Predictions (one per prediction node): ``pred_uri``, ``pred_rec``, ``pred_pv``,
    ``pred_conf``, ``pred_activity``, ``pred_gap`` (True where the record has no catalogued
    value of the property: the suggestion fills a gap rather than second-guesses the museum).
    """

    record_ids: list[str]
    record_uris: list[str]
    titles: list[dict[str, str]]
    excerpts: list[dict[str, str]]
    properties: list[str]
    values: list[tuple[str, str]]
    labels: dict[str, dict[str, str]]
    broader: dict[str, list[str]]
    fact_rec: np.ndarray
    fact_pv: np.ndarray
    fact_src: np.ndarray
    fact_conf: np.ndarray
    pred_uri: list[str]
    pred_rec: np.ndarray
    pred_pv: np.ndarray
    pred_conf: np.ndarray
    pred_activity: np.ndarray
    pred_gap: np.ndarray
    activities: list[dict[str, Any]]
    pv_start: np.ndarray = field(init=False)
    _rec_index: dict[str, int] = field(init=False, repr=False)
    _uri_index: dict[str, int] = field(init=False, repr=False)
    _pv_index: dict[tuple[str, str], int] = field(init=False, repr=False)
    _pred_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        order = np.argsort(self.fact_pv, kind="stable")
        for name in ("fact_rec", "fact_pv", "fact_src", "fact_conf"):
            setattr(self, name, getattr(self, name)[order])
        self.pv_start = np.searchsorted(self.fact_pv, np.arange(len(self.values) + 1))
        self._rec_index = {r: i for i, r in enumerate(self.record_ids)}
        self._uri_index = {u: i for i, u in enumerate(self.record_uris)}
        self._pv_index = {v: i for i, v in enumerate(self.values)}
        self._pred_index = {u: i for i, u in enumerate(self.pred_uri)}
        conf = np.full(len(self.record_ids), np.inf, np.float32)
        np.fmin.at(conf, self.pred_rec, self.pred_conf)  # fmin: a NaN confidence is skipped
        self.rec_min_conf = np.where(np.isinf(conf), np.nan, conf).astype(np.float32)

    # ------------------------------------------------------------------ lookups
    @property
    def n_records(self) -> int:
        return len(self.record_ids)

    def record_index(self, record_id: str) -> int | None:
        return self._rec_index.get(record_id)

    def record_index_of_uri(self, uri: str) -> int | None:
        return self._uri_index.get(uri)

    def value_index(self, prop: str, concept: str) -> int | None:
        return self._pv_index.get((prop, concept))

    def prediction_index(self, uri: str) -> int | None:
        return self._pred_index.get(uri)

    def label(self, concept: str, language: str | None = None) -> str:
        """A concept's preferred label in ``language``, else without a language, else
        English, else any; the URI's last segment when it has none."""
        labels = self.labels.get(concept)
        if not labels:
            return _last_segment(concept)
        for lang in (language, "", "en"):
            if lang is not None and lang in labels:
                return labels[lang]
        return labels[min(labels)]

    def title(self, rec: int, language: str | None = None) -> str:
        return _pick(self.titles[rec], language) or _pick(self.excerpts[rec], language)

    @cached_property
    def languages(self) -> tuple[str, ...]:
        """The language tags of the graph's labels, titles and texts (the data languages a
        page can be shown in)."""
        tags = {lang for labels in self.labels.values() for lang in labels}
        tags.update(lang for texts in (*self.titles, *self.excerpts) for lang in texts)
        return tuple(sorted(tags - {""}))

    def values_of(self, prop: str) -> list[int]:
        return [k for k, (p, _) in enumerate(self.values) if p == prop]

    def narrower_closure(self, concept: str) -> set[str]:
        """``concept`` and every concept below it."""
        below: dict[str, list[str]] = {}
        for child, parents in self.broader.items():
            for parent in parents:
                below.setdefault(parent, []).append(child)
        seen, todo = {concept}, [concept]
        while todo:
            for child in below.get(todo.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        return seen

    # ------------------------------------------------------------------ questions
    def valid_facts(self, threshold: float, source: Source = "both") -> np.ndarray:
        """Facts that count: catalogued ones, and predictions at or above ``threshold``."""
        cat = self.fact_src == CATALOGUED
        pred = (self.fact_src == PREDICTED) & (self.fact_conf >= threshold)
        return {"both": cat | pred, "catalogued": cat, "predicted": pred}[source]

    def records_with(self, pvs: Iterable[int], valid: np.ndarray) -> np.ndarray:
        """A mask of the records with a valid fact of any of ``pvs``."""
        mask = np.zeros(self.n_records, bool)
        for k in pvs:
            a, b = self.pv_start[k], self.pv_start[k + 1]
            rows = np.flatnonzero(valid[a:b]) + a
            mask[self.fact_rec[rows]] = True
        return mask

    def counts(self, records: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Per property value: records in the ``records`` mask that have it catalogued, and
        records that have it predicted with confidence ≥ ``threshold``."""
        keep = records[self.fact_rec]
        cat = keep & (self.fact_src == CATALOGUED)
        pred = keep & (self.fact_src == PREDICTED) & (self.fact_conf >= threshold)
        n = len(self.values)
        return (
            np.bincount(self.fact_pv[cat], minlength=n),
            np.bincount(self.fact_pv[pred], minlength=n),
        )

    # ------------------------------------------------------------------ building
    @classmethod
    def from_frames(cls, frames: GraphFrames) -> FacetTable:
        """The table from the results of the explorer's queries (heritage.kg.queries)."""
        records, values, preds = frames.records, frames.values, frames.predictions
        uri_to_id, order = _record_order(records, values, preds)
        rec_of = {u: i for i, u in enumerate(order)}
        titles, excerpts = _titles_and_excerpts(records, values, rec_of)
        broader = _broader_of(frames.hierarchy)
        facts, pred_frame = _catalogued_and_predicted(values, preds, rec_of)
        catalogued = set(zip(facts["rec"], facts["prop"], strict=True))
        facts = pd.concat([facts, pred_frame], ignore_index=True)
        facts = _with_ancestors(facts, broader)
        facts = facts.groupby(["rec", "prop", "concept", "src"], as_index=False)["conf"].max()
        pairs = sorted(
            set(zip(facts["prop"], facts["concept"], strict=True))
            | set(zip(pred_frame["prop"], pred_frame["concept"], strict=True))
        )
        pv_of = {p: k for k, p in enumerate(pairs)}
        activity_rows = _activity_rows(frames.activities)
        act_of = {a["activity"]: k for k, a in enumerate(activity_rows)}
        return cls(
            record_ids=[uri_to_id[u] for u in order],
            record_uris=order,
            titles=titles,
            excerpts=excerpts,
            properties=sorted({p for p, _ in pairs}),
            values=pairs,
            labels=_label_map(frames.labels),
            broader=broader,
            fact_rec=facts["rec"].to_numpy(np.int32),
            fact_pv=_pv_keys(facts, pv_of),
            fact_src=facts["src"].to_numpy(np.int8),
            fact_conf=facts["conf"].to_numpy(np.float32),
            pred_uri=[str(u) for u in preds["prediction"]],
            pred_rec=pred_frame["rec"].to_numpy(np.int32),
            pred_pv=_pv_keys(pred_frame, pv_of),
            pred_conf=pred_frame["conf"].to_numpy(np.float32),
            pred_activity=np.array([act_of.get(a, -1) for a in preds["activity"]], np.int32),
            pred_gap=np.array(
                [
                    (r, p) not in catalogued
                    for r, p in zip(pred_frame["rec"], pred_frame["prop"], strict=True)
                ],
                bool,
            ),
            activities=activity_rows,
        )

    # ------------------------------------------------------------------ cache files
    _ARRAYS = ("fact_rec", "fact_pv", "fact_src", "fact_conf", "pred_rec", "pred_pv",
               "pred_conf", "pred_activity", "pred_gap")  # fmt: skip
    _LISTS = ("record_ids", "record_uris", "titles", "excerpts", "properties", "labels",
              "broader", "pred_uri", "activities")  # fmt: skip

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "facets.npz", **{a: getattr(self, a) for a in self._ARRAYS})
        data = {name: getattr(self, name) for name in self._LISTS}
        data["values"] = [list(v) for v in self.values]
        data["format"] = _FORMAT
        (folder / "facets.json").write_text(json.dumps(data, ensure_ascii=False))

    @classmethod
    def load(cls, folder: str | Path) -> FacetTable | None:
        """The cached table, or None when there is none (or of an older layout)."""
        folder = Path(folder)
        try:
            data = json.loads((folder / "facets.json").read_text())
            if data.pop("format", None) != _FORMAT:
                return None
            with np.load(folder / "facets.npz") as arrays:
                loaded = {a: arrays[a] for a in cls._ARRAYS}
        except (OSError, ValueError, KeyError):
            return None
        data["values"] = [tuple(v) for v in data["values"]]
        return cls(**data, **loaded)


def _record_order(
    records: pd.DataFrame, values: pd.DataFrame, preds: pd.DataFrame
) -> tuple[dict[str, str], list[str]]:
    """Record URI -> identifier, and the record URIs sorted by identifier: the table's row
    order. A record node without an identifier (only values or predictions name it) is
    identified by its URI."""
    uri_to_id = dict(zip(records["r"], records["record"], strict=True))
    for r in (*values["r"], *preds["r"]):
        uri_to_id.setdefault(r, r)
    return uri_to_id, sorted(uri_to_id, key=lambda u: (uri_to_id[u], u))


def _titles_and_excerpts(
    records: pd.DataFrame, values: pd.DataFrame, rec_of: dict[str, int]
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Per record, its title and an excerpt of its first text with a letter in it, by
    language tag (``""`` for none); the first one the graph returns wins."""
    n = len(rec_of)
    texts = values[~_is_iri(values)]
    excerpts: list[dict[str, str]] = [{} for _ in range(n)]
    for r, text, lang in zip(texts["r"], texts["value"], texts["language"], strict=True):
        lang = lang or ""
        text = str(text)
        if any(c.isalpha() for c in text) and lang not in excerpts[rec_of[r]]:
            excerpts[rec_of[r]][lang] = _excerpt(text)
    titles: list[dict[str, str]] = [{} for _ in range(n)]
    titled = records[records["title"].notna()]
    for r, text, lang in zip(titled["r"], titled["title"], titled["language"], strict=True):
        titles[rec_of[r]].setdefault(lang or "", str(text))
    return titles, excerpts


def _is_iri(values: pd.DataFrame) -> pd.Series:
    """Which catalogued values are concepts (IRIs) rather than texts; stores answer the
    ``isIri`` binding as ``true``, ``1`` or ``True``."""
    return values["isIri"].astype(str).isin(["true", "1", "True"])


def _broader_of(hierarchy: pd.DataFrame) -> dict[str, list[str]]:
    """Concept -> its broader concepts (a concept is never its own parent)."""
    broader: dict[str, list[str]] = {}
    for child, parent in zip(hierarchy["narrower"], hierarchy["broader"], strict=True):
        if child != parent:
            broader.setdefault(child, []).append(parent)
    return broader


def _label_map(labels: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Concept -> language tag -> its first label in that language."""
    label_map: dict[str, dict[str, str]] = {}
    for c, text, lang in zip(labels["concept"], labels["label"], labels["language"], strict=True):
        label_map.setdefault(c, {}).setdefault(lang or "", str(text))
    return label_map


def _catalogued_and_predicted(
    values: pd.DataFrame, preds: pd.DataFrame, rec_of: dict[str, int]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The catalogued facts (confidence 1) and the predicted ones, each with columns rec,
    prop, concept, src and conf; a confidence that is not a number becomes NaN."""
    concepts = values[_is_iri(values)]
    catalogued = pd.DataFrame(
        {
            "rec": [rec_of[r] for r in concepts["r"]],
            "prop": concepts["column"].astype(str).to_numpy(),
            "concept": concepts["value"].astype(str).to_numpy(),
            "src": CATALOGUED,
            "conf": 1.0,
        }
    )
    predicted = pd.DataFrame(
        {
            "rec": [rec_of[r] for r in preds["r"]],
            "prop": preds["column"].astype(str).to_numpy(),
            "concept": preds["value"].astype(str).to_numpy(),
            "src": PREDICTED,
            "conf": pd.to_numeric(preds["confidence"], errors="coerce").astype(float).to_numpy(),
        }
    )
    return catalogued, predicted


def _pv_keys(facts: pd.DataFrame, pv_of: dict[tuple[str, str], int]) -> np.ndarray:
    """The property-value index of each fact's (prop, concept)."""
    return np.array([pv_of[p] for p in zip(facts["prop"], facts["concept"], strict=True)], np.int32)


def _with_ancestors(facts: pd.DataFrame, broader: dict[str, list[str]]) -> pd.DataFrame:
    """Each fact also under every broader concept of its value (cycles are cut)."""
    if not broader:
        return facts
    extra = []
    for concept in facts["concept"].unique():
        for ancestor in _ancestors(concept, broader):
            rows = facts[facts["concept"] == concept].copy()
            rows["concept"] = ancestor
            extra.append(rows)
    return pd.concat([facts, *extra], ignore_index=True) if extra else facts


def _ancestors(concept: str, broader: dict[str, list[str]]) -> list[str]:
    seen: list[str] = []
    todo = list(broader.get(concept, ()))
    while todo:
        parent = todo.pop()
        if parent != concept and parent not in seen:
            seen.append(parent)
            todo += broader.get(parent, ())
    return seen


def _activity_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for row in frame.drop_duplicates("activity").to_dict("records"):
        rows.append({k: (None if v is None or v != v else str(v)) for k, v in row.items()})
    return rows


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1].rsplit(" ", 1)[0] + "…"


def _pick(texts: dict[str, str], language: str | None) -> str:
    for lang in (language, "", "en"):
        if lang is not None and lang in texts:
            return texts[lang]
    return texts[min(texts)] if texts else ""


def _last_segment(uri: str) -> str:
    from urllib.parse import unquote

    return unquote(uri.rstrip("/").rsplit("/", 1)[-1].rsplit("#", 1)[-1])


def value_keys(table: FacetTable, prop: str, concepts: Sequence[str]) -> list[int]:
    """Property value indexes of ``concepts`` of ``prop`` (unknown ones dropped)."""
    out = []
    for c in concepts:
        k = table.value_index(prop, c)
        if k is not None:
            out.append(k)
    return out
