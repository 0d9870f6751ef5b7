"""Refit: a second run on train + val that cooks the soup from the epochs the first one chose."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from heritage.collection import Collection
from heritage.config import TrainConfig
from heritage.model import load_card, load_state
from heritage.run import Run, RunError
from heritage.soups import ModelSoup, average_state_dicts
from heritage.training.trainer import Trainer


@pytest.fixture(scope="module")
def refitted(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny run's soups, then a refit of its greedy soup (done once for the module)."""
    import shutil

    base = tmp_path_factory.mktemp("refit")
    run_dir = Path(shutil.copytree(trained_run, base / "run"))
    run = Run.open(run_dir)
    run.cook_soups()
    out = base / "refit"
    path = run.refit(out)
    return {"run": run, "out": out, "path": path}


def test_refit_trains_on_train_plus_val_and_keeps_test_apart(refitted: dict) -> None:
    run, out = refitted["run"], refitted["out"]
    before = pd.read_csv(run.folder / "split.csv")
    after = pd.read_csv(out / "split.csv")
    assert (after["split"] == "val").sum() == 0
    assert (after["split"] == "train").sum() == before["split"].isin(["train", "val"]).sum()
    test_before = set(before.loc[before["split"] == "test", "path"])
    assert set(after.loc[after["split"] == "test", "path"]) == test_before
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history if h["epoch"] > 0] == [1, 2]
    assert not any(k.startswith("val_") for h in history for k in h)  # nothing scored on val


def test_refit_soup_averages_the_epochs_the_first_soup_kept(refitted: dict) -> None:
    run, out, path = refitted["run"], refitted["out"], refitted["path"]
    chosen = json.loads((run.folder / "soups" / "soups.json").read_text())["greedy_soup"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    epochs = sorted(int(name.split("_")[1]) for name in chosen["ingredients"])
    assert config["keep_epochs"] == epochs
    refit = Run.open(out)
    kept = [refit.pool.folder / f"epoch_{e:03d}" for e in epochs]
    assert {p.name for p in kept} <= {p.name for p in refit.pool.paths()}
    expected = average_state_dicts([load_state(p) for p in kept])
    got = load_state(path)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=key)
    card = load_card(path)
    assert card.provenance["refit_of"] == str(run.folder)
    assert card.metrics == {}  # no validation score: the refit trained on val
    # nothing held out: it keeps the temperature the first run's soup got on validation
    assert card.temperature == load_card(run.model_path("greedy_soup")).temperature != 1.0
    summary = json.loads((out / "soups" / "soups.json").read_text())
    assert summary["greedy_soup"]["ingredients"] == [p.name for p in kept]


def test_refit_evaluates_on_test_and_refuses_val_steps(refitted: dict) -> None:
    refit = Run.open(refitted["out"])
    results = refit.evaluate("test")
    assert "greedy_soup" in results and "soft_voting" in results
    assert "best_checkpoint" not in results  # no validation scores to pick one by
    with pytest.raises(RunError, match="heritage refit"):
        refit.cook_soups()
    with pytest.raises(RunError, match="refit already"):
        refit.refit(refitted["out"].parent / "again")


def test_refit_refuses_another_recipe_a_training_run_and_its_own_folder(
    refitted: dict, tmp_path: Path
) -> None:
    run = refitted["run"]
    with pytest.raises(ValueError, match="'stew' is not a soup to refit"):
        run.refit(tmp_path / "a", "stew")
    with pytest.raises(RunError, match="needs its own folder"):
        run.refit(run.folder, overwrite=True)  # --overwrite never deletes the run itself
    assert (run.folder / "split.csv").is_file()
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "config.yaml").write_text(yaml.safe_dump({"epochs": 2, "keep_epochs": []}))
    with pytest.raises(RunError, match="already holds a run that is not a refit"):
        run.refit(trained)


def test_refit_again_resumes_instead_of_retraining(refitted: dict) -> None:
    run, out = refitted["run"], refitted["out"]
    state = out / "state.pt"
    stamp = state.stat().st_mtime_ns
    run.refit(out)
    assert state.stat().st_mtime_ns == stamp


def test_analyze_refuses_a_refit_before_any_forward_pass(refitted: dict) -> None:
    from heritage.analysis.report import analyse

    with pytest.raises(RunError, match="refitted from"):
        analyse(refitted["out"])
    assert not (refitted["out"] / "analysis" / "probs_test.npz").exists()


def test_refit_needs_a_soup_and_its_own_folder(run_copy: Path, tmp_path: Path) -> None:
    run = Run.open(run_copy)
    with pytest.raises(RunError, match="heritage soup"):
        run.refit(tmp_path / "out")
    run.cook_soups(recipes=("uniform",))
    with pytest.raises(RunError, match="no greedy_soup"):
        run.refit(tmp_path / "out")
    with pytest.raises(RunError, match="its own folder"):
        run.refit(run_copy, "uniform_soup")
    started = tmp_path / "started"
    started.mkdir()
    (started / "config.yaml").write_text(yaml.safe_dump({"keep_epochs": [99]}))
    with pytest.raises(RunError, match="choose a new --out"):
        run.refit(started, "uniform_soup")


def test_refit_cooks_batchnorm_as_the_first_soup_did(run_copy: Path, tmp_path: Path) -> None:
    """Frozen statistics: automatic recalibration would skip; a first soup forced to
    recalibrate makes the refit soup recalibrate too (and its ingredients need no pool)."""
    run = Run.open(run_copy)
    run.cook_soups(recalibrate_bn=True, recipes=("uniform",))
    for entry in run.pool.entries:  # the refit reads epochs from names, not the first pool
        for file in run.pool.folder.glob(f"{entry.name}.*"):
            file.unlink()
    refit_path = run.refit(tmp_path / "refit", "uniform_soup")
    assert load_card(refit_path).provenance["bn_recalibrated"] is True


def test_training_without_val_carves_it_unless_epochs_are_kept(
    image_folder: Path, tiny_config, tmp_path: Path
) -> None:
    """Train + test only: a plain run carves its validation share out of train (issue 21);
    a refit, which names the epochs it keeps, trains on all of train without one."""
    merged = Collection.from_folder(image_folder).with_split(seed=0).move_split("val", "train")
    Trainer(tiny_config(epochs=1)).fit(merged, tmp_path / "run")
    carved = Run.open(tmp_path / "run").collection
    assert len(carved.split("val")) > 0
    assert carved.split("test").paths() == merged.split("test").paths()
    Trainer(tiny_config(epochs=1, keep_epochs=[1])).fit(merged, tmp_path / "refit")
    assert len(Run.open(tmp_path / "refit").collection.split("val")) == 0
    with pytest.raises(ValueError, match=r"outside 1\.\.epochs=2"):
        TrainConfig(epochs=2, keep_epochs=[3])
    with pytest.raises(ValueError, match="list of epoch numbers"):
        TrainConfig(epochs=2, keep_epochs=2)


def test_greedy_soup_needs_validation_images(trained_run: Path) -> None:
    with pytest.raises(ValueError, match="validation images"):
        ModelSoup("greedy", device="cpu").fit(Run.open(trained_run).pool.paths(), None)
