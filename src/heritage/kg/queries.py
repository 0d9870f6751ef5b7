"""The questions curators ask of the graph, as SPARQL, for the embedded store and servers alike.

Each question is a query string built here and a method of :class:`GraphQueries`, which
:class:`~heritage.kg.store.KnowledgeGraph` (embedded) and
:class:`~heritage.kg.endpoint.SparqlEndpoint` (a server) both inherit: they only differ in
how a SELECT query is run (:meth:`GraphQueries.select`). The methods name properties and
values by their labels (``technique``, ``damask``), as a user knows them, not by URI.

Query shapes matter to Oxigraph, whose optimiser mostly follows the written order: the
faceted query starts from the value's predictions, looks their confidence, property and
record up, and reads the grouping field in one scan (see :func:`facet_query`;
benchmarks/kg.md has the timings).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pandas as pd

from heritage.kg.predictions import PREDICTION_COLUMNS
from heritage.kg.terms import PREFIXES, XSD, check_iri

__all__ = [
    "GraphQueries",
    "alternatives_query",
    "catalogued_else_predicted_query",
    "facet_query",
    "python_value",
    "record_predictions_query",
    "record_values_query",
    "sparql_string",
]

PREFIX_BLOCK = "".join(f"PREFIX {k}: <{v}>\n" for k, v in PREFIXES.items())
_NUMERIC = {f"{XSD}{t}" for t in ("integer", "int", "long", "short", "nonNegativeInteger")}
_FLOAT = {f"{XSD}{t}" for t in ("double", "float", "decimal")}


def sparql_string(text: str) -> str:
    """A SPARQL string literal for any text (escapes quotes, backslashes, newlines)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped.replace("\r", "\\r") + '"'


def python_value(value: str, kind: str, datatype: str | None, typed: bool = True) -> object:
    """One result term as Python: IRIs and strings as ``str``, numbers as int/float when
    ``typed`` (else their lexical form, as the records table has them)."""
    if kind != "literal" or not typed or datatype is None:
        return value
    try:
        if datatype in _NUMERIC:
            return int(value)
        if datatype in _FLOAT:
            return float(value)
        if datatype == f"{XSD}boolean":
            return value in ("true", "1")
    except ValueError:
        return value
    return value


def facet_query(property_iri: str, value_iris: Sequence[str], threshold: float, by_iri: str) -> str:
    """Records whose property is *predicted* as one of ``value_iris`` with confidence ≥
    ``threshold``, counted per catalogued value of ``by_iri`` (e.g. per museum).

    Takes IRIs: resolving labels inside the same query lets Oxigraph start from the labels
    and join outwards, 4× slower on the silknow graph (:meth:`GraphQueries.facet` resolves
    them first with tiny queries). The property is checked with a FILTER on a variable, not
    a constant in the pattern: with the constant, Oxigraph evaluates that pattern on its own
    over every prediction of the property (on 100,000 predictions, 54 ms of CPU when no
    prediction passes the threshold, against 31 ms), with the variable it looks each
    candidate's property up. The grouping field, in contrast, is read in one scan (a
    sub-select, which Oxigraph evaluates on its own and hash-joins): one sequential pass over
    a field with one value per record beat a lookup per matching record by a third (on
    100,000 predictions, 91 against 138 ms of CPU), though a very selective facet over a very
    large catalogue would favour the lookups. Groups are labelled after counting, once per
    group, not once per record."""
    if len(value_iris) == 1:  # a constant: the predictions come straight from the index
        value, values = f"<{value_iris[0]}>", ""
    else:
        value = "?value"
        values = "VALUES ?value { " + " ".join(f"<{v}>" for v in value_iris) + " }\n      "
    return f"""{PREFIX_BLOCK}
SELECT ?group ?records WHERE {{
  {{
    SELECT ?groupValue (COUNT(DISTINCT ?record) AS ?records) WHERE {{
      {values}?prediction rdf:object {value} .
      ?prediction her:confidence ?confidence . FILTER(?confidence >= {float(threshold)!r})
      ?prediction rdf:predicate ?property . FILTER(?property = <{property_iri}>)
      ?prediction rdf:subject ?record .
      {{ SELECT ?record ?groupValue WHERE {{ ?record <{by_iri}> ?groupValue }} }}
    }}
    GROUP BY ?groupValue
  }}
  OPTIONAL {{ ?groupValue skos:prefLabel ?groupLabel }}
  BIND(COALESCE(STR(?groupLabel), STR(?groupValue)) AS ?group)
}}
ORDER BY DESC(?records) ?group
"""


