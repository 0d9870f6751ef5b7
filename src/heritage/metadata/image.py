"""Image modality: frozen pretrained features, one logistic head per property, and a record's
several images aggregated into one prediction.

The interface is the one every modality has (:class:`~heritage.metadata.base.Modality`):
per-record image paths in, per-record class probabilities per property out, NaN where a record
has no readable image. This implementation is the cheap, strong baseline: features from a
frozen ImageNet backbone (heritage's :func:`~heritage.probe.extract_features` on
:func:`~heritage.backbones.create_backbone`, the same pipeline as the linear probe) and a
class-balanced logistic regression (:class:`~heritage.probe.LinearProbe`) per property. Each
image is a training row carrying its record's labels; features are computed once per image
and shared by the fold refits.

Several images per record (``aggregate``):

* ``"mean"`` (default) averages the images' probability vectors. Views of one object are
  independent evidence of the same label; the mean is robust to one odd view (a detail, the
  back of a textile) and keeps probabilities calibrated-ish.
* ``"max_confidence"`` takes the single image the head is surest about. Better when most
  photographs are uninformative and one is telling; worse when an outlier is confidently
  wrong, since one image then decides.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from heritage.collection import CollectionWarning
from heritage.metadata.base import ConfiguredModality, Targets, absent
from heritage.metadata.persist import (
    ArrayStore,
    logistic_from_state,
    logistic_state,
    scaler_from_state,
    scaler_state,
)
from heritage.metadata.records import RecordTable
from heritage.probe import LinearProbe
from heritage.progress import progress_bar

__all__ = ["ImageConfig", "ImageFeatureStore", "ImageModel", "aggregate_images"]


@dataclass
class ImageConfig:
    """Backbone, preprocessing and head of the image modality."""

    backbone: str = "efficientnet_lite0"
    weights: str | None = None  # a local weights file (any timm architecture)
    pretrained: bool = True
    image_size: int | None = None  # default: the backbone's pretrained size
    resize_mode: Literal["crop", "squash", "pad"] = "crop"
    aggregate: Literal["mean", "max_confidence"] = "mean"
    C: float = 0.5
    batch_size: int = 64
    chunk: int = 512  # images decoded at a time: bounds memory on large collections
    device: str = "auto"

    def __post_init__(self) -> None:
        from heritage.backbones import BackboneError, check_backbone
        from heritage.runtime import check_device

        if self.aggregate not in ("mean", "max_confidence"):
            raise ValueError(f"aggregate must be mean or max_confidence, got {self.aggregate!r}")
        try:  # a typo stops here, before any other modality is fitted
            check_backbone(self.backbone)
        except BackboneError as exc:
            raise ValueError(f"image config: {exc}") from None
        check_device(self.device)


def aggregate_images(proba: np.ndarray, owner: np.ndarray, n_records: int, how: str) -> np.ndarray:
    """Per-record probabilities from per-image ones (``owner[i]`` = record of image ``i``);
    NaN rows for records without images."""
    out = np.full((n_records, proba.shape[1]), np.nan)
    for r in np.unique(owner):
        rows = proba[owner == r]
        out[r] = rows.mean(axis=0) if how == "mean" else rows[rows.max(axis=1).argmax()]
    return out


class ImageFeatureStore:
    """Frozen features per image path, computed once; unreadable images are remembered as
    such (and skipped) rather than failing the fit."""

    def __init__(self, config: ImageConfig) -> None:
        self.config = config
        self.features: dict[str, np.ndarray] = {}
        self.failed: dict[str, str] = {}
        self._model: Any = None

    def _backbone(self) -> tuple[Any, Any, Any]:
        from heritage.backbones import frozen_feature_extractor_for

        if self._model is None:
            self._model = frozen_feature_extractor_for(self.config)
        return self._model

    def compute(self, paths: list[str]) -> None:
        from heritage.data import ImageCache, ImageDataset, decode, eval_transform, make_loader
        from heritage.probe import extract_features

        todo = [p for p in dict.fromkeys(paths) if p not in self.features and p not in self.failed]
        if not todo:
            return
        model, prep, device = self._backbone()
        with progress_bar() as bar:
            task = bar.add_task("image features", total=len(todo))
            for start in range(0, len(todo), self.config.chunk):
                cache = ImageCache(prep)
                ok = []
                for path in todo[start : start + self.config.chunk]:
                    try:
                        cache.images[path] = decode(path, prep)
                        ok.append(path)
                    except Exception as exc:  # unreadable file: this image is skipped
                        self.failed[path] = f"{type(exc).__name__}: {exc}"
                if ok:
                    ds = ImageDataset(ok, None, cache, eval_transform(prep))
                    loader = make_loader(ds, self.config.batch_size, shuffle=False, workers=0)
                    feats, _ = extract_features(model, loader, device)
                    self.features.update(zip(ok, feats, strict=True))
                bar.advance(task, len(todo[start : start + self.config.chunk]))
        failed = [p for p in todo if p in self.failed]
        if failed:
            warnings.warn(
                f"skipped {len(failed)} unreadable image(s), e.g. {failed[0]} "
                f"({self.failed[failed[0]]}); records with no readable image get no image "
                "prediction",
                CollectionWarning,
                stacklevel=3,
            )

    def __getstate__(self) -> dict[str, Any]:
        # features are keyed by local paths and the backbone is rebuilt from its weights:
        # neither belongs in a saved model
        return {"config": self.config, "features": {}, "failed": {}, "_model": None}


class ImageModel(ConfiguredModality[ImageConfig]):
    """Frozen-backbone features + a :class:`LinearProbe` per property. Learnt state:
    ``heads_`` (property -> probe or None), ``classes_``."""

    name = "image"
    config_class = ImageConfig

    def __init__(
        self, config: ImageConfig | None = None, *, _store: ImageFeatureStore | None = None
    ) -> None:
        super().__init__(config)
        self._store = _store

    @property
    def store(self) -> ImageFeatureStore:
        if self._store is None:
            self._store = ImageFeatureStore(self.config)
        return self._store

    def clone(self) -> ImageModel:
        return ImageModel(self.config, _store=self.store)

    def _images(self, records: RecordTable) -> tuple[np.ndarray, np.ndarray]:
        """Features of every readable image and the record each belongs to."""
        per_record = records.image_paths()
        self.store.compute([p for paths in per_record for p in paths])
        feats, owner = [], []
        for r, paths in enumerate(per_record):
            for p in paths:
                if p in self.store.features:
                    feats.append(self.store.features[p])
                    owner.append(r)
        if not feats:
            return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
        return np.stack(feats), np.asarray(owner, dtype=np.int64)

    def fit(self, records: RecordTable, targets: Targets) -> ImageModel:
        self.classes_ = {p: list(c) for p, c in targets.classes.items()}
        feats, owner = self._images(records)
        self.heads_: dict[str, LinearProbe | None] = {}
        for prop, codes in targets.codes.items():
            y = codes[owner] if len(owner) else codes[:0]
            rows = y >= 0
            if len(np.unique(y[rows])) < 2:
                self.heads_[prop] = None
                continue
            self.heads_[prop] = LinearProbe(C=self.config.C).fit(
                feats[rows], y[rows], n_classes=len(self.classes_[prop])
            )
        return self

    def state(self, arrays: ArrayStore, prefix: str) -> dict[str, Any]:
        """The configuration (the backbone by name or weights file: its features are
        recomputed where the model is used) and each property's probe."""
        heads: dict[str, Any] = {}
        for prop, probe in self.heads_.items():
            heads[prop] = None
            if probe is not None:
                name = f"{prefix}.heads.{prop}"
                heads[prop] = {
                    "C": probe.C,
                    "class_weight": probe.class_weight,
                    "max_iter": probe.max_iter,
                    "n_classes": probe.n_classes_,
                    "scaler": scaler_state(probe.scaler_, arrays, f"{name}.scaler"),
                    "model": logistic_state(probe.model_, arrays, f"{name}.model"),
                }
        return {"config": asdict(self.config), "classes": self.classes_, "heads": heads}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], arrays: ArrayStore) -> ImageModel:
        model = cls(ImageConfig(**state["config"]))
        model.classes_ = {p: list(c) for p, c in state["classes"].items()}
        model.heads_ = {}
        for prop, head in state["heads"].items():
            probe = None
            if head is not None:
                probe = LinearProbe(head["C"], head["class_weight"], head["max_iter"])
                probe.n_classes_ = int(head["n_classes"])
                probe.scaler_ = scaler_from_state(head["scaler"], arrays)
                probe.model_ = logistic_from_state(head["model"], arrays)
                probe.classes_ = probe.model_.classes_
            model.heads_[prop] = probe
        return model

    def predict_proba(self, records: RecordTable) -> dict[str, np.ndarray]:
        out = {p: absent(len(records), len(c)) for p, c in self.classes_.items()}
        feats, owner = self._images(records)
        if len(owner) == 0:
            return out
        for prop, head in self.heads_.items():
            if head is not None:
                per_image = head.predict_proba(feats)
                out[prop] = aggregate_images(per_image, owner, len(records), self.config.aggregate)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_store"] = None
        return state
