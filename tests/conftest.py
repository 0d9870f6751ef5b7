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
    from heritage.config import TrainConfig

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


# ------------------------------------------------------------------ the explorer's graph
EXPLORER_BASE = "https://museum.example/"
MUSEUMS = ("vam", "imatex")


def make_explorer_store(root: Path) -> dict:
    """A small knowledge graph like the demo's: the tiny image collection as records (id =
    image path relative to ``root/images``), catalogued museum, material (with a SKOS
    hierarchy: raw silk ⊂ silk) and colour for some records, English and Spanish texts, and
    colour predictions with alternatives and modalities for every record. Returns paths."""
    import json
    from datetime import datetime, timezone

    import pandas as pd

    from heritage.kg import (
        Activity,
        Catalogue,
        ExportConfig,
        KnowledgeGraph,
        ModelEntity,
        export_graph,
    )

    images = make_image_folder(root / "images")
    ids = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))
    rows, preds = [], []
    names = list(COLOURS)
    for i, record in enumerate(ids):
        colour = record.split("/")[0]
        rows.append(
            {
                "record": record,
                "museum": MUSEUMS[i % 2],
                "material": ("raw silk", "silk", "wool", "")[i % 4],
                "colour": colour if i % 3 == 0 else "",
                "text_en": f"A {colour} textile sample number {i}" if i % 2 == 0 else "",
                "text_es": f"Muestra textil de técnica {colour} número {i}",
            }
        )
        predicted = colour if i % 5 else names[(names.index(colour) + 1) % 3]
        others = [n for n in names if n != predicted]
        confidence = round(0.35 + 0.6 * i / len(ids), 4)
        preds.append(
            {
                "record": record,
                "property": "colour",
                "value": predicted,
                "confidence": confidence,
                "alternatives": json.dumps(
                    [[others[0], 0.6 * (1 - confidence)], [others[1], 0.4 * (1 - confidence)]]
                ),
                "modalities": "image+tfidf",
                "status": "predicted",
                "catalogued": "",
            }
        )
    frame = pd.DataFrame(rows)
    catalogue = Catalogue(
        frame, "record", ("museum", "material", "colour"), {"text_en": "en", "text_es": "es"}
    )
    model = ModelEntity("colour-model", "ab" * 32, "image classifier", "2026-11-30T12:00:00Z")
    activity = Activity(
        datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc),
        datetime(2026, 12, 1, 9, 5, tzinfo=timezone.utc),
        model,
        "heritage predict",
    )
    graph = export_graph(
        pd.DataFrame(preds),
        activity=activity,
        catalogue=catalogue,
        config=ExportConfig(base_uri=EXPLORER_BASE),
    )
    concept = f"{EXPLORER_BASE}concept/material/"
    skos = "http://www.w3.org/2004/02/skos/core#"
    extra = root / "hierarchy.ttl"
    extra.write_text(
        f"<{concept}raw%20silk> <{skos}broader> <{concept}silk> .\n"
        f'<{EXPLORER_BASE}concept/colour/amber> <{skos}prefLabel> "ámbar"@es .\n'
    )
    store = root / "kg-store"
    kg = KnowledgeGraph(store)
    kg.load(graph)
    kg.load(extra, fmt="nt")
    kg.flush()
    del kg
    gaps = set(frame.loc[frame["colour"] == "", "record"])  # predictions that fill a gap
    return {"store": store, "images": images, "ids": ids, "records": frame, "n": len(ids),
            "gaps": gaps}  # fmt: skip


@pytest.fixture(scope="session")
def explorer_graph(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Read only: copy ``store`` before writing reviews (see ``explorer_copy``)."""
    return make_explorer_store(tmp_path_factory.mktemp("explorer"))


@pytest.fixture
def explorer_copy(explorer_graph: dict, tmp_path: Path) -> dict:
    """A private copy of the explorer's store, for tests that write reviews."""
    store = tmp_path / "kg-store"
    shutil.copytree(explorer_graph["store"], store)
    return {**explorer_graph, "store": store}
