"""Frozen image features from any backbone of the factory, computed once and cached.

Learning from triplets on a CPU is cheap only if the backbone runs once per image: the heads of
:mod:`heritage.similarity.learn` train on cached pooled features (or, to tune the last stages,
on cached activations before them), never on pixels. The cache is keyed by the backbone, its
preprocessing and the image file's path, size and modification time, so an edited image is
recomputed and a different backbone never reads another's features.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from heritage.config import DEFAULT_BACKBONE, ResizeMode
from heritage.progress import progress_bar

__all__ = ["EmbeddingConfig", "ImageEmbedder", "cosine_distances", "normalise"]


@dataclass(frozen=True)
class EmbeddingConfig:
    """Which backbone and preprocessing turn an image into a feature vector."""

    backbone: str = DEFAULT_BACKBONE  # offline ImageNet weights by default
    weights: str | None = None  # a local weights file for any timm architecture
    pretrained: bool = True
    image_size: int | None = None  # default: the backbone's pretrained input size
    resize_mode: ResizeMode = "crop"
    batch_size: int = 32
    device: str = "auto"

    def __post_init__(self) -> None:
        """A typo in the backbone or device stops here, before any image is read."""
        from heritage.backbones import BackboneError, check_backbone
        from heritage.runtime import check_device

        try:
            check_backbone(self.backbone)
        except BackboneError as exc:
            raise ValueError(str(exc)) from None
        check_device(self.device)
        if self.resize_mode not in ("crop", "squash", "pad"):
            raise ValueError(f"resize_mode must be crop, squash or pad, got {self.resize_mode!r}")

    def identity(self) -> dict[str, Any]:
        """What determines the features (device and batch size do not)."""
        d = asdict(self)
        d.pop("batch_size"), d.pop("device")
        return d

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbeddingConfig:
        return cls(**data)


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero): cosine similarity becomes a dot
    product, which is what FAISS's inner-product index searches."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 − cosine similarity between the rows of ``a`` and of ``b``."""
    return 1.0 - normalise(a) @ normalise(b).T


def _file_key(path: str) -> str:
    st = os.stat(path)
    raw = f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha1(raw.encode()).hexdigest()


