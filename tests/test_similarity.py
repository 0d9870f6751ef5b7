"""Tests for heritage.similarity: triplet tables, agreement, learnt heads, context models,
ensembles, the FAISS index and the similarity commands (small generated data; the real
material-similarity set only in the slow test)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from heritage.similarity import (
    EmbeddingConfig,
    HeadConfig,
    ImageEmbedder,
    ItemTable,
    MajorityVote,
    ReliabilityConfig,
    ReliabilityWeighted,
    SimilarityConfig,
    SimilarityIndex,
    SimilarityModel,
    TripletEmbedding,
    TripletError,
    TripletTable,
    agreement,
    list_images,
    margins_from_embeddings,
    search_similar,
)
from heritage.similarity.contexts import contexts_from_clusters
from heritage.similarity.ensemble import Member

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "material-similarity"
ENV = {"COLUMNS": "200", "HERITAGE_NO_PROGRESS": "1"}


def _frame(rows: list[tuple], columns=("reference", "closer", "farther")) -> pd.DataFrame:
    return pd.DataFrame([[str(v) for v in r] for r in rows], columns=list(columns))


def _synthetic_triplets(
    truth: np.ndarray, n: int, seed: int, items: np.ndarray | None = None
) -> TripletTable:
    """Triplets answered by Euclidean distance in ``truth`` (one row per item), 5 votes each,
    unanimous; ``items`` restricts which items take part."""
    rng = np.random.default_rng(seed)
    pool = np.arange(len(truth)) if items is None else np.asarray(items)
    rows = []
    while len(rows) < n:
        r, a, b = rng.choice(pool, 3, replace=False)
        da, db = np.sum((truth[r] - truth[a]) ** 2), np.sum((truth[r] - truth[b]) ** 2)
        closer, farther = (a, b) if da < db else (b, a)
        rows.append((r, closer, farther, 5, 0))
    frame = _frame(rows, ("reference", "closer", "farther", "votes_closer", "votes_farther"))
    return TripletTable.from_frame(frame, [str(i) for i in range(len(truth))])


# ---------------------------------------------------------------------- triplet tables
def test_triplet_table_loads_votes_context_and_item_order(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "reference,closer,farther,votes_closer,votes_farther,task\n"
        "2,10,1,3,1,colour\n1,2,10,1,1,shape\n10,1,2.0,2,0,colour\n"
    )
    t = TripletTable.from_csv(path, context_column="task")
    assert t.items == ("1", "2", "10")  # numeric ids in numeric order
    assert list(t.reference) == [1, 0, 2]
    assert list(t.farther) == [0, 2, 1]  # "2.0" is item 2
    assert list(t.clear) == [True, False, True]
    assert t.vote_share[0] == pytest.approx(0.75)
    assert t.contexts() == ["colour", "shape"]
    train, val = t.split(1 / 3, seed=0)
    assert len(train) == 2 and len(val) == 1 and train.items == t.items


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("reference,closer\n1,2\n", "missing column(s) 'farther'"),
        ("reference,closer,farther\n1,1,2\n", "row 1: reference and closer are the same"),
        ("reference,closer,farther\n1,2,3\n1,2,9\n", "row 2: unknown farther id '9'"),
        ("reference,closer,farther,votes_closer,votes_farther\n1,2,3,-1,0\n", "negative"),
        ("reference,closer,farther,votes_closer,votes_farther\n1,2,3,1,2\n", "swap closer"),
        ("reference,closer,farther,votes_closer,votes_farther\n1,2,3,x,0\n", "not a number"),
        ("reference,closer,farther,votes_closer,votes_farther\n1,2,3,0,0\n", "no votes"),
        ("reference,closer,farther,votes_closer,votes_farther\n1,2,3,1.5,0\n", "whole number"),
        ("reference,closer,farther,votes_closer\n1,2,3,1\n", "'votes_farther'"),
        ("reference,closer,farther\n1,,3\n", "row 1: empty 'closer'"),
    ],
)
def test_triplet_validation_names_the_problem(tmp_path: Path, csv: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(csv)
    with pytest.raises(TripletError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TripletTable.from_csv(path, items=["1", "2", "3"])


def test_context_values_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("reference,closer,farther,ctx\n1,2,3,colour\n2,3,1,\n3,1,2,colur\n")
    with pytest.raises(TripletError) as info:
        TripletTable.from_csv(path, context_column="ctx", contexts=["colour", "shape"])
    assert "row 2: empty context" in str(info.value)
    assert "row 3: context 'colur' is not one of" in str(info.value)
    with pytest.raises(TripletError, match="missing column"):
        TripletTable.from_csv(path, context_column="kind")
    with pytest.raises(FileNotFoundError):
        TripletTable.from_csv(tmp_path / "nope.csv")


def test_agreement_by_hand() -> None:
    # items on a line at 0, 1, 3, 3 (items 2 and 3 coincide)
    emb = np.array([[0.0], [1.0], [3.0], [3.0]])
    frame = _frame(
        [(0, 1, 2, 3, 0), (0, 2, 1, 2, 1), (1, 2, 3, 1, 1), (2, 3, 0, 4, 0)],
        ("reference", "closer", "farther", "votes_closer", "votes_farther"),
    )
    t = TripletTable.from_frame(frame, ["0", "1", "2", "3"])
    margins = margins_from_embeddings(emb, t, metric="euclidean")
    np.testing.assert_allclose(margins, [9 - 1, 1 - 9, 4 - 4, 9 - 0])
    a = agreement(margins, t)
    # right, wrong, tie (half), right -> 2.5 / 4; clear ones: rows 1, 2, 4 -> 2 / 3
    assert a.all == pytest.approx(0.625) and a.clear == pytest.approx(2 / 3)
    assert (a.n, a.n_clear) == (4, 3)


# ---------------------------------------------------------------------- learnt heads
@pytest.fixture(scope="module")
def misleading_space() -> dict:
    """60 items whose judgements follow a 2-D latent layout, but whose features are dominated
    by 8 nuisance dimensions: the raw (pretrained-like) space answers close to chance."""
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(60, 2))
    nuisance = rng.normal(size=(60, 8)) * 4.0
    mix = np.linalg.qr(rng.normal(size=(10, 10)))[0]
    features = np.concatenate([latent, nuisance], axis=1) @ mix
    return {
        "features": features.astype(np.float32),
        "latent": latent,
        "train": _synthetic_triplets(latent, 1500, seed=1),
        "test": _synthetic_triplets(latent, 500, seed=2),
    }


def test_head_learns_what_the_raw_space_gets_wrong(misleading_space: dict) -> None:
    s = misleading_space
    raw = agreement(margins_from_embeddings(s["features"], s["test"]), s["test"]).all
    train, val = s["train"].split(0.2, seed=0)
    model = TripletEmbedding(HeadConfig(dim=4, epochs=100, lr=3e-2, eval_every=10)).fit(
        train, s["features"], val=val
    )
    learnt = model.agreement(s["test"], s["features"]).all
    assert raw < 0.75
    assert learnt > 0.9 and learnt > raw + 0.2
    assert model.best_epoch_ % 10 == 0 and "val_agreement" in model.history_[-1]
    emb = model.transform(s["features"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_triplet_loss_and_minibatches_also_learn(misleading_space: dict) -> None:
    s = misleading_space
    cfg = HeadConfig(dim=4, epochs=30, loss="triplet", batch_size=256, lr=1e-2)
    model = TripletEmbedding(cfg).fit(s["train"], s["features"])
    assert model.agreement(s["test"], s["features"]).all > 0.85


def test_head_save_load_round_trip(misleading_space: dict, tmp_path: Path) -> None:
    s = misleading_space
    model = TripletEmbedding(HeadConfig(dim=4, epochs=5, hidden=8)).fit(s["train"], s["features"])
    model.save(tmp_path, "m")
    again = TripletEmbedding.load(tmp_path, "m")
    np.testing.assert_allclose(again.transform(s["features"]), model.transform(s["features"]))


def test_config_and_input_errors(misleading_space: dict) -> None:
    with pytest.raises(ValueError, match="loss"):
        HeadConfig(loss="hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tune_stages"):
        TripletEmbedding(HeadConfig(tune_stages=1))
    with pytest.raises(ValueError, match="one row per item"):
        TripletEmbedding().fit(misleading_space["train"], misleading_space["features"][:10])


# ---------------------------------------------------------------------- ensembles
@pytest.fixture(scope="module")
def two_regions() -> dict:
    """Two regions of 20 items. Member ``a`` sees region 0 as people do and region 1 as noise;
    member ``b`` the other way round. Judgements stay within a region."""
    rng = np.random.default_rng(3)
    n = 40
    region = np.repeat([0, 1], 20)
    offset = np.where(region[:, None] == 0, [[6.0, 0.0]], [[0.0, 6.0]])
    feats = {m: np.concatenate([offset, rng.normal(size=(n, 6))], axis=1) for m in "ab"}
    members = {m: Member(m, f) for m, f in feats.items()}
    emb = {m: feats[m] / np.linalg.norm(feats[m], axis=1, keepdims=True) for m in "ab"}
    # the truth in region 0 is a's geometry, in region 1 b's
    rows = []
    for reg, m in ((0, "a"), (1, "b")):
        pool = np.flatnonzero(region == reg)
        for _ in range(600):
            r, x, y = rng.choice(pool, 3, replace=False)
            dx, dy = 1 - emb[m][r] @ emb[m][x], 1 - emb[m][r] @ emb[m][y]
            rows.append((r, x, y) if dx < dy else (r, y, x))
    order = rng.permutation(len(rows))
    frame = _frame([rows[i] for i in order])
    table = TripletTable.from_frame(frame, [str(i) for i in range(n)])
    val, test = (
        table.subset(np.arange(len(table)) < 600),
        table.subset(np.arange(len(table)) >= 600),
    )
    return {"members": members, "val": val, "test": test, "region": region}


def test_weighting_favours_the_locally_accurate_member(two_regions: dict) -> None:
    d = two_regions
    members = [d["members"]["a"], d["members"]["b"]]
    test = d["test"]
    single = {m.name: m.agreement(test).all for m in members}
    vote = MajorityVote(members).fit(d["val"]).agreement(test).all
    weighted = ReliabilityWeighted(members, ReliabilityConfig(k=30, prior=5)).fit(d["val"])
    score = weighted.agreement(test).all
    assert max(single.values()) < 0.85  # each is right on half the space only
    assert score > 0.95
    assert score > vote + 0.1 and score > max(single.values()) + 0.1
    w = weighted.weights(test)
    in_region0 = d["region"][test.reference] == 0
    assert w[0, in_region0].mean() > 0.8 and w[1, ~in_region0].mean() > 0.8


def test_vote_breaks_ties_with_margins(two_regions: dict) -> None:
    d = two_regions
    members = [d["members"]["a"], d["members"]["b"], d["members"]["a"]]
    vote = MajorityVote(members).fit(d["val"])
    margins = vote.margins(d["test"])
    raw = vote.member_margins(d["test"])
    # three voters, two identical: the vote is member a's answer
    np.testing.assert_array_equal(margins > 0, raw[0] > 0)


# ---------------------------------------------------------------------- context models
def test_clusters_partition_triplets_by_reference(misleading_space: dict) -> None:
    s = misleading_space
    contexts = contexts_from_clusters(s["features"], 3, seed=0, cluster_features=s["latent"])
    masks = np.stack([c.mask(s["train"]) for c in contexts])
    assert (masks.sum(axis=0) == 1).all()  # every triplet in exactly one context


def test_similarity_model_fits_saves_and_reloads(misleading_space: dict, tmp_path: Path) -> None:
    s = misleading_space
    rng = np.random.default_rng(5)
    features = {"x": s["features"], "y": s["features"] + 0.3 * rng.normal(size=(60, 10))}
    config = SimilarityConfig(
        contexts=("groups", "clusters"), n_clusters=2, head=HeadConfig(dim=4, epochs=40, lr=3e-2)
    )
    model = SimilarityModel(config).fit(s["train"], features)
    scores = model.evaluate(s["test"])
    expected = {"pretrained_embedding", "pretrained_x", "pretrained_y", "global_model"}
    expected |= {"context_x", "context_y", "context_cluster0", "context_cluster1"}
    assert expected | {"ensemble_vote", "ensemble_weighted"} == set(scores)
    assert scores["ensemble_weighted"].all > scores["pretrained_embedding"].all + 0.1
    assert set(model.validation()) == set(scores)
    model.save(tmp_path / "m")
    again = SimilarityModel.load(tmp_path / "m", features)
    for method, a in again.evaluate(s["test"]).items():
        assert a.all == pytest.approx(scores[method].all), method


# ---------------------------------------------------------------------- index
def test_incremental_index_equals_one_build(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    ids = [f"img{i}" for i in range(500)]
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    whole = SimilarityIndex(16, "flat").add(vectors, ids)
    part = SimilarityIndex(16, "flat").add(vectors[:300], ids[:300])
    part.save(tmp_path / "idx")
    part = SimilarityIndex.load(tmp_path / "idx").add(vectors[300:], ids[300:])
    a_ids, a_dist = whole.search(queries, 10)
    b_ids, b_dist = part.search(queries, 10)
    assert a_ids == b_ids
    np.testing.assert_allclose(a_dist, b_dist, atol=1e-6)
    # the nearest is exact: cosine distance by brute force
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries[0] / np.linalg.norm(queries[0])
    assert a_ids[0][0] == ids[int(np.argmax(unit @ q))]
    assert a_dist[0][0] == pytest.approx(1 - float(np.max(unit @ q)), abs=1e-5)
    with pytest.raises(ValueError, match="already in the index"):
        part.add(vectors[:1], ["img3"])


def test_ivf_search_finding_fewer_than_k_keeps_ids_and_distances_aligned() -> None:
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(400, 8)).astype(np.float32)
    index = SimilarityIndex(8, "ivf", nprobe=1).add(vectors, map(str, range(400)))
    ids, distances = index.search(vectors[:3], 100)
    assert distances.shape == (3, 100)
    for row, dist in zip(ids, distances, strict=True):
        assert len(row) < 100  # one of 20 cells probed
        assert np.isfinite(dist[: len(row)]).all() and np.isinf(dist[len(row) :]).all()
        assert row[0] in {str(i) for i in range(3)} and dist[0] == pytest.approx(0, abs=1e-5)


def test_ivf_index_finds_clustered_neighbours() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(20, 8)) * 5
    vectors = (centres[rng.integers(0, 20, 2000)] + rng.normal(size=(2000, 8))).astype(np.float32)
    flat = SimilarityIndex(8, "flat").add(vectors, map(str, range(2000)))
    ivf = SimilarityIndex(8, "ivf", nprobe=8).add(vectors, map(str, range(2000)))
    assert ivf.effective_kind() == "ivf"
    a, _ = flat.search(vectors[:50], 5)
    b, _ = ivf.search(vectors[:50], 5)
    recall = np.mean([len(set(x) & set(y)) / 5 for x, y in zip(a, b, strict=True)])
    assert recall > 0.9


# ---------------------------------------------------------------------- images, CLI
COLOURS = [
    (250, 20, 20),
    (220, 40, 30),
    (200, 60, 20),
    (20, 240, 30),
    (40, 200, 60),
    (60, 220, 20),
    (20, 30, 240),
    (40, 60, 210),
    (30, 20, 190),
    (240, 240, 30),
    (210, 220, 60),
    (190, 200, 20),
]


@pytest.fixture(scope="module")
def colour_items(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """12 items, each drawn twice (plain and striped): an item table, triplets answered by
    colour distance, and a folder of the plain images."""
    root = tmp_path_factory.mktemp("colours")
    (root / "plain").mkdir()
    (root / "striped").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, colour in enumerate(COLOURS):
        arr = np.clip(np.asarray(colour) + rng.integers(-10, 11, (48, 48, 3)), 0, 255)
        Image.fromarray(arr.astype(np.uint8)).save(root / "plain" / f"m{i}.png")
        arr[::6] = 255
        Image.fromarray(arr.astype(np.uint8)).save(root / "striped" / f"m{i}.png")
        rows.append({"id": f"m{i}", "plain": f"plain/m{i}.png", "striped": f"striped/m{i}.png"})
    pd.DataFrame(rows).to_csv(root / "items.csv", index=False)
    truth = np.asarray(COLOURS, dtype=float)
    t = _synthetic_triplets(truth, 200, seed=4)
    frame = t.to_frame()
    frame["reference"] = "m" + frame["reference"]
    frame["closer"] = "m" + frame["closer"]
    frame["farther"] = "m" + frame["farther"]
    frame.to_csv(root / "triplets.csv", index=False)
    return {"root": root}


def test_item_table_and_image_listing(colour_items: dict, tmp_path: Path) -> None:
    root = colour_items["root"]
    items = ItemTable.from_csv(root / "items.csv")
    assert items.groups == ["plain", "striped"] and items.ids[0] == "m0"
    assert Path(items.paths("plain")[0]).is_file()
    bad = tmp_path / "items.csv"
    bad.write_text(f"id,img\na,{root}/plain/m0.png\na,{root}/plain/missing.png\n")
    with pytest.raises(TripletError) as info:
        ItemTable.from_csv(bad)
    assert "duplicate id 'a'" in str(info.value) and "row 2: img file not found" in str(info.value)
    listed = list_images(root / "plain")
    assert listed[0][0] == "m0.png" and len(listed) == 12
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"object": ["x", "y"], "image": [f"{root}/plain/m0.png", "m1.png"]}).to_csv(
        manifest, index=False
    )
    with_ids = list_images(manifest, id_column="object")
    assert with_ids[0] == ("x", str((root / "plain" / "m0.png").resolve()))


def test_last_stages_reproduce_frozen_features_and_train(colour_items: dict) -> None:
    paths = [str(p) for p in sorted((colour_items["root"] / "plain").glob("*.png"))]
    embedder = ImageEmbedder(
        EmbeddingConfig(backbone="test_efficientnet", pretrained=False, image_size=32)
    )
    frozen = embedder.features(paths)
    inputs = embedder.stage_inputs(paths, 2)
    stages = embedder.trainable_stages(2)
    stages.eval()
    import torch

    with torch.no_grad():
        np.testing.assert_allclose(stages(inputs).flatten(1).numpy(), frozen, atol=1e-4)
    items = [f"{i}" for i in range(12)]
    t = _synthetic_triplets(np.asarray(COLOURS, float), 100, seed=0)
    assert t.items == tuple(items)
    model = TripletEmbedding(HeadConfig(dim=4, epochs=3, tune_stages=2), stages=stages)
    model.fit(t, inputs)
    assert model.transform(inputs).shape == (12, 4)
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(model.stages_.parameters(), stages.parameters(), strict=True)
    )
    assert changed  # the stages were trained (on a copy: the given module is untouched)


def test_a_saved_model_reopens_with_its_items_features(colour_items: dict, tmp_path: Path) -> None:
    """What `similarity agreement --model` does: features of the model's items, in its order,
    recomputed from the item table with the model's embedding."""
    from heritage.similarity import pretrained_agreement
    from heritage.similarity.model import read_card

    root, cache = colour_items["root"], tmp_path / "cache"
    items = ItemTable.from_csv(root / "items.csv")
    triplets = TripletTable.from_csv(root / "triplets.csv", items.ids)
    embedding = EmbeddingConfig(backbone="test_efficientnet", pretrained=False, image_size=32)
    features = items.features(embedding, cache)
    assert list(features) == ["plain", "striped"] and features["plain"].shape[0] == 12
    reversed_ids = list(reversed(items.ids))
    some = items.features(embedding, cache, reversed_ids, ["striped"])
    np.testing.assert_allclose(some["striped"], features["striped"][::-1], atol=1e-6)
    with pytest.raises(ValueError, match="lacks the model's item ids"):
        items.features(embedding, cache, ["m0", "nobody"])

    config = SimilarityConfig(head=HeadConfig(dim=4, epochs=5))
    SimilarityModel(config, embedding).fit(triplets, features).save(tmp_path / "model")
    assert read_card(tmp_path / "model")["items"] == list(items.ids)
    opened = SimilarityModel.open(tmp_path / "model", items, cache, device="cpu")
    loaded = SimilarityModel.load(tmp_path / "model", features)
    assert opened.evaluate(triplets) == loaded.evaluate(triplets)
    with pytest.raises(FileNotFoundError, match="is not a similarity model"):
        SimilarityModel.open(tmp_path, items, cache)

    scores = pretrained_agreement(items, triplets, embedding, cache)
    assert list(scores) == ["pretrained_plain", "pretrained_striped", "pretrained_embedding"]
    assert scores["pretrained_embedding"] == Member("all", list(features.values())).agreement(
        triplets.with_items(items.ids)
    )


