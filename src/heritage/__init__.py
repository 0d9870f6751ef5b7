"""heritage: trustworthy machine learning for small cultural-heritage collections.

The front door, as timm's and scikit-learn's::

    import heritage as ht

    collection = ht.Collection.load("photos/")            # a folder per class, or a manifest
    clf = ht.SoupClassifier(ht.TrainConfig(epochs=6), out="runs/photos").fit(collection)
    clf.predict(["new/photo.jpg"])

Names load on first use (PEP 562), so ``import heritage`` costs milliseconds and imports
neither torch nor scikit-learn until a name that needs them is touched.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# OpenMP threads that spin while they wait turn a shared or oversubscribed CPU (a laptop doing
# other work, two jobs on two cores) into a 10-20x slowdown; passive waiting costs little when
# the cores are free. Set before torch loads its OpenMP runtime; the user's own value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # images: collections, training, soups, models
    "Collection": "heritage.collection",
    "CollectionError": "heritage.collection",
    "TrainConfig": "heritage.config",
    "load_config": "heritage.config",
    "Trainer": "heritage.training.trainer",
    "SoupClassifier": "heritage.estimator",
    "ModelSoup": "heritage.soups",
    "SoftVoting": "heritage.soups",
    "ImageClassifier": "heritage.model",
    "Run": "heritage.run",
    "create_backbone": "heritage.backbones",
    "available_backbones": "heritage.backbones",
    # catalogue metadata
    "MetadataPredictor": "heritage.metadata",
    "RecordTable": "heritage.metadata",
    "RecordSpec": "heritage.metadata",
    "FusionConfig": "heritage.metadata",
    # knowledge graph and similarity
    "KnowledgeGraph": "heritage.kg",
    "SimilarityModel": "heritage.similarity",
    "SimilarityIndex": "heritage.similarity",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'heritage' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from heritage.backbones import available_backbones, create_backbone  # noqa: F401
    from heritage.collection import Collection, CollectionError  # noqa: F401
    from heritage.config import TrainConfig, load_config  # noqa: F401
    from heritage.estimator import SoupClassifier  # noqa: F401
    from heritage.kg import KnowledgeGraph  # noqa: F401
    from heritage.metadata import FusionConfig, MetadataPredictor, RecordSpec, RecordTable  # noqa: F401
    from heritage.model import ImageClassifier  # noqa: F401
    from heritage.run import Run  # noqa: F401
    from heritage.similarity import SimilarityIndex, SimilarityModel  # noqa: F401
    from heritage.soups import ModelSoup, SoftVoting  # noqa: F401
    from heritage.training.trainer import Trainer  # noqa: F401
