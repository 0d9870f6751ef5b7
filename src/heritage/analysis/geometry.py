"""Checkpoint geometry: how far apart the models' predictive distributions are, and a 2-D map.

The model-soups paper (arXiv 2603.02181) compares checkpoints by a cross-entropy distance
between their predictive distributions on the same images,

    d(p, q) = −mean over images of Σ_c [p_c log q_c + q_c log p_c] = mean [H(p, q) + H(q, p)],

and embeds it in 2-D with multidimensional scaling (MDS) to show which checkpoints the greedy
soup picked. d is not a dissimilarity MDS can take as is: d(p, p) = 2 H(p) ≠ 0, so a confident
model sits "far from itself" and an uncertain one even farther. Subtracting half of each
self-distance,

    J(p, q) = d(p, q) − (d(p, p) + d(q, q)) / 2 = mean [KL(p ‖ q) + KL(q ‖ p)],

gives the symmetrised KL (Jeffreys) divergence: ≥ 0, zero exactly on the diagonal, symmetric
(:func:`divergence_matrix`). J behaves like a *squared* distance (for nearby p, q it is the
Fisher-information quadratic form), so :func:`checkpoint_geometry` embeds √J, which MDS can
match with Euclidean distances; the ranking of pairs is the same either way.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from heritage.analysis.bias_variance import log_probabilities
from heritage.evaluation import _new_figure, _save

__all__ = [
    "Geometry",
    "checkpoint_geometry",
    "cross_entropy_distance",
    "distance_matrix",
    "divergence_matrix",
    "mds_embedding",
    "plot_geometry",
]

#: names of the combined models; every other name is a checkpoint
SOUPS = ("uniform_soup", "greedy_soup")
ENSEMBLES = ("soft_voting",)


def _as_2d(p: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (images, classes); got shape {a.shape}")
    return a


def cross_entropy_distance(p: np.ndarray, q: np.ndarray) -> float:
    """d(p, q) = −mean_n Σ_c [p_c log q_c + q_c log p_c] for two (n, C) arrays of
    probabilities on the same images (logs of probabilities clipped at 1e-12)."""
    p, q = _as_2d(p, "p"), _as_2d(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape; got {p.shape} and {q.shape}")
    return float(-np.mean(np.sum(p * log_probabilities(q) + q * log_probabilities(p), axis=1)))


def distance_matrix(probas: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Names and the k × k matrix of :func:`cross_entropy_distance` between every pair.

    One matrix product instead of k² loops: with P_k and L_k the flattened probabilities and
    logs of model k, X = P Lᵀ / n holds mean_n Σ_c p_c log q_c, and D = −(X + Xᵀ)."""
    names = list(probas)
    if not names:
        raise ValueError("distance_matrix needs at least one model")
    arrays = [_as_2d(probas[k], k) for k in names]
    shape = arrays[0].shape
    for k, a in zip(names, arrays, strict=True):
        if a.shape != shape:
            raise ValueError(f"{k} has shape {a.shape}, expected {shape}")
    p = np.stack(arrays).reshape(len(names), -1)
    log_p = log_probabilities(np.stack(arrays)).reshape(len(names), -1)
    cross = p @ log_p.T / shape[0]
    return names, -(cross + cross.T)


