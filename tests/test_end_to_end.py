"""The README's main job on the real data: train, soups, evaluate, predict through the CLI.

Slow (about a minute on 2 cores, at reduced resolution and epochs): run with `make test-slow`.
Skips when ../shared/datasets is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from heritage.cli import app

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
ICH = DATASETS / "ich-mekong"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ICH.is_dir(), reason=f"real dataset not found at {ICH}"),
]


def test_ich_mekong_train_soup_evaluate_predict(tmp_path: Path) -> None:
    config = tmp_path / "quick.yaml"
    config.write_text(
        yaml.safe_dump({"epochs": 2, "image_size": 128, "restart_epochs": 1, "device": "cpu"})
    )
    run = tmp_path / "run"
    env = {"HERITAGE_NO_PROGRESS": "1"}
    result = CliRunner().invoke(
        app, ["demo", str(ICH), "--out", str(run), "--config", str(config), "--no-serve"], env=env
    )
    assert result.exit_code == 0, result.output
    rows = {
        r["method"]: r for r in json.loads((run / "eval" / "test" / "comparison.json").read_text())
    }
    assert set(rows) == {"best_checkpoint", "uniform_soup", "greedy_soup", "soft_voting"}
    # pretrained features make even this short run far better than chance (0.25)
    assert rows["greedy_soup"]["top1"] > 0.7
    assert (run / "eval" / "test" / "greedy_soup" / "confusion.png").is_file()
    # the demo ends with a knowledge graph of the test predictions and silknow's metadata
    assert (run / "kg-store").is_dir() and (run / "index" / "index.json").is_file()
    assert (run / "published" / "classifier-predictions.csv").is_file()
    if (DATASETS / "silknow-records" / "records.csv").is_file():
        assert (run / "published" / "metadata-predictions.csv").is_file()

    out = tmp_path / "pred.csv"
    images = ICH / "images" / "don_ca_tai_tu"
    result = CliRunner().invoke(
        app,
        ["predict", str(run / "soups" / "greedy_soup"), str(images), "--out", str(out)],
        env=env,
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert len(table) == len(list(images.glob("*.jpg")))
    assert (table["label_1"] == "don_ca_tai_tu").mean() > 0.7
