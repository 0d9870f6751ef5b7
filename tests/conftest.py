"""Shared fixtures: a tiny learnable image folder and one tiny trained run (trained once)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: class name -> RGB colour; the colours make the tiny collection trivially learnable
COLOURS = {"amber": (210, 140, 20), "blue": (20, 40, 200), "green": (30, 190, 60)}
IMAGES_PER_CLASS = 8
IMAGE_SIDE = 40


def make_image_folder(root: Path, n_per_class: int = IMAGES_PER_CLASS) -> Path:
    """root/<class>/<i>.png: 40x40 images of a class colour plus a little noise."""
    rng = np.random.default_rng(0)
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            noise = rng.integers(-25, 26, (IMAGE_SIDE, IMAGE_SIDE, 3))
            arr = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / label / f"{label}_{i}.png")
    return root


TINY_OPTIONS = {
    "backbone": "test_efficientnet",
    "pretrained": False,
    "image_size": 32,
    "epochs": 2,
    "batch_size": 4,
    "restart_epochs": 1,
    "device": "cpu",
}


@pytest.fixture(autouse=True)
def _no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERITAGE_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only tiny collection: 3 classes x 8 PNGs of 40x40."""
    return make_image_folder(tmp_path_factory.mktemp("images") / "collection")


@pytest.fixture(scope="session")
def tiny_config() -> Callable:
    """Factory for a fast CPU TrainConfig; keyword arguments override the tiny options."""
    from heritage.training.trainer import TrainConfig

    def make(**overrides):
        return TrainConfig(**{**TINY_OPTIONS, **overrides})

    return make


@pytest.fixture(scope="session")
def trained_run(
    tmp_path_factory: pytest.TempPathFactory, image_folder: Path, tiny_config: Callable
) -> Path:
    """A finished 2-epoch run (probe head, 2 pool entries). Read only: copy before changing."""
    from heritage.collection import Collection
    from heritage.training.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HERITAGE_NO_PROGRESS", "1")
        Trainer(tiny_config()).fit(Collection.from_folder(image_folder), run_dir)
    return run_dir


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the trained run."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))