class ImageEmbedder:
    """A frozen backbone's pooled penultimate features (timm's ``pre_logits``) per image.

    ``cache_dir``: features are stored there, one ``.npy`` per image under a folder named after
    the configuration, and reused by every later run. ``None`` keeps them in memory only.
    """

    def __init__(self, config: EmbeddingConfig | None = None, cache_dir: str | Path | None = None):
        self.config = config or EmbeddingConfig()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._memory: dict[str, np.ndarray] = {}
        self._parts: tuple[nn.Module, Any, torch.device] | None = None

    # ------------------------------------------------------------------ backbone
    def _backbone(self) -> tuple[nn.Module, Any, torch.device]:
        if self._parts is None:
            from heritage.backbones import frozen_feature_extractor_for

            self._parts = frozen_feature_extractor_for(self.config)
        return self._parts

    @property
    def dim(self) -> int:
        return int(self._backbone()[0].num_features)

    def _folder(self) -> Path | None:
        if self.cache_dir is None:
            return None
        ident = json.dumps(self.config.identity(), sort_keys=True)
        digest = hashlib.sha1(ident.encode()).hexdigest()[:12]
        return self.cache_dir / f"{self.config.backbone.replace('/', '_')}-{digest}"

    def _batches(self, paths: Sequence[str], description: str, failed: dict[str, str]):
        """(paths, normalised batch) for the readable paths, decoded a batch at a time; an
        image that cannot be decoded is recorded in ``failed`` and left out of its batch."""
        from heritage.data import decode, eval_transform

        _, prep, device = self._backbone()
        transform = eval_transform(prep)
        bs = self.config.batch_size
        with progress_bar() as bar:
            task = bar.add_task(description, total=len(paths))
            for start in range(0, len(paths), bs):
                chunk, tensors = [], []
                for p in paths[start : start + bs]:
                    try:
                        tensors.append(transform(decode(p, prep)))
                        chunk.append(p)
                    except Exception as exc:  # any decoder error means: skip this image
                        failed[p] = f"{type(exc).__name__}: {exc}"
                if chunk:
                    x = torch.stack(tensors).to(device)
                    yield chunk, x.contiguous(memory_format=torch.channels_last)
                bar.advance(task, len(paths[start : start + bs]))

    # ------------------------------------------------------------------ features
    def features(
        self, paths: Sequence[str | Path], description: str = "image features"
    ) -> np.ndarray:
        """One row of pooled features per image, in order. Unreadable images raise (see
        :meth:`try_features` to skip them)."""
        feats, failed = self.try_features(paths, description)
        if failed:
            first = next(iter(failed.items()))
            raise ValueError(f"{len(failed)} unreadable image(s), e.g. {first[0]}: {first[1]}")
        return feats

    def try_features(
        self, paths: Sequence[str | Path], description: str = "image features"
    ) -> tuple[np.ndarray, dict[str, str]]:
        """Features of the readable images (rows in order, unreadable ones left out) and
        ``{path: reason}`` for the others."""
        paths = [str(p) for p in paths]
        folder = self._folder()
        keys: dict[str, str] = {}
        failed: dict[str, str] = {}
        todo = []
        for p in dict.fromkeys(paths):
            try:
                keys[p] = _file_key(p)
            except OSError as exc:
                failed[p] = f"{type(exc).__name__}: {exc}"
                continue
            if keys[p] in self._memory:
                continue
            if folder is not None and (folder / f"{keys[p]}.npy").is_file():
                self._memory[keys[p]] = np.load(folder / f"{keys[p]}.npy")
            else:
                todo.append(p)
        if todo:
            model, _, _ = self._backbone()
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
            with torch.inference_mode():
                for chunk, x in self._batches(todo, description, failed):
                    f = model.forward_head(model.forward_features(x), pre_logits=True)
                    for p, row in zip(chunk, f.float().cpu().numpy(), strict=True):
                        self._memory[keys[p]] = row
                        if folder is not None:
                            np.save(folder / f"{keys[p]}.npy", row)
        rows = [self._memory[keys[p]] for p in paths if p not in failed]
        dim = rows[0].shape[0] if rows else 0
        return np.stack(rows) if rows else np.zeros((0, dim), np.float32), failed

    # ------------------------------------------------------------------ last stages
    def _stage_split(self, n_stages: int) -> int:
        model = self._backbone()[0]
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, nn.Sequential) or not hasattr(model, "conv_head"):
            raise ValueError(
                f"tuning last stages needs an EfficientNet/MobileNet-style timm model (blocks + "
                f"conv_head); {self.config.backbone!r} is not one. Use tune_stages=0."
            )
        if not 1 <= n_stages <= len(blocks):
            raise ValueError(f"n_stages must be in 1..{len(blocks)}, got {n_stages}")
        return len(blocks) - n_stages

    def stage_inputs(self, paths: Sequence[str | Path], n_stages: int) -> torch.Tensor:
        """Activations entering the last ``n_stages`` stages, one per image (cached by the
        caller: they are large, so they are not written to disk)."""
        cut = self._stage_split(n_stages)
        model = self._backbone()[0]
        out = []
        with torch.inference_mode():
            failed: dict[str, str] = {}
            for _, x in self._batches([str(p) for p in paths], "stage inputs", failed):
                x = model.bn1(model.conv_stem(x))
                out.append(model.blocks[:cut](x).float().cpu())
        if failed:
            first = next(iter(failed.items()))
            raise ValueError(f"{len(failed)} unreadable image(s), e.g. {first[0]}: {first[1]}")
        return torch.cat(out).contiguous()

    def trainable_stages(self, n_stages: int) -> nn.Module:
        """A copy of the last ``n_stages`` stages plus the final 1×1 conv and pooling: maps
        :meth:`stage_inputs` to the same pooled features as :meth:`features`, and can be
        trained. BatchNorm statistics stay frozen (a few hundred images cannot estimate them)."""
        cut = self._stage_split(n_stages)
        return LastStages(copy.deepcopy(self._backbone()[0]), cut).cpu()


class LastStages(nn.Module):
    """The tail of a timm EfficientNet-style model, from stage ``cut`` to pooled features."""

    def __init__(self, model: nn.Module, cut: int) -> None:
        super().__init__()
        self.blocks = model.blocks[cut:]
        self.conv_head, self.bn2, self.global_pool = model.conv_head, model.bn2, model.global_pool

    def train(self, mode: bool = True) -> LastStages:
        super().train(mode)
        for m in self.modules():  # frozen statistics, trainable affine parameters
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_pool(self.bn2(self.conv_head(self.blocks(x))))
