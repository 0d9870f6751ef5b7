"""Tests for heritage.training.pool: which checkpoints stay on disk, and the index."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from heritage.backbones import Preprocessing
from heritage.model import ModelCard, load_card, load_state
from heritage.training.pool import CheckpointPool, checkpoint_name, epoch_of

STATE = {"w": torch.zeros(1)}


def _card() -> ModelCard:
    return ModelCard("test_efficientnet", ["a", "b"], Preprocessing(32, (0.5,) * 3, (0.5,) * 3))


def _metrics(score: float) -> dict[str, float]:
    """All three criteria agree: higher score, lower loss."""
    return {"val_loss": 1.0 - score, "val_top1": score, "val_macro_f1": score}


def _on_disk(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name != "pool.json"}


def _files(*epochs: int) -> set[str]:
    return {f"epoch_{e:03d}{s}" for e in epochs for s in (".safetensors", ".json")}


def test_checkpoint_names_carry_their_epoch() -> None:
    assert checkpoint_name(7) == "epoch_007" and epoch_of("epoch_007") == 7
    assert epoch_of(checkpoint_name(1234)) == 1234
    assert epoch_of("greedy_soup") is None and epoch_of("epoch_") is None


def test_pinned_epochs_stay_without_metrics(tmp_path: Path) -> None:
    """A run without validation (a refit) keeps exactly the epochs it pins."""
    folder = tmp_path / "pool"
    pool = CheckpointPool.open(folder)
    card = _card()
    assert not pool.offer(1, {}, STATE, card)  # no metric, not pinned: nothing wants it
    assert pool.offer(2, {}, STATE, card, pinned=True)
    assert pool.offer(3, _metrics(0.9), STATE, card, pinned=True)
    assert not pool.offer(4, {}, STATE, card)
    assert (pool.entries[0].name, pool.entries[0].reasons) == ("epoch_002", ["pinned"])
    assert _on_disk(folder) == _files(2, 3)
    reopened = CheckpointPool.open(folder)
    assert reopened.offer(5, _metrics(0.95), STATE, card)  # outranks 3 on every criterion...
    assert reopened.offer(6, _metrics(0.99), STATE, card)
    assert {e.name for e in reopened.entries} >= {"epoch_002", "epoch_003"}  # ...pins stay
    unscored = CheckpointPool.open(tmp_path / "unscored")
    unscored.offer(1, {}, STATE, card, pinned=True)
    with pytest.raises(ValueError, match="no val_macro_f1"):
        unscored.best()


def test_offer_keeps_top_k_and_cycle_ends(tmp_path: Path) -> None:
    folder = tmp_path / "pool"
    pool = CheckpointPool.open(folder)  # keep_top_k = 2
    card = _card()
    assert pool.offer(1, _metrics(0.1), STATE, card)
    assert pool.offer(2, _metrics(0.5), STATE, card)
    assert _on_disk(folder) == _files(1, 2)

    assert pool.offer(3, _metrics(0.3), STATE, card, cycle_end=True)  # pushes epoch 1 out
    assert [e.name for e in pool.entries] == ["epoch_002", "epoch_003"]
    assert _on_disk(folder) == _files(2, 3)
    assert "cycle_end" in pool.entries[1].reasons

    assert pool.offer(4, _metrics(0.7), STATE, card)  # epoch 3 leaves the top 2 but ended a cycle
    assert [e.name for e in pool.entries] == ["epoch_002", "epoch_003", "epoch_004"]
    assert pool.entries[1].reasons == ["cycle_end"]
    assert _on_disk(folder) == _files(2, 3, 4)

    assert not pool.offer(5, _metrics(0.2), STATE, card)  # wanted by no criterion
    assert _on_disk(folder) == _files(2, 3, 4)

    assert pool.best().name == "epoch_004"
    assert pool.best("val_loss").name == "epoch_004"
    assert pool.paths() == [folder / "epoch_002", folder / "epoch_003", folder / "epoch_004"]
    saved = load_card(folder / "epoch_004")
    assert saved.metrics == _metrics(0.7) and saved.provenance["epoch"] == 4
    assert torch.equal(load_state(folder / "epoch_004")["w"], STATE["w"])

    reopened = CheckpointPool.open(folder, keep_top_k=5)
    assert reopened.keep_top_k == 2  # the index wins over the argument
    assert [asdict(e) for e in reopened.entries] == [asdict(e) for e in pool.entries]
    assert json.loads((folder / "pool.json").read_text())["keep_top_k"] == 2


def test_criteria_are_independent(tmp_path: Path) -> None:
    pool = CheckpointPool.open(tmp_path / "pool", keep_top_k=1)
    card = _card()
    pool.offer(1, {"val_loss": 0.1, "val_top1": 0.2, "val_macro_f1": 0.2}, STATE, card)
    pool.offer(2, {"val_loss": 0.5, "val_top1": 0.9, "val_macro_f1": 0.9}, STATE, card)
    assert [e.name for e in pool.entries] == ["epoch_001", "epoch_002"]
    assert pool.entries[0].reasons == ["top1_val_loss"]
    assert pool.entries[1].reasons == ["top1_val_top1", "top1_val_macro_f1"]
    assert pool.best().name == "epoch_002"
    assert pool.best("val_loss").name == "epoch_001"
    pool.offer(3, {"val_loss": 0.05, "val_top1": 0.95, "val_macro_f1": 0.95}, STATE, card)
    assert [e.name for e in pool.entries] == ["epoch_003"]
    assert _on_disk(tmp_path / "pool") == _files(3)


def test_reoffer_same_epoch_replaces(tmp_path: Path) -> None:
    """After a resume the same epoch may be offered again: one entry, the new metrics."""
    pool = CheckpointPool.open(tmp_path / "pool")
    pool.offer(1, _metrics(0.4), STATE, _card())
    pool.offer(1, _metrics(0.6), STATE, _card())
    assert len(pool.entries) == 1
    assert pool.entries[0].metrics["val_macro_f1"] == 0.6
    assert CheckpointPool.open(tmp_path / "pool").entries[0].metrics["val_macro_f1"] == 0.6


def test_best_ties_and_empty(tmp_path: Path) -> None:
    pool = CheckpointPool.open(tmp_path / "pool")
    with pytest.raises(ValueError, match="empty"):
        pool.best()
    pool.offer(1, _metrics(0.5), STATE, _card())
    pool.offer(2, _metrics(0.5), STATE, _card())
    assert pool.best().name == "epoch_001"  # ties: the earlier epoch wins


def test_reoffer_that_does_not_join_removes_old_files(tmp_path: Path) -> None:
    folder = tmp_path / "pool"
    pool = CheckpointPool.open(folder, keep_top_k=1)
    card = _card()
    pool.offer(1, {"val_loss": 0.1, "val_top1": 0.2, "val_macro_f1": 0.2}, STATE, card)
    pool.offer(2, {"val_loss": 0.5, "val_top1": 0.9, "val_macro_f1": 0.9}, STATE, card)
    # resumed after a kill between offer() and state.pt: epoch 2 comes again, now worse
    assert not pool.offer(2, {"val_loss": 0.9, "val_top1": 0.1, "val_macro_f1": 0.1}, STATE, card)
    assert [e.name for e in pool.entries] == ["epoch_001"]
    assert _on_disk(folder) == _files(1)
