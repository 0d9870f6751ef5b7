"""The explorer (issue 19): search, facets, object pages, review as provenance, security.

Everything runs on the small graph of ``conftest.make_explorer_store`` (24 records of the
tiny colour collection, museum / material / colour, English and Spanish texts, colour
predictions); the web layer is driven with FastAPI's TestClient.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from heritage.explore import Explorer, ExplorerConfig, ExplorerError, SearchState
from heritage.explore.app import create_app
from heritage.explore.fulltext import fts_query
from heritage.explore.images import UploadError, check_upload
from heritage.kg import KnowledgeGraph, read_reviews
from heritage.kg.reviews import reviews_query

BASE = "https://museum.example/"
COLOUR = BASE + "concept/colour/"
MATERIAL = BASE + "concept/material/"
TOKEN = "test-token"


def open_explorer(graph: dict, **options) -> Explorer:
    options.setdefault("curator", "Ana García")
    return Explorer.open(ExplorerConfig(store=graph["store"], images=(graph["images"],), **options))


def client_for(explorer: Explorer, sign_in: bool = True) -> TestClient:
    client = TestClient(create_app(explorer, token=TOKEN))
    if sign_in:
        assert client.get(f"/login?token={TOKEN}").status_code == 200
    return client


def form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'name="(csrf|prediction)" value="([^"]+)"', html))


# ------------------------------------------------------------------ search and facets


def test_facet_counts_follow_the_threshold(explorer_graph: dict) -> None:
    ex = open_explorer(explorer_graph, read_only=True)
    table = ex.table
    low = ex.search(SearchState(threshold=0.0))
    high = ex.search(SearchState(threshold=0.9))
    assert low.total == high.total == explorer_graph["n"]  # no filter: every record

    def colour_counts(page):
        facet = next(f for f in page.facets if f.property == "colour")
        return {v.label: (v.catalogued, v.predicted) for v in facet.values}

    low_counts, high_counts = colour_counts(low), colour_counts(high)
    records = explorer_graph["records"]
    for colour in ("amber", "blue", "green"):
        assert low_counts[colour][0] == (records["colour"] == colour).sum()  # catalogued
    assert sum(p for _, p in low_counts.values()) == explorer_graph["n"]  # every prediction
    expected_high = int((table.pred_conf >= 0.9).sum())
    assert sum(p for _, p in high_counts.values()) == expected_high < explorer_graph["n"]
    # the confidences behind the histogram are those of the results' predictions
    assert len(low.confidences) == explorer_graph["n"]


def test_filters_sources_and_narrower_concepts(explorer_graph: dict) -> None:
    ex = open_explorer(explorer_graph, read_only=True)
    records = explorer_graph["records"]
    amber = (("colour", COLOUR + "amber"),)
    catalogued = ex.search(SearchState(filters=amber, source="catalogued"))
    assert catalogued.total == (records["colour"] == "amber").sum()
    predicted = ex.search(SearchState(filters=amber, source="predicted", threshold=0.0))
    both = ex.search(SearchState(filters=amber, threshold=0.0))
    ids = lambda page: {c.id for c in page.records}  # noqa: E731
    assert ids(both) == ids(catalogued) | ids(predicted)
    # silk includes its narrower concept raw silk (skos:broader in the graph)
    silk = ex.search(SearchState(filters=(("material", MATERIAL + "silk"),)))
    raw = records["material"].isin(["silk", "raw silk"]).sum()
    assert silk.total == raw > (records["material"] == "silk").sum()
    facet = next(f for f in silk.facets if f.property == "material")
    assert {v.label: v.catalogued for v in facet.values}["silk"] == raw  # rolled up
    # two values of one property: either; two properties: both
    either = ex.search(
        SearchState(
            filters=(("colour", COLOUR + "amber"), ("colour", COLOUR + "blue")), source="catalogued"
        )
    )
    assert either.total == records["colour"].isin(["amber", "blue"]).sum()
    narrowed = ex.search(
        SearchState(filters=(*amber, ("museum", BASE + "concept/museum/vam")), source="catalogued")
    )
    want = ((records["colour"] == "amber") & (records["museum"] == "vam")).sum()
    assert narrowed.total == want


def test_free_text_in_every_language(explorer_graph: dict) -> None:
    ex = open_explorer(explorer_graph, read_only=True)
    records = explorer_graph["records"]
    english = ex.search(SearchState(text="textile sample"))
    assert english.total == (records["text_en"] != "").sum()
    spanish = ex.search(SearchState(text="tecnica"))  # no accent typed: técnica still found
    assert spanish.total == explorer_graph["n"]
    assert ex.search(SearchState(text="amb")).total >= 1  # the last word is a prefix
    # catalogued concepts are found by their labels, in every language; predictions are not
    assert ex.search(SearchState(text="wool")).total == (records["material"] == "wool").sum()
    assert ex.search(SearchState(text="ámbar")).total == (records["colour"] == "amber").sum()
    for hostile in ['"', "NEAR(a b)", "*", "colour:amber", "a' OR 1=1 --", "\\", "AND OR NOT"]:
        ex.search(SearchState(text=hostile))  # plain words, never FTS5 syntax errors
    assert fts_query('say "hi" now') == '"say" "hi" "now"*'
    assert fts_query("hello a") == '"hello" "a"'  # a short last word is not a prefix
    assert fts_query("  ") is None


def test_sorting_paging_and_permalinks(explorer_graph: dict) -> None:
    ex = open_explorer(explorer_graph, read_only=True)
    ex_small = Explorer(
        ExplorerConfig(store=explorer_graph["store"], read_only=True, page_size=5),
        ex.graph, ex.table, ex.text,
    )  # fmt: skip
    first = ex_small.search(SearchState(sort="confidence"))
    conf = [c.min_confidence for c in first.records]
    assert conf == sorted(conf) and first.pages == -(-explorer_graph["n"] // 5)
    last = ex_small.search(SearchState(sort="-confidence", page=99))
    assert last.state.page == last.pages  # past the end: the last page
    state = SearchState(
        text="textile", filters=(("colour", COLOUR + "amber"),), threshold=0.75,
        source="predicted", sort="-confidence", page=2, language="es",
    )  # fmt: skip
    from starlette.datastructures import QueryParams

    assert SearchState.from_params(QueryParams(state.params())) == state
    # malformed parameters fall back to defaults instead of failing the page
    odd = SearchState.from_params(QueryParams("t=abc&page=-3&sort=evil&source=x&f=nopipe"))
    assert odd == SearchState()


def test_sparql_link_matches_the_results(explorer_graph: dict) -> None:
    ex = open_explorer(explorer_graph, read_only=True)
    state = SearchState(filters=(("material", MATERIAL + "silk"),), threshold=0.5)
    found = ex.graph.select(ex.sparql(state))
    assert sorted(found["record"]) == sorted(
        c.id for c in Explorer(
            ExplorerConfig(store=explorer_graph["store"], read_only=True, page_size=1000),
            ex.graph, ex.table, ex.text,
        ).search(state).records
    )  # fmt: skip
    hostile = SearchState(text='x" } ; DROP ALL ; SELECT * { "\\\n<a>')
    ex.graph.select(ex.sparql(hostile))  # escaped: still one valid query


def test_pages_render_with_charts_and_languages(explorer_graph: dict) -> None:
    ex = open_explorer(explorer_graph, read_only=True)
    client = client_for(ex, sign_in=False)
    page = client.get("/", params={"t": "0.6", "f": f"colour|{COLOUR}amber"})
    assert page.status_code == 200
    assert page.text.count("<svg") >= 2  # a histogram and a bar chart per facet
    assert "catalogued vs predicted" in page.text
    spanish = client.get("/", params={"lang": "es"})
    assert "Buscar" in spanish.text and "ámbar" in spanish.text  # interface and label in es
    english = client.get("/")
    assert "ámbar" not in english.text and "amber" in english.text  # fallback label
    sparql = client.get("/sparql", params={"q": "silk", "f": f"material|{MATERIAL}silk"})
    assert "SELECT DISTINCT ?record" in sparql.text
    assert client.get("/sparql", params={"object": explorer_graph["ids"][0]}).status_code == 200
    assert client.get("/object", params={"id": "no such record"}).status_code == 404
    assert client.get("/similar", params={"id": explorer_graph["ids"][0]}).status_code == 404


# ------------------------------------------------------------------ object page


def test_object_page_marks_suggestions_and_shows_provenance(explorer_graph: dict) -> None:
    ex = open_explorer(explorer_graph, read_only=True)
    record = explorer_graph["ids"][0]
    view = ex.record(record)
    fields = {f.property: f for f in view.fields}
    assert fields["colour"].catalogued == ["amber"]  # catalogued beside the prediction
    prediction = fields["colour"].predictions[0]
    assert len(prediction.alternatives) == 2 and prediction.modalities == "image+tfidf"
    assert prediction.activity["sha256"] == "ab" * 32
    assert prediction.activity["modelLabel"] == "colour-model"
    assert prediction.activity["software"].startswith("heritage")
    assert view.images == [(0, record)]
    html = client_for(ex, sign_in=False).get("/object", params={"id": record}).text
    assert "machine suggestion" in html and "ab" * 32 in html and "image+tfidf" in html
    assert "2026-12-01T09:00:00Z" in html
    assert 'action="/review' not in html  # read-only: no review forms
    spanish = ex.record(record, "es")
    assert spanish.texts[0][1] == "es"  # the chosen language's text first


# ------------------------------------------------------------------ reviews


def _triples(store: Path, graph: str | None = None) -> set:
    kg = KnowledgeGraph(store, read_only=True)
    quads = kg._store.quads_for_pattern(None, None, None, None)
    return {
        (str(q.subject), str(q.predicate), str(q.object))
        for q in quads
        if (graph is None and str(q.graph_name) == "DEFAULT")
        or (graph is not None and str(q.graph_name) == f"<{graph}>")
    }


def test_reviews_are_provenance_and_never_edit_the_graph(explorer_copy: dict) -> None:
    store = explorer_copy["store"]
    before = _triples(store)
    ex = open_explorer(explorer_copy)
    client = client_for(ex)
    ids = explorer_copy["ids"]
    decisions = [("accepted", ""), ("rejected", ""), ("corrected", "blue")]
    for record, (decision, value) in zip(ids[:3], decisions, strict=True):
        page = client.get("/object", params={"id": record})
        fields = form_fields(page.text)
        reply = client.post(
            "/review",
            data={**fields, "decision": decision, "value": value, "back": f"/object?id={record}"},
            follow_redirects=False,
        )
        assert reply.status_code == 303, reply.text
        assert ex.table.prediction_index(fields["prediction"]) is not None
        assert "Reviewed" in client.get("/object", params={"id": record}).text
    ex.close()
    assert _triples(store) == before  # the default graph: suggestions and catalogue untouched
    reviews = _triples(store, BASE + "graph/reviews")
    activities = {s for s, p, o in reviews if o == "<https://w3id.org/heritage/ns#Review>"}
    assert len(activities) == 3
    assert any("Ana García" in o for _, _, o in reviews)  # the curator, named at start
    table = read_reviews(KnowledgeGraph(store, read_only=True))
    assert list(table["decision"]) == ["accepted", "corrected"]  # rejected: no label
    corrected = table[table["decision"] == "corrected"].iloc[0]
    assert corrected["value"] == "blue" and corrected["reviewer"] == "Ana García"
    assert corrected["record"] == ids[2] and corrected["property"] == "colour"
    # a reopened explorer knows the reviews (queue and object page)
    again = open_explorer(explorer_copy)
    _, left = again.queue()  # the queue holds the gaps' predictions not yet reviewed
    assert left == len(explorer_copy["gaps"] - set(ids[:3]))
    assert len(again.reviews_of(corrected["prediction"])) == 1


def test_review_values_are_data_not_code(explorer_copy: dict) -> None:
    ex = open_explorer(explorer_copy)
    prediction = ex.table.pred_uri[0]
    hostile = 'blue" . } ; INSERT DATA { <a> <b> <c> } # <x> \\ \n newline'
    ex.review(prediction, "corrected", hostile)
    ex.review(prediction, "corrected", "<script>alert(1)</script>")
    rows = ex.graph.select(reviews_query(ex.review_graph), typed=False)
    labels = set(rows["valueLabel"])
    assert " ".join(hostile.split()) in labels and "<script>alert(1)</script>" in labels
    predicates = ex.graph.select(
        f"SELECT DISTINCT ?p WHERE {{ GRAPH <{ex.review_graph}> {{ ?s ?p ?o }} }}"
    )["p"]
    allowed = ("http://www.w3.org/", "https://w3id.org/heritage/ns#")
    assert all(p.startswith(allowed) for p in predicates)  # nothing injected
    html = client_for(ex).get("/object", params={"id": ex.table.record_ids[ex.table.pred_rec[0]]})
    assert "<script>alert(1)</script>" not in html.text  # escaped on the page
    with pytest.raises(ExplorerError, match="corrected value"):
        ex.review(prediction, "corrected", "   ")
    with pytest.raises(ExplorerError, match="decision"):
        ex.review(prediction, "deleted")
    with pytest.raises(ExplorerError, match="no prediction"):
        ex.review(BASE + "prediction/none", "accepted")


def test_review_queue_least_confident_first(explorer_copy: dict) -> None:
    ex = open_explorer(explorer_copy)
    items, left = ex.queue()
    assert left == len(explorer_copy["gaps"]) < explorer_copy["n"]  # catalogued ones: not asked
    assert {i.record for i in items} <= explorer_copy["gaps"]
    conf = [i.confidence for i in items]
    assert conf == sorted(conf)
    ex.review(items[0].prediction, "accepted")
    after, left_after = ex.queue()
    assert left_after == left - 1 and after[0].prediction != items[0].prediction
    amber, n_amber = ex.queue("colour", COLOUR + "amber")
    assert {i.value for i in amber} == {"amber"} and 0 < n_amber < left
    assert ex.queue("material")[1] == 0  # nothing predicted there
    html = client_for(ex).get("/queue", params={"property": "colour"}).text
    assert "Review queue" in html and "machine suggestion" in html
    assert f'value="{COLOUR}amber"' in html  # the value filter of the chosen property
    amber_page = client_for(ex).get(
        "/queue", params={"property": "colour", "value": COLOUR + "amber"}
    )
    assert f'<b id="left">{n_amber}</b>' in amber_page.text


def test_review_needs_token_csrf_and_write_access(explorer_copy: dict) -> None:
    ex = open_explorer(explorer_copy)
    record = explorer_copy["ids"][0]
    anonymous = client_for(ex, sign_in=False)
    page = anonymous.get("/object", params={"id": record})
    assert 'action="/review' not in page.text  # no form before signing in
    csrf = anonymous.cookies.get("heritage_csrf")
    prediction = ex.table.pred_uri[0]
    data = {"prediction": prediction, "decision": "accepted", "csrf": csrf}
    assert anonymous.post("/review", data=data).status_code == 403  # no token
    assert client_for(ex, sign_in=False).get("/login?token=wrong").status_code == 403
    signed = client_for(ex)
    signed.get("/object", params={"id": record})
    assert signed.post("/review", data={**data, "csrf": "forged"}).status_code == 403
    no_cookie = client_for(ex)
    no_cookie.cookies.delete("heritage_csrf")
    assert no_cookie.post("/review", data=data).status_code == 403
    assert ex.queue()[1] == len(explorer_copy["gaps"])  # none of those got through
    read_only = open_explorer(explorer_copy, read_only=True)
    with pytest.raises(ExplorerError, match="read-only"):
        read_only.review(prediction, "accepted")


# ------------------------------------------------------------------ images and uploads


def test_images_only_from_their_roots(explorer_graph: dict, tmp_path: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(explorer_graph["images"], images)
    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4)).save(secret)
    (images / "link.png").symlink_to(secret)
    (images / "notes.txt").write_text("not an image")
    ex = Explorer.open(
        ExplorerConfig(store=explorer_graph["store"], images=(images,), read_only=True)
    )
    client = client_for(ex, sign_in=False)
    good = explorer_graph["ids"][0]
    assert client.get(f"/image/0/{good}").status_code == 200
    thumb = client.get(f"/thumb/0/{good}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    for bad in (
        "../secret.png",
        "%2e%2e/secret.png",
        "amber/%2e%2e/%2e%2e/secret.png",
        "..%2fsecret.png",
        "%2Fetc%2Fpasswd",
        str(secret),
        "link.png",
        "notes.txt",
        "amber/missing.png",
    ):
        for kind in ("image", "thumb"):
            assert client.get(f"/{kind}/0/{bad}").status_code == 404, (kind, bad)
    assert client.get(f"/image/1/{good}").status_code == 404  # no second root
    assert client.get(f"/image/-1/{good}").status_code in (404, 422)


def test_uploads_are_checked_before_decoding() -> None:
    small = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(small, "PNG")
    check_upload(small.getvalue())
    with pytest.raises(UploadError, match="empty"):
        check_upload(b"")
    with pytest.raises(UploadError, match="limit"):
        check_upload(small.getvalue(), limit=10)
    with pytest.raises(UploadError, match="not an image"):
        check_upload(b"GIF89a this is not really an image")
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, "PNG")  # 144 Mpx, a few kB on disk
    assert len(bomb.getvalue()) < 200_000
    with pytest.raises(UploadError, match=r"pixels|too large"):
        check_upload(bomb.getvalue())


@pytest.fixture(scope="module")
def image_index(explorer_graph: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `heritage index build` of the collection (pretrained EfficientNet-Lite0)."""
    from heritage.similarity import build_index

    folder = tmp_path_factory.mktemp("index") / "index"
    cache = tmp_path_factory.mktemp("features")
    build_index(explorer_graph["images"], folder, cache_dir=cache)
    return folder