def _invoke(*args: str | Path):
    from heritage.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def test_cli_fit_agreement_index_and_similar(colour_items: dict, tmp_path: Path) -> None:
    root = colour_items["root"]
    cache = tmp_path / "cache"
    common = ["--items", root / "items.csv", "--cache-dir", cache]
    fit = _invoke(
        "similarity", "fit", root / "triplets.csv", *common, "--out", tmp_path / "model",
        "--epochs", "20", "--dim", "8", "--val-fraction", "0.25",
    )  # fmt: skip
    assert fit.exit_code == 0, fit.output
    assert "ensemble_weighted" in fit.output and (tmp_path / "model" / "similarity.json").is_file()
    scored = _invoke(
        "similarity", "agreement", root / "triplets.csv", *common, "--model", tmp_path / "model"
    )
    assert scored.exit_code == 0, scored.output
    assert "global_model" in scored.output and "context_striped" in scored.output
    plain = _invoke("similarity", "agreement", root / "triplets.csv", *common)
    assert plain.exit_code == 0 and "pretrained_embedding" in plain.output

    collection = tmp_path / "collection"
    collection.mkdir()
    for i in range(8):
        (collection / f"m{i}.png").write_bytes((root / "plain" / f"m{i}.png").read_bytes())
    index = tmp_path / "index"
    built = _invoke("index", "build", collection, "--out", index, "--cache-dir", cache)
    assert built.exit_code == 0, built.output
    assert "8 image(s) added" in built.output
    for i in range(8, 12):  # four more images, and one that is not an image
        (collection / f"m{i}.png").write_bytes((root / "plain" / f"m{i}.png").read_bytes())
    (collection / "broken.png").write_text("not an image")
    grown = _invoke("index", "build", collection, "--out", index, "--cache-dir", cache)
    assert grown.exit_code == 0, grown.output
    assert "4 image(s) added, 8 already indexed, 1 skipped; 12" in grown.output
    other = _invoke(
        "index", "build", collection, "--out", index, "--model", tmp_path / "model",
        "--cache-dir", cache,
    )  # fmt: skip
    assert other.exit_code == 2 and "was built with" in other.output

    page = tmp_path / "similar.html"
    query = root / "plain" / "m3.png"
    found = _invoke(
        "similar", query, "--index", index, "--k", "3", "--html", page, "--cache-dir", cache
    )
    assert found.exit_code == 0, found.output
    assert "m3.png" in found.output.split("m3.png", 1)[1]  # its copy is in the table
    assert "the query itself" not in found.output  # a copy, not the query's own file
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 4  # the query + 3 thumbnails
    assert json.loads((index / "index.json").read_text())["count"] == 12
    # a query that is itself in the index comes back first, and says so
    own = _invoke(
        "similar", collection / "m3.png", "--index", index, "--k", "3", "--html", page,
        "--cache-dir", cache,
    )  # fmt: skip
    assert own.exit_code == 0, own.output
    assert "m3.png (the query itself)" in own.output
    assert page.read_text().count("(the query itself)") == 1
    hits = search_similar(collection / "m3.png", index, 3, cache_dir=cache)
    assert hits[0].is_query and hits[0].id == "m3.png" and not any(h.is_query for h in hits[1:])

    # an IVF index that finds fewer than k: hits stay aligned with their distances
    meta = SimilarityIndex.load(index).meta
    dim = SimilarityIndex.load(index).dim
    vectors = np.random.default_rng(0).normal(size=(400, dim)).astype(np.float32)
    sparse = SimilarityIndex(dim, "ivf", nprobe=1, meta=meta).add(vectors, map(str, range(400)))
    sparse.save(tmp_path / "sparse")
    few = search_similar(query, tmp_path / "sparse", 100, cache_dir=cache)
    assert 0 < len(few) < 100 and all(np.isfinite(h.distance) for h in few)


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason=f"needs the dataset at {DATA}")
def test_material_similarity_learnt_beats_pretrained(tmp_path: Path) -> None:
    items = ItemTable.from_csv(DATA / "materials.csv", image_columns=["ennis", "stpeters"])
    train = TripletTable.from_csv(DATA / "triplets_train.csv", items.ids)
    embedder = ImageEmbedder(cache_dir=tmp_path)
    features = {g: embedder.features(items.paths(g)) for g in items.groups}
    config = SimilarityConfig(head=HeadConfig(epochs=100))
    scores = SimilarityModel(config).fit(train, features).validation()
    assert scores["global_model"].all > scores["pretrained_embedding"].all + 0.04
    assert scores["ensemble_weighted"].all > 0.8
