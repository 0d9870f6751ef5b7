"""Image modality, fine-tuned: one backbone with one head per property, trained on every
property at once with a masked loss, and cooked into a greedy soup.

The frozen-feature :class:`~heritage.metadata.image.ImageModel` is the cheap baseline; this
one adapts the backbone to the collection, which is what the SILKNOW image classifier does:
a shared trunk learns what all properties need (a place and a technique both show in the
weave), and a property a record lacks simply contributes no loss for that record (masked
cross-entropy or focal loss from :mod:`heritage.training.losses`).

It is trained with the foundation recipe and pieces, configured by the same
:class:`~heritage.config.TrainConfig`: pretrained backbone from
:func:`~heritage.backbones.create_backbone`, decoded-image cache and augmentation from
:mod:`heritage.data`, LP-FT (heads start as linear probes), AdamW with cosine warm restarts,
and a soup of the checkpoints from the end of each restart cycle plus the best one
(:func:`~heritage.soups.average_state_dicts`). Checkpoint selection and the greedy soup read a
held-out share of the *training* records (``val_fraction``), never the predictor's
validation or test records. Input mixing, SynerMix and entropy regularisation are
single-label pieces and are refused here.

A fit is a fine-tune; the predictor's out-of-fold stacking fits one per fold, so budget
``folds + 1`` fine-tunes. Decoded images are shared by the fold clones. With a
``checkpoint_dir`` every fine-tune saves its progress after each epoch under a key of its
images, labels and options, so an interrupted predictor fit, rerun, resumes the fine-tune it
was in and reuses the ones it had finished.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from heritage.collection import CollectionWarning
from heritage.config import LossConfig, TrainConfig
from heritage.metadata.base import ConfiguredModality, Targets, absent
from heritage.metadata.image import aggregate_images
from heritage.metadata.persist import ArrayStore
from heritage.metadata.records import RecordTable

__all__ = ["MultiTaskConfig", "MultiTaskImageModel", "MultiTaskNet", "fine_tune_multitask"]

SoupRecipe = Literal["greedy", "uniform", "best"]


def _default_train() -> TrainConfig:
    # shorter than a single-label run (the fit happens folds + 1 times) and focal by default:
    # catalogue properties are long-tailed
    return TrainConfig(
        epochs=6, restart_epochs=2, loss=LossConfig("focal", gamma=2.0), label_smoothing=0.0
    )


def train_config(changes: dict[str, Any] | None = None, **fixed: Any) -> TrainConfig:
    """This modality's training defaults with ``changes`` (then ``fixed``) applied. A mapping
    for a section (``loss: {gamma: 1}``) updates the default section rather than replacing
    it, so the focal default survives a change of γ; ``loss: ce`` names another loss."""
    base = _default_train().to_dict()
    data = dict(base)
    shorthands = {"loss": "name", "mix": "method"}
    for key, value in {**(changes or {}), **fixed}.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            data[key] = {**base[key], **value}
        elif isinstance(value, str) and key in shorthands:
            data[key] = {**base[key], shorthands[key]: value}
        else:
            data[key] = value
    return TrainConfig.from_dict(data)


@dataclass
class MultiTaskConfig:
    """Fine-tuning options (``train``, the foundation trainer's config; a mapping is read over
    this modality's defaults), the share of training *records* held out for checkpoint
    selection and the soup, the soup recipe, and how a record's several images become one
    prediction (see :mod:`heritage.metadata.image`). Of the training options, the run-folder
    ones (``val_fraction``, ``test_fraction``, ``keep_top_k``, ``workers``) do not apply."""

    train: TrainConfig = field(default_factory=_default_train)
    val_fraction: float = 0.15
    soup: SoupRecipe = "greedy"
    aggregate: Literal["mean", "max_confidence"] = "mean"
    batch_size_eval: int = 64
    chunk: int = 512  # images decoded at a time when predicting: bounds memory
    # where each fine-tune keeps its progress (None: in memory only); a killed fit rerun with
    # the same data and options resumes after its last epoch, and a finished one is reused
    checkpoint_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.train, dict):
            self.train = train_config(self.train)
        t = self.train
        single_label_sampler = t.sampler in ("class_pairs", "balanced")
        if t.mix.method != "none" or t.entropy.enabled or single_label_sampler:
            raise ValueError(
                "the multi-task image model trains several labels per image: mixing, "
                "SynerMix, entropy regularisation and class-pair or class-balanced batches are "
                "single-label pieces and are not supported here (focal loss with "
                "alpha: inverse_frequency weighs rare classes per property instead)"
            )
        if isinstance(t.loss.alpha, list):
            raise ValueError(
                "a list of focal alpha weights cannot fit properties with different classes: "
                "use alpha: inverse_frequency (per property) or none"
            )
        if not 0.0 <= self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in [0, 0.5), got {self.val_fraction}")
        if self.soup not in ("greedy", "uniform", "best"):
            raise ValueError(f"soup must be greedy, uniform or best, got {self.soup!r}")
        if self.aggregate not in ("mean", "max_confidence"):
            raise ValueError(f"aggregate must be mean or max_confidence, got {self.aggregate!r}")


class MultiTaskNet(nn.Module):
    """A timm backbone's pooled features feeding one linear head per property."""

    def __init__(self, backbone: nn.Module, n_classes: list[int]) -> None:
        super().__init__()
        self.backbone = backbone
        # the width of pre_logits: some timm models (MobileNetV3) widen it past num_features
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.heads = nn.ModuleList(nn.Linear(width, n) for n in n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.features(x)
        return [head(f) for head in self.heads]


def _build(
    config: MultiTaskConfig, n_classes: list[int], *, pretrained: bool = True
) -> tuple[MultiTaskNet, Any]:
    """The network and its preprocessing; ``pretrained=False`` when the weights are about to
    be replaced by a fitted state (no weights file or download needed then)."""
    from heritage.backbones import create_backbone, resolve_preprocessing

    t = config.train
    backbone = create_backbone(
        t.backbone,
        2,
        weights=t.weights if pretrained else None,
        pretrained=t.pretrained and pretrained,
    )
    backbone.reset_classifier(0)
    prep = resolve_preprocessing(backbone, t.image_size, t.resize_mode)
    return MultiTaskNet(backbone, n_classes), prep


@torch.no_grad()
def _predict(
    model: MultiTaskNet, loader: Any, device: torch.device, precision: Any
) -> list[np.ndarray]:
    """Per property, (n, classes) probabilities in loader order."""
    model.eval()
    out: list[list[np.ndarray]] = [[] for _ in model.heads]
    for x, _ in loader:
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with precision.autocast(device):
            logits = model(x)
        for p, z in enumerate(logits):
            out[p].append(torch.softmax(z.float(), dim=1).cpu().numpy())
    return [
        np.concatenate(o) if o else np.zeros((0, h.out_features))
        for o, h in zip(out, model.heads, strict=True)
    ]


def _score(probas: list[np.ndarray], codes: np.ndarray, learnt: list[bool]) -> float:
    """Mean over the learnt properties (with known labels) of macro-F1 on the known labels."""
    from sklearn.metrics import f1_score

    scores = []
    for p, proba in enumerate(probas):
        known = codes[:, p] >= 0
        if learnt[p] and known.any():
            y = codes[known, p]
            scores.append(f1_score(y, proba[known].argmax(1), average="macro", labels=np.unique(y)))
    return float(np.mean(scores)) if scores else float("nan")


def _criterion(t: TrainConfig, counts: np.ndarray) -> nn.Module:
    """The property's loss. Inverse-frequency focal weights are computed per property; a class
    without a training image (a rare class missing from a fold) gets the smallest weight of
    the others, so the fit goes on rather than fail."""
    from heritage.training.losses import create_loss, inverse_frequency_of_present

    loss = t.loss
    if loss.name == "focal" and loss.alpha == "inverse_frequency":
        loss = LossConfig("focal", loss.gamma, inverse_frequency_of_present(counts).tolist())
    return create_loss(loss, label_smoothing=t.label_smoothing)


def holdout_records(owner: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over images: all images of a seeded ``fraction`` of the records (never
    one view of an object in training and another in the held-out part). None held out with
    fewer than 10 records."""
    records = np.unique(owner)
    n_val = round(fraction * len(records)) if len(records) >= 10 else 0
    chosen = np.random.default_rng(seed).permutation(records)[:n_val]
    return np.isin(owner, chosen)


#: options that do not change what a fine-tune learns, left out of its checkpoint key
_KEY_IGNORES = {"checkpoint_dir", "chunk", "batch_size_eval", "aggregate"}
_TRAIN_KEY_IGNORES = {"device", "precision", "workers"}


def _file_stamp(path: str) -> tuple[int, int] | None:
    """Size and modification time: a cheap stand-in for the file's contents."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def fit_key(paths: list[str], owner: np.ndarray, codes: np.ndarray, config: MultiTaskConfig) -> str:
    """A fine-tune's identity: its images (paths, sizes, modification times), their records and
    labels, and the options that change what it learns. Two fits with one key would train the
    same model, so a saved one can be resumed or reused; anything else gets another key and its
    own file."""
    options = {k: v for k, v in asdict(config).items() if k not in _KEY_IGNORES}
    options["train"] = {k: v for k, v in options["train"].items() if k not in _TRAIN_KEY_IGNORES}
    files = [_file_stamp(path) for path in paths]  # an image replaced in place changes the key
    digest = hashlib.sha256(
        json.dumps([paths, files, options], sort_keys=True, default=str).encode()
    )
    for array in (owner, codes):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()[:20]


@dataclass
class _FitData:
    """A multi-task fine-tune's images split by record into training and held-out parts, with
    each image's labels (``codes``; -1 unknown or not learnt) and their loaders."""

    codes: np.ndarray
    train: np.ndarray  # image indices
    val: np.ndarray
    learnt: list[bool]  # per property: at least two known classes in training
    loader: Any  # augmented training batches of (image, row)
    plain: Any  # training images without augmentation (LP-FT, BatchNorm recalibration)
    val_loader: Any

    @classmethod
    def make(
        cls,
        paths: list[str],
        owner: np.ndarray,
        codes: np.ndarray,
        config: MultiTaskConfig,
        cache: Any,
    ) -> _FitData:
        from heritage.data import ImageDataset, eval_transform, make_loader, train_transform

        t = config.train
        held = holdout_records(owner, config.val_fraction, t.seed)
        val, train = np.flatnonzero(held), np.flatnonzero(~held)
        learnt = [
            len(np.unique(codes[train][codes[train, p] >= 0, p])) >= 2
            for p in range(codes.shape[1])
        ]
        codes = np.where(np.asarray(learnt)[None, :], codes, -1)  # unlearnable: no loss

        def loader(rows: np.ndarray, augment: bool, batch_size: int) -> Any:
            if augment:
                transform = train_transform(cache.prep, t.augment)
            else:
                transform = eval_transform(cache.prep)
            # the target of an image is its row, looked up in codes
            ds = ImageDataset([paths[i] for i in rows], rows, cache, transform)
            if not augment:
                return make_loader(ds, batch_size, shuffle=False, workers=0)
            drop_last = len(rows) > batch_size
            return make_loader(
                ds, batch_size, shuffle=True, workers=0, seed=t.seed, drop_last=drop_last
            )

        return cls(
            codes,
            train,
            val,
            learnt,
            loader(train, True, min(t.batch_size, len(train))),
            loader(train, False, config.batch_size_eval),
            loader(val, False, config.batch_size_eval),
        )

    def score(self, model: MultiTaskNet, device: torch.device, precision: Any) -> float:
        """The held-out images' mean macro-F1 over the learnt properties."""
        probas = _predict(model, self.val_loader, device, precision)
        return _score(probas, self.codes[self.val], self.learnt)


def _init_heads_from_probes(
    model: MultiTaskNet, data: _FitData, device: torch.device, precision: Any
) -> None:
    """LP-FT: each learnt property's head starts as a linear probe on its known labels."""
    from heritage.probe import init_head_from_probe

    model.eval()
    feats = []
    with torch.no_grad():
        for x, _ in data.plain:
            with precision.autocast(device):
                x = x.to(device).contiguous(memory_format=torch.channels_last)
                feats.append(model.features(x).float().cpu())
    features = torch.cat(feats).numpy()
    for p, head in enumerate(model.heads):
        if data.learnt[p]:
            y = data.codes[data.train, p]
            known = y >= 0
            init_head_from_probe(head, features[known], y[known], head.out_features)


def _masked_step(
    config: TrainConfig, data: _FitData, n_classes: list[int], device: torch.device
) -> Any:
    """The multi-task step: the sum over learnt properties of the loss on the rows that know
    that property (a record without a label for it adds nothing)."""
    criteria = []
    for p, n in enumerate(n_classes):
        y = data.codes[data.train, p]
        counts = np.bincount(y[y >= 0], minlength=n).astype(float)
        criteria.append(_criterion(config, counts).to(device) if data.learnt[p] else None)
    codes = torch.as_tensor(data.codes, dtype=torch.long)

    def step(model: nn.Module, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        y = codes[rows].to(device)
        logits = model(x)
        return sum(
            crit(z, y[:, p], mask=y[:, p] >= 0)
            for p, (crit, z) in enumerate(zip(criteria, logits, strict=True))
            if crit is not None
        )

    return step


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@dataclass
class _Snapshots:
    """Callback: the fine-tune's history, and the weights of the epochs that end a restart
    cycle and of the best epoch so far, kept in memory for the soup."""

    ends: set[int]
    history: list[dict[str, float]] = field(default_factory=list)
    kept: list[tuple[float, int, dict[str, torch.Tensor]]] = field(default_factory=list)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None

    def on_epoch_end(self, engine: Any, record: Any) -> None:
        score = record.metrics.get("val_macro_f1", float("nan"))
        epoch = record.epoch
        self.history.append({"epoch": epoch, "loss": record.loss, "val_macro_f1": score})
        key = score if np.isfinite(score) else float(epoch)  # no val: later is better
        better = self.best is None or key > self.best[0]
        if better or epoch in self.ends:
            state = _cpu_copy(engine.model)
            if better:
                self.best = (key, epoch, state)
            if epoch in self.ends:
                self.kept.append((key, epoch, state))

    def state(self) -> dict[str, Any]:
        """What the resume state keeps of them."""
        return {"snapshots": self.kept, "history": self.history, "best": self.best}

    def ingredients(self) -> list[tuple[float, int, dict[str, torch.Tensor]]]:
        """The soup's candidates: the cycle ends and the best epoch."""
        assert self.best is not None
        kept = list(self.kept)
        if self.best[1] not in {e for _, e, _ in kept}:
            kept.append(self.best)
        return kept


def fine_tune_multitask(
    paths: list[str],
    owner: np.ndarray,
    codes: np.ndarray,
    n_classes: list[int],
    config: MultiTaskConfig,
    cache: Any,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fine-tune on images ``paths`` (``owner[i]``: the record of image i) with ``codes[i, p]``
    the class of image i for property p (-1 unknown); returns the soup's state dict (CPU) and
    a report (per-epoch validation scores, the soup's ingredients). ``cache`` is an
    :class:`~heritage.data.ImageCache` with the images already decoded. A property with fewer
    than two known classes takes no part (no loss, no say in selection). With
    ``config.checkpoint_dir`` the progress is saved after every epoch (see :func:`fit_key`).

    The loop is the trainer's engine (:mod:`heritage.training.engine`) with a masked
    multi-head step; the soup is :class:`~heritage.soups.ModelSoup` cooking in memory."""
    from heritage.data import ImageCache
    from heritage.runtime import Precision, configure_threads, resolve_device, seed_everything
    from heritage.training.engine import (
        SaveState,
        Validate,
        atomic_torch_save,
        create_engine,
        cycle_ends,
        freeze_early_stages,
        load_training_state,
    )

    t = config.train
    state_path, saved = None, None
    if config.checkpoint_dir is not None:
        state_path = Path(config.checkpoint_dir) / f"{fit_key(paths, owner, codes, config)}.pt"
        saved = load_training_state(state_path) if state_path.exists() else None
        if saved is not None and "soup" in saved:  # finished before: nothing to train
            return saved["soup"], saved["report"]
    configure_threads()
    seed_everything(t.seed)
    device = resolve_device(t.device)
    precision = Precision.resolve(t.precision, device)
    model, prep = _build(config, n_classes)
    if cache.prep != prep:  # decoded for other preprocessing: decode again, lazily
        cache = ImageCache(prep)
    frozen = freeze_early_stages(model.backbone, t.freeze_stages)
    model.to(device).to(memory_format=torch.channels_last)
    data = _FitData.make(paths, owner, codes, config, cache)
    if t.head_init == "probe" and saved is None:
        _init_heads_from_probes(model, data, device, precision)
    step = _masked_step(t, data, n_classes, device)
    engine = create_engine(
        model, model.heads, data.loader, step, t, device=device, precision=precision, frozen=frozen
    )
    snapshots = _Snapshots(set(cycle_ends(t)))
    if saved is not None:  # resume after the last finished epoch, snapshots and RNGs included
        engine.restore(saved)
        snapshots = _Snapshots(snapshots.ends, saved["history"], saved["snapshots"], saved["best"])
    n_val = len(data.val)
    callbacks: list[Any] = [
        Validate(lambda m: {"val_macro_f1": data.score(m, device, precision)} if n_val else {}),
        snapshots,
    ]
    if state_path is not None:
        callbacks.append(SaveState(state_path, lambda _: snapshots.state()))
    engine.run(t.epochs, start=saved["epoch"] + 1 if saved else 1, callbacks=callbacks)
    soup, ingredients = _cook(config, model, snapshots.ingredients(), data, device, precision)
    report = {
        "history": snapshots.history,
        "soup": config.soup,
        "ingredients": ingredients,
        "learnt": data.learnt,
        "val_records": len(np.unique(owner[data.val])),
        "val_macro_f1": data.score(model, device, precision) if n_val else float("nan"),
    }
    if state_path is not None:  # the snapshots are no longer needed: keep the result only
        atomic_torch_save({"soup": soup, "report": report}, state_path)
    return soup, report


def _cook(
    config: MultiTaskConfig,
    model: MultiTaskNet,
    candidates: list[tuple[float, int, dict[str, torch.Tensor]]],
    data: _FitData,
    device: torch.device,
    precision: Any,
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The configured soup of the candidate checkpoints, loaded into ``model``: its weights
    (CPU) and the epochs in it. ``best`` is the top-scoring checkpoint alone; without
    held-out records a greedy soup has nothing to be greedy on and takes the last one."""
    from heritage.soups import ModelSoup

    single = None
    if config.soup == "best":
        single = max(candidates, key=lambda c: c[0])
    elif config.soup == "greedy" and len(data.val) == 0:
        single = max(candidates, key=lambda c: c[1])  # the last checkpoint
    if single is not None:
        model.load_state_dict(single[2])
        return _cpu_copy(model), [single[1]]
    t = config.train
    soup = ModelSoup(config.soup, device=t.device, precision=t.precision).fit_states(
        [s for _, _, s in candidates],
        [str(e) for _, e, _ in candidates],
        model,
        lambda m: data.score(m, device, precision),
        data.plain,
    )
    return _cpu_copy(model), [int(name) for name in soup.ingredients_]


class MultiTaskImageModel(ConfiguredModality[MultiTaskConfig]):
    """Fine-tuned multi-task image modality. Learnt state: ``state_`` (the soup's weights),
    ``classes_``, ``trained_`` (property -> whether it could be learnt), ``report_``
    (validation history, soup ingredients)."""

    name = "image_multitask"
    config_class = MultiTaskConfig

    def __init__(
        self, config: MultiTaskConfig | None = None, *, _shared: dict[str, Any] | None = None
    ) -> None:
        super().__init__(config)
        self._shared = _shared if _shared is not None else {}
        self._model: Any = None

    def clone(self) -> MultiTaskImageModel:
        return MultiTaskImageModel(copy.deepcopy(self.config), _shared=self._shared)

    def _cache(self) -> Any:
        """The decoded-image cache for this configuration's preprocessing, shared by clones
        (one per preprocessing, so clones of other image sizes never mix)."""
        from heritage.backbones import create_backbone, resolve_preprocessing
        from heritage.data import ImageCache

        t = self.config.train
        key = (t.backbone, t.image_size, t.resize_mode)
        caches = self._shared.setdefault("caches", {})
        if key not in caches:
            backbone = create_backbone(t.backbone, 2, pretrained=False)
            caches[key] = ImageCache(resolve_preprocessing(backbone, t.image_size, t.resize_mode))
        return caches[key]

    def _images(self, records: RecordTable, cache: Any) -> tuple[list[str], np.ndarray]:
        """Readable image paths (decoded into ``cache``) and the record of each; unreadable
        ones are skipped with a warning."""
        from heritage.data import decode

        failed: dict[str, str] = self._shared.setdefault("failed", {})
        paths, owner, new_failures = [], [], []
        for r, record_paths in enumerate(records.image_paths()):
            for p in record_paths:
                if p not in cache.images and p not in failed:
                    try:
                        cache.images[p] = decode(p, cache.prep)
                    except Exception as exc:  # an unreadable file is skipped, not fatal
                        failed[p] = f"{type(exc).__name__}: {exc}"
                        new_failures.append(p)
                if p in cache.images:
                    paths.append(p)
                    owner.append(r)
        if new_failures:
            warnings.warn(
                f"skipped {len(new_failures)} unreadable image(s), e.g. {new_failures[0]} "
                f"({failed[new_failures[0]]})",
                CollectionWarning,
                stacklevel=3,
            )
        return paths, np.asarray(owner, dtype=np.int64)

    def fit(self, records: RecordTable, targets: Targets) -> MultiTaskImageModel:
        self.classes_ = {p: list(c) for p, c in targets.classes.items()}
        cache = self._cache()
        paths, owner = self._images(records, cache)
        props = list(self.classes_)
        codes = (
            np.stack([targets.codes[p][owner] for p in props], axis=1)
            if len(owner)
            else np.zeros((0, len(props)), dtype=np.int64)
        )
        self._model = None
        learnable = [len(np.unique(codes[codes[:, i] >= 0, i])) >= 2 for i in range(len(props))]
        if len(paths) < 2 or not any(learnable):
            self.trained_ = dict.fromkeys(props, False)
            self.state_, self.report_ = None, {"skipped": "fewer than 2 labelled images"}
            return self
        n_classes = [len(self.classes_[p]) for p in props]
        self.state_, self.report_ = fine_tune_multitask(
            paths, owner, codes, n_classes, self.config, cache
        )
        self.trained_ = dict(zip(props, self.report_["learnt"], strict=True))
        return self

    def _network(self) -> tuple[MultiTaskNet, Any, Any, Any]:
        from heritage.runtime import Precision, resolve_device

        if self._model is None:
            t = self.config.train
            device = resolve_device(t.device)
            n_classes = [len(c) for c in self.classes_.values()]
            model, prep = _build(self.config, n_classes, pretrained=False)
            model.load_state_dict(self.state_)
            model.to(device).to(memory_format=torch.channels_last).eval()
            self._model = (model, prep, device, Precision.resolve(t.precision, device))
        return self._model

    def state(self, arrays: ArrayStore, prefix: str) -> dict[str, Any]:
        """The configuration, the soup's weights as arrays and the fine-tune's report."""
        config = {k: v for k, v in asdict(self.config).items() if k != "train"}
        return {
            "config": {**config, "train": self.config.train.to_dict()},
            "classes": self.classes_,
            "trained": self.trained_,
            "weights": None
            if self.state_ is None
            else arrays.put_torch(f"{prefix}.weights", self.state_),
            "report": self.report_,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], arrays: ArrayStore) -> MultiTaskImageModel:
        config = dict(state["config"])
        train = TrainConfig.from_dict(config.pop("train"))
        model = cls(MultiTaskConfig(train=train, **config))
        model.classes_ = {p: list(c) for p, c in state["classes"].items()}
        model.trained_ = dict(state["trained"])
        weights = state["weights"]
        model.state_ = None if weights is None else arrays.get_torch(weights)
        model.report_ = state["report"]
        return model

    def predict_proba(self, records: RecordTable) -> dict[str, np.ndarray]:
        from heritage.data import ImageCache, ImageDataset, eval_transform, make_loader

        out = {p: absent(len(records), len(c)) for p, c in self.classes_.items()}
        if self.state_ is None:
            return out
        model, prep, device, precision = self._network()
        shared = self._cache()
        per_prop: list[list[np.ndarray]] = [[] for _ in self.classes_]
        owners = []
        # chunks of records, each decoded into a temporary cache (images already decoded for
        # training are reused): a large catalogue never sits in memory at once
        step = max(1, self.config.chunk)
        for start in range(0, len(records), step):
            part = records.subset(np.arange(start, min(start + step, len(records))))
            cache = ImageCache(prep)
            cache.images.update(
                {p: shared.images[p] for ps in part.image_paths() for p in ps if p in shared.images}
            )
            paths, owner = self._images(part, cache)
            if not paths:
                continue
            ds = ImageDataset(paths, None, cache, eval_transform(prep))
            loader = make_loader(ds, self.config.batch_size_eval, shuffle=False, workers=0)
            for p, proba in enumerate(_predict(model, loader, device, precision)):
                per_prop[p].append(proba)
            owners.append(owner + start)
        if not owners:
            return out
        owner = np.concatenate(owners)
        for p, prop in enumerate(self.classes_):
            if self.trained_[prop]:
                proba = np.concatenate(per_prop[p])
                out[prop] = aggregate_images(proba, owner, len(records), self.config.aggregate)
        return out

    def __getstate__(self) -> dict[str, Any]:
        # decoded images are keyed by local paths and the network is rebuilt from state_
        state = dict(self.__dict__)
        state["_shared"], state["_model"] = {}, None
        return state
