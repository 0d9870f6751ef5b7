"""Predictions and catalogued values as RDF: the shape of the graph heritage publishes.

The graph keeps a catalogue's facts and a model's suggestions apart by *kind of statement*,
as SILKNOW did, so that no prediction can overwrite or pass for a catalogued value:

* a **catalogued value** is a plain triple ``<record> <property> <concept>`` (or a literal,
  for texts and numbers): what the museum asserts;
* a **predicted value** is never asserted. It is a reified statement, a ``her:Prediction``
  (also an ``rdf:Statement``) whose ``rdf:subject``/``rdf:predicate``/``rdf:object`` name
  the record, the property and the predicted concept, with ``her:confidence`` (xsd:double),
  ``prov:wasGeneratedBy`` the prediction run, the modalities that contributed, and its
  runner-up values as ``her:alternative`` nodes (``her:value``, ``her:confidence``,
  ``her:rank`` 2, 3, …).

A query for ``?record <technique> ?value`` therefore sees only the catalogue; asking for
predictions is explicit, and "catalogued, else predicted with confidence ≥ t" is one query
(:mod:`heritage.kg.queries`). Values are SKOS concepts, from the user's vocabulary or minted
(:mod:`heritage.kg.vocabulary`); the activity, model and software are PROV-O
(:mod:`heritage.kg.provenance`). Example (Turtle; relative IRIs are under the base URI)::

    <object/T.123> a her:Record ; dcterms:identifier "T.123" ;
        <property/museum> <concept/museum/vam> .                    # catalogued
    <prediction/4f0c…> a her:Prediction, rdf:Statement ;
        rdf:subject <object/T.123> ; rdf:predicate <property/technique> ;
        rdf:object <concept/technique/damask> ;
        her:confidence "0.91"^^xsd:double ; her:modalities "tfidf+tabular" ;
        her:alternative <prediction/4f0c…/alt/2> ;
        prov:wasGeneratedBy <activity/9a1e…> .
    <prediction/4f0c…/alt/2> a her:Alternative ; her:rank 2 ;
        her:value <concept/technique/velvet> ; her:confidence "0.06"^^xsd:double .
    <activity/9a1e…> a prov:Activity ; prov:startedAtTime … ; prov:endedAtTime … ;
        prov:used <model/SHA256> ; prov:wasAssociatedWith <agent/heritage-0.1.0> .
    <model/SHA256> a prov:Entity, her:Model ; her:sha256 "SHA256"^^xsd:hexBinary .
    <agent/heritage-0.1.0> a prov:SoftwareAgent ; schema:softwareVersion "0.1.0" .
    <concept/technique/damask> a skos:Concept ; skos:prefLabel "damask" ;
        skos:inScheme <scheme/technique> .

No blank nodes are used: every node has a deterministic URI, so two exports of the same input
are the same set of N-Triples lines, and graphs can be compared, merged and pushed in chunks.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from heritage.collection import read_csv_strings
from heritage.kg.predictions import PREDICTION_COLUMNS, PredictionKind, normalise_predictions
from heritage.kg.provenance import CARD_FILE, Activity, provenance_lines
from heritage.kg.terms import (
    DCTERMS,
    HER,
    PREFIXES,
    PROV,
    RDF,
    RDFS,
    SKOS,
    XSD,
    iri,
    literal,
    typed,
)
from heritage.kg.vocabulary import DEFAULT_BASE, Concept, UriScheme, Vocabulary
from heritage.progress import progress_bar

__all__ = [
    "FORMATS",
    "Catalogue",
    "Export",
    "ExportConfig",
    "GraphBuilder",
    "export_graph",
    "rdf_format",
]

#: output formats by name and file extension
FORMATS = {"ttl": "turtle", "turtle": "turtle", "nt": "ntriples", "ntriples": "ntriples",
           "jsonld": "jsonld", "json-ld": "jsonld", "json": "jsonld"}  # fmt: skip
_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)$")
_TYPE = f"<{RDF}type>"


def rdf_format(name: str | None, path: str | Path | None = None):
    """The pyoxigraph format for a name (``ttl``, ``nt``, ``jsonld``) or a file extension."""
    import pyoxigraph as ox

    key = (name or (Path(path).suffix.lstrip(".") if path else "")).lower()
    kind = FORMATS.get(key)
    if kind is None:
        raise ValueError(
            f"unknown RDF format {key or '(none)'!r}; use ttl (Turtle), nt (N-Triples) or "
            "jsonld (JSON-LD), or a file name ending in one of them"
        )
    return {"turtle": ox.RdfFormat.TURTLE, "ntriples": ox.RdfFormat.N_TRIPLES,
            "jsonld": ox.RdfFormat.JSON_LD}[kind]  # fmt: skip


@dataclass
class ExportConfig:
    """How values become URIs.

    ``base_uri``: where records, minted concepts, predictions and activities live (set it to
    a namespace you control before publishing). ``property_uris``: column → URI of your choice.
    ``vocabulary``: label → concept lookup; unmatched labels are minted, or refused with
    ``strict_vocabulary``. ``max_alternatives``: runner-up values kept per prediction
    (None: all the table has).
    """

    base_uri: str = DEFAULT_BASE
    property_uris: dict[str, str] = field(default_factory=dict)
    vocabulary: Vocabulary | None = None
    strict_vocabulary: bool = False
    max_alternatives: int | None = None

    def uris(self) -> UriScheme:
        return UriScheme(self.base_uri, self.property_uris)


@dataclass
class Catalogue:
    """Catalogued values: a records table and what each column becomes.

    ``concepts``: columns whose values are SKOS concepts (museum, place, technique, …).
    ``literals``: columns kept as literals, mapped to a language tag for texts (``text_en`` →
    ``en``) or None (numbers become xsd:integer/xsd:decimal, anything else a string).
    Empty cells are unknown and produce no triple.
    """

    frame: pd.DataFrame
    id_column: str
    concepts: tuple[str, ...] = ()
    literals: dict[str, str | None] = field(default_factory=dict)
    source: str = "<records>"

    def __post_init__(self) -> None:
        self.concepts = tuple(self.concepts)
        self.literals = dict(self.literals)
        columns = [str(c) for c in self.frame.columns]
        wanted = [self.id_column, *self.concepts, *self.literals]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise ValueError(
                f"{self.source}: column(s) {missing} not found; columns: {', '.join(columns)}"
            )
        both = sorted(set(self.concepts) & set(self.literals))
        if both or self.id_column in (*self.concepts, *self.literals):
            raise ValueError(
                f"{self.source}: column(s) {both or [self.id_column]} given two roles (id, "
                "concept, literal); give each one role"
            )
        if not self.concepts and not self.literals:
            raise ValueError(
                f"{self.source}: no catalogue columns; name the columns whose values become "
                "concepts (--concepts museum,place) and/or literals (--literals text_en)"
            )
        frame = self.frame[wanted].fillna("").astype(str)
        self.frame = frame.apply(lambda col: col.str.strip())
        ids = self.frame[self.id_column]
        problems = [f"row {i + 1}: empty id" for i in np.flatnonzero((ids == "").to_numpy())]
        problems += [
            f"row {i + 1}: id {ids.iloc[i]!r} appears again; ids must be unique"
            for i in np.flatnonzero(ids.duplicated().to_numpy() & (ids != "").to_numpy())
        ]
        if problems:
            raise ValueError(f"{self.source}: " + "; ".join(problems[:10]))

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        id_column: str | None = None,
        concepts: Sequence[str] = (),
        literals: Mapping[str, str | None] | Sequence[str] = (),
    ) -> Catalogue:
        """Read a records CSV. ``literals`` may be a list of columns: ``text_<lang>`` columns
        get their language from the suffix."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"records file {path} not found")
        df = read_csv_strings(path, ValueError, str(path))
        if not isinstance(literals, Mapping):
            literals = {c: _language_of(c) for c in literals}
        return cls(df, id_column or str(df.columns[0]), tuple(concepts), dict(literals), str(path))

    @classmethod
    def for_export(
        cls,
        path: str | Path,
        *,
        id_column: str | None = None,
        concepts: Sequence[str] = (),
        literals: Sequence[str] = (),
        predictions: pd.DataFrame | None = None,
        model: str | Path | None = None,
    ) -> Catalogue:
        """The records CSV at ``path`` as the catalogue an export publishes beside
        ``predictions`` (a table of :func:`~heritage.kg.read_predictions`, made by ``model``).

        Columns named in ``concepts`` and ``literals`` take those roles. Without them, a
        metadata model (a folder) gives every column the role its record spec says, as the
        model read them; an image classifier's predicted properties that the records have
        become concepts. Without predictions, the columns must be named."""
        if concepts or literals or predictions is None:
            return cls.from_csv(path, id_column, concepts, literals)
        if model is not None and Path(model).is_dir():
            return cls.from_model(path, model, id_column)
        header = set(_read_records(path, nrows=0).columns)
        predicted = [p for p in dict.fromkeys(predictions["property"]) if p in header]
        return cls.from_csv(path, id_column, predicted)

    @classmethod
    def from_model(
        cls, path: str | Path, model: str | Path, id_column: str | None = None
    ) -> Catalogue:
        """The records CSV at ``path`` with the roles of a metadata model's record spec (its
        card.json); ``id_column`` overrides the spec's."""
        card = Path(model) / CARD_FILE
        try:
            spec = json.loads(card.read_text()).get("spec")
        except (OSError, ValueError, AttributeError):
            spec = None
        if not isinstance(spec, dict):
            raise ValueError(
                f"{card} has no record spec; name the catalogue columns with --concepts and "
                "--literals"
            )
        spec = {**spec, "id_column": id_column or spec["id_column"]}
        return cls.from_spec(_read_records(path), spec, str(path))

    @classmethod
    def from_spec(cls, df: pd.DataFrame, spec: Any, source: str = "<records>") -> Catalogue:
        """Roles from a metadata model's :class:`~heritage.metadata.RecordSpec` (or its
        ``to_dict()``, as in the model's card.json): properties and categorical tabular
        fields become concepts; texts (with their language) and numeric fields, literals."""
        if not isinstance(spec, Mapping):
            spec = spec.to_dict()
        present = {str(c) for c in df.columns}
        concepts = [c for c in spec["properties"] if c in present]
        literals: dict[str, str | None] = {
            c: lang or _language_of(c)
            for c, lang in dict(spec.get("text_columns") or {}).items()
            if c in present
        }
        for col in spec.get("tabular_columns") or ():
            if col not in present:
                continue
            values = df[col].fillna("").astype(str).str.strip()
            values = values[values != ""]
            if len(values) and values.str.match(_DECIMAL).all():
                literals[col] = None
            else:
                concepts.append(col)
        return cls(df, spec["id_column"], tuple(concepts), literals, source)