def test_similar_objects_and_search_by_image(explorer_graph: dict, image_index: Path) -> None:
    ex = open_explorer(explorer_graph, read_only=True, index=image_index)
    record = explorer_graph["ids"][0]
    assert ex.record(record).in_index
    hits = ex.similar(record, k=5)
    assert len(hits) == 5 and record not in {h.id for h in hits}
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert all(h.in_graph and h.image is not None for h in hits)
    client = client_for(ex, sign_in=False)
    page = client.get("/similar", params={"id": record})
    assert page.status_code == 200 and "/thumb/0/" in page.text
    csrf = client.cookies.get("heritage_csrf")
    upload = (explorer_graph["images"] / record).read_bytes()
    found = client.post(
        "/similar", data={"csrf": csrf}, files={"image": ("q.png", upload, "image/png")}
    )
    assert found.status_code == 200
    first = re.search(r'class="rid">([^<]+)<', found.text).group(1)
    assert first == record  # the uploaded file is nearest to itself
    assert (
        client.post(
            "/similar", data={"csrf": "forged"}, files={"image": ("q.png", upload, "image/png")}
        ).status_code
        == 403
    )
    junk = client.post("/similar", data={"csrf": csrf}, files={"image": ("q.png", b"junk", "x")})
    assert junk.status_code == 400 and "not an image" in junk.text


