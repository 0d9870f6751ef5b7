"""The whole recipe in one estimator: a global model, context models, and their ensembles.

:class:`SimilarityModel` splits the training triplets into train and validation (seeded), fits

* ``global_model`` — one head trained on every training triplet, every image group mixed (the
  paper's "model fine-tuned on all data mixed together", the baseline the ensembles must beat);
* ``context_<name>`` — one head per context (:mod:`heritage.similarity.contexts`);
* ``ensemble_vote`` and ``ensemble_weighted`` over the context models, fitted on the
  validation triplets (which no head was trained on; they only chose each head's epoch).

and scores all of them, plus the pretrained embedding, with :meth:`evaluate`. It is what
``heritage similarity fit`` saves and ``benchmarks/similarity.py`` measures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from heritage.locking import locks_folder
from heritage.similarity.contexts import Context, build_contexts, fit_context_models
from heritage.similarity.embedding import EmbeddingConfig
from heritage.similarity.ensemble import (
    MajorityVote,
    Member,
    ReliabilityConfig,
    ReliabilityWeighted,
)
from heritage.similarity.items import ItemTable
from heritage.similarity.learn import HeadConfig, TripletEmbedding
from heritage.similarity.triplets import Agreement, TripletTable

__all__ = [
    "CONTEXT_KINDS",
    "SimilarityConfig",
    "SimilarityModel",
    "pretrained_agreement",
    "read_card",
]

CONTEXT_KINDS = ("groups", "column", "clusters")


@dataclass
class SimilarityConfig:
    """What :class:`SimilarityModel` fits.

    ``contexts``: which context models to train, any of ``groups`` (one per image group),
    ``column`` (one per value of the triplets' context column) and ``clusters``
    (``n_clusters`` clusters of references); the ensembles combine all of them.
    """

    contexts: tuple[str, ...] = ("groups",)
    n_clusters: int = 3
    val_fraction: float = 0.15
    seed: int = 0  # validation split, head initialisation, clusters
    head: HeadConfig = field(default_factory=HeadConfig)
    reliability: ReliabilityConfig = field(default_factory=ReliabilityConfig)

    def __post_init__(self) -> None:
        self.contexts = tuple(self.contexts)
        bad = [c for c in self.contexts if c not in CONTEXT_KINDS]
        if bad or not self.contexts:
            raise ValueError(f"contexts must be some of {CONTEXT_KINDS}, got {self.contexts}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> SimilarityConfig:
        d = dict(data)
        d["head"] = HeadConfig(**d.get("head", {}))
        d["reliability"] = ReliabilityConfig(**d.get("reliability", {}))
        d["contexts"] = tuple(d.get("contexts", ("groups",)))
        return cls(**d)


class SimilarityModel:
    """Global model, context models and ensembles over one set of items.

    ``fit(triplets, features)``: ``features`` maps each image group to a matrix with one row
    per item of ``triplets.items``. Learnt state: ``train_``, ``val_`` (the split),
    ``global_``, ``contexts_``, ``context_models_``, ``vote_``, ``weighted_``.
    """

    def __init__(
        self, config: SimilarityConfig | None = None, embedding: EmbeddingConfig | None = None
    ) -> None:
        self.config = config or SimilarityConfig()
        self.embedding = embedding or EmbeddingConfig()

    def _check_features(self, items: Sequence[str], features: Mapping[str, np.ndarray]) -> None:
        if not features:
            raise ValueError("features: give at least one image group")
        for name, f in features.items():
            if np.shape(f)[0] != len(items):
                raise ValueError(
                    f"features of group {name!r} have {np.shape(f)[0]} rows for {len(items)} items"
                )

    def members(self) -> list[Member]:
        return [Member(c.name, c.features, self.context_models_[c.name]) for c in self.contexts_]

    def fit(self, triplets: TripletTable, features: Mapping[str, np.ndarray]) -> SimilarityModel:
        cfg = self.config
        self._check_features(triplets.items, features)
        self.items_ = triplets.items
        self.features_ = {k: np.asarray(v, dtype=np.float32) for k, v in features.items()}
        self.train_, self.val_ = triplets.split(cfg.val_fraction, cfg.seed)
        head = HeadConfig(**{**cfg.head.to_dict(), "seed": cfg.seed})
        self.global_ = TripletEmbedding(head).fit(
            self.train_, list(self.features_.values()), val=self.val_, description="global model"
        )
        self.contexts_ = build_contexts(
            cfg.contexts, self.features_, triplets, cfg.n_clusters, cfg.seed
        )
        self.context_models_ = fit_context_models(self.contexts_, self.train_, head, val=self.val_)
        self._fit_ensembles()
        return self

    def _fit_ensembles(self) -> None:
        self.vote_ = MajorityVote(self.members()).fit(self.val_)
        self.weighted_ = ReliabilityWeighted(self.members(), self.config.reliability).fit(self.val_)

    def margins(self, triplets: TripletTable) -> dict[str, np.ndarray]:
        """Per method, ``d(r, farther) − d(r, closer)`` for each triplet (positive = agrees)."""
        triplets = triplets.with_items(self.items_)
        views = list(self.features_.values())
        out = {
            "pretrained_embedding": Member(
                "pretrained", views if len(views) > 1 else views[0]
            ).margins(triplets)
        }
        if len(views) > 1:
            for name, f in self.features_.items():
                out[f"pretrained_{name}"] = Member(name, f).margins(triplets)
        out["global_model"] = self.global_.margins(triplets, views)
        for member in self.members():
            out[f"context_{member.name}"] = member.margins(triplets)
        out["ensemble_vote"] = self.vote_.margins(triplets)
        out["ensemble_weighted"] = self.weighted_.margins(triplets)
        return out

    def evaluate(self, triplets: TripletTable) -> dict[str, Agreement]:
        """Agreement of every method with ``triplets`` (over the same items)."""
        from heritage.similarity.triplets import agreement

        triplets = triplets.with_items(self.items_)
        return {k: agreement(m, triplets) for k, m in self.margins(triplets).items()}

    def validation(self, folds: int = 5) -> dict[str, Agreement]:
        """Agreement on the validation split, for choosing settings without the test set.
        Heads chose their epoch on it (slightly flattering them all alike); the ensembles
        are scored by cross-fitting (each fold weighted by an ensemble fitted on the others)."""
        from heritage.similarity.ensemble import cross_validated_margins
        from heritage.similarity.triplets import agreement

        margins = self.margins(self.val_)
        seed = self.config.seed
        margins["ensemble_vote"] = cross_validated_margins(
            lambda: MajorityVote(self.members()), self.val_, folds, seed
        )
        margins["ensemble_weighted"] = cross_validated_margins(
            lambda: ReliabilityWeighted(self.members(), self.config.reliability),
            self.val_,
            folds,
            seed,
        )
        return {k: agreement(m, self.val_) for k, m in margins.items()}

    # ------------------------------------------------------------------ files
    @locks_folder("writing a similarity model", lambda self, folder, *a, **k: folder)
    def save(self, folder: str | Path) -> Path:
        """``similarity.json`` (configs, items, split), one head file per model. Features are
        not saved: they are recomputed from the images (and cached) on load."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.global_.save(folder, "global")
        for name, model in self.context_models_.items():
            model.save(folder, f"context_{name}")
        self.val_.to_frame().to_csv(folder / "val_triplets.csv", index=False)
        self.train_.to_frame().to_csv(folder / "train_triplets.csv", index=False)
        card = {
            "config": self.config.to_dict(),
            "embedding": self.embedding.identity(),
            "items": list(self.items_),
            "groups": list(self.features_),
            "contexts": [
                {
                    "name": c.name,
                    "kind": c.kind,
                    "value": c.value if not isinstance(c.value, np.integer) else int(c.value),
                    "clusters": None if c.clusters is None else c.clusters.tolist(),
                }
                for c in self.contexts_
            ],
        }
        (folder / "similarity.json").write_text(json.dumps(card, indent=1))
        return folder

    @classmethod
    def open(
        cls,
        folder: str | Path,
        items: ItemTable,
        cache_dir: str | Path,
        device: str | None = None,
    ) -> SimilarityModel:
        """A saved model with its items' features computed from ``items`` (the item table it
        was fitted on, or one holding the same ids) with the model's own embedding, on
        ``device`` when given, cached in ``cache_dir``."""
        card = read_card(folder)
        embedding = EmbeddingConfig.from_dict(card["embedding"])
        if device:
            embedding = EmbeddingConfig(**{**embedding.to_dict(), "device": device})
        features = items.features(embedding, cache_dir, card["items"], card["groups"])
        return cls.load(folder, features)

    @classmethod
    def load(cls, folder: str | Path, features: Mapping[str, np.ndarray]) -> SimilarityModel:
        """A saved model, with the features of its items recomputed by the caller (same
        groups, same item order: ``card["items"]``)."""
        folder = Path(folder)
        card = read_card(folder)
        config = SimilarityConfig.from_dict(card["config"])
        model = cls(config, EmbeddingConfig(**card["embedding"]))
        model.items_ = tuple(card["items"])
        missing = [g for g in card["groups"] if g not in features]
        if missing:
            raise ValueError(f"{folder} needs features of the image group(s) {missing}")
        model.features_ = {g: np.asarray(features[g], dtype=np.float32) for g in card["groups"]}
        model._check_features(model.items_, model.features_)
        views = list(model.features_.values())
        both = views[0] if len(views) == 1 else views
        model.contexts_ = []
        for c in card["contexts"]:
            feats = model.features_[c["name"]] if c["kind"] == "group" else both
            clusters = np.asarray(c["clusters"]) if c["clusters"] is not None else None
            model.contexts_.append(Context(c["name"], c["kind"], feats, c["value"], clusters))
        model.global_ = TripletEmbedding.load(folder, "global")
        model.context_models_ = {
            c.name: TripletEmbedding.load(folder, f"context_{c.name}") for c in model.contexts_
        }
        model.val_ = TripletTable.from_csv(folder / "val_triplets.csv", model.items_)
        model.train_ = TripletTable.from_csv(folder / "train_triplets.csv", model.items_)
        model._fit_ensembles()
        return model


def read_card(folder: str | Path) -> dict:
    """A saved model's ``similarity.json``: its configuration, embedding, items (in the order
    of its features' rows) and image groups."""
    path = Path(folder) / "similarity.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a similarity model (no similarity.json)")
    return json.loads(path.read_text())


def pretrained_agreement(
    items: ItemTable, triplets: TripletTable, embedding: EmbeddingConfig, cache_dir: str | Path
) -> dict[str, Agreement]:
    """How far the pretrained embedding, before any learning, agrees with ``triplets``: per
    image group (``pretrained_<group>``) and, with several groups, all of them together
    (``pretrained_embedding``). The baseline a fitted model must beat."""
    features = items.features(embedding, cache_dir)
    triplets = triplets.with_items(items.ids)
    scores = {f"pretrained_{g}": Member(g, f).agreement(triplets) for g, f in features.items()}
    if len(features) > 1:
        scores["pretrained_embedding"] = Member("all", list(features.values())).agreement(triplets)
    return scores
