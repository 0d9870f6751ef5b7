"""What every modality shares: the encoded targets and the modality interface.

A modality turns records into per-property class probabilities. Its one contract with the
fusion is the shape of :meth:`Modality.predict_proba`: for every property a
``(n_records, n_classes)`` array over the *predictor's* class list, with a row of NaN where the
modality has nothing to go on for that record (no text, no image, no tabular value). NaN rows,
rather than a uniform guess, let the fusion tell "absent" from "unsure", and let the predictor
answer "no prediction" when every modality is absent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np

from heritage.metadata.records import RecordError, RecordTable

if TYPE_CHECKING:
    from heritage.metadata.persist import ArrayStore

__all__ = ["ConfiguredModality", "Modality", "Targets", "absent", "expand_proba"]

ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class Targets:
    """Class indices per property (``-1`` where unknown) over a fixed class list, so that every
    fold and every modality agrees on what column ``j`` of a probability array means."""

    classes: dict[str, list[str]]
    codes: dict[str, np.ndarray]

    @classmethod
    def encode(cls, records: RecordTable, classes: Mapping[str, Sequence[str]]) -> Targets:
        """Codes for ``records``; a value outside ``classes`` counts as unknown."""
        codes = {}
        for prop, names in classes.items():
            index = {c: i for i, c in enumerate(names)}
            codes[prop] = np.array([index.get(v, -1) for v in records.labels(prop)], np.int64)
        return cls({p: list(c) for p, c in classes.items()}, codes)

    @classmethod
    def learn(cls, records: RecordTable) -> Targets:
        """Classes from the known values (sorted), then codes. A property needs two values:
        with one there is nothing to decide, and with none nothing to learn."""
        classes, problems = {}, []
        for prop in records.spec.properties:
            values = sorted({v for v in records.labels(prop) if v})
            if len(values) < 2:
                problems.append(
                    f"property {prop!r} has {len(values)} distinct known value(s) "
                    f"{values} in the training records; it needs at least 2"
                )
            classes[prop] = values
        if problems:
            raise RecordError(
                f"{records.source}: "
                + "; ".join(problems)
                + ". A property needs two known values to choose between: fill in values on more "
                "training records, or leave it out of --properties."
            )
        return cls.encode(records, classes)

    def subset(self, index: np.ndarray) -> Targets:
        return Targets(self.classes, {p: c[index] for p, c in self.codes.items()})

    @property
    def properties(self) -> list[str]:
        return list(self.classes)


def absent(n: int, n_classes: int) -> np.ndarray:
    """A probability block with every row absent (NaN)."""
    return np.full((n, n_classes), np.nan)


def expand_proba(proba: np.ndarray, seen: np.ndarray, n_classes: int) -> np.ndarray:
    """Columns of a model that saw only classes ``seen`` placed into the full class list (the
    others get 0): a fold may lack a rare class, and the fusion needs fixed columns."""
    out = np.zeros((proba.shape[0], n_classes))
    out[:, np.asarray(seen, dtype=np.int64)] = proba
    return out


class Modality(ABC):
    """One source of evidence. scikit-learn shaped: configuration in ``__init__``, learnt state
    in attributes ending in ``_``, ``fit`` returns self.

    ``name`` identifies it in outputs ("which modalities contributed") and benchmarks.
    :meth:`clone` returns an unfitted copy with the same configuration that *shares* expensive
    caches (embeddings, image features), so the K fold refits of out-of-fold stacking compute
    each embedding once.
    """

    name: str = "modality"

    @abstractmethod
    def fit(self, records: RecordTable, targets: Targets) -> Modality: ...

    @abstractmethod
    def predict_proba(self, records: RecordTable) -> dict[str, np.ndarray]:
        """Per property, ``(len(records), n_classes)`` probabilities; NaN rows where absent."""

    @abstractmethod
    def clone(self) -> Modality: ...

    def describe(self) -> dict[str, Any]:
        """Configuration for the model card."""
        return {"name": self.name}

    def state(self, arrays: ArrayStore, prefix: str) -> dict[str, Any]:
        """Configuration and learnt state as JSON data, arrays filed in ``arrays`` under
        names starting with ``prefix`` (see :mod:`heritage.metadata.persist`): what a saved
        model holds instead of a pickle."""
        raise NotImplementedError(
            f"modality {self.name!r} ({type(self).__name__}) has no safe saved form: "
            "implement state() and from_state()"
        )

    @classmethod
    def from_state(cls, state: Mapping[str, Any], arrays: ArrayStore) -> Modality:
        """The fitted modality :meth:`state` describes."""
        raise NotImplementedError(f"{cls.__name__} cannot be read from a saved model")


class ConfiguredModality(Modality, Generic[ConfigT]):
    """A modality set up by one config dataclass, so that the model card, the constructor and
    :meth:`clone` are written once: ``describe`` lists the config's fields, and a modality that
    holds nothing but its config clones as a new instance with the same config. One that also
    shares caches overrides ``__init__`` and ``clone``."""

    #: the config a modality built without one gets
    config_class: ClassVar[type[Any]]

    def __init__(self, config: ConfigT | None = None) -> None:
        self.config: ConfigT = config or self.config_class()

    def clone(self) -> ConfiguredModality[ConfigT]:
        return type(self)(self.config)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.config)}