def catalogued_else_predicted_query(prop: str, threshold: float) -> str:
    """Per record, its catalogued ``prop``; where there is none, predictions with confidence
    ≥ ``threshold``. A catalogued value always wins, however confident a prediction is."""
    return f"""{PREFIX_BLOCK}
SELECT ?record ?value ?source ?confidence WHERE {{
  ?property rdfs:label {sparql_string(prop)} .
  {{
    ?r ?property ?concept .
    BIND("catalogued" AS ?source)
  }} UNION {{
    ?prediction rdf:predicate ?property ;
                rdf:subject ?r ;
                rdf:object ?concept ;
                her:confidence ?confidence .
    FILTER(?confidence >= {float(threshold)!r})
    FILTER NOT EXISTS {{ ?r ?property ?catalogued }}
    BIND("predicted" AS ?source)
  }}
  ?r dcterms:identifier ?record .
  OPTIONAL {{ ?concept skos:prefLabel ?label }}
  BIND(COALESCE(STR(?label), STR(?concept)) AS ?value)
}}
"""


# one label per property (the smallest): a graph that labels a property in several
# languages would otherwise list the property once per label
_COLUMN = """  { SELECT ?property (MIN(STR(?propertyLabel)) AS ?column) WHERE {
    ?property a rdf:Property ; rdfs:label ?propertyLabel .
  } GROUP BY ?property }"""

RECORDS_QUERY = f"""{PREFIX_BLOCK}
SELECT ?record ?column ?value WHERE {{
  ?r a her:Record ; dcterms:identifier ?record ; ?property ?value .
{_COLUMN}
}}
"""

IDS_QUERY = f"""{PREFIX_BLOCK}
SELECT ?record WHERE {{ ?r a her:Record ; dcterms:identifier ?record . }}
"""

LABELS_QUERY = f"""{PREFIX_BLOCK}
SELECT ?concept ?label ?language WHERE {{
  ?concept a skos:Concept ; skos:prefLabel ?label .
  BIND(LANG(?label) AS ?language)
}}
"""

# a prediction, its record node, property label, value, confidence and run
_PREDICTION = (
    """  ?prediction a her:Prediction ;
              rdf:subject ?r ;
              rdf:predicate ?property ;
              rdf:object ?value ;
              her:confidence ?confidence ;
              prov:wasGeneratedBy ?activity .
"""
    + _COLUMN
)

PREDICTIONS_QUERY = f"""{PREFIX_BLOCK}
SELECT ?prediction ?record ?column ?value ?confidence ?modalities ?activity WHERE {{
{_PREDICTION}
  ?r dcterms:identifier ?record .
  OPTIONAL {{ ?prediction her:modalities ?modalities }}
}}
"""

#: the explorer's read of every prediction: no identifier join and no OPTIONAL, which cost
#: it 40 % on the synthetic 100,000-prediction store (it maps record nodes itself)
EXPLORER_PREDICTIONS_QUERY = f"""{PREFIX_BLOCK}
SELECT ?prediction ?r ?column ?value ?confidence ?activity WHERE {{
{_PREDICTION}
}}
"""