def _read_records(path: str | Path, nrows: int | None = None) -> pd.DataFrame:
    """A records CSV as strings; a missing or unreadable file is an error naming it."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(f"Records file {path} not found; check the path.")
    hint = "save it as UTF-8 CSV with a header row."
    return read_csv_strings(path, ValueError, f"Records file {path}", hint, nrows=nrows)


@dataclass
class Export:
    """An exported graph: its N-Triples lines (each ending in a newline) and counts."""

    lines: list[str]
    predictions: int = 0
    alternatives: int = 0
    catalogued: int = 0
    records: int = 0
    concepts: int = 0
    minted: dict[str, int] = field(default_factory=dict)
    activity: str | None = None

    def __len__(self) -> int:
        return len(self.lines)

    def ntriples(self) -> bytes:
        return "".join(self.lines).encode()

    def triples(self) -> list:
        """The graph as pyoxigraph triples."""
        import pyoxigraph as ox

        return list(ox.parse(self.ntriples(), format=ox.RdfFormat.N_TRIPLES))

    def write(self, path: str | Path, fmt: str | None = None) -> Path:
        """Write as Turtle, N-Triples or JSON-LD (``fmt``, else from the extension).
        N-Triples is written as built; the others are serialised by pyoxigraph, in the same
        order, so they are deterministic too."""
        import pyoxigraph as ox

        path = Path(path)
        target = rdf_format(fmt, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if target == ox.RdfFormat.N_TRIPLES:
            with open(path, "w", encoding="utf-8") as fh:
                fh.writelines(self.lines)
            return path
        triples = ox.parse(self.ntriples(), format=ox.RdfFormat.N_TRIPLES)
        ox.serialize(triples, output=str(path), format=target, prefixes=PREFIXES)
        return path

    def summary(self) -> str:
        minted = sum(self.minted.values())
        return (
            f"{len(self):,} triples: {self.predictions:,} predictions "
            f"({self.alternatives:,} alternatives), {self.catalogued:,} catalogued values, "
            f"{self.records:,} records, {self.concepts:,} concepts ({minted:,} minted)"
        )


class GraphBuilder:
    """Accumulates catalogue and prediction statements, then :meth:`build` s the export.

    Declarations (properties, concepts, schemes) are collected while statements are added
    and written once, sorted, ahead of them; statements keep the input's order. Both make
    the output a function of the input alone.
    """

    def __init__(self, config: ExportConfig | None = None) -> None:
        self.config = config or ExportConfig()
        self.uris = self.config.uris()
        self._head: list[str] = []
        self._body: list[str] = []
        self._records: dict[str, str] = {}
        self._properties: dict[str, str] = {}
        self._concept_of: dict[tuple[str, str], str] = {}
        # uri -> (concept, property, minted here?)
        self._concepts: dict[str, tuple[Concept, str, bool]] = {}
        self._catalogued: set[str] = set()
        self.minted: Counter[str] = Counter()
        self.n_predictions = self.n_alternatives = 0
        self._activities: list[str] = []

    # ------------------------------------------------------------------ terms

    def _record(self, record_id: str) -> str:
        uri = self._records.get(record_id)
        if uri is None:
            uri = iri(self.uris.record(record_id))
            self._records[record_id] = uri
            self._body += [
                f"{uri} {_TYPE} <{HER}Record> .\n",
                f"{uri} <{DCTERMS}identifier> {literal(record_id)} .\n",
            ]
        return uri

    def _property(self, name: str) -> str:
        uri = self._properties.get(name)
        if uri is None:
            uri = iri(self.uris.property(name))
            self._properties[name] = uri
        return uri

    def _concept(self, prop: str, label: str) -> str:
        key = (prop, label)
        uri = self._concept_of.get(key)
        if uri is not None:
            return uri
        vocab = self.config.vocabulary
        concept = vocab.lookup(prop, label) if vocab is not None else None
        if concept is None:
            if self.config.strict_vocabulary:
                raise ValueError(
                    f"{prop} value {label!r} is not in the vocabulary "
                    f"({', '.join(vocab.sources) if vocab else 'none given'}); add it, or drop "
                    "--strict-vocabulary to mint a concept for it"
                )
            scheme = self.uris.scheme(prop)
            concept = Concept(self.uris.concept(prop, label), ((label, None),), scheme)
            self.minted[prop] += 1
            self._concepts.setdefault(concept.uri, (concept, prop, True))
        else:
            if not concept.labels:  # a vocabulary concept without a preferred label
                concept = Concept(concept.uri, ((label, None),), concept.scheme)
            self._concepts.setdefault(concept.uri, (concept, prop, False))
        uri = iri(concept.uri)
        self._concept_of[key] = uri
        return uri

    def _catalogue(self, line: str) -> None:
        if line not in self._catalogued:
            self._catalogued.add(line)
            self._body.append(line)

    # ------------------------------------------------------------------ statements

    def add_catalogue(self, catalogue: Catalogue) -> int:
        """Every non-empty cell as a catalogued statement; returns how many."""
        frame = catalogue.frame
        before = len(self._catalogued)
        datatypes = {}
        for col, lang in catalogue.literals.items():
            values = frame[col][frame[col] != ""]
            if lang is None and len(values) and values.str.match(_INTEGER).all():
                datatypes[col] = f"{XSD}integer"
            elif lang is None and len(values) and values.str.match(_DECIMAL).all():
                datatypes[col] = f"{XSD}decimal"
        columns = [(c, self._property(c), None) for c in catalogue.concepts]
        columns += [(c, self._property(c), lang) for c, lang in catalogue.literals.items()]
        cells = {c: frame[c].to_numpy(dtype=object) for c, _, _ in columns}
        for i, record_id in enumerate(frame[catalogue.id_column].to_numpy(dtype=object)):
            subject = self._record(record_id)
            for col, pred, lang in columns:
                value = cells[col][i]
                if not value:
                    continue
                if col in catalogue.concepts:
                    obj = self._concept(col, value)
                elif col in datatypes:
                    obj = typed(value, datatypes[col])
                else:
                    obj = literal(value, lang)
                self._catalogue(f"{subject} {pred} {obj} .\n")
        return len(self._catalogued) - before

    def add_predictions(
        self,
        predictions: pd.DataFrame,
        activity: Activity,
        *,
        kind: PredictionKind = "auto",
        prop: str = "label",
    ) -> int:
        """Every predicted value as a ``her:Prediction`` of ``activity`` (and the table's
        catalogued values, from its ``catalogued`` column, as catalogued statements). Rows
        with no value (``no prediction``) add no prediction. Returns the predictions added."""
        if list(predictions.columns) != _NORMALISED or not _is_normalised(predictions):
            predictions = normalise_predictions(predictions, kind, prop)
        key = activity.key(_digest(predictions))
        act = iri(self.uris.activity(key))
        if act not in self._activities:
            self._activities.append(act)
            self._head += provenance_lines(activity, key, self.uris)
        limit = self.config.max_alternatives
        body = self._body
        conf_type = f"{XSD}double"
        added = 0
        with progress_bar() as bar:
            task = bar.add_task("exporting predictions", total=len(predictions))
            rows = zip(
                predictions["record"].to_numpy(dtype=object),
                predictions["property"].to_numpy(dtype=object),
                predictions["value"].to_numpy(dtype=object),
                predictions["confidence"].to_numpy(dtype=float),
                predictions["alternatives"].to_numpy(dtype=object),
                predictions["modalities"].to_numpy(dtype=object),
                predictions["catalogued"].to_numpy(dtype=object),
                strict=True,
            )
            for n, (record_id, name, value, conf, alts, mods, catalogued) in enumerate(rows):
                if n % 20_000 == 0 and n:
                    bar.update(task, completed=n)
                subject = self._record(record_id)
                pred = self._property(name)
                if catalogued:
                    self._catalogue(f"{subject} {pred} {self._concept(name, catalogued)} .\n")
                if not value:
                    continue
                uri = self.uris.prediction(key, record_id, name)
                s = f"<{uri}>"
                body += [
                    f"{s} {_TYPE} <{HER}Prediction> .\n",
                    f"{s} {_TYPE} <{RDF}Statement> .\n",
                    f"{s} <{RDF}subject> {subject} .\n",
                    f"{s} <{RDF}predicate> {pred} .\n",
                    f"{s} <{RDF}object> {self._concept(name, value)} .\n",
                    f'{s} <{HER}confidence> "{float(conf)!r}"^^<{conf_type}> .\n',
                    f"{s} <{PROV}wasGeneratedBy> {act} .\n",
                ]
                if mods:
                    body.append(f"{s} <{HER}modalities> {literal(mods)} .\n")
                ranked = list(enumerate(alts[:limit], start=2))
                body += [f"{s} <{HER}alternative> <{uri}/alt/{rank}> .\n" for rank, _ in ranked]
                for rank, (alt_value, p) in ranked:  # after the prediction: Turtle groups
                    a = f"<{uri}/alt/{rank}>"
                    body += [
                        f"{a} {_TYPE} <{HER}Alternative> .\n",
                        f"{a} <{HER}value> {self._concept(name, alt_value)} .\n",
                        f'{a} <{HER}confidence> "{float(p)!r}"^^<{conf_type}> .\n',
                        f'{a} <{HER}rank> "{rank}"^^<{XSD}integer> .\n',
                    ]
                self.n_alternatives += len(ranked)
                added += 1
            bar.update(task, completed=len(predictions))
        self.n_predictions += added
        return added

    # ------------------------------------------------------------------ result

    def _declarations(self) -> list[str]:
        out = []
        for name, uri in sorted(self._properties.items(), key=lambda kv: kv[1]):
            out += [
                f"{uri} {_TYPE} <{RDF}Property> .\n",
                f"{uri} <{RDFS}label> {literal(name)} .\n",
            ]
        schemes = set()
        for uri, (concept, prop, minted) in sorted(self._concepts.items()):
            c = iri(uri)
            out.append(f"{c} {_TYPE} <{SKOS}Concept> .\n")
            out += [f"{c} <{SKOS}prefLabel> {literal(t, lang)} .\n" for t, lang in concept.labels]
            if concept.scheme is not None:
                out.append(f"{c} <{SKOS}inScheme> <{concept.scheme}> .\n")
            if minted:  # heritage's own scheme for the property: describe it
                schemes.add((concept.scheme, prop))
        for scheme, prop in sorted(schemes):
            out += [
                f"<{scheme}> {_TYPE} <{SKOS}ConceptScheme> .\n",
                f"<{scheme}> <{SKOS}prefLabel> {literal(prop)} .\n",
            ]
        return out

    def build(self) -> Export:
        lines = self._head + self._declarations() + self._body
        return Export(
            lines,
            predictions=self.n_predictions,
            alternatives=self.n_alternatives,
            catalogued=len(self._catalogued),
            records=len(self._records),
            concepts=len(self._concepts),
            minted=dict(self.minted),
            activity=self._activities[0][1:-1] if self._activities else None,
        )


def export_graph(
    predictions: pd.DataFrame | None = None,
    *,
    activity: Activity | None = None,
    catalogue: Catalogue | None = None,
    config: ExportConfig | None = None,
    kind: PredictionKind = "auto",
    prop: str = "label",
) -> Export:
    """Predictions (either heritage layout) and/or catalogued values as one graph.

    ``activity`` (required with predictions) is the prediction run they came from: see
    :class:`~heritage.kg.provenance.Activity`. ``kind``/``prop``: the table's layout and, for
    an image classifier's table, the property its labels are values of.
    """
    if predictions is None and catalogue is None:
        raise ValueError("nothing to export: give predictions and/or a catalogue")
    builder = GraphBuilder(config)
    if catalogue is not None:
        builder.add_catalogue(catalogue)
    if predictions is not None:
        if activity is None:
            raise ValueError(
                "predictions need their provenance: pass an Activity (the model that made them "
                "and when)"
            )
        builder.add_predictions(predictions, activity, kind=kind, prop=prop)
    return builder.build()


_NORMALISED = list(PREDICTION_COLUMNS)


def _is_normalised(df: pd.DataFrame) -> bool:
    """Already through :func:`normalise_predictions` (alternatives parsed, floats)?"""
    if len(df) == 0:
        return False
    return df["confidence"].dtype.kind == "f" and isinstance(df["alternatives"].iloc[0], list)


def _digest(predictions: pd.DataFrame) -> str:
    """SHA-256 of the rows' content, independent of pandas' internals."""
    digest = hashlib.sha256()
    for row in zip(*(predictions[c].to_numpy(dtype=object) for c in _NORMALISED), strict=True):
        record_id, prop, value, conf, alts, mods, status, catalogued = row
        conf_text = "" if conf != conf else repr(float(conf))  # NaN: no prediction
        alts_text = json.dumps(alts, ensure_ascii=False)
        digest.update(
            "\x1f".join(
                [record_id, prop, value, conf_text, alts_text, mods, status, catalogued]
            ).encode()
        )
        digest.update(b"\x1e")
    return digest.hexdigest()


def _language_of(column: str) -> str | None:
    """``text_en`` -> ``en``; other columns carry no language."""
    return (
        column.removeprefix("text_") if column.startswith("text_") and column != "text_" else None
    )
