"""Ensembles of similarity models: majority vote, and a reliability-weighted ensemble.

Each context model is right more often in some regions of the image space than in others
(Liao & Chen, KDD 2024). The reliability-weighted ensemble estimates, for the reference of
each triplet, how often each model agreed with people on the *validation* triplets whose
references lie nearest to it, and lets the locally reliable models decide:

1. margins ``d(r, farther) − d(r, closer)`` of each member are put on one scale (divided by
   their standard deviation on the validation triplets);
2. local accuracy of member m around reference r: its share of correct answers on the k
   validation triplets with the nearest references (clear majorities only: a tie says
   nothing about who is right), shrunk towards its overall validation accuracy by ``prior``
   pseudo-triplets, so a sparse neighbourhood cannot produce a confident weight;
3. weight = log-odds of that accuracy (0 at or below chance): the optimal weight of
   independent voters of known accuracy (Nitzan & Paroush, 1982); weights sum to one;
4. the ensemble's margin is the weighted sum of the scaled margins.

"Nearest" is measured in the members' own embeddings (each normalised, concatenated), the
embedding space in which the models disagree. Weights depend only on the reference, so for a
query image the whole ranking uses one set of weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from heritage.similarity.embedding import normalise
from heritage.similarity.learn import TripletEmbedding, Views
from heritage.similarity.triplets import Agreement, TripletTable, agreement, margins_from_embeddings

__all__ = [
    "MajorityVote",
    "Member",
    "ReliabilityConfig",
    "ReliabilityWeighted",
    "cross_validated_margins",
]


@dataclass
class Member:
    """One model of an ensemble and the features (rows = items) it reads. ``model=None``
    means cosine distance on the features themselves (a pretrained embedding)."""

    name: str
    features: Views
    model: TripletEmbedding | None = None

    def _views(self) -> list[np.ndarray]:
        f = self.features
        return [f] if isinstance(f, np.ndarray) else list(f)

    def embeddings(self) -> np.ndarray:
        """Unit-length embedding of every item (several views: their normalised mean)."""
        views = [
            self.model.transform(v) if self.model is not None else normalise(v)
            for v in self._views()
        ]
        return normalise(np.mean(views, axis=0))

    def margins(self, triplets: TripletTable) -> np.ndarray:
        if self.model is not None:
            return self.model.margins(triplets, self.features)
        return np.mean([margins_from_embeddings(v, triplets) for v in self._views()], axis=0)

    def agreement(self, triplets: TripletTable) -> Agreement:
        return agreement(self.margins(triplets), triplets)


def _scales(margins: np.ndarray) -> np.ndarray:
    s = margins.std(axis=1)
    return np.where(s > 0, s, 1.0)


class MajorityVote:
    """Each member votes for ``closer`` or ``farther``; the majority wins, and a tie (an even
    number of members split equally) goes to the sum of their scaled margins.

    ``fit(val)`` only measures each member's margin scale. Learnt state: ``scale_``.
    """

    def __init__(self, members: Sequence[Member]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)

    def member_margins(self, triplets: TripletTable) -> np.ndarray:
        """(members, triplets) raw margins."""
        return np.stack([m.margins(triplets) for m in self.members])

    def fit(self, val: TripletTable) -> MajorityVote:
        self.scale_ = _scales(self.member_margins(val))
        return self

    def margins(self, triplets: TripletTable) -> np.ndarray:
        m = self.member_margins(triplets)
        votes = np.sign(m).sum(axis=0)
        # |0.5·tanh| < 1 ≤ any non-zero vote difference: it only ever breaks ties
        return votes + 0.5 * np.tanh((m / self.scale_[:, None]).sum(axis=0))

    def agreement(self, triplets: TripletTable) -> Agreement:
        return agreement(self.margins(triplets), triplets)


@dataclass
class ReliabilityConfig:
    """How local reliability is estimated (see the module docstring)."""

    k: int = 50  # validation triplets around a reference (about one reference's worth and a
    # few neighbours' on material-similarity)
    prior: float = 20.0  # pseudo-triplets at the member's overall validation accuracy
    max_accuracy: float = 0.99  # caps the log-odds weight

    def __post_init__(self) -> None:
        if self.k < 1 or self.prior < 0:
            raise ValueError("k must be >= 1 and prior >= 0")


class ReliabilityWeighted:
    """Weights each member by its estimated accuracy around the triplet's reference.

    ``fit(val)``: validation triplets the members were not trained on. Learnt state:
    ``scale_`` (per-member margin scale), ``accuracy_`` (overall validation accuracy on clear
    triplets), ``val_correct_`` (members × clear validation triplets), ``val_positions_``
    (their references in the locality space).
    """

    def __init__(self, members: Sequence[Member], config: ReliabilityConfig | None = None):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.config = config or ReliabilityConfig()

    def member_margins(self, triplets: TripletTable) -> np.ndarray:
        return np.stack([m.margins(triplets) for m in self.members])

    def locality_space(self) -> np.ndarray:
        """Every item's position: members' unit embeddings side by side, each weighted
        equally (so the squared distance is the mean of the members' squared distances)."""
        parts = [m.embeddings() for m in self.members]
        return np.concatenate(parts, axis=1) / np.sqrt(len(parts))

    def fit(self, val: TripletTable) -> ReliabilityWeighted:
        from sklearn.neighbors import NearestNeighbors

        margins = self.member_margins(val)
        self.scale_ = _scales(margins)
        clear = val.clear
        if not clear.any():
            raise ValueError("the validation triplets have no clear majority to measure with")
        self.val_correct_ = (margins[:, clear] > 0).astype(np.float64)
        self.accuracy_ = self.val_correct_.mean(axis=1)
        self._space = self.locality_space()
        self.val_positions_ = self._space[val.reference[clear]]
        self._k = min(self.config.k, len(self.val_positions_))
        self._nn = NearestNeighbors(n_neighbors=self._k).fit(self.val_positions_)
        return self

    def local_accuracy(self, references: np.ndarray) -> np.ndarray:
        """(members, len(references)) estimated accuracy around each reference item."""
        references = np.asarray(references)
        unique, inverse = np.unique(references, return_inverse=True)
        neighbours = self._nn.kneighbors(self._space[unique], return_distance=False)
        hits = self.val_correct_[:, neighbours].sum(axis=2)  # (members, unique)
        prior = self.config.prior
        acc = (hits + prior * self.accuracy_[:, None]) / (self._k + prior)
        return acc[:, inverse]

    def weights(self, triplets: TripletTable) -> np.ndarray:
        """(members, triplets) weights, summing to one per triplet."""
        acc = np.clip(self.local_accuracy(triplets.reference), 0.5, self.config.max_accuracy)
        w = np.log(acc / (1 - acc))
        total = w.sum(axis=0, keepdims=True)
        uniform = np.full_like(w, 1.0 / len(w))
        # nobody better than chance here: fall back to equal weights rather than none
        return np.where(total > 0, w / np.where(total > 0, total, 1.0), uniform)

    def margins(self, triplets: TripletTable) -> np.ndarray:
        z = self.member_margins(triplets) / self.scale_[:, None]
        return (self.weights(triplets) * z).sum(axis=0)

    def agreement(self, triplets: TripletTable) -> Agreement:
        return agreement(self.margins(triplets), triplets)


def cross_validated_margins(
    make: Callable[[], MajorityVote | ReliabilityWeighted],
    val: TripletTable,
    folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Margins of an ensemble on its own validation triplets, each fold scored by an ensemble
    fitted on the other folds: an honest validation score for choosing ensemble settings
    (scoring the triplets the weights were estimated on would flatter them)."""
    if folds < 2 or folds > len(val):
        raise ValueError(f"folds must be in 2..{len(val)}, got {folds}")
    fold = np.random.default_rng(seed).permutation(len(val)) % folds
    out = np.zeros(len(val))
    for j in range(folds):
        held = fold == j
        out[held] = make().fit(val.subset(~held)).margins(val.subset(held))
    return out
