"""Model folders and resume states that cannot run code when opened.

A metadata model is JSON + safetensors (heritage.metadata.persist), a resume state is read
with ``torch.load(weights_only=True)``. A crafted pickle — one whose unpickling creates a
marker file — placed where heritage reads a model or a resume state is refused with a clear
message, and the marker is never created. Saved models predict exactly what they did.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import COLOURS, TINY_OPTIONS
from safetensors.numpy import load_file
from typer.testing import CliRunner

from heritage.cli import app
from heritage.collection import Collection
from heritage.kg.provenance import ModelEntity
from heritage.metadata import (
    FusionConfig,
    MetadataPredictor,
    Modality,
    RecordSpec,
    RecordTable,
    TextEncoder,
    make_modality,
    register_encoder,
)
from heritage.metadata.persist import ArrayStore, ModelFileError, modality_state
from heritage.metadata.predictor import (
    ARRAYS_FILE,
    CARD_FILE,
    LEGACY_MODEL_FILE,
    MODEL_FILES,
    STATE_FILE,
)
from heritage.metadata.text import TEXT_ENCODERS
from heritage.training.engine import load_training_state
from heritage.training.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:skipped 1 unreadable image")

ENV = {"COLUMNS": "200", "HERITAGE_NO_PROGRESS": "1"}


class _Payload:
    """Unpickling this opens (so creates) ``marker``: the stand-in for any code a pickle runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def test_the_crafted_pickle_is_armed(tmp_path: Path) -> None:
    """The payload really runs when unpickled: the refusals below are not vacuous."""
    marker = tmp_path / "ran"
    pickle.loads(_crafted(marker)).close()
    assert marker.exists()


# ----------------------------------------------------------------------- records


