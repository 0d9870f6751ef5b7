"""Model files and the classifier a user loads to predict.

A model file is ``NAME.safetensors`` plus ``NAME.json`` (a :class:`ModelCard`): architecture,
classes, preprocessing, the temperature fitted on validation, metrics and provenance. That is
enough to load, explain and publish a model (a checkpoint, a soup) without the run that made
it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from heritage import __version__
from heritage.backbones import Preprocessing, create_backbone
from heritage.calibration import softmax
from heritage.data import ImageCache, ImageDataset, decode, eval_transform
from heritage.modelfile import model_card_path, model_paths
from heritage.runtime import Precision, resolve_device

if TYPE_CHECKING:
    from heritage.collection import Collection
    from heritage.evaluation import Evaluation

FORMAT_VERSION = 1


@dataclass
class ModelCard:
    """Everything about a model except its weights (the JSON half of a model file).

    ``temperature``: probabilities are ``softmax(logits / temperature)``, fitted on
    validation when the model was saved (:mod:`heritage.calibration`); 1.0 for a model saved
    without validation data or by an older heritage.
    """

    architecture: str
    classes: list[str]
    preprocessing: Preprocessing
    metrics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    temperature: float = 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        d = dict(data)
        d["preprocessing"] = Preprocessing.from_dict(d["preprocessing"])
        return cls(**d)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_model_file(path: str | Path, state_dict: dict[str, torch.Tensor], card: ModelCard) -> Path:
    """Write weights and card atomically (a killed process never leaves half a file)."""
    weights, card_path = model_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    card.provenance.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    card.provenance.setdefault("heritage_version", __version__)
    tmp = weights.with_name(weights.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(tmp))
    os.replace(tmp, weights)
    _atomic_write_text(card_path, json.dumps(card.to_dict(), indent=2))
    return weights


def load_card(path: str | Path) -> ModelCard:
    card_path = model_card_path(path)
    try:
        return ModelCard.from_dict(json.loads(card_path.read_text()))
    except json.JSONDecodeError as exc:
        raise ValueError(f"model card {card_path} is not valid JSON ({exc})") from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"model card {card_path} is not a heritage model card ({type(exc).__name__}: "
            f"{exc}); a model is NAME.safetensors + NAME.json as `heritage train` or "
            "`heritage soup` write them"
        ) from exc


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    weights, _ = model_paths(path)
    if not weights.is_file():
        raise FileNotFoundError(f"model weights not found: {weights}")
    return load_file(str(weights))


def build_model(card: ModelCard, state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The timm module for a card, with weights if given (no download ever happens here)."""
    model = create_backbone(card.architecture, len(card.classes), pretrained=False)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    precision: Precision | None = None,
    *,
    channels_last: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and targets for every batch of ``loader`` (model in eval mode)."""
    precision = precision or Precision(None)
    model.eval()
    logits, targets = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with precision.autocast(device):
            out = model(x)
        logits.append(out.float().cpu())
        targets.append(y)
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()


def predict_proba(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    precision: Precision | None = None,
    temperature: float = 1.0,
) -> np.ndarray:
    """``softmax(logits / temperature)`` of ``model`` for every image of ``loader``."""
    return softmax(predict_logits(model, loader, device, precision)[0], temperature)


class ImageClassifier:
    """A trained image classifier: weights, classes and preprocessing together.

    ``ImageClassifier.load("runs/x/soups/greedy_soup")`` then ``predict_proba(paths)``; a soup,
    a checkpoint and a fine-tuned model all load the same way. Probabilities are calibrated
    with the card's temperature; ``calibrated=False`` gives the raw softmax, and
    ``predict_logits`` the logits.
    """

    def __init__(self, model: nn.Module, card: ModelCard, device: str = "auto") -> None:
        self.card = card
        self.device = resolve_device(device)
        self.precision = Precision.resolve("auto", self.device)
        self.model = model.to(self.device).to(memory_format=torch.channels_last).eval()

    @property
    def classes_(self) -> list[str]:
        return list(self.card.classes)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> ImageClassifier:
        card = load_card(path)
        return cls(build_model(card, load_state(path)), card, device)

    def save(self, path: str | Path) -> Path:
        return save_model_file(path, self.model.state_dict(), self.card)

    @property
    def temperature_(self) -> float:
        return float(self.card.temperature)

    def predict_proba(
        self,
        images: Sequence[str | Path | Image.Image],
        batch_size: int = 64,
        *,
        calibrated: bool = True,
    ) -> np.ndarray:
        """Class probabilities (n, n_classes), columns in the order of ``classes_``."""
        temperature = self.temperature_ if calibrated else 1.0
        return softmax(self.predict_logits(images, batch_size), temperature)

    def predict_logits(
        self, images: Sequence[str | Path | Image.Image], batch_size: int = 64
    ) -> np.ndarray:
        """Raw logits (n, n_classes), before the temperature."""
        prep = self.card.preprocessing
        cache = ImageCache(prep)
        keys = []
        for i, img in enumerate(images):
            key = f"<image {i}>" if isinstance(img, Image.Image) else str(img)
            if isinstance(img, Image.Image):
                cache.images[key] = decode(img, prep)
            keys.append(key)
        cache.load([k for k in keys if k not in cache.images], "reading images")
        return self._logits(keys, cache, batch_size)

    def predict_files(
        self, paths: Sequence[str], batch_size: int = 64, chunk_size: int = 512
    ) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
        """Probabilities for many image files, read in chunks so memory stays bounded.

        Returns (paths predicted, probabilities, [(path, reason)] for files that could not be
        read): one bad file never stops a long prediction run."""
        done, probas, failed = [], [], []
        for start in range(0, len(paths), chunk_size):
            cache = ImageCache(self.card.preprocessing)
            ok = []
            for path in paths[start : start + chunk_size]:
                try:
                    cache.images[path] = decode(path, self.card.preprocessing)
                    ok.append(path)
                except Exception as exc:  # any unreadable file: report it, keep going
                    failed.append((path, f"{type(exc).__name__}: {exc}"))
            if ok:
                probas.append(softmax(self._logits(ok, cache, batch_size), self.temperature_))
                done += ok
        empty = np.zeros((0, len(self.card.classes)))
        return done, (np.concatenate(probas) if probas else empty), failed

    def _logits(self, keys: list[str], cache: ImageCache, batch_size: int) -> np.ndarray:
        if not keys:
            return np.zeros((0, len(self.card.classes)))
        ds = ImageDataset(keys, None, cache, eval_transform(self.card.preprocessing))
        loader = DataLoader(ds, batch_size=batch_size)
        return predict_logits(self.model, loader, self.device, self.precision)[0]

    def predict(self, images: Sequence[str | Path | Image.Image]) -> list[str]:
        proba = self.predict_proba(images)
        return [self.card.classes[i] for i in proba.argmax(axis=1)]

    def label_indices(self, labels: Sequence[str], source: str = "the labels") -> list[int]:
        """The class index of each label. A label the model never learnt is an error naming
        it (``source`` says whose labels they are): a collection of other classes, or the
        wrong label column, would otherwise be scored as all wrong."""
        index = {c: i for i, c in enumerate(self.classes_)}
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ValueError(
                f"{source}: labels {unknown[:5]} are not among the model's classes "
                f"{self.classes_[:10]}; evaluate on a collection of the classes the model learnt "
                "(or check --label-column)"
            )
        return [index[c] for c in labels]

    def evaluate(
        self, images: Collection, source: str = "the collection"
    ) -> tuple[Evaluation, dict[str, Any]]:
        """Scores on every image of ``images`` with the calibrated probabilities, and what a
        report adds to them: the temperature and the calibration error before it."""
        from heritage.evaluation import evaluate, expected_calibration_error

        y = self.label_indices(list(images.records["label"]), source)
        logits = self.predict_logits(images.paths())
        evaluation = evaluate(y, softmax(logits, self.temperature_), self.classes_)
        extra = {
            "temperature": self.temperature_,
            "ece_raw": expected_calibration_error(y, softmax(logits)),
        }
        return evaluation, extra
