"""Tests for heritage.evaluation: hand-computable metrics, validation and report files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from heritage.evaluation import (
    Evaluation,
    confidence_ece,
    ece_noise_floor,
    evaluate,
    expected_calibration_error,
    plot_confusion,
    plot_reliability,
    reliability_table,
    top_k,
    write_predictions_csv,
    write_report,
)

# y = [0, 0, 0, 1]; predictions [0, 0, 1, 1].
Y4 = np.array([0, 0, 0, 1])
P4 = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])
C2 = ["cat", "dog"]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _random_case(n: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), y] += 2.0
    return y, _softmax(logits), [f"class_{i:02d}" for i in range(c)]


def test_small_case_metrics_by_hand() -> None:
    ev = evaluate(Y4, P4, C2)
    assert ev.n == 4
    assert ev.top1 == pytest.approx(0.75)
    assert ev.top5 is None
    # cat: TP=2 FP=0 FN=1 -> P=1, R=2/3, F1=0.8; dog: TP=1 FP=1 FN=0 -> P=.5, R=1, F1=2/3
    cat, dog = ev.per_class
    assert (cat.precision, cat.recall, cat.f1, cat.support) == pytest.approx((1, 2 / 3, 0.8, 3))
    assert (dog.precision, dog.recall, dog.f1, dog.support) == pytest.approx((0.5, 1, 2 / 3, 1))
    assert ev.macro_f1 == pytest.approx((0.8 + 2 / 3) / 2)
    expected_nll = -(math.log(0.9) + math.log(0.7) + math.log(0.2) + math.log(0.6)) / 4
    assert ev.nll == pytest.approx(expected_nll)


def test_confusion_rows_are_true_labels() -> None:
    ev = evaluate(Y4, P4, C2)
    # one true "cat" predicted as "dog" -> row 0, column 1
    np.testing.assert_array_equal(ev.confusion, [[2, 1], [0, 1]])
    assert ev.confusion.dtype.kind == "i"


def test_nll_clips_zero_probability() -> None:
    ev = evaluate(np.array([1]), np.array([[1.0, 0.0]]), C2)
    assert ev.nll == pytest.approx(-math.log(1e-12))


def test_ece_constant_confidence() -> None:
    proba = np.array([[0.8, 0.2]] * 4)
    y = np.array([0, 0, 1, 1])  # confidence 0.8, accuracy 0.5
    assert expected_calibration_error(y, proba) == pytest.approx(0.3)


def test_ece_two_bins_by_hand() -> None:
    proba = np.array([[0.9, 0.1]] * 3 + [[0.6, 0.4]])
    y = np.array([0, 0, 0, 1])
    # bin 0.9: 3 samples, acc 1, gap .1; bin 0.6: 1 sample, acc 0, gap .6
    assert expected_calibration_error(y, proba) == pytest.approx((3 * 0.1 + 0.6) / 4)


def test_ece_perfect_calibration() -> None:
    proba = np.array([[0.75, 0.25]] * 4)
    y = np.array([0, 0, 0, 1])
    assert expected_calibration_error(y, proba) == pytest.approx(0.0, abs=1e-12)
    one_hot = np.eye(3)[[0, 1, 2, 1]]
    assert expected_calibration_error(np.array([0, 1, 2, 1]), one_hot) == pytest.approx(0.0)


def test_reliability_table_shape_and_counts() -> None:
    proba = np.array([[0.9, 0.1]] * 3 + [[0.6, 0.4]])
    table = reliability_table(np.array([0, 0, 0, 1]), proba, n_bins=10)
    assert list(table.columns) == ["bin_lower", "bin_upper", "count", "confidence", "accuracy"]
    assert len(table) == 10
    assert table["count"].sum() == 4
    assert table.loc[table["count"] == 3, "accuracy"].item() == pytest.approx(1.0)
    assert table["confidence"].isna().sum() == 8  # empty bins


def test_top5_for_ten_classes() -> None:
    c = 10
    # true label sits at rank 1, 5 and 6 (1-based) for the three rows
    ranks = [0, 4, 5]
    base = np.linspace(0.19, 0.01, c)  # descending: class 0 most likely, class 9 least
    proba = np.tile(base / base.sum(), (len(ranks), 1))
    y = np.array(ranks)
    ev = evaluate(y, proba, [str(i) for i in range(c)])
    assert ev.top1 == pytest.approx(1 / 3)
    assert ev.top5 == pytest.approx(2 / 3)


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="softmax"):
        evaluate(Y4, np.log(P4) + 3.0, C2)
    with pytest.raises(ValueError, match="2-D"):
        evaluate(Y4, P4[:, 0], C2)
    with pytest.raises(ValueError, match="columns"):
        evaluate(Y4, P4, ["a", "b", "c"])
    with pytest.raises(ValueError, match="outside"):
        evaluate(np.array([0, 0, 2, 1]), P4, C2)
    with pytest.raises(ValueError, match="outside"):
        evaluate(np.array([0, -1, 0, 1]), P4, C2)
    with pytest.raises(ValueError, match="labels but"):
        evaluate(Y4[:3], P4, C2)
    with pytest.raises(ValueError, match="integer"):
        evaluate(np.array([0.5, 0, 0, 1]), P4, C2)


def test_to_dict_and_summary() -> None:
    ev = evaluate(Y4, P4, C2)
    d = json.loads(json.dumps(ev.to_dict()))
    assert "y_true" not in d and "proba" not in d
    assert d["confusion"] == [[2, 1], [0, 1]]
    assert d["per_class"][0]["name"] == "cat"
    assert ev.summary() == "top-1 0.750 · macro-F1 0.733 · ECE 0.400 · n=4"


def _assert_png(path) -> None:
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size[0] > 0 and im.size[1] > 0


def test_write_report(tmp_path) -> None:
    y, proba, classes = _random_case(80, 7)
    ev = evaluate(y, proba, classes)
    extra = {"model": "convnext_tiny", "dataset": "heritage-v1", "split": "test", "images/s": 812.5}
    paths = write_report(ev, tmp_path / "rep", title="Test report", extra=extra)
    assert set(paths) == {"metrics", "confusion", "reliability", "report"}
    for name in ("metrics.json", "confusion.png", "reliability.png", "report.md"):
        assert (tmp_path / "rep" / name).exists()

    with open(paths["metrics"]) as fh:
        metrics = json.load(fh)
    assert metrics["extra"] == extra
    assert metrics["top1"] == pytest.approx(ev.top1)
    assert len(metrics["per_class"]) == 7

    md = paths["report"].read_text()
    assert md.startswith("# Test report")
    assert "![confusion](confusion.png)" in md
    assert "![reliability](reliability.png)" in md
    assert "convnext_tiny" in md and "ECE" in md
    worst = min(ev.per_class, key=lambda r: r.f1).name
    best = max(ev.per_class, key=lambda r: r.f1).name
    per_class_section = md.split("## Per-class")[1]
    assert per_class_section.index(worst) < per_class_section.index(best)

    _assert_png(paths["confusion"])
    _assert_png(paths["reliability"])


def test_write_report_without_raw_predictions(tmp_path) -> None:
    ev = evaluate(Y4, P4, C2)
    bare = Evaluation(**{**ev.__dict__, "y_true": None, "proba": None})
    paths = write_report(bare, tmp_path, title="bare")
    assert "reliability" not in paths
    assert "reliability.png" not in paths["report"].read_text()


def test_plot_confusion_sixty_classes(tmp_path) -> None:
    y, proba, classes = _random_case(600, 60, seed=1)
    ev = evaluate(y, proba, classes)
    out = plot_confusion(ev, tmp_path / "cm60.png", title="60 classes")
    _assert_png(out)
    with Image.open(out) as im:
        assert max(im.size) <= 24 * 100 + 1  # capped at 24 inches at 100 dpi
    _assert_png(plot_confusion(ev, tmp_path / "cm60_raw.png", normalise=False))


def test_plot_reliability(tmp_path) -> None:
    y, proba, _ = _random_case(50, 4)
    _assert_png(plot_reliability(y, proba, tmp_path / "sub" / "rel.png", n_bins=10))


def test_plots_leave_pyplot_state_alone(tmp_path) -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    ev = evaluate(Y4, P4, C2)
    plot_confusion(ev, tmp_path / "cm.png")
    assert matplotlib.get_backend() == backend


def test_top_k_ordering_and_clipping() -> None:
    proba = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    res = top_k(proba, ["a", "b", "c"], k=2)
    assert res == [[("b", 0.6), ("c", 0.3)], [("a", 0.5), ("c", 0.3)]]
    assert len(top_k(proba, ["a", "b", "c"], k=10)[0]) == 3


def test_write_predictions_csv(tmp_path) -> None:
    proba = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    out = write_predictions_csv(
        ["img1.jpg", "img2.jpg"], proba, ["a", "b", "c"], tmp_path / "pred.csv", k=2
    )
    df = pd.read_csv(out)
    assert list(df.columns) == ["image", "label_1", "confidence_1", "label_2", "confidence_2"]
    assert df["image"].tolist() == ["img1.jpg", "img2.jpg"]
    assert df["label_1"].tolist() == ["b", "a"]
    assert (df["confidence_1"] >= df["confidence_2"]).all()

    out5 = write_predictions_csv(["x", "y"], proba, ["a", "b", "c"], tmp_path / "pred5.csv", k=5)
    df5 = pd.read_csv(out5)
    assert list(df5.columns)[-1] == "confidence_3"
    assert len(df5.columns) == 1 + 2 * 3


def test_predictions_csv_rounds_to_six_decimals(tmp_path) -> None:
    proba = np.array([[1 / 3, 1 / 3, 1 / 3]])
    out = write_predictions_csv(["x"], proba, ["a", "b", "c"], tmp_path / "p.csv", k=1)
    text = out.read_text().strip().splitlines()[1]
    assert text == "x,a,0.333333"


def test_macro_f1_ignores_classes_absent_from_the_split() -> None:
    # class 2 never occurs and is never predicted: it must not drag macro-F1 down
    proba = np.array([[0.9, 0.05, 0.05], [0.1, 0.85, 0.05]])
    ev = evaluate(np.array([0, 1]), proba, ["a", "b", "c"])
    assert ev.macro_f1 == pytest.approx(1.0)
    assert len(ev.per_class) == 3


def test_ece_noise_floor_shrinks_with_sample_size_and_matches_calibrated_draws():
    rng = np.random.default_rng(0)

    def sample(n: int) -> np.ndarray:
        conf = rng.uniform(0.4, 0.95, n)
        return np.column_stack([conf, 1 - conf])

    small, large = sample(200), sample(20000)
    assert ece_noise_floor(small) > 3 * ece_noise_floor(large)
    # a model that is calibrated by construction measures about the floor, not zero
    y = (rng.random(len(small)) >= small[:, 0]).astype(int)  # class 0 right w.p. its confidence
    assert abs(expected_calibration_error(y, small) - ece_noise_floor(small)) < 0.04
    # certain predictions leave nothing to chance
    assert ece_noise_floor(np.array([[1.0, 0.0], [0.0, 1.0]])) == 0.0
    with pytest.raises(ValueError):
        ece_noise_floor(np.zeros((0, 2)))


def test_confidence_ece_equals_expected_calibration_error_on_one_task():
    rng = np.random.default_rng(1)
    proba = rng.dirichlet(np.ones(4), size=300)
    y = rng.integers(0, 4, 300)
    pooled = confidence_ece(proba.max(axis=1), proba.argmax(axis=1) == y)
    assert pooled == pytest.approx(expected_calibration_error(y, proba))
    # tasks with different class counts pool: two halves, each off by 0.2 -> 0.2
    conf = np.array([0.9] * 10 + [0.3] * 10)
    correct = np.array([1] * 7 + [0] * 3 + [1] * 1 + [0] * 9)
    assert confidence_ece(conf, correct) == pytest.approx(0.2 * 0.5 + 0.2 * 0.5)
    with pytest.raises(ValueError):
        confidence_ece(conf, correct[:-1])