def _records(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Technique in the texts, place from the museum (as in test_metadata), some gaps."""
    rng = np.random.default_rng(seed)
    words = {"damask": "damask weave", "velvet": "cut velvet pile", "lace": "bobbin lace"}
    places = {"vam": "GB", "imatex": "ES", "met": "IT"}
    rows = []
    for i in range(n):
        technique = list(words)[i % 3]
        museum = list(places)[int(rng.integers(3))]
        rows.append(
            {
                "object": f"o{i:03d}",
                "museum": museum,
                "n_images": str(int(rng.integers(1, 4))),
                "technique": technique if rng.random() > 0.2 else "",
                "place": places[museum] if rng.random() > 0.2 else "",
                "text_en": f"{rng.choice(['red', 'silk', 'gold'])} {words[technique]}"
                if rng.random() > 0.1
                else "",
                "split": ("train", "train", "train", "val", "test")[i % 5],
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table() -> RecordTable:
    df = _records()
    spec = RecordSpec.infer(df.columns, ["technique", "place"], id_column="object")
    return RecordTable.from_frame(df, spec)


@pytest.fixture(scope="module")
def saved(table: RecordTable, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "model"
    MetadataPredictor(["tfidf", "tabular"], FusionConfig(folds=3)).fit(table).save(folder)
    return folder


def _copy_model(saved: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in (*MODEL_FILES, CARD_FILE):
        (folder / name).write_bytes((saved / name).read_bytes())
    return folder


# ----------------------------------------------------------------------- refusals


def test_old_pickled_model_folder_is_refused_unopened(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / LEGACY_MODEL_FILE).write_bytes(_crafted(marker))
    (folder / CARD_FILE).write_bytes((saved / CARD_FILE).read_bytes())
    with pytest.raises(ModelFileError, match=r"older heritage as a pickle.*Refit the model"):
        MetadataPredictor.load(folder)
    assert not marker.exists()


@pytest.mark.parametrize("name", MODEL_FILES)
def test_pickle_under_a_new_name_is_refused_unopened(
    name: str, saved: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    folder = _copy_model(saved, tmp_path)
    (folder / name).write_bytes(_crafted(marker))
    if name == ARRAYS_FILE:  # as if it came with a JSON that vouches for it
        tree = json.loads((folder / STATE_FILE).read_text())
        tree["arrays"]["sha256"] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        (folder / STATE_FILE).write_text(json.dumps(tree))
    expected = "not a safetensors file" if name == ARRAYS_FILE else "not JSON"
    with pytest.raises(ModelFileError, match=expected):
        MetadataPredictor.load(folder)
    assert not marker.exists()


def test_arrays_of_another_model_are_noticed(saved: Path, tmp_path: Path) -> None:
    folder = _copy_model(saved, tmp_path)
    (folder / ARRAYS_FILE).write_bytes((saved / ARRAYS_FILE).read_bytes() + b" ")
    with pytest.raises(ModelFileError, match="SHA-256 differs"):
        MetadataPredictor.load(folder)


def test_a_class_name_in_the_file_imports_nothing(saved: Path, tmp_path: Path) -> None:
    folder = _copy_model(saved, tmp_path)
    tree = json.loads((folder / STATE_FILE).read_text())
    tree["fitted_modalities"][0]["type"] = "os.system"
    (folder / STATE_FILE).write_text(json.dumps(tree))
    with pytest.raises(ModelFileError, match="does not know"):
        MetadataPredictor.load(folder)


def test_cli_predict_refuses_a_pickled_model(saved: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / LEGACY_MODEL_FILE).write_bytes(_crafted(marker))
    records = tmp_path / "records.csv"
    _records(10).to_csv(records, index=False)
    result = CliRunner().invoke(app, ["metadata", "predict", str(folder), str(records)], env=ENV)
    assert result.exit_code != 0
    assert "older heritage" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_a_modality_without_a_safe_form_is_not_saved() -> None:
    class Custom(Modality):
        name = "custom"

        def fit(self, records, targets):
            return self

        def predict_proba(self, records):
            return {}

        def clone(self):
            return Custom()

    with pytest.raises(TypeError, match="register its class"):
        modality_state(Custom(), ArrayStore(), "m")


# ----------------------------------------------------------------------- round trips


def _assert_same_predictions(
    before: MetadataPredictor, after: MetadataPredictor, table: RecordTable
) -> None:
    for prop, p in before.predict_proba(table).items():
        np.testing.assert_array_equal(after.predict_proba(table)[prop], p)
    again = after.modality_proba(table)
    for name, by_prop in before.modality_proba(table).items():
        for prop, p in by_prop.items():
            np.testing.assert_array_equal(again[name][prop], p)
    pd.testing.assert_frame_equal(after.predict(table), before.predict(table))


@pytest.fixture
def fake_encoder():
    def load():
        def embed(texts):
            out = np.zeros((len(texts), 8), dtype=np.float32)
            for i, text in enumerate(texts):
                for ch in text:
                    out[i, ord(ch) % 8] += 1
            return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

        return embed

    register_encoder(TextEncoder("fake", 8, "none", load))
    yield "fake"
    TEXT_ENCODERS.pop("fake", None)


@pytest.mark.parametrize("stacker", ["blend", "auto", "logistic", "lightgbm"])
def test_text_and_tabular_predictor_predicts_exactly_the_same(
    stacker: str, table: RecordTable, tmp_path: Path, fake_encoder: str
) -> None:
    from heritage.metadata.text import EncoderText

    modalities = ["tfidf", EncoderText(fake_encoder, cache_dir=tmp_path / "cache"), "tabular"]
    fusion = FusionConfig(folds=3, stacker=stacker)  # type: ignore[arg-type]
    fitted = MetadataPredictor(modalities, fusion, top_k=2).fit(table)
    fitted.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([*MODEL_FILES, CARD_FILE])
    loaded = MetadataPredictor.load(tmp_path / "m")
    _assert_same_predictions(fitted, loaded, table)
    assert loaded.top_k == 2 and loaded.fusion == fitted.fusion
    assert loaded.selection_ == json.loads(json.dumps(fitted.selection_))
    given = [m if isinstance(m, str) else m.name for m in loaded.modalities]
    assert given == ["tfidf", "text_fake", "tabular"]  # as given: names, configured modalities
    assert loaded.card()["classes"] == fitted.card()["classes"]
    # a loaded model saves again to the same arrays
    loaded.save(tmp_path / "again")
    first, second = (
        load_file(tmp_path / "m" / ARRAYS_FILE),
        load_file(tmp_path / "again" / ARRAYS_FILE),
    )
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k], second[k], equal_nan=True) for k in first)


def _image_records(image_folder: Path) -> RecordTable:
    rows = []
    for colour in COLOURS:
        files = sorted((image_folder / colour).glob("*.png"))
        for j, group in enumerate([files[:2]] + [[f] for f in files[2:]]):
            rows.append(
                {
                    "id": f"{colour}{j}",
                    "images": "|".join(f"{colour}/{f.name}" for f in group),
                    "colour": colour,
                }
            )
    rows.append({"id": "none", "images": "", "colour": ""})
    rows.append({"id": "broken", "images": "missing.png", "colour": ""})
    df = pd.DataFrame(rows)
    spec = RecordSpec.infer(df.columns, ["colour"], id_column="id")
    return RecordTable.from_frame(df, spec, image_root=image_folder)


def test_image_predictor_predicts_exactly_the_same(image_folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from heritage.backbones import create_backbone

    records = _image_records(image_folder)
    # the frozen modality saves its backbone by name or weights file (features are recomputed
    # where the model is used): a weights file, so both ends compute the same features
    weights = tmp_path / "backbone.safetensors"
    save_file(create_backbone("test_efficientnet", 2, pretrained=False).state_dict(), weights)
    frozen = make_modality(
        "image",
        backbone="test_efficientnet",
        weights=str(weights),
        image_size=32,
        device="cpu",
        batch_size=8,
    )
    tuned = make_modality(
        "image_multitask",
        train={**TINY_OPTIONS, "epochs": 1, "restart_epochs": 1},
        soup="best",
    )
    fitted = MetadataPredictor([frozen, tuned], FusionConfig(folds=2)).fit(records)
    fitted.save(tmp_path / "m")
    loaded = MetadataPredictor.load(tmp_path / "m")
    _assert_same_predictions(fitted, loaded, records)
    assert loaded.modalities_[1].report_ == json.loads(json.dumps(fitted.modalities_[1].report_))


def test_model_entity_hashes_every_model_file(saved: Path, tmp_path: Path) -> None:
    entity = ModelEntity.from_path(saved)
    assert entity.kind == "metadata"
    assert entity.files == tuple(str(saved / name) for name in MODEL_FILES)
    other = _copy_model(saved, tmp_path)
    (other / ARRAYS_FILE).write_bytes(b"other weights")
    assert ModelEntity.from_path(other).sha256 != entity.sha256
    # an older heritage's folder is still identified (by the hash of its bytes), never opened
    marker = tmp_path / "ran"
    old = tmp_path / "old"
    old.mkdir()
    (old / LEGACY_MODEL_FILE).write_bytes(_crafted(marker))
    legacy = ModelEntity.from_path(old)
    assert legacy.sha256 == hashlib.sha256(_crafted(marker)).hexdigest()
    assert not marker.exists()


# ----------------------------------------------------------------------- resume states


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_crafted_resume_state_is_refused_unopened(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save(_Payload(marker), tmp_path / "state.pt")  # torch's own format, armed
    (tmp_path / "old.pt").write_bytes(_crafted(marker))  # a bare pickle
    for name in ("state.pt", "old.pt"):
        with pytest.raises(ValueError, match="not a resume state this heritage reads"):
            load_training_state(tmp_path / name)
    assert not marker.exists()


def test_trainer_refuses_a_crafted_state_in_its_run_folder(
    image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save(_Payload(marker), run_dir / "state.pt")
    with pytest.raises(ValueError):
        Trainer(tiny_config(epochs=1)).fit(Collection.from_folder(image_folder), run_dir)
    assert not marker.exists()


def test_resume_state_is_plain_data_and_a_resumed_run_matches(
    image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    collection = Collection.from_folder(image_folder)
    straight = Trainer(tiny_config(epochs=2)).fit(collection, tmp_path / "straight")
    Trainer(tiny_config(epochs=1)).fit(collection, tmp_path / "resumed")
    state = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    assert state["epoch"] == 1
    assert isinstance(state["rng"]["numpy"]["key"], torch.Tensor)
    resumed = Trainer(tiny_config(epochs=2)).fit(collection, tmp_path / "resumed")

    def drop_times(history):
        return [{k: v for k, v in h.items() if "seconds" not in k} for h in history]

    assert drop_times(resumed.history) == drop_times(straight.history)
    weights = [
        load_file(run / "pool" / "epoch_002.safetensors")
        for run in (
            tmp_path / "straight",
            tmp_path / "resumed",
        )
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
