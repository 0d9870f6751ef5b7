"""Tests for heritage.analysis: decompositions and distances on hand-computable cases, their
identities on random data, and the report on the tiny trained run."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from heritage.analysis import (
    ProbabilityCache,
    analyse,
    analyse_runs,
    checkpoint_geometry,
    compare_methods,
    confident_mistakes,
    cross_entropy_decomposition,
    cross_entropy_distance,
    describe_changes,
    distance_matrix,
    divergence_matrix,
    geometric_mean,
    main_prediction,
    mds_embedding,
    zero_one_decomposition,
)
from heritage.analysis import probabilities as probabilities_module
from heritage.analysis.diagnostics import thumbnail_data_uri
from heritage.cli import app
from heritage.modelfile import model_paths

LOG = np.log


def _random_probas(seed: int, m: int, n: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probas = rng.dirichlet(np.full(c, 0.7), size=(m, n))
    return probas, rng.integers(0, c, n)


# ------------------------------------------------------------------ 0-1 loss (Domingos)


def test_zero_one_hand_case() -> None:
    """Two models, three images, three classes; y = [0, 1, 1].

    image 1: A → 0, B → 0: main 0 = y, bias 0, variance 0, loss 0.
    image 2: A → 1, B → 2: a tie; mean probabilities [.15, .40, .45] → main 2 ≠ y: bias 1,
             variance 1/2 (A disagrees), loss 1/2 (A is right); biased variance: the models
             right although main is wrong = 1/2.
    image 3: A → 0, B → 2: a tie; mean [.40, .25, .35] → main 0 ≠ y: bias 1, variance 1/2,
             loss 1 (both wrong); biased variance 0 (the disagreeing model is wrong too).
    error = (0 + 1/2 + 1)/3 = 1/2; bias = 2/3; variance = (0 + 1/2 + 1/2)/3 = 1/3;
    unbiased variance = 0; biased variance = (1/2)/3 = 1/6; net = −1/6;
    bias + net = 2/3 − 1/6 = 1/2 = error.
    """
    a = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]
    b = [[0.6, 0.3, 0.1], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6]]
    y = np.array([0, 1, 1])
    d = zero_one_decomposition(np.array([a, b]), y)
    np.testing.assert_array_equal(d.main_prediction, [0, 2, 0])
    assert d.error == pytest.approx(1 / 2)
    assert d.bias == pytest.approx(2 / 3)
    assert d.variance == pytest.approx(1 / 3)
    assert d.unbiased_variance == pytest.approx(0.0)
    assert d.biased_variance == pytest.approx(1 / 6)
    assert d.net_variance == pytest.approx(-1 / 6)
    np.testing.assert_allclose(d.image_error, [0, 0.5, 1])
    assert d.n_models == 2


def test_main_prediction_ties_go_to_mean_probability_then_lowest_index() -> None:
    # votes 1:1 and equal mean probabilities of classes 0 and 1 → class 0
    probas = np.array([[[0.6, 0.4, 0.0]], [[0.4, 0.6, 0.0]]])
    np.testing.assert_array_equal(main_prediction(probas), [0])
    # a clear majority wins over mean probability
    probas = np.array([[[0.4, 0.6]], [[0.45, 0.55]], [[1.0, 0.0]]])
    np.testing.assert_array_equal(main_prediction(probas), [1])


@pytest.mark.parametrize(("seed", "m", "c"), [(0, 2, 2), (1, 5, 3), (2, 8, 7)])
def test_zero_one_identity_on_random_data(seed: int, m: int, c: int) -> None:
    probas, y = _random_probas(seed, m, 60, c)
    d = zero_one_decomposition(probas, y)
    assert d.error == pytest.approx(d.bias + d.net_variance, abs=1e-12)
    np.testing.assert_allclose(
        d.image_error,
        d.image_bias
        + (1 - d.image_bias) * d.image_variance
        - d.image_bias * (probas.argmax(2) == y).mean(0),
        atol=1e-12,
    )
    assert 0 <= d.unbiased_variance <= d.variance + 1e-12
    if c == 2:  # two classes: a model that disagrees with a wrong main prediction is right
        assert d.variance == pytest.approx(d.unbiased_variance + d.biased_variance)


def test_identical_models_have_no_variance() -> None:
    probas, y = _random_probas(3, 1, 40, 4)
    same = np.repeat(probas, 5, axis=0)
    zo, ce = zero_one_decomposition(same, y), cross_entropy_decomposition(same, y)
    assert zo.variance == 0 and zo.net_variance == 0 and zo.bias == pytest.approx(zo.error)
    assert ce.variance == pytest.approx(0, abs=1e-12)
    assert ce.bias == pytest.approx(ce.error)


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="3-D"):
        zero_one_decomposition(np.ones((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        cross_entropy_decomposition(np.full((2, 3, 2), 0.5), np.zeros(4))
    with pytest.raises(ValueError, match="outside"):
        cross_entropy_decomposition(np.full((2, 3, 2), 0.5), np.array([0, 1, 2]))


# ------------------------------------------------------------------ cross-entropy (Heskes)


def test_cross_entropy_hand_case() -> None:
    """Two models, three images, two classes, y = [0, 0, 0].

    image 1: A [.8, .2], B [.2, .8]: geometric means √.16 = .4 for both classes, Z = .8,
             p̄ = [.5, .5]; bias −log .5 = log 2; variance −log Z = −log .8;
             error (−log .8 − log .2)/2 = log 2 − log .8 ✓.
    image 2: A = B = [.5, .5]: p̄ = [.5, .5], bias log 2, variance 0, error log 2.
    image 3: A [.9, .1], B [.6, .4]: √.54 and √.04 = .2, Z = √.54 + .2;
             bias −log(√.54 / Z), variance −log Z, error (−log .9 − log .6)/2.
    """
    a = [[0.8, 0.2], [0.5, 0.5], [0.9, 0.1]]
    b = [[0.2, 0.8], [0.5, 0.5], [0.6, 0.4]]
    y = np.zeros(3, dtype=int)
    d = cross_entropy_decomposition(np.array([a, b]), y)
    z3 = np.sqrt(0.54) + 0.2
    np.testing.assert_allclose(d.image_bias, [LOG(2), LOG(2), -LOG(np.sqrt(0.54) / z3)])
    np.testing.assert_allclose(d.image_variance, [-LOG(0.8), 0.0, -LOG(z3)], atol=1e-12)
    np.testing.assert_allclose(
        d.image_error, [-(LOG(0.8) + LOG(0.2)) / 2, LOG(2), -(LOG(0.9) + LOG(0.6)) / 2]
    )
    # numerically: bias ≈ (0.69315 + 0.69315 + 0.24072)/3, variance ≈ (0.22314 + 0 + 0.06737)/3
    assert d.bias == pytest.approx((0.693147 + 0.693147 + 0.240720) / 3, abs=1e-5)
    assert d.variance == pytest.approx((0.223144 + 0.067372) / 3, abs=1e-5)
    np.testing.assert_allclose(d.mean_model[0], [0.5, 0.5])
    np.testing.assert_allclose(geometric_mean(np.array([a, b]))[2], [np.sqrt(0.54) / z3, 0.2 / z3])


@pytest.mark.parametrize(("seed", "m", "c"), [(0, 2, 2), (1, 4, 5), (2, 7, 59)])
def test_cross_entropy_identity_on_random_data(seed: int, m: int, c: int) -> None:
    probas, y = _random_probas(seed, m, 50, c)
    d = cross_entropy_decomposition(probas, y)
    assert d.error == pytest.approx(d.bias + d.variance, rel=1e-12)
    np.testing.assert_allclose(d.image_error, d.image_bias + d.image_variance, rtol=1e-10)
    assert np.all(d.image_variance >= -1e-12)


def test_cross_entropy_clips_certain_mistakes() -> None:
    probas = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    d = cross_entropy_decomposition(probas, np.array([0]))
    assert np.isfinite(d.error) and d.error == pytest.approx(d.bias + d.variance)
    assert d.error == pytest.approx(-LOG(1e-12) / 2, rel=1e-6)


# ------------------------------------------------------------------ comparing methods


def test_compare_methods_and_sentences() -> None:
    probas, y = _random_probas(4, 6, 80, 3)
    soup = probas.mean(axis=0)
    table = compare_methods({"single_checkpoints": probas, "uniform_soup": soup[None]}, y)
    assert list(table.index) == ["single_checkpoints", "uniform_soup"]
    row = table.loc["uniform_soup"]
    assert row.models == 1 and row.variance_01 == 0 and row.variance_ce == pytest.approx(0)
    assert row.bias_01 == pytest.approx(row.error_01)
    ref = table.loc["single_checkpoints"]
    assert ref.error_01 == pytest.approx(ref.bias_01 + ref.net_variance_01)
    within = describe_changes(table, across_seeds=False)
    assert len(within) == 1 and within[0].startswith("uniform soup: 0-1 error")
    assert f"{row.error_01:.3f}" in within[0] and f"{ref.bias_01:.3f}" in within[0]
    across = compare_methods(
        {"single_checkpoints": probas, "uniform_soup": np.stack([soup, soup, probas[0]])}, y
    )
    sentence = describe_changes(across, across_seeds=True)[0]
    a, r = across.loc["uniform_soup"], across.loc["single_checkpoints"]
    expected = round(100 * (a.variance_ce - r.variance_ce) / r.variance_ce)
    assert f"{a.variance_ce:.3f} vs {r.variance_ce:.3f}" in sentence
    assert f"{expected:+d} %".replace("-", "−") in sentence


# ------------------------------------------------------------------ geometry


def test_cross_entropy_distance_hand_case() -> None:
    """p = [.5, .5], q = [.8, .2], one image.

    d(p, q) = −[.5 log .8 + .5 log .2 + .8 log .5 + .2 log .5] = −.5 log .16 − log .5
            = log 2.5 + log 2 = log 5.
    d(p, p) = 2 H(p) = 2 log 2; d(q, q) = 2 H(q) = −2 (.8 log .8 + .2 log .2) ≈ 1.000805.
    J = log 5 − (log 4 + 1.000805)/2 ≈ 0.415888 = KL(p‖q) + KL(q‖p)
      = (.5 log(.5/.8) + .5 log(.5/.2)) + (.8 log 1.6 + .2 log .4) ≈ 0.223144 + 0.192745.
    """
    p, q = np.array([[0.5, 0.5]]), np.array([[0.8, 0.2]])
    assert cross_entropy_distance(p, q) == pytest.approx(LOG(5))
    assert cross_entropy_distance(p, p) == pytest.approx(2 * LOG(2))
    names, d = distance_matrix({"p": p, "q": q})
    assert names == ["p", "q"]
    h_q = -(0.8 * LOG(0.8) + 0.2 * LOG(0.2))
    np.testing.assert_allclose(d, [[2 * LOG(2), LOG(5)], [LOG(5), 2 * h_q]])
    j = divergence_matrix(d)
    assert j[0, 1] == pytest.approx(0.415888, abs=1e-6)
    kl_pq = 0.5 * LOG(0.5 / 0.8) + 0.5 * LOG(0.5 / 0.2)
    kl_qp = 0.8 * LOG(0.8 / 0.5) + 0.2 * LOG(0.2 / 0.5)
    assert j[0, 1] == pytest.approx(kl_pq + kl_qp)


def test_distance_matrix_matches_pairs_and_divergence_properties() -> None:
    rng = np.random.default_rng(5)
    probas = {f"epoch_{i:03d}": rng.dirichlet(np.ones(6), size=30) for i in range(5)}
    names, d = distance_matrix(probas)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            assert d[i, j] == pytest.approx(cross_entropy_distance(probas[a], probas[b]))
    assert np.all(np.diag(d) > 0)  # d(p, p) = 2 H(p) ≠ 0: why the divergence is embedded
    j = divergence_matrix(d)
    assert np.all(np.diag(j) == 0)
    np.testing.assert_array_equal(j, j.T)
    assert np.all(j >= 0) and np.all(j[~np.eye(5, dtype=bool)] > 0)


def test_mds_separates_two_clusters() -> None:
    rng = np.random.default_rng(6)
    centres = [np.array([0.8, 0.1, 0.1]), np.array([0.1, 0.1, 0.8])]
    probas = {}
    for k in range(6):
        noisy = centres[k // 3] + rng.normal(0, 0.02, size=(20, 3))
        noisy = np.clip(noisy, 0.01, None)
        probas[f"m{k}"] = noisy / noisy.sum(axis=1, keepdims=True)
    geo = checkpoint_geometry(probas)
    assert geo.xy.shape == (6, 2) and geo.stress < 0.2
    dist = np.linalg.norm(geo.xy[:, None] - geo.xy[None], axis=2)
    within = max(dist[:3, :3].max(), dist[3:, 3:].max())
    between = dist[:3, 3:].min()
    assert between > 3 * within


def test_mds_small_cases() -> None:
    assert mds_embedding(np.zeros((1, 1))).shape == (1, 2)
    xy = mds_embedding(np.array([[0.0, 2.0], [2.0, 0.0]]))
    assert np.linalg.norm(xy[0] - xy[1]) == pytest.approx(2.0)
    np.testing.assert_array_equal(mds_embedding(np.zeros((3, 3))), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="zero diagonal"):
        mds_embedding(np.ones((3, 3)))


# ------------------------------------------------------------------ diagnostics


def test_confident_mistakes_and_thumbnails(image_folder: Path) -> None:
    paths = [str(p) for p in sorted(image_folder.rglob("*.png"))[:4]]
    proba = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    y = np.array([0, 0, 1, 1])  # wrong: image 1 (70 %), image 3 (60 %)
    found = confident_mistakes(proba, y, paths, ["a", "b"], k=5)
    assert [m.index for m in found] == [1, 3]
    assert (found[0].true, found[0].predicted) == ("a", "b")
    assert found[0].confidence == pytest.approx(0.7)
    assert found[0].true_probability == pytest.approx(0.3)
    assert len(confident_mistakes(proba, y, paths, ["a", "b"], k=1)) == 1
    uri = thumbnail_data_uri(paths[0], size=16)
    assert uri is not None and uri.startswith("data:image/png;base64,")
    assert thumbnail_data_uri(image_folder / "missing.png") is None


# ------------------------------------------------------------------ the report on a run


def _invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def souped_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run with uniform and greedy soups cooked."""
    from heritage.run import Run

    run = Path(shutil.copytree(trained_run, tmp_path_factory.mktemp("analysis") / "run"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HERITAGE_NO_PROGRESS", "1")
        Run.open(run).cook_soups()
    return run


@pytest.fixture(scope="module")
def analysed(souped_run: Path):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HERITAGE_NO_PROGRESS", "1")
        return analyse(souped_run)


def _external_references(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, flags=re.I)


def test_analyze_writes_self_contained_report(analysed, souped_run: Path) -> None:
    report = souped_run / "analysis" / "report.html"
    assert analysed.report == report and report.is_file()
    html = report.read_text(encoding="utf-8")
    assert not _external_references(html)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()
    assert html.count("data:image/png;base64,") >= 5  # 5 plots (+ thumbnails of mistakes)
    for words in (
        "Bias and variance",
        "Checkpoint geometry",
        "Training curves",
        "Reliability diagram",
        "Per-class F1",
        "Most confident mistakes",
        "only defined across runs",
    ):
        assert words in html, words
    for png in ("bias_variance", "geometry", "curves", "confusion", "reliability"):
        assert (souped_run / "analysis" / f"{png}.png").is_file(), png


def test_analyze_json_numbers(analysed, souped_run: Path) -> None:
    data = json.loads((souped_run / "analysis" / "analysis.json").read_text())
    assert {
        "run",
        "split",
        "n_images",
        "n_classes",
        "checkpoints",
        "best_checkpoint",
        "models",
        "reference_model",
        "bias_variance",
        "geometry",
        "per_class_f1",
        "confident_mistakes",
        "skipped",
        "cache",
    } <= set(data)
    assert data["reference_model"] == "greedy_soup" and data["skipped"] == []
    methods = data["bias_variance"]["methods"]
    assert set(methods) == {
        "single_checkpoints",
        "best_checkpoint",
        "uniform_soup",
        "greedy_soup",
        "soft_voting",
    }
    ref = methods["single_checkpoints"]
    assert ref["models"] == len(analysed.checkpoints) >= 2
    assert ref["error_01"] == pytest.approx(ref["bias_01"] + ref["net_variance_01"])
    assert ref["error_ce"] == pytest.approx(ref["bias_ce"] + ref["variance_ce"])
    geo = data["geometry"]
    assert geo["names"] == [*analysed.checkpoints, "uniform_soup", "greedy_soup", "soft_voting"]
    assert (
        geo["greedy_ingredients"]
        == json.loads((souped_run / "soups" / "soups.json").read_text())["greedy_soup"][
            "ingredients"
        ]
    )
    div = np.array(geo["divergence"])
    assert np.all(np.diag(div) == 0) and np.all(div >= 0)
    n_test = data["n_images"]
    assert n_test == len(analysed.targets) > 0
    # soft voting is the mean of the checkpoints, with no forward pass of its own
    mean = np.mean([analysed.probas[c] for c in analysed.checkpoints], axis=0)
    np.testing.assert_allclose(analysed.probas["soft_voting"], mean)
    assert data["models"]["soft_voting"]["models_at_inference"] == len(analysed.checkpoints)
    assert all(m["confidence"] >= 0.0 for m in data["confident_mistakes"])


def test_partial_run_names_what_is_missing(run_copy: Path, monkeypatch) -> None:
    """The trained fixture has no soups: the report says so and which command cooks them."""
    assert not (run_copy / "soups").exists()
    result = analyse(run_copy)
    html = result.report.read_text(encoding="utf-8")
    assert "Not in this report" in html
    assert f"heritage soup {run_copy}" in html
    assert {s.what for s in result.skipped} == {"uniform soup", "greedy soup"}
    assert result.reference == "best_checkpoint"
    assert set(result.methods) == {"best_checkpoint", "soft_voting"}
    data = json.loads(result.json.read_text())
    assert [s["command"] for s in data["skipped"]] == [f"heritage soup {run_copy}"] * 2


def test_single_checkpoint_left(souped_run: Path, tmp_path: Path) -> None:
    """Only one checkpoint left (the others deleted after cooking): still a report; geometry
    and checkpoint variance are skipped, and the soups are flagged as cooked from a pool that
    is gone."""
    run = Path(shutil.copytree(souped_run, tmp_path / "run"))
    pool = json.loads((run / "pool" / "pool.json").read_text())
    gone = [entry["name"] for entry in pool["entries"][1:]]
    for name in gone:
        for path in model_paths(run / "pool" / name):
            path.unlink()
    with pytest.warns(UserWarning, match="missing"):
        result = analyse(run)
    skipped = {s.what for s in result.skipped}
    assert {"checkpoint geometry", "variance across checkpoints"} <= skipped
    assert {f"checkpoint {name}" for name in gone} <= skipped
    assert result.geometry is None and result.report.is_file()
    assert any("no longer in the pool" in note and gone[0] in note for note in result.notes)
    assert result.decomposition.loc["single_checkpoints", "models"] == 1


def test_probability_cache_reused_and_invalidated(run_copy: Path, monkeypatch) -> None:
    calls: list[str] = []
    forward = probabilities_module.model_proba

    def counting(path, *args, **kwargs):
        calls.append(Path(path).name)
        return forward(path, *args, **kwargs)

    monkeypatch.setattr(probabilities_module, "model_proba", counting)
    first = analyse(run_copy)
    assert sorted(calls) == sorted(first.checkpoints)
    assert (run_copy / "analysis" / "probs_test.npz").is_file()
    calls.clear()
    second = analyse(run_copy)
    assert calls == []
    for name in first.checkpoints:
        np.testing.assert_array_equal(first.probas[name], second.probas[name])
    # a rewritten model file (newer) is run again, the others still come from the cache
    touched = first.checkpoints[0]
    weights = model_paths(run_copy / "pool" / touched)[0]
    later = weights.stat().st_mtime + 60
    os.utime(weights, (later, later))
    analyse(run_copy)
    assert calls == [touched]


def test_probability_cache_belongs_to_its_images(trained_run: Path, tmp_path: Path) -> None:
    model = next((trained_run / "pool").glob("*.safetensors")).with_suffix("")
    path, proba = tmp_path / "probs_test.npz", np.full((2, 3), 1 / 3)
    cache = ProbabilityCache.open(path, ["a.png", "b.png"], np.array([0, 2]), ["x", "y", "z"])
    cache.put("m", model, proba)
    cache.save()
    same = ProbabilityCache.open(path, ["a.png", "b.png"], np.array([0, 2]), ["x", "y", "z"])
    np.testing.assert_allclose(same.get("m", model), proba)
    assert same.get("other", model) is None
    for other in (
        (["a.png", "c.png"], np.array([0, 2]), ["x", "y", "z"]),  # other images
        (["a.png", "b.png"], np.array([0, 1]), ["x", "y", "z"]),  # other labels
        (["a.png", "b.png"], np.array([0, 2]), ["x", "y", "w"]),  # other classes
    ):
        assert ProbabilityCache.open(path, *other).entries == {}


def test_analyze_runs_across_seeds(souped_run: Path, tmp_path: Path) -> None:
    """Two copies of one run: every per-run method is the same model twice, so its
    across-run variance is zero, and single checkpoints keep their within-run variance."""
    runs = [Path(shutil.copytree(souped_run, tmp_path / f"seed{i}")) for i in range(2)]
    seeds = analyse_runs(runs, out=tmp_path / "seeds")
    table = seeds.decomposition
    assert set(table.index) == {
        "single_checkpoints",
        "best_checkpoint",
        "uniform_soup",
        "greedy_soup",
        "soft_voting",
    }
    assert table.loc["greedy_soup", "models"] == 2
    assert table.loc["greedy_soup", "variance_01"] == 0
    assert table.loc["greedy_soup", "variance_ce"] == pytest.approx(0, abs=1e-9)
    assert table.loc["single_checkpoints", "models"] == 2 * len(seeds.runs[0].checkpoints)
    html = seeds.report.read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and not _external_references(html)
    assert any(s.startswith("greedy soup (2 models)") for s in seeds.summary)
    assert json.loads(seeds.json.read_text())["bias_variance"]["scope"] == "across_runs"


def test_cli_analyze(souped_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(souped_run, tmp_path / "run"))
    result = _invoke("analyse", run, "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "report.html").is_file()
    assert (tmp_path / "report" / "analysis.json").is_file()
    assert (run / "analysis" / "probs_test.npz").is_file()  # the cache stays in the run


def test_cli_analyze_several_runs(souped_run: Path, tmp_path: Path) -> None:
    runs = [Path(shutil.copytree(souped_run, tmp_path / f"seed{i}")) for i in range(2)]
    result = _invoke("analyse", *runs, "--out", tmp_path / "seeds")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "seeds" / "report.html").is_file()
    assert all((run / "analysis" / "report.html").is_file() for run in runs)


def test_cli_analyze_errors(tmp_path: Path, run_copy: Path) -> None:
    result = _invoke("analyse", tmp_path)
    assert result.exit_code == 2
    assert "not a heritage run folder" in result.output
    result = _invoke("analyse", tmp_path / "nowhere")
    assert result.exit_code == 2 and "does not exist" in result.output
    result = _invoke("analyse", run_copy, "--split", "holdout")
    assert result.exit_code == 2 and "Unknown split" in result.output
