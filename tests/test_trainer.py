"""Tests for heritage.training.trainer (and mixing): run folder, resume, configuration."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from heritage.backbones import create_backbone
from heritage.collection import Collection
from heritage.config import (
    AugmentConfig,
    EntropyConfig,
    LossConfig,
    MixConfig,
    TrainConfig,
    load_config,
)
from heritage.training.engine import cycle_ends, freeze_early_stages
from heritage.training.losses import FocalLoss
from heritage.training.mixing import MixUpCutMix
from heritage.training.pool import CheckpointPool
from heritage.training.regularisers import EntropyRegulariser
from heritage.training.samplers import ClassAwareBatchSampler, ClassBalancedBatchSampler
from heritage.training.trainer import Trainer


def _history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "history.json").read_text())


def _epochs(run_dir: Path) -> list[int]:
    return [h["epoch"] for h in _history(run_dir)]


def _pool_files_match(run_dir: Path) -> None:
    pool = CheckpointPool.open(run_dir / "pool")
    assert pool.entries
    on_disk = {p.stem for p in (run_dir / "pool").glob("*.safetensors")}
    assert on_disk == {e.name for e in pool.entries}
    assert {p.stem for p in (run_dir / "pool").glob("epoch_*.json")} == on_disk


# ------------------------------------------------------------------ the run folder


def test_fit_writes_run_folder(trained_run: Path, image_folder: Path) -> None:
    for name in (
        "config.yaml",
        "split.csv",
        "skipped.csv",
        "history.json",
        "state.pt",
        "train_summary.json",
        "pool/pool.json",
    ):
        assert (trained_run / name).is_file(), name
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["source"] == str(image_folder) and config["backbone"] == "test_efficientnet"
    assert config["epochs"] == 2 and config["image_size"] == 32
    split = pd.read_csv(trained_run / "split.csv")
    assert list(split.columns) == ["path", "label", "split"]
    assert len(split) == 24 and set(split["split"]) == {"train", "val", "test"}
    assert not split["path"].str.startswith("/").any()  # relative to the source
    history = _history(trained_run)
    assert [h["epoch"] for h in history] == [0, 1, 2]  # epoch 0: the linear-probe head
    assert {"val_loss", "val_top1", "val_macro_f1", "val_ece"} <= set(history[0])
    for h in history[1:]:
        assert math.isfinite(h["train_loss"]) and h["epoch_seconds"] >= 0
    summary = json.loads((trained_run / "train_summary.json").read_text())
    assert summary["epochs"] == 2
    pool = CheckpointPool.open(trained_run / "pool")
    assert summary["pool"] == [e.name for e in pool.entries] == ["epoch_001", "epoch_002"]
    assert all("cycle_end" in e.reasons for e in pool.entries)  # restart_epochs=1
    _pool_files_match(trained_run)


def test_resume_continues_after_last_epoch(
    image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    collection = Collection.from_folder(image_folder)
    first = Trainer(tiny_config(epochs=1)).fit(collection, run_dir)
    assert [h["epoch"] for h in first.history] == [0, 1]
    split_before = (run_dir / "split.csv").read_text()
    second = Trainer(tiny_config(epochs=2)).fit(collection, run_dir)
    assert [h["epoch"] for h in second.history] == [0, 1, 2]
    assert _epochs(run_dir) == [0, 1, 2]
    assert (run_dir / "split.csv").read_text() == split_before
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["epochs"] == 2
    assert torch.load(run_dir / "state.pt", weights_only=True)["epoch"] == 2
    _pool_files_match(run_dir)
    # a finished run: fitting again trains nothing
    third = Trainer(tiny_config(epochs=2)).fit(collection, run_dir)
    assert [h["epoch"] for h in third.history] == [0, 1, 2]
    with pytest.raises(FileExistsError):
        Trainer(tiny_config(epochs=2)).fit(collection, run_dir, resume=False)


_KILLED_SCRIPT = """
import sys, time
from heritage.collection import Collection
from heritage.training.engine import Engine
from heritage.training.trainer import TrainConfig, Trainer

real_epoch = Engine.train_epoch

def slow_epoch(self, epoch):
    if epoch >= 2:  # hang in epoch 2 so the parent can kill mid-epoch
        time.sleep(120)
    return real_epoch(self, epoch)

