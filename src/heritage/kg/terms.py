"""RDF terms as N-Triples text, and the namespaces the graph uses.

Exports are written as N-Triples lines built from strings rather than as term objects: for
100,000 predictions (over two million triples) that is several times faster than building
an rdflib graph, and N-Triples is what the stores bulk-load fastest. Every IRI heritage
writes passes :func:`check_iri` once where it is made, so a bad base URI or vocabulary
entry fails with a message instead of producing a file no store will read.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "DCTERMS",
    "HER",
    "PREFIXES",
    "PROV",
    "RDF",
    "RDFS",
    "SCHEMA",
    "SKOS",
    "XSD",
    "check_iri",
    "iri",
    "literal",
    "typed",
]

RDF: Final = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RDFS: Final = "http://www.w3.org/2000/01/rdf-schema#"
XSD: Final = "http://www.w3.org/2001/XMLSchema#"
SKOS: Final = "http://www.w3.org/2004/02/skos/core#"
PROV: Final = "http://www.w3.org/ns/prov#"
DCTERMS: Final = "http://purl.org/dc/terms/"
SCHEMA: Final = "https://schema.org/"
#: heritage's own terms (Prediction, Alternative, confidence, ...), documented in heritage.kg
HER: Final = "https://w3id.org/heritage/ns#"

PREFIXES: Final = {
    "rdf": RDF,
    "rdfs": RDFS,
    "xsd": XSD,
    "skos": SKOS,
    "prov": PROV,
    "dcterms": DCTERMS,
    "schema": SCHEMA,
    "her": HER,
}

# characters RDF forbids in an IRI (besides control characters and space)
_BAD_IRI = re.compile(r'[\x00-\x20<>"{}|^`\\]')
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})
_LANG = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")


def check_iri(value: str, what: str = "IRI") -> str:
    """``value`` if it is an absolute IRI RDF accepts, else a ValueError naming ``what``."""
    if not _SCHEME.match(value):
        raise ValueError(f"{what} {value!r} is not an absolute IRI (it needs a scheme: https://…)")
    bad = _BAD_IRI.search(value)
    if bad:
        raise ValueError(
            f"{what} {value!r} contains {bad.group()!r}, which an IRI may not contain "
            "(percent-encode it)"
        )
    return value


def iri(value: str) -> str:
    """An IRI term (already checked)."""
    return f"<{value}>"


def literal(value: str, lang: str | None = None) -> str:
    """A plain (xsd:string) or language-tagged literal."""
    text = f'"{value.translate(_ESCAPES)}"'
    if lang:
        if not _LANG.match(lang):
            raise ValueError(f"{lang!r} is not a language tag (e.g. en, es, pt-BR)")
        return f"{text}@{lang}"
    return text


def typed(lexical: str, datatype: str) -> str:
    """A literal of datatype ``datatype`` (a full IRI) from its lexical form."""
    return f'"{lexical.translate(_ESCAPES)}"^^<{datatype}>'