# ------------------------------------------------------------------ start-up and cache


def test_tables_are_cached_until_the_next_load(explorer_copy: dict, tmp_path: Path) -> None:
    first = open_explorer(explorer_copy, read_only=True)
    cache = Path(str(explorer_copy["store"]) + ".explorer")
    assert (cache / "facets.json").is_file() and (cache / "text.sqlite").is_file()
    stamp = (cache / "facets.json").stat().st_mtime_ns
    second = open_explorer(explorer_copy, read_only=True)
    assert (cache / "facets.json").stat().st_mtime_ns == stamp  # reused
    np.testing.assert_array_equal(first.table.fact_pv, second.table.fact_pv)
    extra = tmp_path / "more.nt"
    record = f"{BASE}object/new-record"
    extra.write_text(
        f"<{record}> <http://www.w3.org/1999/02/22-rdf-syntax-ns#type> "
        "<https://w3id.org/heritage/ns#Record> .\n"
        f'<{record}> <http://purl.org/dc/terms/identifier> "new-record" .\n'
    )
    kg = KnowledgeGraph(explorer_copy["store"])
    kg.load(extra)
    del kg
    third = open_explorer(explorer_copy, read_only=True)
    assert third.table.record_index("new-record") is not None  # rebuilt after the load


def test_bad_configuration_is_explained(tmp_path: Path, explorer_graph: dict) -> None:
    with pytest.raises(ExplorerError, match="store"):
        ExplorerConfig()
    with pytest.raises(FileNotFoundError, match="kg load"):
        Explorer.open(ExplorerConfig(store=tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="image folder"):
        Explorer.open(
            ExplorerConfig(store=explorer_graph["store"], images=(tmp_path / "x",), read_only=True)
        )


def test_cli_reviews_export(explorer_copy: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from heritage.cli import app

    ex = open_explorer(explorer_copy)
    ex.review(ex.table.pred_uri[0], "corrected", "green")
    ex.close()
    out = tmp_path / "reviewed.csv"
    result = CliRunner().invoke(
        app, ["kg", "reviews", "--store", str(explorer_copy["store"]), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(table["value"]) == ["green"] and table["reviewer"].iloc[0] == "Ana García"
    assert "1 corrected" in result.output
    missing = CliRunner().invoke(app, ["kg", "reviews", "--store", str(tmp_path / "no")])
    assert missing.exit_code == 2 and "no store" in missing.output


def test_explore_cli_refuses_a_missing_store(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from heritage.cli import app

    result = CliRunner().invoke(app, ["explore", "--store", str(tmp_path / "none")])
    assert result.exit_code == 2 and "kg load" in result.output
    assert not (tmp_path / "none").exists()


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_image_roots_resolve_absolute_names_inside(explorer_graph: dict) -> None:
    from heritage.explore.images import ImageRoots

    roots = ImageRoots((explorer_graph["images"],))
    record = explorer_graph["ids"][0]
    assert roots.locate(record) == (0, record)
    assert roots.locate(str(explorer_graph["images"] / record)) == (0, record)
    assert roots.locate("/etc/passwd") is None


def test_a_correction_in_the_browser_changes_the_next_fit(explorer_copy: dict) -> None:
    """Close the loop: review in the web app → `heritage kg reviews` → the records table that
    `heritage metadata fit --extra-labels` trains on."""
    from typer.testing import CliRunner

    from heritage.cli import app
    from heritage.metadata import RecordSpec, RecordTable

    records = explorer_copy["records"]
    gap = records.index[records["colour"] == ""][0]
    record = records.at[gap, "record"]
    ex = open_explorer(explorer_copy)
    client = client_for(ex)
    fields = form_fields(client.get("/object", params={"id": record}).text)
    reply = client.post(
        "/review",
        data={**fields, "decision": "corrected", "value": "blue", "back": "/"},
        follow_redirects=False,
    )
    assert reply.status_code == 303
    ex.close()
    out = explorer_copy["store"].parent / "reviewed.csv"
    result = CliRunner().invoke(
        app, ["kg", "reviews", "--store", str(explorer_copy["store"]), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    spec = RecordSpec.infer(records.columns, ["colour"], id_column="record")
    before = RecordTable.from_frame(records, spec, source="records")
    after, report = before.with_extra_labels(out)
    assert report.filled == 1
    changed = after.frame["colour"] != before.frame["colour"]
    assert changed.sum() == 1
    assert after.frame.loc[changed, "record"].item() == record
    assert after.frame.loc[changed, "colour"].item() == "blue"


def test_the_same_pages_over_a_sparql_server(explorer_graph: dict, tmp_path: Path) -> None:
    """`--endpoint URL`: Virtuoso serves the graph; facets, records and reviews agree with
    the embedded store (skips where virtuoso-t is not installed)."""
    from heritage.kg.virtuoso import VirtuosoServer, virtuoso_executable

    if virtuoso_executable() is None:
        pytest.skip("virtuoso-t not installed (apt-get install virtuoso-opensource)")
    dump = KnowledgeGraph(explorer_graph["store"], read_only=True).dump(tmp_path / "graph.nt")
    embedded = open_explorer(explorer_graph, read_only=True)
    with VirtuosoServer(memory_mb=128) as server:
        server.endpoint().push(dump, graph=BASE + "graph/data")
        remote = Explorer.open(
            ExplorerConfig(
                endpoint=f"{server.url}/sparql", endpoint_user="dba", endpoint_password="dba",
                curator="Ana García", cache=tmp_path / "cache",
            )
        )  # fmt: skip
        state = SearchState(filters=(("material", MATERIAL + "silk"),), threshold=0.6)
        ours, theirs = embedded.search(state), remote.search(state)
        assert ours.total == theirs.total
        assert [f.property for f in ours.facets] == [f.property for f in theirs.facets]
        record = explorer_graph["ids"][0]
        assert [f.catalogued for f in embedded.record(record).fields] == [
            f.catalogued for f in remote.record(record).fields
        ]
        remote.review(remote.table.pred_uri[0], "corrected", "blue")
        table = read_reviews(server.endpoint())
        assert list(table["value"]) == ["blue"]


# ------------------------------------------------------------------ reviewer findings


def _amber_prediction(ex: Explorer) -> str:
    """A prediction whose value is amber: a concept labelled in English and in Spanish."""
    k = ex.table.values.index(("colour", COLOUR + "amber"))
    return next(u for u, pv in zip(ex.table.pred_uri, ex.table.pred_pv, strict=True) if pv == k)


def test_reviews_export_the_catalogues_spelling(explorer_copy: dict) -> None:
    """An accepted amber exports "amber" (the catalogue's untagged label), not the Spanish
    "ámbar"; a correction typed "Blue " joins the class blue, not a new one."""
    from heritage.metadata import RecordSpec, RecordTable

    ex = open_explorer(explorer_copy)
    amber = _amber_prediction(ex)
    ex.review(amber, "accepted")
    other = next(u for u in ex.table.pred_uri if u != amber)
    ex.review(other, "corrected", "Blue ")
    table = read_reviews(ex.graph)
    assert "ámbar" not in set(table["value"])
    assert table.loc[table["prediction"] == amber, "value"].item() == "amber"
    out = explorer_copy["store"].parent / "reviewed.csv"
    table.to_csv(out, index=False)
    records = explorer_copy["records"]
    spec = RecordSpec.infer(records.columns, ["colour"], id_column="record")
    after, _ = RecordTable.from_frame(records, spec, source="records").with_extra_labels(out)
    assert set(after.frame["colour"]) - {""} == {"amber", "blue", "green"}  # no "Blue "


def test_reloaded_reviews_show_no_nan(explorer_copy: dict) -> None:
    ex = open_explorer(explorer_copy)
    ex.review(ex.table.pred_uri[0], "accepted")  # no corrected value
    ex.close()
    again = open_explorer(explorer_copy)
    (review,) = again.reviews_of(again.table.pred_uri[0])
    assert all(v is None or v == v for v in review.values())  # no NaN
    record = again.table.record_ids[again.table.pred_rec[0]]
    html = client_for(again).get("/object", params={"id": record}).text
    assert "nan" not in re.sub(r"<[^>]+>", " ", html).split()


def test_a_filtered_property_still_offers_its_other_values(explorer_graph: dict) -> None:
    """Values of one property are alternatives (OR), so choosing amber must leave blue and
    green on offer with the counts they would add, not zero."""
    ex = open_explorer(explorer_graph, read_only=True)
    records = explorer_graph["records"]
    page = ex.search(SearchState(filters=(("colour", COLOUR + "amber"),), source="catalogued"))
    facet = next(f for f in page.facets if f.property == "colour")
    counts = {v.label: v.catalogued for v in facet.values}
    for colour in ("blue", "green"):
        assert counts[colour] == (records["colour"] == colour).sum() > 0
    # another property's counts are narrowed by the colour filter
    museum = next(f for f in page.facets if f.property == "museum")
    assert sum(v.catalogued for v in museum.values) == page.total


def test_interface_language_follows_the_datas_tags(explorer_graph: dict) -> None:
    ex = open_explorer(explorer_graph, read_only=True)
    client = client_for(ex)
    html = client.get("/", params={"lang": "es"}).text
    assert "ámbar" in html  # the concept's Spanish label
    english = client.get("/", params={"lang": "en"}).text
    assert "ámbar" not in english and "amber" in english
    # a language of the data without interface strings: its labels, English strings
    assert "es" in ex.table.languages and "en" in ex.table.languages


def test_filter_values_may_hold_the_separator(explorer_graph: dict) -> None:
    from starlette.datastructures import QueryParams

    state = SearchState.from_params(QueryParams("f=note|a|b&f=broken&f=|x"))
    assert state.filters == (("note|a", "b"),)


def test_bad_confidences_and_odd_image_names_do_not_break_pages(
    explorer_copy: dict, tmp_path: Path
) -> None:
    """A graph written by another tool: a confidence that is not a number, an alternative
    without one; an image file whose name needs escaping in a URL."""
    kg = KnowledgeGraph(explorer_copy["store"])
    prediction = kg.select(
        "PREFIX her: <https://w3id.org/heritage/ns#> "
        "SELECT ?p WHERE { ?p a her:Prediction } ORDER BY ?p LIMIT 1"
    )["p"][0]
    extra = tmp_path / "odd.nt"
    extra.write_text(
        f'<{prediction}> <https://w3id.org/heritage/ns#confidence> "high" .\n'
        f"<{prediction}> <https://w3id.org/heritage/ns#alternative> <{BASE}alt/odd> .\n"
        f"<{BASE}alt/odd> <https://w3id.org/heritage/ns#value> <{COLOUR}blue> .\n"
        f'<{BASE}alt/odd> <https://w3id.org/heritage/ns#confidence> "n/a" .\n'
        f'<{BASE}alt/odd> <https://w3id.org/heritage/ns#rank> "9" .\n'
    )
    kg.load(extra, fmt="nt")
    kg.flush()
    del kg
    ex = open_explorer(explorer_copy)
    record = ex.table.record_ids[ex.table.pred_rec[ex.table.prediction_index(prediction)]]
    reply = client_for(ex).get("/object", params={"id": record})
    assert reply.status_code == 200, reply.text
    assert "n/a" not in reply.text
    # image names with a space, '#' and '?': the templates' urlencode makes a URL the
    # image route reads back
    from jinja2 import Environment

    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "odd name #1?.png")
    url = Environment().from_string("/thumb/0/{{ p|urlencode }}").render(p="odd name #1?.png")
    assert " " not in url and "#" not in url and "?" not in url
    ex.close()
    odd = Explorer.open(ExplorerConfig(store=explorer_copy["store"], images=(root,)))
    thumb = client_for(odd).get(url)
    assert thumb.status_code == 200 and thumb.headers["content-type"].startswith("image/")
