"""The whole train-and-soup path as one estimator in scikit-learn's shape.

``SoupClassifier(config).fit(collection)`` fine-tunes into a run folder, cooks the soups and
keeps one model (the greedy soup by default); ``predict`` / ``predict_proba`` then take image
paths or PIL images. Everything it does is the same as the command line's ``heritage train``,
``heritage soup`` and ``heritage predict``: the run folder it leaves is an ordinary run that
``heritage evaluate`` and ``heritage analyse`` read, and a second ``fit`` into the same folder
resumes it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from heritage.config import TrainConfig, check_choice

if TYPE_CHECKING:
    from PIL import Image

    from heritage.collection import Collection
    from heritage.model import ImageClassifier

Recipe = Literal["greedy_soup", "uniform_soup", "best_checkpoint"]


class SoupClassifier:
    """Fine-tune, cook soups, predict: ``fit`` / ``predict`` / ``predict_proba``.

    Configuration in the constructor, learnt state in attributes ending in ``_``:
    ``run_dir_`` (the run folder), ``model_`` (the kept :class:`~heritage.model.ImageClassifier`,
    calibrated on validation), ``classes_``.

    ``out``: the run folder; ``None`` trains into a temporary folder that lives as long as
    the estimator (give a folder to keep the checkpoints, resume, or analyse the run later).
    """

    def __init__(
        self,
        config: TrainConfig | None = None,
        *,
        recipe: Recipe = "greedy_soup",
        out: str | Path | None = None,
        overwrite: bool = False,
    ) -> None:
        if config is not None and not isinstance(config, TrainConfig):
            raise TypeError(
                f"config must be a TrainConfig, got {type(config).__name__}: "
                "write SoupClassifier(TrainConfig(epochs=6)) or TrainConfig.from_dict({...})"
            )
        check_choice("recipe", recipe, Recipe)
        self.config = config if config is not None else TrainConfig()
        self.recipe = recipe
        self.out = out
        self.overwrite = overwrite

    def fit(self, collection: Collection | str | Path) -> SoupClassifier:
        """Train on ``collection`` (a :class:`~heritage.collection.Collection`, a folder with
        one sub-folder per class, or a CSV manifest), cook the soups on its validation split
        and load the model named by ``recipe``."""
        from heritage.collection import Collection
        from heritage.model import ImageClassifier
        from heritage.run import Run
        from heritage.training.trainer import Trainer

        if not isinstance(collection, Collection):
            collection = Collection.load(collection, min_classes=2)
        if self.out is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="heritage-run-")
            run_dir = Path(self._tmp.name) / "run"
        else:
            run_dir = Path(self.out)
        Trainer(self.config).fit(collection, run_dir, overwrite=self.overwrite)
        run = Run.open(run_dir)
        if self.recipe != "best_checkpoint":
            run.cook_soups(recipes=(self.recipe.removesuffix("_soup"),))
        self.run_dir_ = run_dir
        self.model_: ImageClassifier = ImageClassifier.load(
            run.model_path(self.recipe), device=self.config.device
        )
        self.classes_ = self.model_.classes_
        return self

    def _fitted(self) -> ImageClassifier:
        if not hasattr(self, "model_"):
            raise RuntimeError("this SoupClassifier is not fitted yet: call fit(collection)")
        return self.model_

    def predict_proba(self, images: Images) -> np.ndarray:
        """Calibrated class probabilities (n, n_classes), columns in ``classes_`` order, for
        image paths or PIL images (one path or image counts as a list of one)."""
        return self._fitted().predict_proba(_as_list(images))

    def predict(self, images: Images) -> list[str]:
        """The most probable class of each image."""
        proba = self.predict_proba(images)
        return [self.classes_[i] for i in proba.argmax(axis=1)]

    def score(
        self, collection: Collection | str | Path | None = None, split: str = "test"
    ) -> float:
        """Macro-F1 (the metric every benchmark reports) on one split: of the split ``fit``
        made and saved when ``collection`` is None, else of ``collection`` (an object, a
        folder or a manifest with a split column)."""
        from sklearn.metrics import f1_score

        from heritage.collection import Collection
        from heritage.run import Run

        self._fitted()
        if collection is None:
            collection = Run.open(self.run_dir_).collection
        elif not isinstance(collection, Collection):
            collection = Collection.load(collection, min_classes=1)
        if not collection.has_split:
            raise ValueError(
                "this collection has no split column to score on; call score() without a "
                "collection to use the split fit made (saved in run_dir_/split.csv)"
            )
        part = collection.split(split)
        if len(part) == 0:
            raise ValueError(f"the {split} split of the collection is empty")
        truth = [collection.classes[i] for i in part.targets()]
        return float(f1_score(truth, self.predict(part.paths()), average="macro"))


Images = Sequence["str | Path | Image.Image"] | str | Path


def _as_list(images: Images) -> list:
    """One path or image as a list of one; a folder or a missing file named clearly."""
    from PIL import Image

    if isinstance(images, str | Path | Image.Image):
        images = [images]
    items = list(images)
    for item in items:
        if isinstance(item, str | Path):
            path = Path(item)
            if path.is_dir():
                raise ValueError(
                    f"{path} is a folder: pass its image files (e.g. sorted(path.glob('*.jpg')))"
                )
            if not path.is_file():
                raise FileNotFoundError(f"no image file at {path}")
    return items
