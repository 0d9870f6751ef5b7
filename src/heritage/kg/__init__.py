"""Predictions as linked data: RDF with PROV-O provenance, an embedded store, SPARQL servers.

Museums publish catalogues as linked data. heritage writes every value it predicts into such
a graph as a *suggestion*, never as a fact: a reified ``her:Prediction`` with its confidence,
its runner-up values and the prediction run (``prov:Activity``) that made it — the model's
SHA-256 and heritage's version included — next to the catalogue's own plain triples, which it
never overwrites (see :mod:`heritage.kg.export` for the graph's shape and an example).

    from heritage.kg import Activity, ExportConfig, KnowledgeGraph, ModelEntity, export_graph
    from heritage.kg import read_predictions

    predictions = read_predictions("predictions.csv")      # metadata or image-classifier CSV
    activity = Activity.from_file("predictions.csv", ModelEntity.from_path("runs/silk"))
    graph = export_graph(predictions, activity=activity,
                         config=ExportConfig(base_uri="https://data.example.museum/"))
    graph.write("predictions.ttl")
    kg = KnowledgeGraph("kg-store")                          # on disk, no server
    kg.load(graph)
    kg.facet("technique", "damask", threshold=0.8, by="museum")
    kg.catalogued_else_predicted("technique", threshold=0.8)
    kg.records()                                             # back to a records table

Modules: ``terms`` (namespaces, N-Triples terms), ``vocabulary`` (SKOS vocabularies,
deterministic URIs), ``provenance`` (activity, model, agent), ``predictions`` (reading
prediction tables), ``export`` (the graph), ``queries`` (curators' questions), ``store``
(embedded Oxigraph), ``endpoint`` (SPARQL 1.1 servers), ``shapes`` (SHACL), ``reviews``
(curators' decisions on predictions, as PROV in their own named graph).

Vocabulary ``her:`` (https://w3id.org/heritage/ns#): ``her:Record`` (a catalogue record,
or an image for an image classifier), ``her:Prediction`` (a predicted value: an
``rdf:Statement`` and a ``prov:Entity``), ``her:Alternative`` (a runner-up value),
``her:Model`` (a ``prov:Entity``); ``her:confidence`` (xsd:double in [0, 1]),
``her:alternative``, ``her:value``, ``her:rank`` (2 for the runner-up, ...),
``her:modalities`` (what the prediction used, e.g. ``tfidf+tabular``), ``her:sha256``,
``her:modelKind``.
"""

from heritage.kg.endpoint import EndpointError, PushReport, SparqlEndpoint
from heritage.kg.export import FORMATS, Catalogue, Export, ExportConfig, GraphBuilder, export_graph
from heritage.kg.predictions import detect_kind, normalise_predictions, read_predictions
from heritage.kg.provenance import Activity, ModelEntity, file_sha256
from heritage.kg.queries import GraphQueries, catalogued_else_predicted_query, facet_query
from heritage.kg.reviews import DECISIONS, Review, read_reviews, review_graph
from heritage.kg.shapes import SHAPES_TTL, ValidationResult, validate
from heritage.kg.store import KnowledgeGraph, QueryError, read_query
from heritage.kg.terms import HER, PREFIXES
from heritage.kg.vocabulary import DEFAULT_BASE, Concept, UriScheme, Vocabulary

__all__ = [
    "DECISIONS",
    "DEFAULT_BASE",
    "FORMATS",
    "HER",
    "PREFIXES",
    "SHAPES_TTL",
    "Activity",
    "Catalogue",
    "Concept",
    "EndpointError",
    "Export",
    "ExportConfig",
    "GraphBuilder",
    "GraphQueries",
    "KnowledgeGraph",
    "ModelEntity",
    "PushReport",
    "QueryError",
    "Review",
    "SparqlEndpoint",
    "UriScheme",
    "ValidationResult",
    "Vocabulary",
    "catalogued_else_predicted_query",
    "detect_kind",
    "export_graph",
    "facet_query",
    "file_sha256",
    "normalise_predictions",
    "read_predictions",
    "read_query",
    "read_reviews",
    "review_graph",
    "validate",
]
