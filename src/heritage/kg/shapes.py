"""SHACL shapes of the graph heritage exports, and validation against them.

The shapes are the contract for anyone consuming the graph: every prediction names exactly
one record, property and concept, has one confidence in [0, 1] and comes from one activity
with start and end times, a model with a SHA-256 and a software agent with a version.
Exports are validated against them in the tests; ``heritage kg validate FILE`` checks any
file (pySHACL, in memory: meant for exports of up to a few hundred thousand triples).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heritage.kg.terms import PREFIXES

__all__ = ["SHAPES_TTL", "ValidationResult", "validate"]

_PREFIXES = "".join(f"@prefix {k}: <{v}> .\n" for k, v in PREFIXES.items())

SHAPES_TTL = (
    _PREFIXES
    + """@prefix sh: <http://www.w3.org/ns/shacl#> .

her:PredictionShape a sh:NodeShape ;
    sh:targetClass her:Prediction ;
    sh:class rdf:Statement ;
    sh:property [ sh:path rdf:subject ; sh:minCount 1 ; sh:maxCount 1 ;
                  sh:nodeKind sh:IRI ; sh:class her:Record ] ;
    sh:property [ sh:path rdf:predicate ; sh:minCount 1 ; sh:maxCount 1 ;
                  sh:nodeKind sh:IRI ; sh:class rdf:Property ] ;
    sh:property [ sh:path rdf:object ; sh:minCount 1 ; sh:maxCount 1 ;
                  sh:nodeKind sh:IRI ; sh:class skos:Concept ] ;
    sh:property [ sh:path her:confidence ; sh:minCount 1 ; sh:maxCount 1 ;
                  sh:datatype xsd:double ; sh:minInclusive 0 ; sh:maxInclusive 1 ] ;
    sh:property [ sh:path prov:wasGeneratedBy ; sh:minCount 1 ; sh:maxCount 1 ;
                  sh:class prov:Activity ] ;
    sh:property [ sh:path her:modalities ; sh:maxCount 1 ; sh:datatype xsd:string ] ;
    sh:property [ sh:path her:alternative ; sh:nodeKind sh:IRI ; sh:class her:Alternative ] .

her:AlternativeShape a sh:NodeShape ;
    sh:targetClass her:Alternative ;
    sh:property [ sh:path her:value ; sh:minCount 1 ; sh:maxCount 1 ;
                  sh:nodeKind sh:IRI ; sh:class skos:Concept ] ;
    sh:property [ sh:path her:confidence ; sh:minCount 1 ; sh:maxCount 1 ;
                  sh:datatype xsd:double ; sh:minInclusive 0 ; sh:maxInclusive 1 ] ;
    sh:property [ sh:path her:rank ; sh:minCount 1 ; sh:maxCount 1 ;
                  sh:datatype xsd:integer ; sh:minInclusive 2 ] ;
    sh:property [ sh:path [ sh:inversePath her:alternative ] ; sh:minCount 1 ;
                  sh:maxCount 1 ; sh:class her:Prediction ] .

her:ActivityShape a sh:NodeShape ;
    sh:targetClass prov:Activity ;
    sh:property [ sh:path prov:startedAtTime ; sh:minCount 1 ; sh:maxCount 1 ;
                  sh:datatype xsd:dateTime ; sh:lessThanOrEquals prov:endedAtTime ] ;
    sh:property [ sh:path prov:endedAtTime ; sh:minCount 1 ; sh:maxCount 1 ;
                  sh:datatype xsd:dateTime ] ;
    sh:property [ sh:path prov:used ; sh:qualifiedValueShape [ sh:class her:Model ] ;
                  sh:qualifiedMinCount 1 ] ;
    sh:property [ sh:path prov:wasAssociatedWith ;
                  sh:qualifiedValueShape [ sh:class prov:SoftwareAgent ] ;
                  sh:qualifiedMinCount 1 ] .

her:ModelShape a sh:NodeShape ;
    sh:targetClass her:Model ;
    sh:class prov:Entity ;
    sh:property [ sh:path her:sha256 ; sh:minCount 1 ; sh:maxCount 1 ;
                  sh:datatype xsd:hexBinary ; sh:pattern "^[0-9a-f]{64}$" ] ;
    sh:property [ sh:path rdfs:label ; sh:minCount 1 ] .

her:AgentShape a sh:NodeShape ;
    sh:targetClass prov:SoftwareAgent ;
    sh:property [ sh:path schema:softwareVersion ; sh:minCount 1 ; sh:maxCount 1 ] ;
    sh:property [ sh:path rdfs:label ; sh:minCount 1 ] .

her:RecordShape a sh:NodeShape ;
    sh:targetClass her:Record ;
    sh:nodeKind sh:IRI ;
    sh:property [ sh:path dcterms:identifier ; sh:minCount 1 ; sh:maxCount 1 ;
                  sh:datatype xsd:string ; sh:minLength 1 ] .

her:ConceptShape a sh:NodeShape ;
    sh:targetClass skos:Concept ;
    sh:property [ sh:path skos:prefLabel ; sh:minCount 1 ; sh:uniqueLang true ] .

her:PropertyShape a sh:NodeShape ;
    sh:targetObjectsOf rdf:predicate ;
    sh:property [ sh:path rdfs:label ; sh:minCount 1 ] .
"""
)


@dataclass
class ValidationResult:
    """Whether a graph conforms, and pySHACL's report (one line per violation)."""

    conforms: bool
    report: str
    violations: int


def validate(data, fmt: str | None = None) -> ValidationResult:
    """Validate an :class:`~heritage.kg.export.Export`, an RDF file, N-Triples bytes or an
    rdflib graph against :data:`SHAPES_TTL`."""
    import rdflib
    from pyshacl import validate as shacl

    from heritage.kg.export import Export

    if isinstance(data, rdflib.Graph):
        graph = data
    elif isinstance(data, Export):
        graph = rdflib.Graph().parse(data=data.ntriples(), format="nt")
    elif isinstance(data, bytes):
        graph = rdflib.Graph().parse(data=data, format=fmt or "nt")
    else:
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"RDF file {path} not found")
        formats = {".ttl": "turtle", ".nt": "nt", ".jsonld": "json-ld", ".json": "json-ld"}
        fmt = fmt or formats.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(
                f"{path}: unknown RDF format {path.suffix!r}; use a .ttl (Turtle), .nt "
                "(N-Triples) or .jsonld (JSON-LD) file"
            )
        try:
            graph = rdflib.Graph().parse(str(path), format=fmt)
        except (SyntaxError, ValueError, rdflib.exceptions.ParserError) as exc:
            # rdflib's parsers raise SyntaxError (Turtle), ParserError (N-Triples) and
            # ValueError (JSON-LD, undecodable bytes): one message naming the file
            problem = " ".join(str(exc).split())
            raise ValueError(f"{path} is not valid {fmt} RDF: {problem[:300]}") from None
    shapes = rdflib.Graph().parse(data=SHAPES_TTL, format="turtle")
    conforms, report_graph, text = shacl(graph, shacl_graph=shapes, inference="none")
    sh = rdflib.Namespace("http://www.w3.org/ns/shacl#")
    violations = len(list(report_graph.subjects(rdflib.RDF.type, sh.ValidationResult)))
    return ValidationResult(bool(conforms), str(text), violations)
