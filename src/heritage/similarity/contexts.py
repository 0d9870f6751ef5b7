"""Contexts, and one model per context.

What counts as "alike" depends on the context (Liao & Chen, KDD 2024): a model trained on the
judgements of one context is biased towards it, and judgements sample the space of (reference,
A, B) sparsely, so each context model is good somewhere and worse elsewhere. The ensembles of
:mod:`heritage.similarity.ensemble` put them back together. Three ways to say what a context
is, one constructor each:

* :func:`contexts_from_column` — the triplet file names each triplet's context (e.g. the
  question the annotators were asked); a model learns from its context's triplets only.
* :func:`contexts_from_groups` — groups of images the user names, e.g. the two renderings of
  every material in ``material-similarity``: each model learns from *every* judgement but sees
  only its group's images, so it specialises in how the items look there.
* :func:`contexts_from_clusters` — clusters of reference images (k-means on their features):
  a model learns from the judgements whose reference falls in its cluster (the paper's
  "context-sensitive data clusters").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from torch import nn

from heritage.similarity.learn import HeadConfig, TripletEmbedding
from heritage.similarity.triplets import TripletTable

__all__ = [
    "Context",
    "contexts_from_clusters",
    "contexts_from_column",
    "contexts_from_groups",
    "fit_context_models",
]


@dataclass(frozen=True)
class Context:
    """A named context: the features its model sees, and which triplets belong to it.

    ``kind``: ``column`` (triplets whose context value is ``value``), ``group`` (every
    triplet, this group's features) or ``cluster`` (triplets whose reference is in cluster
    ``value`` of ``clusters``, an item → cluster array).
    """

    name: str
    kind: str
    features: np.ndarray | list[np.ndarray]  # one matrix, or views of the same items
    value: str | int | None = None
    clusters: np.ndarray | None = None

    def mask(self, triplets: TripletTable) -> np.ndarray:
        """Which of ``triplets`` belong to this context."""
        if self.kind == "group":
            return np.ones(len(triplets), dtype=bool)
        if self.kind == "column":
            if triplets.context is None:
                raise ValueError(f"context {self.name!r} needs triplets with a context column")
            return triplets.context == self.value
        if self.kind == "cluster":
            return self.clusters[triplets.reference] == self.value
        raise ValueError(f"unknown context kind {self.kind!r}")

    def select(self, triplets: TripletTable) -> TripletTable:
        return triplets.subset(self.mask(triplets))


def contexts_from_column(triplets: TripletTable, features: np.ndarray) -> list[Context]:
    """One context per value of the triplets' context column (same image features for all)."""
    if triplets.context is None:
        raise ValueError(
            f"{triplets.source} has no context column; load it with context_column=..."
        )
    return [Context(str(v), "column", features, value=v) for v in triplets.contexts()]


def contexts_from_groups(features: Mapping[str, np.ndarray]) -> list[Context]:
    """One context per image group (``{group name: features of every item}``)."""
    shapes = {k: np.shape(v)[0] for k, v in features.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"every group needs one row per item, got {shapes}")
    return [Context(str(name), "group", np.asarray(f)) for name, f in features.items()]


def contexts_from_clusters(
    features: np.ndarray, n_clusters: int, seed: int = 0, cluster_features: np.ndarray | None = None
) -> list[Context]:
    """``n_clusters`` contexts from k-means on the (normalised) features of the items; a
    triplet belongs to the cluster of its reference. ``cluster_features`` clusters on other
    features than the model sees (e.g. all renderings together)."""
    from sklearn.cluster import KMeans

    from heritage.similarity.embedding import normalise

    space = normalise(features if cluster_features is None else cluster_features)
    if not 2 <= n_clusters <= len(space):
        raise ValueError(f"n_clusters must be in 2..{len(space)}, got {n_clusters}")
    labels = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(space)
    return [
        Context(f"cluster{j}", "cluster", np.asarray(features), value=j, clusters=labels)
        for j in range(n_clusters)
    ]


def build_contexts(
    kinds: Sequence[str],
    features: Mapping[str, np.ndarray],
    triplets: TripletTable,
    n_clusters: int = 3,
    seed: int = 0,
) -> list[Context]:
    """The contexts of the kinds asked for (``groups``, ``column``, ``clusters``), in that
    order. Column and cluster models see every image group (like the global model); clusters
    are drawn on all groups together."""
    views = [np.asarray(f) for f in features.values()]
    both = views[0] if len(views) == 1 else views
    contexts: list[Context] = []
    if "groups" in kinds:
        contexts += contexts_from_groups(features)
    if "column" in kinds:
        contexts += contexts_from_column(triplets, both)
    if "clusters" in kinds:
        clusters = contexts_from_clusters(
            views[0], n_clusters, seed, cluster_features=np.concatenate(views, 1)
        )
        contexts += [Context(c.name, c.kind, both, c.value, c.clusters) for c in clusters]
    names = [c.name for c in contexts]
    if len(set(names)) != len(names):
        raise ValueError(f"context names clash: {names}; rename the groups or values")
    return contexts


def fit_context_models(
    contexts: Sequence[Context],
    train: TripletTable,
    config: HeadConfig | None = None,
    *,
    val: TripletTable | None = None,
    min_triplets: int = 10,
    stages: nn.Module | None = None,
) -> dict[str, TripletEmbedding]:
    """One :class:`TripletEmbedding` per context, on the context's training triplets; each
    keeps the epoch with the best agreement on its context's validation triplets. ``stages``:
    the trainable last stages when ``config.tune_stages`` > 0 (contexts then hold stage
    inputs as features)."""
    config = config or HeadConfig()
    models = {}
    for context in contexts:
        own = context.select(train)
        if len(own) < min_triplets:
            raise ValueError(
                f"context {context.name!r} has {len(own)} training triplet(s); it needs at least "
                f"{min_triplets} (merge it with another, or use fewer clusters)"
            )
        own_val = context.select(val) if val is not None else None
        if own_val is not None and len(own_val) == 0:
            own_val = None
        models[context.name] = TripletEmbedding(replace(config), stages=stages).fit(
            own, context.features, val=own_val, description=f"context {context.name}"
        )
    return models