ALTERNATIVES_QUERY = f"""{PREFIX_BLOCK}
SELECT ?prediction ?value ?confidence ?rank WHERE {{
  ?prediction a her:Prediction ; her:alternative ?alternative .
  ?alternative her:value ?value ; her:confidence ?confidence ; her:rank ?rank .
}}
"""


# ---------------------------------------------------------------- the explorer's tables
# (heritage.explore reads the whole graph once into a facet table and a text index, then
# asks only the small per-record questions below while serving pages)

EXPLORER_VALUES_QUERY = f"""{PREFIX_BLOCK}
SELECT ?r ?record ?column ?value ?isIri ?language WHERE {{
  ?r a her:Record ; dcterms:identifier ?record ; ?property ?value .
{_COLUMN}
  BIND(isIRI(?value) AS ?isIri)
  BIND(LANG(?value) AS ?language)
}}
"""

EXPLORER_RECORDS_QUERY = f"""{PREFIX_BLOCK}
SELECT ?r ?record ?title ?language WHERE {{
  ?r a her:Record ; dcterms:identifier ?record .
  OPTIONAL {{
    {{ ?r dcterms:title ?title }} UNION {{ ?r rdfs:label ?title }} UNION {{ ?r schema:name ?title }}
  }}
  BIND(LANG(?title) AS ?language)
}}
"""

HIERARCHY_QUERY = f"""{PREFIX_BLOCK}
SELECT DISTINCT ?narrower ?broader WHERE {{
  {{ ?narrower skos:broader ?broader }} UNION {{ ?broader skos:narrower ?narrower }}
}}
"""

ACTIVITIES_QUERY = f"""{PREFIX_BLOCK}
SELECT ?activity ?label ?started ?ended ?model ?modelLabel ?sha256 ?kind ?created
       ?software ?version WHERE {{
  ?activity a prov:Activity ; prov:used ?model .
  ?model a her:Model .
  OPTIONAL {{ ?activity rdfs:label ?label }}
  OPTIONAL {{ ?activity prov:startedAtTime ?started }}
  OPTIONAL {{ ?activity prov:endedAtTime ?ended }}
  OPTIONAL {{ ?model rdfs:label ?modelLabel }}
  OPTIONAL {{ ?model her:sha256 ?sha256 }}
  OPTIONAL {{ ?model her:modelKind ?kind }}
  OPTIONAL {{ ?model dcterms:created ?created }}
  OPTIONAL {{ ?activity prov:wasAssociatedWith ?agent .
             ?agent a prov:SoftwareAgent ; rdfs:label ?software .
             OPTIONAL {{ ?agent schema:softwareVersion ?version }} }}
}}
"""


def record_values_query(record_iri: str) -> str:
    """One record's catalogued values (concepts and literals), by property label."""
    return f"""{PREFIX_BLOCK}
SELECT ?column ?value ?isIri ?language WHERE {{
  <{check_iri(record_iri, "record")}> ?property ?value .
{_COLUMN}
  BIND(isIRI(?value) AS ?isIri)
  BIND(LANG(?value) AS ?language)
}}
"""


def record_predictions_query(record_iri: str) -> str:
    """One record's predictions with their modalities and run (their runner-up values:
    :func:`alternatives_query`)."""
    return f"""{PREFIX_BLOCK}
SELECT ?prediction ?column ?value ?confidence ?modalities ?activity WHERE {{
  ?prediction rdf:subject <{check_iri(record_iri, "record")}> .
{_PREDICTION}
  OPTIONAL {{ ?prediction her:modalities ?modalities }}
}}
ORDER BY ?column ?prediction
"""


