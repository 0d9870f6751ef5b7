"""Weights averaged along the trajectory (EMA, SWA) as pool ingredients."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from heritage.collection import Collection
from heritage.model import load_state
from heritage.run import Run
from heritage.soups import average_state_dicts
from heritage.training.trainer import Trainer


def _names(run_dir: Path) -> list[str]:
    return sorted(p.stem for p in (run_dir / "pool").glob("*.safetensors"))


def test_swa_is_the_mean_of_the_cycles_epoch_ends(
    image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    config = tiny_config(average="swa", restart_epochs=2, keep_top_k=2)
    Trainer(config).fit(Collection.from_folder(image_folder), tmp_path / "run")
    pool = tmp_path / "run" / "pool"
    assert _names(tmp_path / "run") == ["epoch_001", "epoch_002", "swa_002"]
    expected = average_state_dicts([load_state(pool / "epoch_001"), load_state(pool / "epoch_002")])
    swa = load_state(pool / "swa_002")
    assert all(torch.allclose(swa[k].float(), expected[k].float(), atol=1e-6) for k in expected)


def test_ema_joins_the_pool_resumes_exactly_and_is_cooked(
    image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    collection = Collection.from_folder(image_folder)
    Trainer(tiny_config(average="ema")).fit(collection, tmp_path / "straight")
    assert {"ema_001", "ema_002"} <= set(_names(tmp_path / "straight"))
    Trainer(tiny_config(average="ema", epochs=1)).fit(collection, tmp_path / "resumed")
    Trainer(tiny_config(average="ema")).fit(collection, tmp_path / "resumed")
    a = load_state(tmp_path / "straight" / "pool" / "ema_002")
    b = load_state(tmp_path / "resumed" / "pool" / "ema_002")
    assert all(torch.equal(a[k], b[k]) for k in a)
    soups = Run.open(tmp_path / "straight").cook_soups(recipes=("uniform",))
    assert "ema_002" in soups["uniform"].ingredients_


def test_a_run_shorter_than_a_cycle_still_gets_its_average(
    image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    config = tiny_config(average="ema", restart_epochs=3)  # 2 epochs: no cycle ends
    Trainer(config).fit(Collection.from_folder(image_folder), tmp_path / "run")
    assert "ema_002" in _names(tmp_path / "run")


def test_unknown_average_is_refused(tiny_config: Callable) -> None:
    with pytest.raises(ValueError, match="average must be one of"):
        tiny_config(average="polyak")
    with pytest.raises(ValueError, match="average_epochs must be positive"):
        tiny_config(average="ema", average_epochs=0)