Engine.train_epoch = slow_epoch
cfg = TrainConfig.from_dict({options!r})
Trainer(cfg).fit(Collection.from_folder(sys.argv[1]), sys.argv[2])
"""


def test_resume_after_killed_process(
    image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    options = tiny_config(epochs=3).to_dict()
    run_dir = tmp_path / "run"
    script = textwrap.dedent(_KILLED_SCRIPT).format(options=options)
    env = {**os.environ, "HERITAGE_NO_PROGRESS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(image_folder), str(run_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            history = run_dir / "history.json"
            if history.is_file() and 1 in _epochs(run_dir):
                break
            if proc.poll() is not None:
                pytest.fail(f"training subprocess ended early: {proc.stderr.read().decode()}")
            time.sleep(0.05)
        else:
            pytest.fail("epoch 1 did not finish in time")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert _epochs(run_dir) == [0, 1]
    assert not (run_dir / "train_summary.json").exists()

    result = Trainer(tiny_config(epochs=3)).fit(Collection.from_folder(image_folder), run_dir)
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    assert _epochs(run_dir) == [0, 1, 2, 3]
    assert [e.epoch for e in result.pool.entries] == [1, 2, 3]  # every epoch ended a cycle
    _pool_files_match(run_dir)
    assert not list(run_dir.rglob("*.tmp"))


# ------------------------------------------------------------------ training variants


def test_mixup_with_odd_batches(image_folder: Path, tiny_config: Callable, tmp_path: Path) -> None:
    cfg = tiny_config(epochs=1, batch_size=3, mix=MixConfig("mixup", alpha=0.2))
    result = Trainer(cfg).fit(Collection.from_folder(image_folder), tmp_path / "run")
    assert math.isfinite(result.history[-1]["train_loss"])
    assert result.pool.entries


def test_mixer_drops_the_odd_image() -> None:
    mixer = MixUpCutMix(0.2, 0.0, num_classes=3)
    x, y = mixer(torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1]))
    assert x.shape == (4, 3, 8, 8) and y.shape == (4, 3)
    torch.testing.assert_close(y.sum(dim=1), torch.ones(4))
    assert not MixConfig().enabled and MixConfig("cutmix").enabled


def test_regularisers_compose_in_one_run(
    image_folder: Path, tiny_config: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SynerMix + focal loss + per-class entropy together: the trainer builds each piece from
    the config, uses the class-pairs sampler for SynerMix, and records the step time."""
    built: dict[str, object] = {}
    original_iter = ClassAwareBatchSampler.__iter__

    def spy_iter(self):
        built["sampler"] = self
        return original_iter(self)

    monkeypatch.setattr(ClassAwareBatchSampler, "__iter__", spy_iter)
    cfg = tiny_config(
        epochs=1,
        batch_size=4,
        mix=MixConfig("synermix", beta=0.1),
        loss=LossConfig("focal", gamma=2.0, alpha="inverse_frequency"),
        entropy=EntropyConfig(weight=0.1, per_class=True),
    )
    trainer = Trainer(cfg)
    result = trainer.fit(Collection.from_folder(image_folder), tmp_path / "run")
    assert math.isfinite(result.history[-1]["train_loss"])
    assert result.history[-1]["step_seconds"] > 0
    assert isinstance(built.get("sampler"), ClassAwareBatchSampler)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["mix"]["method"] == "synermix" and saved["loss"]["name"] == "focal"
    assert TrainConfig.from_dict({k: v for k, v in saved.items() if k in TrainConfig().to_dict()})