def divergence_matrix(distance: np.ndarray) -> np.ndarray:
    """J = D − (diag_i + diag_j) / 2: the symmetrised KL divergence (zero diagonal, ≥ 0).

    Rounding can leave values like −1e-16; they are set to 0, and the result is made exactly
    symmetric with a zero diagonal, as MDS expects."""
    d = np.asarray(distance, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distance must be a square matrix; got shape {d.shape}")
    self_d = np.diag(d)
    j = d - (self_d[:, None] + self_d[None, :]) / 2
    j = np.clip((j + j.T) / 2, 0.0, None)
    np.fill_diagonal(j, 0.0)
    return j


def _mds(seed: int, n_init: int):
    """scikit-learn's metric MDS on a precomputed matrix, across its renamed parameters
    (1.8 renamed ``dissimilarity`` to ``metric`` and ``metric`` to ``metric_mds``)."""
    from sklearn.manifold import MDS

    params = inspect.signature(MDS).parameters
    kwargs: dict = {"n_components": 2, "n_init": n_init, "random_state": seed}
    if "metric_mds" in params:
        kwargs.update(metric="precomputed", metric_mds=True)
    else:
        kwargs.update(dissimilarity="precomputed", metric=True)
    if "init" in params:
        kwargs["init"] = "random"  # n_init random starts, the best stress wins
    return MDS(**kwargs)


def mds_embedding(dissimilarity: np.ndarray, seed: int = 0, n_init: int = 4) -> np.ndarray:
    """2-D metric MDS of a symmetric dissimilarity matrix with zero diagonal, (k, 2).

    One or two points, or all-zero dissimilarities, are placed exactly (no optimisation
    needed); the result is centred."""
    d = np.asarray(dissimilarity, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"dissimilarity must be a square matrix; got shape {d.shape}")
    if np.any(np.abs(np.diag(d)) > 1e-9) or not np.allclose(d, d.T):
        raise ValueError("dissimilarity must be symmetric with a zero diagonal")
    k = d.shape[0]
    if k <= 1 or not np.any(d > 0):
        return np.zeros((k, 2))
    if k == 2:
        return np.array([[-d[0, 1] / 2, 0.0], [d[0, 1] / 2, 0.0]])
    xy = _mds(seed, n_init).fit_transform(d)
    return xy - xy.mean(axis=0)


def stress_1(dissimilarity: np.ndarray, xy: np.ndarray) -> float:
    """Kruskal's stress-1 of an embedding: √(Σ (δ_ij − ‖x_i − x_j‖)² / Σ δ_ij²) over pairs
    (0 perfect, about 0.05 good, 0.2 poor)."""
    d = np.asarray(dissimilarity, dtype=np.float64)
    fitted = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=2)
    upper = np.triu_indices(len(d), 1)
    total = float(np.sum(d[upper] ** 2))
    return float(np.sqrt(np.sum((d[upper] - fitted[upper]) ** 2) / total)) if total > 0 else 0.0


@dataclass
class Geometry:
    """Distances between models, the divergence MDS embeds (as √J), and the 2-D map."""

    names: list[str]
    distance: np.ndarray = field(repr=False)  # d(p, q), diagonal 2 H(p)
    divergence: np.ndarray = field(repr=False)  # J(p, q), symmetrised KL
    xy: np.ndarray = field(repr=False)  # (k, 2) MDS of √J
    stress: float  # Kruskal stress-1 of the map

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "distance": self.distance.tolist(),
            "divergence": self.divergence.tolist(),
            "embedding": self.xy.tolist(),
            "embedded": "sqrt(divergence)",
            "stress_1": self.stress,
        }


def checkpoint_geometry(probas: Mapping[str, np.ndarray], seed: int = 0) -> Geometry:
    """Distance and divergence matrices of the models' predictions and an MDS map of √J."""
    names, distance = distance_matrix(probas)
    divergence = divergence_matrix(distance)
    root = np.sqrt(divergence)
    xy = mds_embedding(root, seed=seed)
    return Geometry(names, distance, divergence, xy, stress_1(root, xy))


def _label(name: str) -> str:
    """'epoch_007' → '7': checkpoints are labelled by epoch."""
    match = re.search(r"(\d+)$", name)
    return str(int(match.group(1))) if match else name


def plot_geometry(
    names: Sequence[str],
    xy: np.ndarray,
    greedy: Collection[str],
    path: str | Path,
    *,
    title: str | None = None,
) -> Path:
    """The MDS map as a PNG: checkpoints as dots labelled by epoch, the greedy soup's
    ingredients highlighted, soups and soft voting as their own markers."""
    fig = _new_figure(7.0, 6.0)
    ax = fig.add_subplot()
    styles = {
        "uniform_soup": ("s", "#2ca02c", "uniform soup"),
        "greedy_soup": ("*", "#d62728", "greedy soup"),
        "soft_voting": ("D", "#9467bd", "soft voting"),
    }
    seen: set[str] = set()
    for name, (x, y) in zip(names, np.asarray(xy), strict=True):
        if name in styles:
            marker, colour, label = styles[name]
            size = 260 if marker == "*" else 120
            ax.scatter(
                x, y, s=size, marker=marker, c=colour, edgecolors="black", zorder=4, label=label
            )
            continue
        taken = name in greedy
        key = "taken" if taken else "left"
        ax.scatter(
            x,
            y,
            s=110 if taken else 70,
            c="#ff7f0e" if taken else "#c6dbef",
            edgecolors="black",
            linewidths=1.6 if taken else 0.8,
            zorder=3,
            label=None
            if key in seen
            else ("checkpoint in the greedy soup" if taken else "checkpoint"),
        )
        seen.add(key)
        ax.annotate(_label(name), (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9)
    ax.set_xlabel("MDS 1")
    ax.set_ylabel("MDS 2")
    ax.set_aspect("equal", adjustable="datalim")
    ax.margins(0.15)
    ax.set_title(title or "Checkpoint geometry (MDS of √ symmetrised KL; labels = epoch)")
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    return _save(fig, path)
