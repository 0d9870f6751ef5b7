"""Tests for the knowledge graph (heritage.kg) on small generated predictions and records.

The Virtuoso tests start a real server (``virtuoso-t``) and skip when it is not installed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from heritage.cli import app
from heritage.kg import (
    Activity,
    Catalogue,
    Export,
    ExportConfig,
    KnowledgeGraph,
    ModelEntity,
    QueryError,
    Vocabulary,
    export_graph,
    normalise_predictions,
    read_predictions,
    validate,
)
from heritage.kg.terms import HER, RDF
from heritage.kg.virtuoso import VirtuosoServer, virtuoso_executable

BASE = "https://data.example.museum/"
TECHNIQUES = ["damask", "velvet", "embroidery", "brocade"]
PLACES = ["ES", "GB", "FR", "IT", "Côte d'Ivoire"]
MUSEUMS = ["vam", "imatex", "met"]
ENV = {"HERITAGE_NO_PROGRESS": "1", "NO_COLOR": "1", "COLUMNS": "200"}


def make_records(n: int = 30, seed: int = 0) -> pd.DataFrame:
    """A records table with gaps, a text with awkward characters, numbers and a Unicode id."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rows.append(
            {
                "object": f"T.{i:03d}/b" if i % 7 == 0 else f"obj-{i}",
                "museum": MUSEUMS[i % 3],
                "n_images": str(int(rng.integers(0, 5))),
                "place": PLACES[i % 5] if rng.random() < 0.6 else "",
                "technique": TECHNIQUES[i % 4] if rng.random() < 0.5 else "",
                "text_en": f'A "silk" fragment\nno. {i} — ñ' if i % 2 else "",
            }
        )
    return pd.DataFrame(rows)


