"""Curators' decisions on predictions, kept as PROV-O provenance in their own named graph.

A machine suggestion (a ``her:Prediction``) is never changed or deleted, and the catalogue is
never modified: a curator's decision is a new ``prov:Activity`` (a ``her:Review``) in the
review graph (``{base}graph/reviews``) that names the prediction it judged, the curator as a
``prov:Person``, the time, the decision and, for a correction, the value the curator gave::

    <review/8c1d…> a prov:Activity, her:Review ;
        prov:used <prediction/4f0c…> ;                  # the suggestion judged
        prov:wasAssociatedWith <agent/curator/ana-garcia> ;
        prov:startedAtTime "2026-12-02T10:31:07Z"^^xsd:dateTime ;
        prov:endedAtTime "2026-12-02T10:31:07Z"^^xsd:dateTime ;
        her:decision "corrected" ;                      # accepted | rejected | corrected
        her:record <object/T.123> ; her:property <property/technique> ;
        her:predictedValue <concept/technique/damask> ;
        her:value <concept/technique/velvet> ; her:valueLabel "velvet" .
    <agent/curator/ana-garcia> a prov:Person, prov:Agent ; rdfs:label "Ana García" .

Several decisions on one prediction are all kept; the latest counts. Triples are written as
N-Triples lines whose every literal passes :func:`~heritage.kg.terms.literal` (escaped), so
no user-supplied text is ever spliced into SPARQL. :func:`reviewed_labels` turns the graph
back into a labels table that ``heritage metadata fit`` and ``heritage train`` read as extra
labels (``--extra-labels``), the reviewer's provenance in its columns.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, get_args

import pandas as pd

from heritage.kg.terms import HER, PROV, RDF, RDFS, XSD, check_iri, iri, literal, typed
from heritage.kg.vocabulary import UriScheme, _segment

__all__ = [
    "DECISIONS",
    "LABEL_COLUMNS",
    "Decision",
    "Review",
    "read_reviews",
    "review_graph",
    "review_lines",
    "reviewed_labels",
    "reviews_query",
]

Decision = Literal["accepted", "rejected", "corrected"]
DECISIONS: tuple[str, ...] = get_args(Decision)
#: columns of the labels table written by `heritage kg reviews`
LABEL_COLUMNS = (
    "record",
    "property",
    "value",
    "decision",
    "predicted",
    "confidence",
    "reviewer",
    "reviewed_at",
    "review",
    "prediction",
)


def review_graph(base: str) -> str:
    """The named graph that holds the reviews of a graph published under ``base``."""
    return UriScheme(base).base + "graph/reviews"


@dataclass(frozen=True)
class Review:
    """One decision on one prediction. URIs are the graph's own (the prediction, its record,
    property and predicted concept); ``value``/``value_label``: the corrected concept and its
    label (a correction only); ``curator``: a person's name as given at start."""

    prediction: str
    record: str
    property: str
    predicted: str
    decision: Decision
    curator: str
    time: datetime
    value: str | None = None
    value_label: str | None = None

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(
                f"decision must be one of {', '.join(DECISIONS)}, not {self.decision!r}"
            )
        for name in ("prediction", "record", "property", "predicted"):
            check_iri(getattr(self, name), name)
        if self.decision == "corrected":
            if not (self.value_label or "").strip():
                raise ValueError("a correction needs the corrected value")
            if self.value is not None:
                check_iri(self.value, "corrected value")
        elif self.value is not None or self.value_label is not None:
            raise ValueError(f"only a correction carries a value, not {self.decision!r}")
        if not self.curator.strip():
            raise ValueError("a review needs the curator's name")
        when = self.time if self.time.tzinfo else self.time.replace(tzinfo=timezone.utc)
        object.__setattr__(self, "time", when.astimezone(timezone.utc))

    def key(self) -> str:
        text = "\x1f".join(
            [self.prediction, self.decision, self.value_label or "", self.curator, self.stamp()]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def stamp(self) -> str:
        return self.time.isoformat(timespec="microseconds").replace("+00:00", "Z")


def curator_uri(base: str, name: str) -> str:
    return f"{UriScheme(base).base}agent/curator/{_segment(name.strip().lower())}"


def review_lines(review: Review, base: str) -> list[str]:
    """N-Triples lines for one review (its activity and its curator)."""
    root = UriScheme(base).base
    act = iri(f"{root}review/{review.key()}")
    person = iri(curator_uri(base, review.curator))
    when = typed(review.stamp(), f"{XSD}dateTime")
    lines = [
        f"{act} <{RDF}type> <{PROV}Activity> .\n",
        f"{act} <{RDF}type> <{HER}Review> .\n",
        f"{act} <{PROV}used> {iri(review.prediction)} .\n",
        f"{act} <{PROV}wasAssociatedWith> {person} .\n",
        f"{act} <{PROV}startedAtTime> {when} .\n",
        f"{act} <{PROV}endedAtTime> {when} .\n",
        f"{act} <{HER}decision> {literal(review.decision)} .\n",
        f"{act} <{HER}record> {iri(review.record)} .\n",
        f"{act} <{HER}property> {iri(review.property)} .\n",
        f"{act} <{HER}predictedValue> {iri(review.predicted)} .\n",
        f"{person} <{RDF}type> <{PROV}Person> .\n",
        f"{person} <{RDF}type> <{PROV}Agent> .\n",
        f"{person} <{RDFS}label> {literal(review.curator.strip())} .\n",
    ]
    if review.decision == "corrected":
        label = (review.value_label or "").strip()
        lines.append(f"{act} <{HER}valueLabel> {literal(label)} .\n")
        if review.value is not None:
            lines.append(f"{act} <{HER}value> {iri(review.value)} .\n")
    return lines


def reviews_query(graph: str | None = None) -> str:
    """Every review in the named graph ``graph`` (None: in any named graph), with the labels
    of what it names."""
    from heritage.kg.queries import PREFIX_BLOCK

    g = iri(check_iri(graph, "review graph")) if graph else "?graph"
    return f"""{PREFIX_BLOCK}
SELECT ?review ?prediction ?decision ?time ?curator ?recordUri ?record ?property
       ?predictedUri ?predictedLabel ?valueUri ?valueLabel ?valueConceptLabel ?confidence WHERE {{
  GRAPH {g} {{
    ?review a her:Review ; prov:used ?prediction ; her:decision ?decision ;
            prov:endedAtTime ?time ; prov:wasAssociatedWith ?agent ;
            her:record ?recordUri ; her:property ?propertyUri ;
            her:predictedValue ?predictedUri .
    ?agent rdfs:label ?curator .
    OPTIONAL {{ ?review her:value ?valueUri }}
    OPTIONAL {{ ?review her:valueLabel ?valueLabel }}
  }}
  OPTIONAL {{ ?recordUri dcterms:identifier ?record }}
  OPTIONAL {{ ?propertyUri rdfs:label ?property }}
  {_label("predictedUri", "predictedLabel")}
  {_label("valueUri", "valueConceptLabel")}
  OPTIONAL {{ ?prediction her:confidence ?confidence }}
}}
"""


def _label(concept: str, out: str) -> str:
    """SPARQL binding ``?out`` to the label a training table used for ``?concept``: the
    untagged ``skos:prefLabel`` exports write for the catalogue's own values, else the English
    one, else any. A curator's label in the interface language would create a new class."""
    c, o = f"?{concept}", f"?{out}"
    return (
        f'OPTIONAL {{ {c} skos:prefLabel {o}0 FILTER(lang({o}0) = "") }}\n'
        f'  OPTIONAL {{ {c} skos:prefLabel {o}1 FILTER(langMatches(lang({o}1), "en")) }}\n'
        f"  OPTIONAL {{ {c} skos:prefLabel {o}2 }}\n"
        f"  BIND(COALESCE({o}0, {o}1, {o}2) AS {o})"
    )


def read_reviews(graph: Any, *, include_rejected: bool = False) -> pd.DataFrame:
    """The labels table (:func:`reviewed_labels`) of every review in ``graph`` (the
    embedded store or a SPARQL server)."""
    return reviewed_labels(
        graph.select(reviews_query(), typed=False), include_rejected=include_rejected
    )


def reviewed_labels(reviews: pd.DataFrame, *, include_rejected: bool = False) -> pd.DataFrame:
    """The latest decision per prediction (the rows of :func:`reviews_query`) as a labels
    table (:data:`LABEL_COLUMNS`): accepted predictions keep their value, corrections carry
    the curator's; rejections only say what a value is not, so they are left out unless
    ``include_rejected`` (then ``value`` is empty)."""
    if reviews.empty:
        return pd.DataFrame(columns=list(LABEL_COLUMNS))
    df = reviews.drop_duplicates("review").copy()  # a label per language repeats a review
    df["time"] = df["time"].astype(str)
    # one label per prediction: the latest decision (ties: the review URI, for determinism)
    df = df.sort_values(["time", "review"]).drop_duplicates("prediction", keep="last")
    rows = []
    for r in df.itertuples(index=False):
        predicted = _text(r.predictedLabel) or _text(r.predictedUri)
        if r.decision == "accepted":
            value = predicted
        elif r.decision == "corrected":
            value = _text(r.valueConceptLabel) or _text(r.valueLabel)
        elif include_rejected:
            value = ""
        else:
            continue
        rows.append(
            {
                "record": _text(r.record) or _text(r.recordUri),
                "property": _text(r.property),
                "value": value,
                "decision": r.decision,
                "predicted": predicted,
                "confidence": r.confidence,
                "reviewer": _text(r.curator),
                "reviewed_at": _text(r.time),
                "review": _text(r.review),
                "prediction": _text(r.prediction),
            }
        )
    out = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    return out.sort_values(["record", "property"], kind="stable").reset_index(drop=True)


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)