def test_balanced_sampler_batches_survive_resume(
    image_folder: Path, tiny_config: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sampler='balanced' trains on ClassBalancedBatchSampler batches, and a run stopped after
    epoch 1 and resumed draws the same epoch-2 batches as an uninterrupted run."""
    drawn: list[list[list[int]]] = []
    original_iter = ClassBalancedBatchSampler.__iter__

    def spy_iter(self):
        batches = list(original_iter(self))
        drawn.append(batches)
        return iter(batches)

    monkeypatch.setattr(ClassBalancedBatchSampler, "__iter__", spy_iter)
    collection = Collection.from_folder(image_folder)
    Trainer(tiny_config(epochs=2, sampler="balanced")).fit(collection, tmp_path / "straight")
    straight = list(drawn)
    drawn.clear()
    Trainer(tiny_config(epochs=1, sampler="balanced")).fit(collection, tmp_path / "resumed")
    Trainer(tiny_config(epochs=2, sampler="balanced")).fit(collection, tmp_path / "resumed")
    assert len(straight) == 2 and straight[0] != straight[1]
    assert drawn == straight
    paired = tiny_config(epochs=1, sampler="balanced", mix=MixConfig("synermix", beta=0.1))
    with pytest.raises(ValueError, match="class_pairs"):
        Trainer(paired).fit(collection, tmp_path / "paired")
    assert not (tmp_path / "paired").exists()  # nothing written that a corrected rerun trips on


def test_entropy_on_a_named_layer(
    image_folder: Path, tiny_config: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer taps the named stage during training steps only, and a name the model
    does not have fails before any epoch is trained."""
    seen: list[tuple[int, ...]] = []
    original = EntropyRegulariser.forward

    def spy(self, features, labels):
        seen.append(tuple(self._tapped.shape))
        return original(self, features, labels)

    monkeypatch.setattr(EntropyRegulariser, "forward", spy)
    collection = Collection.from_folder(image_folder)
    cfg = tiny_config(epochs=1, entropy=EntropyConfig(weight=0.1, layer="blocks.1"))
    result = Trainer(cfg).fit(collection, tmp_path / "run")
    assert seen and all(len(shape) == 4 for shape in seen)  # a feature map, pooled later
    assert math.isfinite(result.history[-1]["train_loss"])
    bad = tiny_config(epochs=1, entropy=EntropyConfig(weight=0.1, layer="blocks.99"))
    with pytest.raises(ValueError, match="not a module of the model"):
        Trainer(bad).fit(collection, tmp_path / "bad")
    assert not (tmp_path / "bad" / "state.pt").exists()  # failed before the first epoch


def test_focal_loss_gets_class_weights_from_the_training_split(
    image_folder: Path, tiny_config: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[torch.Tensor] = []
    original = FocalLoss.forward

    def spy(self, logits, target, mask=None):
        seen.append(self.alpha.detach().clone())
        return original(self, logits, target, mask)

    monkeypatch.setattr(FocalLoss, "forward", spy)
    cfg = tiny_config(epochs=1, loss=LossConfig("focal", alpha="inverse_frequency"))
    collection = Collection.from_folder(image_folder)
    Trainer(cfg).fit(collection, tmp_path / "run")
    split = Collection.from_split_file(
        tmp_path / "run" / "split.csv", collection.root, collection.label_column
    )
    counts = np.bincount(split.split("train").targets(), minlength=len(collection.classes))
    expected = counts.sum() / (len(counts) * counts)  # N / (C · n_c)
    torch.testing.assert_close(seen[0].cpu(), torch.tensor(expected, dtype=seen[0].dtype))


def test_random_head_has_no_probe_epoch(
    image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    cfg = tiny_config(epochs=1, head_init="random", augment=AugmentConfig.preset("glyphs"))
    result = Trainer(cfg).fit(Collection.from_folder(image_folder), tmp_path / "run")
    assert [h["epoch"] for h in result.history] == [1]
    assert _epochs(tmp_path / "run") == [1]


# ------------------------------------------------------------------ configuration


def test_from_dict_augment_and_mix() -> None:
    cfg = TrainConfig.from_dict({"augment": "glyphs", "epochs": 3})
    assert cfg.augment == AugmentConfig.preset("glyphs") and cfg.epochs == 3
    cfg = TrainConfig.from_dict({"augment": {"preset": "glyphs", "rotate": 2, "scale": [0.5, 1]}})
    assert cfg.augment.hflip == 0.0 and cfg.augment.rotate == 2
    assert cfg.augment.scale == (0.5, 1)
    cfg = TrainConfig.from_dict({"augment": {"vflip": 0.5}})  # default preset: photo
    assert cfg.augment.hflip == 0.5 and cfg.augment.vflip == 0.5
    cfg = TrainConfig.from_dict({"mix": {"method": "mixup", "alpha": 0.2}})
    assert cfg.mix == MixConfig("mixup", alpha=0.2)
    cfg = TrainConfig.from_dict({"mix": "synermix", "loss": "focal", "entropy": 0.05})
    assert cfg.mix.method == "synermix" and cfg.loss.name == "focal"
    assert cfg.entropy == EntropyConfig(weight=0.05)
    old_run = TrainConfig.from_dict({"mix": {"mixup": 0.0, "cutmix": 0.0, "prob": 1.0}})
    assert old_run.mix == MixConfig()  # config.yaml of runs from before named methods
    old_run = TrainConfig.from_dict({"mix": {"mixup": 0.2, "cutmix": 1.0}})
    assert old_run.mix == MixConfig("mixup_cutmix", alpha=0.2, cutmix_alpha=1.0)
    with pytest.raises(ValueError, match="per-class entropy needs one label per image"):
        TrainConfig.from_dict({"mix": "mixup", "entropy": {"weight": 0.1, "per_class": True}})
    with pytest.raises(ValueError, match="unknown loss options"):
        TrainConfig.from_dict({"loss": {"name": "focal", "gama": 2}})
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        TrainConfig.from_dict({"augment": "marble"})


def test_load_config_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 5\nlr: 0.001\naugment: glyphs\n")
    cfg = load_config(path, {"epochs": 7, "lr": None, "augment": {"rotate": 4.0}, "batch_size": 2})
    assert cfg.epochs == 7 and cfg.lr == 0.001 and cfg.batch_size == 2
    assert cfg.augment.hflip == 0.0 and cfg.augment.rotate == 4.0  # glyphs, one change
    nested = tmp_path / "n.yaml"
    nested.write_text("train:\n  epochs: 4\n  mix: synermix\n  loss: {name: focal}\n")
    cfg = load_config(nested, {"mix": {"beta": 0.2}, "loss": {"gamma": 1.0}})
    assert cfg.epochs == 4 and cfg.mix.method == "synermix" and cfg.mix.beta == 0.2
    assert cfg.loss.name == "focal" and cfg.loss.gamma == 1.0
    assert load_config(None) == TrainConfig()
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty, {"seed": 3}).seed == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("- epochs\n- 3\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("epoch: 3\n")
    with pytest.raises(ValueError, match="unknown training options"):
        load_config(unknown)


def test_cycle_ends() -> None:
    assert cycle_ends(TrainConfig(epochs=12, restart_epochs=3)) == [3, 6, 9, 12]
    assert cycle_ends(TrainConfig(epochs=12, restart_epochs=3, restart_mult=2)) == [3, 9]
    assert cycle_ends(TrainConfig(epochs=2, restart_epochs=3)) == []
    assert cycle_ends(TrainConfig(epochs=2, restart_epochs=1)) == [1, 2]


def test_freeze_early_stages() -> None:
    model = create_backbone("test_efficientnet", 3, pretrained=False)
    assert freeze_early_stages(model, 0) == []
    assert all(p.requires_grad for p in model.parameters())
    frozen = freeze_early_stages(model, 2)
    assert frozen == [model.conv_stem, model.bn1, model.blocks[0], model.blocks[1]]
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
    for module in (*model.blocks[2:], model.conv_head, model.get_classifier()):
        assert all(p.requires_grad for p in module.parameters())
    with pytest.raises(ValueError, match="not supported"):
        freeze_early_stages(nn.Sequential(nn.Linear(2, 2)), 1)


def test_freeze_vit_keeps_position_embedding_with_its_stem() -> None:
    model = create_backbone("vit_tiny_patch16_224", 2, pretrained=False)
    freeze_early_stages(model, 1)
    assert not model.pos_embed.requires_grad and not model.cls_token.requires_grad
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.blocks[0].parameters())
    assert all(p.requires_grad for p in model.blocks[1].parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_freeze_resnet_layers() -> None:
    model = create_backbone("resnet10t", 2, pretrained=False)
    frozen = freeze_early_stages(model, 1)
    assert model.layer1 in frozen and model.layer2 not in frozen
    assert model.conv1 in frozen
    assert all(p.requires_grad for p in model.fc.parameters())
    assert not any(p.requires_grad for p in model.layer1.parameters())


@pytest.mark.parametrize(
    "bad",
    [
        {"precision": "fp8"},
        {"resize_mode": "stretch"},
        {"epochs": 0},
        {"lr": -1.0},
        {"val_fraction": 0.6, "test_fraction": 0.5},
        {"sampler": "weighted"},
        {"sampler": "balanced", "balance_power": 1.5},
    ],
)
def test_invalid_config_fails_at_construction(bad: dict) -> None:
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_resume_refuses_changed_options(
    image_folder: Path, tiny_config: Callable, tmp_path: Path
) -> None:
    collection = Collection.from_folder(image_folder)
    run_dir = tmp_path / "run"
    Trainer(tiny_config(epochs=1)).fit(collection, run_dir)
    with pytest.raises(ValueError, match="lr"):
        Trainer(tiny_config(epochs=2, lr=0.5)).fit(collection, run_dir)


def test_resume_keeps_the_saved_split(
    image_folder: Path, tiny_config: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resuming trains on the split saved with the run; a collection handed in with a
    different split is refused (it is another run) before any image is read, and the saved
    split stays as it was."""
    from heritage.data import ImageCache
    from heritage.training.runfolder import RunMismatch

    collection = Collection.from_folder(image_folder)
    run_dir = tmp_path / "run"
    Trainer(tiny_config(epochs=1, seed=0)).fit(collection, run_dir)
    saved = pd.read_csv(run_dir / "split.csv")
    fit_on = {str(collection.root / p) for p in saved.loc[saved["split"] != "test", "path"]}

    other = collection.with_split(seed=7)  # a different assignment of the same images
    assert set(other.split("test").paths()) != {
        str(collection.root / p) for p in saved.loc[saved["split"] == "test", "path"]
    }
    loaded: list[str] = []
    real_load = ImageCache.load

    def recording_load(self, paths, *args, **kwargs):
        loaded.extend(paths)
        return real_load(self, paths, *args, **kwargs)

    monkeypatch.setattr(ImageCache, "load", recording_load)
    with pytest.raises(RunMismatch, match="split"):
        Trainer(tiny_config(epochs=2, seed=0)).fit(other, run_dir)
    assert loaded == [] and pd.read_csv(run_dir / "split.csv").equals(saved)
    Trainer(tiny_config(epochs=2, seed=0)).fit(collection, run_dir)
    assert set(loaded) == fit_on  # train + val images of the saved split, no test image
    assert pd.read_csv(run_dir / "split.csv").equals(saved)