def alternatives_query(prediction_iris: Sequence[str]) -> str:
    """The runner-up values of the given predictions. A separate query, not an OPTIONAL of
    :func:`record_predictions_query`: Oxigraph evaluates a multi-pattern OPTIONAL over every
    alternative in the store (10 s a page on 100,000 predictions) instead of per prediction
    (a few milliseconds)."""
    values = " ".join(f"<{check_iri(p, 'prediction')}>" for p in prediction_iris)
    return f"""{PREFIX_BLOCK}
SELECT ?prediction ?alternative ?rank ?altConfidence WHERE {{
  VALUES ?prediction {{ {values} }}
  ?prediction her:alternative ?alt .
  ?alt her:value ?alternative ; her:rank ?rank ; her:confidence ?altConfidence .
}}
ORDER BY ?prediction ?rank
"""


class GraphQueries:
    """Curators' questions over any graph that can answer a SELECT query."""

    def select(self, sparql: str, *, typed: bool = True) -> pd.DataFrame:
        """Run a SELECT query: one column per variable, unbound as None."""
        raise NotImplementedError

    def property_iris(self, name: str) -> list[str]:
        """The IRIs of the property published for column ``name``."""
        df = self.select(
            f"{PREFIX_BLOCK}SELECT DISTINCT ?p WHERE {{ ?p a rdf:Property ; "
            f"rdfs:label {sparql_string(name)} }}"
        )
        return sorted(df["p"])

    def concept_iris(self, label: str) -> list[str]:
        """The concepts whose preferred label is ``label`` (in any language)."""
        df = self.select(
            f"{PREFIX_BLOCK}SELECT DISTINCT ?c WHERE {{ ?c skos:prefLabel ?l . "
            f"FILTER(STR(?l) = {sparql_string(label)}) }}"
        )
        return sorted(df["c"])

    def facet(
        self, prop: str, value: str, threshold: float = 0.8, by: str = "museum"
    ) -> pd.DataFrame:
        """How many records per ``by`` have ``prop`` predicted as ``value`` with confidence
        ≥ ``threshold`` (columns ``group``, ``records``). Names are labels: the column
        names and the value's preferred label."""
        props, groups = self.property_iris(prop), self.property_iris(by)
        values = self.concept_iris(value)
        if not (props and groups and values):
            return pd.DataFrame({"group": pd.Series(dtype=str), "records": pd.Series(dtype=int)})
        parts = [self.select(facet_query(p, values, threshold, g)) for p in props for g in groups]
        if len(parts) == 1:
            return parts[0]
        df = pd.concat(parts).groupby("group", as_index=False)["records"].sum()
        return df.sort_values(["records", "group"], ascending=[False, True], ignore_index=True)

    def catalogued_else_predicted(self, prop: str, threshold: float = 0.8) -> pd.DataFrame:
        """Columns ``record, value, source, confidence``: the catalogued value, else the
        predicted one if its confidence is ≥ ``threshold``. Where several prediction runs
        predicted one record, the most confident is kept."""
        df = self.select(catalogued_else_predicted_query(prop, threshold))
        if df.empty:
            return pd.DataFrame(columns=["record", "value", "source", "confidence"])
        df["_order"] = df["source"].map({"catalogued": 0, "predicted": 1})
        df["_conf"] = pd.to_numeric(df["confidence"], errors="coerce").fillna(np.inf)
        predicted = df["source"] == "predicted"
        best = df[predicted].sort_values("_conf", ascending=False, kind="stable")
        best = best.drop_duplicates("record")
        out = pd.concat([df[~predicted], best]).sort_values(["record", "_order", "value"])
        return out[["record", "value", "source", "confidence"]].reset_index(drop=True)

    def _concept_labels(self, language: str | None) -> dict[str, str]:
        """Concept URI -> its preferred label: in ``language`` if it has one, else the one
        without a language, else the first in order."""
        df = self.select(LABELS_QUERY)
        best: dict[str, tuple[int, str]] = {}
        for concept, label, lang in zip(df["concept"], df["label"], df["language"], strict=True):
            rank = 0 if language and lang == language else 1 if not lang else 2
            key = (rank, label)
            if concept not in best or key < best[concept]:
                best[concept] = key
        return {c: label for c, (_, label) in best.items()}

    def records(
        self,
        columns: Sequence[str] | None = None,
        *,
        id_column: str = "record",
        fill_threshold: float | None = None,
        language: str | None = None,
    ) -> pd.DataFrame:
        """The catalogue as a records table (one row per record, one column per property,
        ``""`` where unknown), the shape :class:`~heritage.metadata.MetadataPredictor`
        reads. Concepts become their preferred labels (in ``language`` where possible).

        ``fill_threshold``: also fill empty cells with predictions of at least that
        confidence ("catalogued, else predicted"). Several values in one cell are joined with
        ``|``. ``columns`` orders (and limits) the columns; default: every property, sorted.
        """
        labels = self._concept_labels(language)
        ids = self.select(IDS_QUERY, typed=False)["record"]
        rows = self.select(RECORDS_QUERY, typed=False)
        cells: dict[tuple[str, str], set[str]] = {}
        for record, column, value in zip(
            rows["record"], rows["column"], rows["value"], strict=True
        ):
            cells.setdefault((record, column), set()).add(labels.get(value, value))
        names = sorted({c for _, c in cells})
        if fill_threshold is not None:
            preds = self.predictions()
            preds = preds[preds["confidence"] >= fill_threshold]
            preds = preds.sort_values("confidence", ascending=False, kind="stable")
            for record, column, value in zip(
                preds["record"], preds["property"], preds["value"], strict=True
            ):
                if (record, column) not in cells:
                    cells[(record, column)] = {value}
            names = sorted(set(names) | set(preds["property"]))
        wanted = list(columns) if columns is not None else [n for n in names if n != id_column]
        records = sorted(set(ids))
        table = {id_column: records}
        for column in wanted:
            table[column] = ["|".join(sorted(cells.get((r, column), ()))) for r in records]
        return pd.DataFrame(table)

    def predictions(self, activity: str | None = None, language: str | None = None) -> pd.DataFrame:
        """The predictions back as a table in the layout of ``heritage metadata predict``
        (record, property, value, confidence, alternatives, modalities, status, catalogued),
        sorted by record and property; ``activity`` keeps one prediction run's."""
        labels = self._concept_labels(language)
        preds = self.select(PREDICTIONS_QUERY)
        if activity is not None:
            preds = preds[preds["activity"] == activity]
        alts = self.select(ALTERNATIVES_QUERY)
        by_prediction: dict[str, list[tuple[int, str, float]]] = {}
        for p, v, c, r in zip(
            alts["prediction"], alts["value"], alts["confidence"], alts["rank"], strict=True
        ):
            by_prediction.setdefault(p, []).append((int(r), labels.get(v, v), float(c)))
        catalogue = self.select(RECORDS_QUERY, typed=False)
        catalogued: dict[tuple[str, str], set[str]] = {}
        for record, column, value in zip(
            catalogue["record"], catalogue["column"], catalogue["value"], strict=True
        ):
            catalogued.setdefault((record, column), set()).add(labels.get(value, value))
        rows = []
        for p, record, column, value, conf, mods in zip(
            preds["prediction"],
            preds["record"],
            preds["column"],
            preds["value"],
            preds["confidence"],
            preds["modalities"],
            strict=True,
        ):
            cat = "|".join(sorted(catalogued.get((record, column), ())))
            alternatives = [[v, c] for _, v, c in sorted(by_prediction.get(p, []))]
            rows.append(
                {
                    "record": record,
                    "property": column,
                    "value": labels.get(value, value),
                    "confidence": float(conf),
                    "alternatives": json.dumps(alternatives, ensure_ascii=False),
                    "modalities": mods if isinstance(mods, str) else "",  # unbound: None/NaN
                    "status": "catalogued" if cat else "predicted",
                    "catalogued": cat,
                }
            )
        out = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))
        return out.sort_values(["record", "property"], kind="stable").reset_index(drop=True)
