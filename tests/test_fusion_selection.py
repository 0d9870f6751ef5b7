"""Fusion that never loses to its parts (issue 21): the flat modality, the log-linear pool
stacker for many classes, and per-property choice among stackers and single modalities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heritage.evaluation import evaluate
from heritage.metadata import (
    FlatText,
    FusionConfig,
    MetadataPredictor,
    ModalityChoice,
    RecordSpec,
    RecordTable,
    Stacker,
    Targets,
    default_modalities,
)
from heritage.metadata.fusion import STACKER_KINDS, LogLinearPool, stack_features
from heritage.metadata.persist import ArrayStore
from heritage.metadata.predictor import CLEAR_WIN, _clear_winner, _p_better


def many_classes(n_classes: int = 12, per_class: int = 20, seed: int = 0) -> pd.DataFrame:
    """A property with many values that the texts name (with noise) and a tabular field that
    is pure noise: the fusion's best answer is its text input alone, which a stacker with
    a weight per class pair, fitted on a few hundred records, can only do worse than."""
    rng = np.random.default_rng(seed)
    words = [f"w{c:02d}" for c in range(n_classes)]
    rows = []
    for i in range(n_classes * per_class):
        c = i % n_classes
        noise = " ".join(rng.choice(words, 3))
        rows.append(
            {
                "object": f"o{i:05d}",
                "text_en": f"{noise} {words[c]}x{words[c]}" if rng.random() < 0.85 else noise,
                "field": f"f{rng.integers(5)}",
                "kind": f"k{c:02d}",
                "split": ("train", "train", "train", "val", "test")[(i // n_classes) % 5],
            }
        )
    return pd.DataFrame(rows)


def table(df: pd.DataFrame, props: tuple[str, ...] = ("kind",)) -> RecordTable:
    return RecordTable.from_frame(df, RecordSpec.infer(df.columns, list(props), id_column="object"))


def macro_f1(t: RecordTable, proba: np.ndarray, prop: str, classes: list[str]) -> float:
    y = Targets.encode(t, {prop: classes}).codes[prop]
    p = proba.copy()
    p[np.isnan(p).any(axis=1)] = 1.0 / p.shape[1]
    return evaluate(y, p, classes).macro_f1


def test_flat_modality_reads_texts_and_fields_but_never_the_property() -> None:
    rng = np.random.default_rng(1)
    museums = ["vam", "met", "imatex"]
    rows = []
    for i in range(150):
        m = museums[i % 3]
        rows.append(
            {
                "object": f"o{i}",
                "text_en": "" if i % 4 == 0 else " ".join(rng.choice(["silk", "red", "gold"], 3)),
                "museum": m,
                "place": {"vam": "GB", "met": "US", "imatex": "ES"}[m],
                "split": "train" if i % 5 else "test",
            }
        )
    df = pd.DataFrame(rows)
    t = table(df, ("place",))
    assert "flat" in default_modalities(t)
    train, test = t.split("train"), t.split("test")
    flat = FlatText().fit(train, Targets.learn(train))
    classes = Targets.learn(train).classes
    proba = flat.predict_proba(test)["place"]
    assert not np.isnan(proba).any()  # records without text still have their fields
    assert macro_f1(test, proba, "place", classes["place"]) == 1.0  # museum=… decides place
    vocabulary = set(flat.fields_vectoriser_.vocabulary_)
    assert vocabulary == {f"museum={m}" for m in museums}  # the property is no feature
    # saved as data and read back
    arrays = ArrayStore()
    again = FlatText.from_state(flat.state(arrays, "flat"), arrays)
    np.testing.assert_allclose(again.predict_proba(test)["place"], proba)
    # nothing to read: absent
    blank = test.frame.assign(text_en="", museum="")
    empty = flat.predict_proba(RecordTable.from_frame(blank, t.spec, require_properties=False))
    assert np.isnan(empty["place"]).all()


def test_log_linear_pool_learns_whom_to_trust() -> None:
    rng = np.random.default_rng(0)
    k, n = 20, 600
    y = rng.integers(k, size=n)
    good = np.full((n, k), 0.2 / (k - 1))
    good[np.arange(n), y] = 0.8
    noise = rng.dirichlet(np.ones(k), size=n)
    stacker = Stacker("pool", k, modality_dropout=False).fit([good, noise], y)
    w = stacker.model_.weights_
    assert w[0] > 5 * abs(w[1])  # the informative modality gets the weight
    proba = stacker.predict_proba([good, noise])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (proba.argmax(axis=1) == y).mean() > 0.95
    # M + K parameters, whatever the number of classes
    assert len(w) + len(stacker.model_.bias_) == 2 + k
    arrays = ArrayStore()
    again = Stacker.from_state(stacker.state(arrays, "s"), arrays)
    np.testing.assert_allclose(again.predict_proba([good, noise]), proba)
    # an absent modality casts no vote
    absent_noise = np.full_like(noise, np.nan)
    x = stack_features([good, absent_noise], "pool")
    assert np.isfinite(LogLinearPool(2, k).fit(x, y).predict_proba(x)).all()


def test_fusion_never_below_its_best_input_on_validation() -> None:
    t = table(many_classes(per_class=40))
    model = MetadataPredictor(["tfidf", "tabular", "flat"], FusionConfig(folds=3)).fit(t)
    sel = model.selection_["kind"]
    scores = sel["macro_f1"]
    assert {"logistic", "pool", "lightgbm", "blend", "text_tfidf", "tabular"} <= set(scores)
    # the default stacker unless a candidate beats it clearly; then the best clear winner
    clear = {c for c, p in sel["p_better"].items() if p >= CLEAR_WIN}
    assert sel["stacker"] in (clear & set(STACKER_KINDS)) | {"blend"}
    assert sel["chosen"] in clear | {sel["stacker"]}
    if sel["chosen"] != sel["stacker"]:
        assert scores[sel["chosen"]] == max(scores[c] for c in clear - set(STACKER_KINDS))
    assert sel["data"] == "validation"
    # and on test (96 records): not below the best single modality by more than the noise
    # of choosing among seven candidates on 96 validation records
    test = t.split("test")
    classes = model.classes_["kind"]
    fused = macro_f1(test, model.predict_proba(test)["kind"], "kind", classes)
    singles = {
        name: macro_f1(test, p["kind"], "kind", classes)
        for name, p in model.modality_proba(test).items()
    }
    assert fused >= max(singles.values()) - 0.05, (fused, singles)


def test_a_single_modality_choice_falls_back_to_the_stacker_and_round_trips(
    tmp_path: Path,
) -> None:
    df = many_classes(n_classes=12, per_class=30, seed=3)
    df.loc[df.index % 7 == 0, "text_en"] = ""  # some records without text
    t = table(df)
    model = MetadataPredictor(["tfidf", "tabular"], FusionConfig(folds=3)).fit(t)
    stacker = model.stackers_["kind"]
    fallback = stacker.fallback if isinstance(stacker, ModalityChoice) else stacker
    choice = ModalityChoice(0, "text_tfidf", fallback)
    test = t.split("test")
    blocks = [model.modality_proba(test)[m.name]["kind"] for m in model.modalities_]
    fused = choice.predict_proba(blocks)
    has_text = ~np.isnan(blocks[0]).any(axis=1)
    assert (~has_text).any()
    np.testing.assert_allclose(fused[has_text], blocks[0][has_text])
    np.testing.assert_allclose(fused[~has_text], fallback.predict_proba(blocks)[~has_text])
    model.stackers_["kind"] = choice
    model.save(tmp_path / "m")
    again = MetadataPredictor.load(tmp_path / "m")
    assert isinstance(again.stackers_["kind"], ModalityChoice)
    np.testing.assert_allclose(
        again.predict_proba(test)["kind"], model.predict_proba(test)["kind"], equal_nan=True
    )


def test_a_fixed_stacker_or_no_modality_choice_is_respected() -> None:
    t = table(many_classes(n_classes=8, per_class=20))
    only = MetadataPredictor(
        ["tfidf", "tabular"], FusionConfig(folds=3, stacker="pool", select_modalities=False)
    ).fit(t)
    assert only.selection_["kind"]["chosen"] == "pool"
    assert set(only.selection_["kind"]["macro_f1"]) == {"pool"}
    with pytest.raises(ValueError, match="stacker"):
        FusionConfig(stacker="forest")  # type: ignore[arg-type]


def test_a_candidate_replaces_the_default_only_when_it_wins_clearly() -> None:
    rng = np.random.default_rng(0)
    k, n = 5, 300
    y = rng.integers(k, size=n)

    def guesses(accuracy: float, seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        pred = np.where(r.random(n) < accuracy, y, r.integers(k, size=n))
        return np.eye(k)[pred]

    held = {
        "blend": guesses(0.6, 1),
        "much_better": guesses(0.9, 2),
        "a_bit_better": guesses(0.62, 3),
        "same": guesses(0.6, 1),
    }
    p = _p_better(y, held, "blend", list(held), seed=0)
    assert p["much_better"] == 1.0
    assert p["same"] == 0.0  # a tie is no win
    assert p["a_bit_better"] < CLEAR_WIN
    scores = {c: float((h.argmax(axis=1) == y).mean()) for c, h in held.items()}
    assert _clear_winner("blend", scores, p) == "much_better"
    del scores["much_better"]
    assert _clear_winner("blend", scores, p) == "blend"