def make_predictions(records: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """What `heritage metadata predict` writes for ``records``: every record and property,
    catalogued rows included, one abstention."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, rec in records.iterrows():
        for prop, classes in (("place", PLACES), ("technique", TECHNIQUES)):
            if i == 3 and prop == "place":
                rows.append(
                    {
                        "record": rec["object"],
                        "property": prop,
                        "value": "",
                        "confidence": np.nan,
                        "alternatives": "[]",
                        "modalities": "",
                        "status": "catalogued" if rec[prop] else "no prediction",
                        "catalogued": rec[prop],
                    }
                )
                continue
            p = rng.dirichlet(np.ones(len(classes)) * 0.5)
            order = np.argsort(-p, kind="stable")
            rows.append(
                {
                    "record": rec["object"],
                    "property": prop,
                    "value": classes[order[0]],
                    "confidence": float(p[order[0]]),
                    "alternatives": json.dumps(
                        [[classes[j], round(float(p[j]), 4)] for j in order[1:3]],
                        ensure_ascii=False,
                    ),
                    "modalities": "tfidf+tabular",
                    "status": "catalogued" if rec[prop] else "predicted",
                    "catalogued": rec[prop],
                }
            )
    return pd.DataFrame(rows)


MODEL_BYTES = {"predictor.json": b"{}", "predictor.safetensors": b"not really a model"}
# a folder's weight files are hashed as the hash of their names and hashes
MODEL_SHA = hashlib.sha256(
    "".join(f"{n}\0{hashlib.sha256(b).hexdigest()}\n" for n, b in MODEL_BYTES.items()).encode()
).hexdigest()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A metadata model folder (the weights' bytes only need a hash)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name, data in MODEL_BYTES.items():
        (folder / name).write_bytes(data)
    spec = {
        "id_column": "object",
        "properties": ["place", "technique"],
        "text_columns": {"text_en": "en"},
        "tabular_columns": ["museum", "n_images"],
    }
    card = {"created": "2024-05-01T09:00:00+00:00", "spec": spec}
    (folder / "card.json").write_text(json.dumps(card))
    return folder


@pytest.fixture
def activity(model_dir: Path) -> Activity:
    return Activity(
        datetime(2024, 5, 2, 10, 0, tzinfo=timezone.utc),
        datetime(2024, 5, 2, 10, 3, tzinfo=timezone.utc),
        ModelEntity.from_path(model_dir),
        "heritage metadata predict",
    )


@pytest.fixture
def records() -> pd.DataFrame:
    return make_records()


@pytest.fixture
def catalogue(records: pd.DataFrame) -> Catalogue:
    return Catalogue(
        records,
        "object",
        ("museum", "place", "technique"),
        {"text_en": "en", "n_images": None},
    )


@pytest.fixture
def export(records: pd.DataFrame, activity: Activity, catalogue: Catalogue) -> Export:
    return export_graph(
        make_predictions(records),
        activity=activity,
        catalogue=catalogue,
        config=ExportConfig(base_uri=BASE),
    )


def test_local_copies_of_metadata_names_match() -> None:
    """kg repeats the model file names to stay light to import; they must not drift. (The
    prediction layout is one definition, heritage.prediction_table, that both import.)"""
    from heritage.kg import predictions as kp
    from heritage.kg import provenance
    from heritage.metadata import predictor

    assert kp.PREDICTION_COLUMNS == predictor.PREDICTION_COLUMNS
    assert kp.STATUSES == predictor.STATUSES
    assert (provenance.MODEL_FILES, provenance.CARD_FILE) == (
        predictor.MODEL_FILES,
        predictor.CARD_FILE,
    )
    assert provenance.LEGACY_MODEL_FILE == predictor.LEGACY_MODEL_FILE
    assert tuple(MODEL_BYTES) == predictor.MODEL_FILES


# ---------------------------------------------------------------------------------- export


@pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated")  # rdflib JSON-LD
def test_export_is_deterministic(
    records: pd.DataFrame, activity: Activity, catalogue: Catalogue, tmp_path: Path
) -> None:
    preds = make_predictions(records)
    config = ExportConfig(base_uri=BASE)
    first = export_graph(preds, activity=activity, catalogue=catalogue, config=config)
    second = export_graph(preds.copy(), activity=activity, catalogue=catalogue, config=config)
    assert first.lines == second.lines
    for fmt in ("ttl", "nt", "jsonld"):
        a, b = first.write(tmp_path / f"a.{fmt}"), second.write(tmp_path / f"b.{fmt}")
        assert a.read_bytes() == b.read_bytes()
    # no blank nodes: graph equality is equality of the N-Triples lines, in any order
    assert "_:" not in "".join(first.lines)
    shuffled = preds.sample(frac=1.0, random_state=1)
    third = export_graph(shuffled, activity=activity, catalogue=catalogue, config=config)
    # the activity hashes the rows in their order: same statements under another activity
    key = first.activity.rsplit("/", 1)[1]
    other = third.activity.rsplit("/", 1)[1]
    assert len(third.lines) == len(first.lines)
    assert first.predictions == third.predictions == (preds["value"] != "").sum()
    assert key != other
    # the three syntaxes hold the same graph
    import rdflib
    from rdflib.compare import isomorphic

    graphs = [rdflib.Graph().parse(tmp_path / f"a.{fmt}") for fmt in ("ttl", "nt", "jsonld")]
    assert len(graphs[0]) == len(set(first.lines))
    assert isomorphic(graphs[0], graphs[1]) and isomorphic(graphs[0], graphs[2])


def test_export_shape(export: Export, records: pd.DataFrame) -> None:
    import pyoxigraph as ox

    kg = KnowledgeGraph()
    kg.load(export)
    preds = make_predictions(records)
    n_alts = sum(
        len(json.loads(a)) for a, v in zip(preds["alternatives"], preds["value"], strict=True) if v
    )
    counts = kg.select(
        f"SELECT ?c (COUNT(*) AS ?n) WHERE {{ ?s <{RDF}type> ?c }} GROUP BY ?c"
    ).set_index("c")["n"]
    assert counts[f"{HER}Prediction"] == (preds["value"] != "").sum() == export.predictions
    assert counts[f"{HER}Alternative"] == n_alts == export.alternatives
    assert counts[f"{HER}Record"] == len(records)
    assert counts["http://www.w3.org/ns/prov#Activity"] == 1
    assert counts["http://www.w3.org/ns/prov#SoftwareAgent"] == 1
    sha = MODEL_SHA
    ask = kg.query(
        f"""PREFIX prov: <http://www.w3.org/ns/prov#> PREFIX her: <{HER}>
        ASK {{ ?p prov:wasGeneratedBy ?a . ?a prov:used ?m ; prov:startedAtTime ?t0 ;
               prov:endedAtTime ?t1 ; prov:wasAssociatedWith ?agent .
               ?m her:sha256 "{sha}"^^<http://www.w3.org/2001/XMLSchema#hexBinary> .
               ?agent a prov:SoftwareAgent ; <https://schema.org/softwareVersion> ?v }}"""
    )
    assert ask is True
    # confidences are typed literals
    conf = next(iter(kg._store.quads_for_pattern(None, ox.NamedNode(f"{HER}confidence"), None)))
    assert conf.object.datatype.value.endswith("#double")


@pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated")  # rdflib JSON-LD
def test_exports_conform_to_shapes(export: Export, activity: Activity, tmp_path: Path) -> None:
    result = validate(export)
    assert result.conforms, result.report
    classifier = pd.DataFrame(
        {
            "image": ["a.png", "b.png"],
            "label_1": ["N35", "G17"],
            "confidence_1": [0.9, 0.6],
            "label_2": ["G17", "N35"],
            "confidence_2": [0.05, 0.3],
        }
    )
    graph = export_graph(classifier, activity=activity, prop="sign")
    assert graph.predictions == 2 and graph.alternatives == 2
    assert validate(graph).conforms
    path = graph.write(tmp_path / "signs.jsonld")
    assert validate(path).conforms


def _raise_confidence(line: str) -> str:
    """``her:confidence "0.x"`` -> ``"7.x"``."""
    return line.replace('"0.', '"7.', 1) if "#confidence" in line else line


@pytest.mark.parametrize(
    ("what", "change"),
    [
        ("confidence above 1", lambda ls: [_raise_confidence(ln) for ln in ls]),
        ("prediction without activity", lambda ls: [ln for ln in ls if "wasGeneratedBy" not in ln]),
        ("model without hash", lambda ls: [ln for ln in ls if "#sha256" not in ln]),
        ("value not a concept", lambda ls: [ln for ln in ls if "skos/core#Concept>" not in ln]),
        ("no software agent", lambda ls: [ln for ln in ls if "SoftwareAgent" not in ln]),
        (
            "ends before it starts",
            lambda ls: [
                ln.replace("2024-05-02T10:00:00Z", "2024-05-02T11:00:00Z")
                if "startedAtTime" in ln
                else ln
                for ln in ls
            ],
        ),
    ],
)
def test_shapes_reject_broken_graphs(export: Export, what: str, change) -> None:
    broken = Export(change(list(export.lines)))
    assert broken.lines != export.lines, what
    result = validate(broken)
    assert not result.conforms, what
    assert result.violations >= 1


# ------------------------------------------------------------------- catalogue vs predicted


def hand_made(activity: Activity) -> Export:
    """A: catalogued damask, predicted velvet 0.95; B: predicted velvet 0.9; C: predicted
    damask 0.6; D: nothing for technique. Museums: A, B at vam, C at met."""
    records = pd.DataFrame(
        {
            "object": ["A", "B", "C", "D"],
            "museum": ["vam", "vam", "met", "met"],
            "technique": ["damask", "", "", ""],
        }
    )
    preds = pd.DataFrame(
        {
            "record": ["A", "B", "C"],
            "property": ["technique"] * 3,
            "value": ["velvet", "velvet", "damask"],
            "confidence": [0.95, 0.9, 0.6],
            "alternatives": ['[["damask", 0.04]]', '[["damask", 0.1]]', '[["velvet", 0.4]]'],
            "modalities": ["tfidf"] * 3,
            "status": ["catalogued", "predicted", "predicted"],
            "catalogued": ["damask", "", ""],
        }
    )
    catalogue = Catalogue(records, "object", ("museum", "technique"))
    return export_graph(preds, activity=activity, catalogue=catalogue)


def test_catalogued_and_predicted_values_coexist(activity: Activity) -> None:
    kg = KnowledgeGraph()
    kg.load(hand_made(activity))
    # the plain property is the catalogue: a confident prediction does not leak into it
    plain = kg.select(
        """SELECT ?id ?label WHERE { ?r <https://example.org/heritage/property/technique> ?v ;
           <http://purl.org/dc/terms/identifier> ?id .
           ?v <http://www.w3.org/2004/02/skos/core#prefLabel> ?label }"""
    )
    assert plain.values.tolist() == [["A", "damask"]]
    best = kg.catalogued_else_predicted("technique", 0.8)
    assert best[["record", "value", "source"]].values.tolist() == [
        ["A", "damask", "catalogued"],
        ["B", "velvet", "predicted"],
    ]
    assert best["confidence"].tolist()[1] == pytest.approx(0.9)
    low = kg.catalogued_else_predicted("technique", 0.5)
    assert low["record"].tolist() == ["A", "B", "C"]
    assert low.set_index("record").loc["C", "value"] == "damask"
    # the prediction for A is still there, for review
    preds = kg.predictions()
    row = preds[preds["record"] == "A"].iloc[0]
    assert (row["value"], row["status"], row["catalogued"]) == ("velvet", "catalogued", "damask")
    # faceted: velvet predicted with confidence >= 0.8, by museum (A and B are at the vam)
    facet = kg.facet("technique", "velvet", 0.8, by="museum")
    assert facet.values.tolist() == [["vam", 2]]
    assert kg.facet("technique", "damask", 0.5, by="museum").values.tolist() == [["met", 1]]
    # records filled with confident predictions, catalogue kept
    filled = kg.records(["museum", "technique"], fill_threshold=0.8)
    assert filled["technique"].tolist() == ["damask", "velvet", "", ""]


def test_facet_keeps_properties_apart(activity: Activity) -> None:
    """ "red" is minted twice (a colour and a dye): the facet on colour counts colours only."""
    preds = pd.DataFrame(
        {
            "record": ["A", "A", "B"],
            "property": ["colour", "dye", "dye"],
            "value": ["red", "red", "red"],
            "confidence": [0.9, 0.95, 0.99],
        }
    )
    catalogue = Catalogue(
        pd.DataFrame({"id": ["A", "B"], "museum": ["vam", "met"]}), "id", ("museum",)
    )
    kg = KnowledgeGraph()
    kg.load(export_graph(preds, activity=activity, catalogue=catalogue))
    assert len(kg.concept_iris("red")) == 2
    assert kg.facet("colour", "red", 0.5).values.tolist() == [["vam", 1]]
    assert kg.facet("dye", "red", 0.5).values.tolist() == [["met", 1], ["vam", 1]]
    assert kg.facet("dye", "red", 0.97).values.tolist() == [["met", 1]]
    assert kg.facet("dye", "blue", 0.5).empty and kg.facet("nothing", "red", 0.5).empty


# --------------------------------------------------------------------------- round trips


def test_records_round_trip(export: Export, records: pd.DataFrame, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with KnowledgeGraph(store) as kg:
        n = kg.load(export)
        assert n == len(export) == len(kg)
    kg = KnowledgeGraph(store, read_only=True)  # reopened from disk
    columns = ["museum", "n_images", "place", "technique", "text_en"]
    back = kg.records(columns, id_column="object")
    expected = records[["object", *columns]].sort_values("object").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected)
    # the round-tripped table is what the metadata predictor reads
    from heritage.metadata import RecordSpec, RecordTable

    spec = RecordSpec.infer(back.columns, ["place", "technique"], id_column="object")
    assert len(RecordTable.from_frame(back, spec)) == len(records)


def test_in_memory_copy_answers_like_the_disk_store(export: Export, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with KnowledgeGraph(store) as kg:
        kg.load(export, graph="https://example.org/graph/run1")  # named graphs survive the copy
    disk, memory = KnowledgeGraph(store, read_only=True), KnowledgeGraph.in_memory(store)
    assert memory.path is None and len(memory) == len(disk) == len(export)
    for prop in ("technique", "place"):
        pd.testing.assert_frame_equal(
            memory.catalogued_else_predicted(prop, 0.5), disk.catalogued_else_predicted(prop, 0.5)
        )
    facet = disk.facet("technique", "damask", 0.0, "museum")
    assert not facet.empty
    pd.testing.assert_frame_equal(memory.facet("technique", "damask", 0.0, "museum"), facet)
    memory.load(b'<https://example.org/a> <https://example.org/b> "c" .\n')  # stays in memory
    assert len(memory) == len(export) + 1
    assert len(KnowledgeGraph(store, read_only=True)) == len(export)
    for open_missing in (KnowledgeGraph.in_memory, partial(KnowledgeGraph, read_only=True)):
        with pytest.raises(FileNotFoundError, match="no store at") as missing:
            open_missing(tmp_path / "nowhere")
        assert "another process" not in str(missing.value)  # not blamed on a lock


def test_predictions_round_trip(export: Export, records: pd.DataFrame) -> None:
    kg = KnowledgeGraph()
    kg.load(export)
    back = kg.predictions()
    original = normalise_predictions(make_predictions(records))
    original = original[original["value"] != ""].copy()
    original["alternatives"] = [
        json.dumps([list(a) for a in alts], ensure_ascii=False) for alts in original["alternatives"]
    ]
    original = original.sort_values(["record", "property"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back, original, check_dtype=False)


def test_loading_twice_adds_nothing(export: Export) -> None:
    kg = KnowledgeGraph()
    kg.load(export)
    size = len(kg)
    kg.load(export)
    assert len(kg) == size == len(set(export.lines))
    kg.load(export, graph="https://data.example.museum/graph/run1", replace=True)
    assert len(kg) == 2 * size  # the named graph holds a copy; queries see the union once
    assert len(kg.catalogued_else_predicted("place", 0.0)) > 0


# ---------------------------------------------------------------------------- vocabularies


def test_vocabulary_table_is_used_instead_of_minting(
    records: pd.DataFrame, activity: Activity, tmp_path: Path
) -> None:
    table = tmp_path / "vocab.csv"
    pd.DataFrame(
        {
            "label": ["damask", "Velvet", "terciopelo", "ES"],
            "uri": [
                "http://vocab.getty.edu/aat/300227806",
                "http://vocab.getty.edu/aat/300014044",
                "http://vocab.getty.edu/aat/300014044",
                "http://www.wikidata.org/entity/Q29",
            ],
            "property": ["technique", "technique", "technique", "place"],
        }
    ).to_csv(table, index=False)
    vocab = Vocabulary.load(table)
    assert vocab.lookup("technique", "velvet").uri.endswith("300014044")  # any case
    assert vocab.lookup("place", "damask") is None  # scoped to technique
    config = ExportConfig(base_uri=BASE, vocabulary=vocab)
    graph = export_graph(make_predictions(records), activity=activity, config=config)
    text = "".join(graph.lines)
    assert "<http://vocab.getty.edu/aat/300227806>" in text
    assert f"{BASE}concept/technique/damask" not in text
    assert f"{BASE}concept/technique/embroidery" in text  # not in the vocabulary: minted
    assert graph.minted["technique"] == 2 and "ES" not in str(graph.minted)
    assert validate(graph).conforms
    kg = KnowledgeGraph()
    kg.load(graph)
    facet = kg.facet("technique", "Velvet", 0.0, by="place")  # preferred label of the concept
    assert facet["records"].sum() > 0
    with pytest.raises(ValueError, match="not in the vocabulary"):
        export_graph(
            make_predictions(records),
            activity=activity,
            config=ExportConfig(vocabulary=vocab, strict_vocabulary=True),
        )


def test_skos_vocabulary(tmp_path: Path) -> None:
    skos = tmp_path / "techniques.ttl"
    skos.write_text(
        """@prefix skos: <http://www.w3.org/2004/02/skos/core#> .
        @prefix t: <https://vocab.example.org/technique/> .
        t:damask a skos:Concept ; skos:prefLabel "damask"@en, "damasco"@es ;
            skos:inScheme t:scheme .
        t:velvet a skos:Concept ; skos:prefLabel "velvet"@en ; skos:altLabel "terciopelo"@es .
        t:pile a skos:Concept ; skos:prefLabel "pile"@en ; skos:altLabel "velvet"@en .
        t:a a skos:Concept ; skos:prefLabel "satin"@en .
        t:b a skos:Concept ; skos:prefLabel "satin"@en .
        """
    )
    vocab = Vocabulary.load(skos, "technique")
    assert vocab.lookup("technique", "terciopelo").uri.endswith("velvet")
    assert vocab.lookup("technique", "velvet").uri.endswith("velvet")  # prefLabel beats altLabel
    damask = vocab.lookup("technique", "damasco")
    assert damask.scheme == "https://vocab.example.org/technique/scheme"
    assert set(damask.labels) == {("damask", "en"), ("damasco", "es")}
    assert vocab.lookup("place", "damask") is None
    with pytest.raises(ValueError, match="several concepts"):
        vocab.lookup("technique", "satin")
    bad = tmp_path / "bad.ttl"
    bad.write_text("this is not turtle")
    with pytest.raises(ValueError, match="could not be parsed"):
        Vocabulary.load(bad)


def test_predictions_without_modalities_round_trip_as_empty(activity: Activity) -> None:
    """A prediction without her:modalities comes back with "" (not NaN) as the CSV has."""
    preds = pd.DataFrame(
        {
            "record": ["a", "b"],
            "property": ["p", "p"],
            "value": ["x", "y"],
            "confidence": [0.5, 0.6],
            "modalities": ["tfidf", ""],
        }
    )
    kg = KnowledgeGraph()
    kg.load(export_graph(preds, activity=activity))
    assert kg.predictions()["modalities"].tolist() == ["tfidf", ""]


def test_odd_characters_give_valid_rdf(activity: Activity) -> None:
    """Spaces, quotes, '#', backslashes, newlines and unicode in ids, properties, values."""
    record, prop, value = 'T 1 "q"#x\nz é', "tech nique#", 'da"mask\n\\ é #1'
    preds = pd.DataFrame(
        {
            "record": [record],
            "property": [prop],
            "value": [value],
            "confidence": [0.9],
            "alternatives": [json.dumps([["vel vet/#?", 0.05]])],
        }
    )
    graph = export_graph(preds, activity=activity)
    assert len(graph.triples()) == len(graph)  # parses as N-Triples
    assert validate(graph).conforms
    kg = KnowledgeGraph()
    kg.load(graph)
    back = kg.predictions().iloc[0]
    assert (back["record"], back["property"], back["value"]) == (record, prop, value)
    assert json.loads(back["alternatives"]) == [["vel vet/#?", 0.05]]


# ------------------------------------------------------------------------ input checking


def test_prediction_tables_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a heritage prediction table"):
        normalise_predictions(pd.DataFrame({"a": [1], "b": [2]}))
    good = {
        "record": ["a", "a"],
        "property": ["p", "p"],
        "value": ["x", "y"],
        "confidence": [0.5, 1.5],
    }
    with pytest.raises(ValueError) as info:
        normalise_predictions(pd.DataFrame(good))
    assert "row 2: confidence" in str(info.value) and "second prediction" in str(info.value)
    bad_alts = pd.DataFrame({**good, "confidence": [0.5, 0.5], "record": ["a", "b"]})
    bad_alts["alternatives"] = ["[[1, 2, 3]]", "{"]
    with pytest.raises(ValueError, match="row 1: alternatives"):
        normalise_predictions(bad_alts)
    for cell, message in [
        ("5", "pairs"),  # JSON, but not a list
        ('[["x", null]]', "not a number"),
        ('[["", 0.1]]', "empty value"),  # would mint a concept without a label
    ]:
        bad_alts["alternatives"] = [cell, "[]"]
        with pytest.raises(ValueError, match=f"row 1: alternatives.*{message}"):
            normalise_predictions(bad_alts)
    classifier = tmp_path / "p.csv"
    pd.DataFrame({"image": ["a.png"], "label_1": ["x"], "confidence_1": [0.8]}).to_csv(
        classifier, index=False
    )
    table = read_predictions(classifier, prop="sign")
    assert table[["record", "property", "value"]].values.tolist() == [["a.png", "sign", "x"]]
    with pytest.raises(ValueError, match="absolute IRI"):
        ExportConfig(base_uri="data/museum").uris()
    with pytest.raises(ValueError, match="may not contain"):
        ExportConfig(base_uri="https://x.org/a b/").uris()
    with pytest.raises(ValueError, match="column"):
        Catalogue(pd.DataFrame({"object": ["a"]}), "object", ("museum",))
    with pytest.raises(ValueError, match="unique"):
        Catalogue(pd.DataFrame({"object": ["a", "a"], "m": ["x", "y"]}), "object", ("m",))


def test_queries_report_syntax_errors(export: Export) -> None:
    kg = KnowledgeGraph()
    kg.load(export)
    with pytest.raises(QueryError, match="SPARQL syntax error"):
        kg.query("SELECT ?x WHERE { ?x ?y }")
    assert kg.query("ASK { ?s ?p ?o }") is True
    assert b"group,records" in kg.query_to(
        "SELECT ?group ?records WHERE { VALUES (?group ?records) { (1 2) } }", "csv"
    )


def test_model_entity(tmp_path: Path, model_dir: Path) -> None:
    entity = ModelEntity.from_path(model_dir)
    assert entity.kind == "metadata"
    assert entity.sha256 == MODEL_SHA
    assert entity.files == tuple(str(model_dir / name) for name in MODEL_BYTES)
    assert entity.created == "2024-05-01T09:00:00Z"
    weights = tmp_path / "soup.safetensors"
    weights.write_bytes(b"weights")
    (tmp_path / "soup.json").write_text(json.dumps({"provenance": {"created": "2024-01-01"}}))
    image = ModelEntity.from_path(tmp_path / "soup")
    assert (image.kind, image.name) == ("image classifier", "soup")
    assert image.sha256 == hashlib.sha256(b"weights").hexdigest()
    with pytest.raises(FileNotFoundError):
        ModelEntity.from_path(tmp_path / "missing")
    with pytest.raises(ValueError, match="before it starts"):
        Activity(datetime(2024, 1, 2), datetime(2024, 1, 1), entity)


def test_vocabularies_from_property_file_specs(tmp_path: Path) -> None:
    """What --vocabulary takes: [PROPERTY=]FILE, repeatable, unioned."""
    techniques, places = tmp_path / "techniques.csv", tmp_path / "places.csv"
    pd.DataFrame({"label": ["damask"], "uri": ["http://vocab.getty.edu/aat/300227806"]}).to_csv(
        techniques, index=False
    )
    pd.DataFrame({"label": ["ES"], "uri": ["http://www.wikidata.org/entity/Q29"]}).to_csv(
        places, index=False
    )
    assert Vocabulary.from_specs([]) is None
    vocab = Vocabulary.from_specs([f"technique={techniques}", str(places)])
    assert vocab is not None
    assert vocab.lookup("technique", "damask").uri.endswith("300227806")
    assert vocab.lookup("place", "damask") is None  # scoped to technique
    assert vocab.lookup("place", "ES").uri.endswith("Q29")  # unscoped: every property
    odd = tmp_path / "a=b.csv"  # a file whose name holds "=" is a file, not a scope
    odd.write_bytes(places.read_bytes())
    assert Vocabulary.from_specs([str(odd)]).lookup("technique", "ES") is not None
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        Vocabulary.from_specs([f"place={tmp_path / 'missing.csv'}"])


def test_catalogue_for_export_takes_roles_from_the_options_then_the_model(
    tmp_path: Path, records: pd.DataFrame, model_dir: Path
) -> None:
    csv = tmp_path / "records.csv"
    records.to_csv(csv, index=False)
    predictions = make_predictions(records)
    named = Catalogue.for_export(
        csv, concepts=["museum"], literals=["text_en"], predictions=predictions, model=model_dir
    )
    assert (named.id_column, named.concepts, named.literals) == (
        "object",
        ("museum",),
        {"text_en": "en"},
    )
    by_spec = Catalogue.for_export(csv, predictions=predictions, model=model_dir)
    assert set(by_spec.concepts) == {"place", "technique", "museum"}  # museum: categorical
    assert by_spec.literals == {"text_en": "en", "n_images": None}  # n_images: numeric
    weights = tmp_path / "soup.safetensors"  # an image classifier: no record spec
    weights.write_bytes(b"weights")
    predicted = Catalogue.for_export(
        csv, id_column="object", predictions=predictions, model=tmp_path / "soup"
    )
    assert (predicted.concepts, predicted.literals) == (("place", "technique"), {})
    with pytest.raises(ValueError, match="no catalogue columns"):
        Catalogue.for_export(csv, model=model_dir)  # no predictions: name the columns
    (model_dir / "card.json").write_text("{}")
    with pytest.raises(ValueError, match=r"card\.json has no record spec; name the catalogue"):
        Catalogue.from_model(csv, model_dir)
    with pytest.raises(FileNotFoundError, match=r"Records file .*nowhere\.csv not found"):
        Catalogue.for_export(tmp_path / "nowhere.csv", predictions=predictions, model=weights)


def test_model_entity_names_the_command_that_predicts_with_it(
    tmp_path: Path, model_dir: Path
) -> None:
    assert ModelEntity.from_path(model_dir).command == "heritage metadata predict"
    (tmp_path / "soup.safetensors").write_bytes(b"weights")
    assert ModelEntity.from_path(tmp_path / "soup").command == "heritage predict"


def test_endpoint_asks_the_server_for_the_format_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server's results come in the same formats as the store's query_to."""
    from heritage.kg import SparqlEndpoint
    from heritage.kg.endpoint import MEDIA_TYPES

    endpoint = SparqlEndpoint("http://localhost:9/sparql")
    asked: list[str] = []
    monkeypatch.setattr(endpoint, "query_raw", lambda sparql, accept: asked.append(accept) or b"")
    for fmt in ("csv", "json", "nt"):
        endpoint.query_to("ASK {}", fmt)
    assert asked == ["text/csv", "application/sparql-results+json", "application/n-triples"]
    assert set(MEDIA_TYPES) == {"csv", "tsv", "json", "ttl", "nt", "jsonld"}
    with pytest.raises(ValueError, match="unknown --format 'xml'"):
        endpoint.query_to("ASK {}", "xml")
    assert len(asked) == 3  # refused before anything was sent


# ----------------------------------------------------------------------------------- CLI


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def test_cli_end_to_end(tmp_path: Path, model_dir: Path, records: pd.DataFrame) -> None:
    records_csv = tmp_path / "records.csv"
    records.to_csv(records_csv, index=False)
    preds_csv = tmp_path / "predictions.csv"
    make_predictions(records).to_csv(preds_csv, index=False)
    vocab = tmp_path / "vocab.csv"
    pd.DataFrame({"label": ["damask"], "uri": ["http://vocab.getty.edu/aat/300227806"]}).to_csv(
        vocab, index=False
    )
    out = tmp_path / "kg.ttl"
    args = [preds_csv, "--model", model_dir, "--records", records_csv, "--base-uri", BASE]
    args += ["--vocabulary", f"technique={vocab}", "--ended", "2024-05-02T10:03:00Z"]
    result = run("kg", "export", *args, "-o", out, "--validate")
    assert result.exit_code == 0, result.output
    assert "conforms" in result.output and "predictions" in result.output
    again = tmp_path / "again.ttl"
    assert run("kg", "export", *args, "-o", again).exit_code == 0
    assert out.read_bytes() == again.read_bytes()
    assert "aat/300227806" in out.read_text()
    nt = tmp_path / "kg.nt"
    assert run("kg", "export", *args, "-o", nt).exit_code == 0

    store = tmp_path / "store"
    result = run("kg", "load", nt, "--store", store)
    assert result.exit_code == 0, result.output
    assert "triples loaded" in result.output
    query = tmp_path / "count.rq"
    query.write_text(f"SELECT (COUNT(?p) AS ?n) WHERE {{ ?p a <{HER}Prediction> }}")
    result = run("kg", "query", "--file", query, "--store", store, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [
        "n",
        str(int((make_predictions(records)["value"] != "").sum())),
    ]
    result = run("kg", "query", "SELECT ?s WHERE { ?s a ?c } LIMIT 3", "--store", store)
    assert result.exit_code == 0 and len(result.stdout.strip().splitlines()) == 4
    result = run(
        "kg", "query", "SELECT ?s WHERE { ?s a ?c } LIMIT 1", "-s", store, "--format", "json"
    )
    assert json.loads(result.stdout)["head"]["vars"] == ["s"]
    result = run("kg", "query", "SELECT nonsense", "--store", store)
    assert result.exit_code == 2 and "SPARQL syntax error" in result.output

    back = tmp_path / "back.csv"
    result = run("kg", "records", "--store", store, "-o", back, "--id-column", "object")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(back, dtype=str, keep_default_na=False)
    assert set(table.columns) == set(records.columns)
    assert len(table) == len(records)

    assert run("kg", "validate", out).exit_code == 0
    assert "sh:NodeShape" in run("kg", "shapes").stdout


def test_cli_errors(tmp_path: Path, model_dir: Path) -> None:
    preds = tmp_path / "p.csv"
    pd.DataFrame({"x": [1]}).to_csv(preds, index=False)
    result = run("kg", "export", preds, "--model", model_dir, "-o", tmp_path / "x.ttl")
    assert result.exit_code == 2 and "not a heritage prediction table" in result.output
    good = tmp_path / "good.csv"
    make_predictions(make_records(3)).to_csv(good, index=False)
    result = run("kg", "export", good, "-o", tmp_path / "x.ttl")
    assert result.exit_code == 2 and "--model" in result.output
    result = run("kg", "export", good, "--model", model_dir, "-o", tmp_path / "x.rdfxml")
    assert result.exit_code == 2 and "unknown RDF format" in result.output
    result = run("kg", "query", "ASK {}", "--store", tmp_path / "nowhere")
    assert result.exit_code == 2 and "no store" in result.output
    result = run("kg", "load", tmp_path / "typo.nt", "--store", tmp_path / "new-store")
    assert result.exit_code == 2 and "typo.nt" in result.output
    assert not (tmp_path / "new-store").exists()
    broken = tmp_path / "broken.nt"
    broken.write_text(f"<{BASE}a> a <{HER}Prediction> .\n".replace(" a ", f" <{RDF}type> "))
    assert run("kg", "validate", broken).exit_code == 1
    # a load that fails releases the store: the corrected load in the same process opens it
    odd = tmp_path / "data.xyz"
    odd.write_text(broken.read_text())
    result = run("kg", "load", odd, "--store", tmp_path / "s", "--no-explorer-tables")
    assert result.exit_code == 2 and "unknown RDF format" in result.output
    result = run("kg", "load", broken, "--store", tmp_path / "s", "--no-explorer-tables")
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------- Virtuoso


def test_virtuoso_that_cannot_start_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(OSError):
        VirtuosoServer(executable=str(tmp_path / "no-such-virtuoso-t"))
    assert list(tmp_path.iterdir()) == []  # temporary folder (and its log) removed


@pytest.fixture(scope="module")
def virtuoso():
    if virtuoso_executable() is None:
        pytest.skip("virtuoso-t not installed (apt-get install virtuoso-opensource)")
    with VirtuosoServer(memory_mb=128) as server:
        yield server


def test_virtuoso_push_and_query(virtuoso: VirtuosoServer, export: Export, activity) -> None:
    endpoint = virtuoso.endpoint()
    graph = "https://data.example.museum/graph/test"
    report = endpoint.push(export, graph=graph, protocol="update", chunk_size=200, replace=True)
    assert report.triples == len(export) and report.requests > 2
    assert endpoint.count(graph) == len(set(export.lines))
    again = endpoint.push(export, graph=graph, protocol="graph-store", chunk_size=500, replace=True)
    assert again.triples == len(export)
    assert endpoint.count(graph) == len(set(export.lines))

    embedded = KnowledgeGraph()
    embedded.load(export)
    for name, args in (
        ("facet", ("technique", "damask", 0.3, "museum")),
        ("catalogued_else_predicted", ("place", 0.5)),
    ):
        ours, theirs = getattr(embedded, name)(*args), getattr(endpoint, name)(*args)
        pd.testing.assert_frame_equal(
            ours.reset_index(drop=True), theirs.reset_index(drop=True), check_dtype=False
        )
    columns = ["museum", "n_images", "place", "technique", "text_en"]
    pd.testing.assert_frame_equal(endpoint.records(columns), embedded.records(columns))
    pd.testing.assert_frame_equal(endpoint.predictions(), embedded.predictions())
    # replacing with nothing empties the graph, whichever protocol
    endpoint.push([], graph=graph, protocol="graph-store", replace=True)
    assert endpoint.count(graph) == 0
    endpoint.push(export, graph=graph, protocol="graph-store")
    endpoint.clear(graph)
    assert endpoint.count(graph) == 0


def test_virtuoso_cli(virtuoso: VirtuosoServer, activity: Activity, tmp_path: Path) -> None:
    path = hand_made(activity).write(tmp_path / "hand.ttl")
    graph = "https://data.example.museum/graph/cli"
    query = f"SELECT (COUNT(*) AS ?n) WHERE {{ GRAPH <{graph}> {{ ?p a <{HER}Prediction> }} }}"
    login = ["--user", "dba", "--password", "dba"]
    for protocol, url in (("update", "sparql-auth"), ("graph-store", "sparql-graph-crud-auth")):
        result = run(
            "kg", "push", path, "--endpoint", f"{virtuoso.url}/{url}", "--graph", graph,
            "--protocol", protocol, *login, "--replace", "--chunk-size", "20",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        result = run(
            "kg", "query", query, "--endpoint", f"{virtuoso.url}/sparql", "--format", "csv"
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.split()[-1].strip('"') == "3"
    back = tmp_path / "back.csv"
    result = run("kg", "records", "--endpoint", f"{virtuoso.url}/sparql", "-o", back)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(back, dtype=str, keep_default_na=False)
    assert table.set_index("record").loc["A", "technique"] == "damask"
    result = run("kg", "push", path, "--endpoint", f"{virtuoso.url}/sparql-graph-crud-auth")
    assert result.exit_code == 2 and "401" in result.output  # no credentials: refused


# ------------------------------------------------------------------------------ real data

SILKNOW = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "silknow-records"


@pytest.mark.slow
@pytest.mark.skipif(not SILKNOW.is_dir(), reason="../shared/datasets/silknow-records is absent")
def test_silknow_catalogue_round_trip(tmp_path: Path) -> None:
    """All 3,540 real records (Spanish and English texts, gaps) out to N-Triples, into an
    on-disk store and back: the same table."""
    path = SILKNOW / "records.csv"
    catalogue = Catalogue.from_csv(
        path,
        "object",
        ["museum", "place", "timespan", "technique", "material"],
        ["text_en", "text_es", "n_images", "split"],
    )
    graph = export_graph(catalogue=catalogue, config=ExportConfig(base_uri=BASE))
    nt = graph.write(tmp_path / "silknow.nt")
    with KnowledgeGraph(tmp_path / "store") as kg:
        assert kg.load(nt) == len(graph)
    kg = KnowledgeGraph(tmp_path / "store", read_only=True)
    columns = [c for c in catalogue.frame.columns if c != "object"]
    back = kg.records(columns, id_column="object")
    expected = catalogue.frame.sort_values("object").reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expected)
    assert kg.facet("technique", "damask", 0.0, "museum").empty  # no predictions exported
