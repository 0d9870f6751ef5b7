"""Where a value's URI comes from: the user's vocabulary, else a URI minted under a base.

Values in the graph are SKOS concepts. A museum usually has a thesaurus already (Getty AAT,
its own SKOS file, or a spreadsheet of label → URI), and predictions should point at *those*
concepts, so that a predicted "damask" is the same node as a catalogued one. Labels without
an entry get a concept minted under the base URI the user chose.

Every URI is a pure function of its inputs (base, property, value, record id, hashes): never
a counter or a clock. Exporting the same predictions twice therefore gives the same graph,
and loading it twice into a store adds nothing the second time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from heritage.kg.terms import RDF, SKOS, check_iri

__all__ = ["DEFAULT_BASE", "Concept", "UriScheme", "Vocabulary"]

#: used when the user sets no base; fine for trying things out, not for publishing
DEFAULT_BASE = "https://example.org/heritage/"

# how strongly a label names a concept: a preferred label beats an alternative one
_PRIORITY = {f"{SKOS}prefLabel": 0, f"{SKOS}altLabel": 1, f"{SKOS}hiddenLabel": 2}
_NOTATION = f"{SKOS}notation"


def _segment(value: str) -> str:
    """A URI path segment for any string: percent-encoding is injective (unlike slugs, which
    merge "Silk" and "silk") and keeps ASCII names readable."""
    return quote(value, safe="-._~")


@dataclass(frozen=True)
class Concept:
    """A SKOS concept: its URI, its preferred labels as ``(text, language or None)`` and the
    concept scheme it belongs to, if known."""

    uri: str
    labels: tuple[tuple[str, str | None], ...] = ()
    scheme: str | None = None


@dataclass(frozen=True)
class UriScheme:
    """Deterministic URIs under ``base`` for everything heritage writes.

    ``property_uris`` maps a column name to a URI of the user's choice (e.g. ``technique`` →
    ``http://erlangen-crm.org/current/P32_used_general_technique``); other columns become
    ``{base}property/{name}``.
    """

    base: str = DEFAULT_BASE
    property_uris: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        base = self.base if self.base.endswith(("/", "#")) else self.base + "/"
        object.__setattr__(self, "base", check_iri(base, "base URI"))
        for name, uri in self.property_uris.items():
            check_iri(uri, f"URI of property {name!r}")
        object.__setattr__(self, "property_uris", dict(self.property_uris))

    def record(self, record_id: str) -> str:
        return f"{self.base}object/{_segment(record_id)}"

    def property(self, name: str) -> str:
        return self.property_uris.get(name) or f"{self.base}property/{_segment(name)}"

    def scheme(self, prop: str) -> str:
        return f"{self.base}scheme/{_segment(prop)}"

    def concept(self, prop: str, value: str) -> str:
        """Minted concepts live in one scheme per property: "red" as a colour and "red" as a
        dye are different concepts."""
        return f"{self.base}concept/{_segment(prop)}/{_segment(value)}"

    def activity(self, key: str) -> str:
        return f"{self.base}activity/{key}"

    def prediction(self, activity_key: str, record_id: str, prop: str) -> str:
        digest = hashlib.sha256(f"{activity_key}\x1f{record_id}\x1f{prop}".encode()).hexdigest()
        return f"{self.base}prediction/{digest[:24]}"

    def model(self, sha256: str) -> str:
        return f"{self.base}model/{sha256}"

    def agent(self, version: str) -> str:
        return f"{self.base}agent/heritage-{_segment(version)}"


class Vocabulary:
    """Label → concept lookup, global or per property.

    Build with :meth:`load` (a ``.csv``/``.tsv`` table with ``label`` and ``uri`` columns and
    an optional ``property`` column, or a SKOS file in any RDF syntax) and combine with ``|``.
    A lookup tries the property's own entries, then the global ones; exact label first, then
    case-insensitively. A label that names two concepts equally well is an error when it is
    looked up (thesauri have homonyms; only the ones a collection uses matter).
    """

    def __init__(self) -> None:
        # scope (property or None) -> label -> (priority, concepts)
        self._exact: dict[str | None, dict[str, tuple[int, list[Concept]]]] = {}
        self._folded: dict[str | None, dict[str, tuple[int, list[Concept]]]] = {}
        self.sources: list[str] = []

    def __len__(self) -> int:
        return sum(len(labels) for labels in self._exact.values())

    def __or__(self, other: Vocabulary) -> Vocabulary:
        out = Vocabulary()
        for vocab in (self, other):
            for target, source in ((out._exact, vocab._exact), (out._folded, vocab._folded)):
                for scope, labels in source.items():
                    for label, (priority, concepts) in labels.items():
                        for concept in concepts:
                            _put(target.setdefault(scope, {}), label, priority, concept)
            out.sources += vocab.sources
        return out

    def add(self, label: str, concept: Concept, prop: str | None = None, priority: int = 0) -> None:
        label = label.strip()
        if not label:
            return
        _put(self._exact.setdefault(prop, {}), label, priority, concept)
        _put(self._folded.setdefault(prop, {}), label.casefold(), priority, concept)

    def lookup(self, prop: str, label: str) -> Concept | None:
        """The concept ``label`` names for property ``prop``, or None."""
        label = label.strip()
        for index, key in ((self._exact, label), (self._folded, label.casefold())):
            for scope in (prop, None):
                hit = index.get(scope, {}).get(key)
                if hit is None:
                    continue
                concepts = hit[1]
                if len(concepts) > 1:
                    uris = ", ".join(sorted(c.uri for c in concepts))
                    where = f"property {prop!r}" if scope else "every property"
                    raise ValueError(
                        f"label {label!r} names several concepts for {where} ({uris}); scope the "
                        "vocabulary to one property (--vocabulary PROPERTY=FILE) or drop one"
                    )
                return concepts[0]
        return None

    # ------------------------------------------------------------------ readers

    @classmethod
    def load(cls, path: str | Path, prop: str | None = None) -> Vocabulary:
        """A table (``.csv``, ``.tsv``) or a SKOS file (``.ttl``, ``.rdf``, ``.nt``, ``.jsonld``
        …), for one property or (``prop=None``) all of them."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary {path} not found")
        if path.suffix.lower() in (".csv", ".tsv"):
            return cls.from_table(path, prop)
        return cls.from_skos(path, prop)

    @classmethod
    def from_specs(cls, specs: Sequence[str]) -> Vocabulary | None:
        """The union of vocabularies named ``[PROPERTY=]FILE`` (the scope before ``=`` is
        optional; a file whose own name holds ``=`` is taken whole); None when none is named."""
        vocab = None
        for spec in specs:
            scope, file = (
                (None, spec) if "=" not in spec or Path(spec).is_file() else spec.split("=", 1)
            )
            loaded = cls.load(file, scope or None)
            vocab = loaded if vocab is None else vocab | loaded
        return vocab

    @classmethod
    def from_table(cls, path: str | Path, prop: str | None = None) -> Vocabulary:
        """Columns ``label``, ``uri`` and optionally ``property`` (empty = every property).
        Several labels may share a URI (synonyms); the first is its preferred label."""
        path = Path(path)
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        try:
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"vocabulary {path} could not be read as a table ({exc})") from exc
        missing = [c for c in ("label", "uri") if c not in df.columns]
        if missing:
            raise ValueError(
                f"vocabulary {path}: column(s) {missing} not found (it needs label and uri, and "
                f"may have property); columns: {list(df.columns)}"
            )
        props = df["property"] if "property" in df.columns else pd.Series([""] * len(df))
        first_label: dict[str, str] = {}
        rows = list(zip(df["label"], df["uri"], props, strict=True))
        for label, uri, _ in rows:
            first_label.setdefault(uri.strip(), label.strip())
        vocab = cls()
        for i, (label, uri, scope) in enumerate(rows, start=1):
            uri = uri.strip()
            if not label.strip() or not uri:
                raise ValueError(f"vocabulary {path}: row {i} has an empty label or uri")
            check_iri(uri, f"vocabulary {path}, row {i}: uri")
            concept = Concept(uri, ((first_label[uri], None),))
            vocab.add(label, concept, scope.strip() or prop)
        vocab.sources.append(str(path))
        return vocab

    @classmethod
    def from_skos(cls, path: str | Path, prop: str | None = None) -> Vocabulary:
        """Every ``skos:Concept`` by its preferred, alternative and hidden labels (any
        language) and its notation."""
        import pyoxigraph as ox

        path = Path(path)
        fmt = ox.RdfFormat.from_extension(path.suffix.lstrip(".").lower())
        if fmt is None:
            raise ValueError(
                f"vocabulary {path}: unknown extension {path.suffix!r}; use .csv/.tsv for a "
                "label,uri table or .ttl/.nt/.rdf/.jsonld for SKOS"
            )
        try:
            triples = list(ox.parse(path=path, format=fmt))
        except (SyntaxError, ValueError, OSError) as exc:
            raise ValueError(f"vocabulary {path} could not be parsed: {exc}") from exc
        concepts: set[str] = set()
        schemes: dict[str, str] = {}
        labels: dict[str, list[tuple[int, str, str | None]]] = {}
        for t in triples:
            s, p, o = t.subject, t.predicate.value, t.object
            if not isinstance(s, ox.NamedNode):
                continue
            if p == f"{RDF}type" and getattr(o, "value", None) == f"{SKOS}Concept":
                concepts.add(s.value)
            elif p == f"{SKOS}inScheme" and isinstance(o, ox.NamedNode):
                schemes.setdefault(s.value, o.value)
            elif isinstance(o, ox.Literal) and (p in _PRIORITY or p == _NOTATION):
                labels.setdefault(s.value, []).append((_PRIORITY.get(p, 3), o.value, o.language))
        if not concepts:
            raise ValueError(f"vocabulary {path} has no skos:Concept")
        vocab = cls()
        for uri in sorted(concepts):
            mine = sorted(labels.get(uri, []), key=lambda x: (x[0], x[2] or "", x[1]))
            pref = tuple((text, lang) for priority, text, lang in mine if priority == 0)
            concept = Concept(uri, pref, schemes.get(uri))
            for priority, text, _ in mine:
                vocab.add(text, concept, prop, priority)
        vocab.sources.append(str(path))
        return vocab

    @classmethod
    def combine(cls, vocabularies: Iterable[Vocabulary]) -> Vocabulary:
        out = cls()
        for v in vocabularies:
            out = out | v
        return out


def _put(
    index: dict[str, tuple[int, list[Concept]]], label: str, priority: int, concept: Concept
) -> None:
    """Keep the concepts a label names at its best priority (prefLabel over altLabel)."""
    held = index.get(label)
    if held is None or priority < held[0]:
        index[label] = (priority, [concept])
    elif priority == held[0] and all(c.uri != concept.uri for c in held[1]):
        held[1].append(concept)
