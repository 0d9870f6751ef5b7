"""Bias–variance decompositions of a classifier's test error over a set of models.

The "set of models" is whatever varies: the checkpoints of one run, runs with different seeds,
or runs on bootstrap-resampled training sets. Each decomposition takes their predicted
probabilities as an array ``probas`` of shape (m models, n images, C classes) and the true
labels ``y`` (n,), treated as noise-free (one label per image, no intrinsic noise term).

* 0-1 loss: Domingos (2000), *A unified bias-variance decomposition*. The main prediction is
  the most frequent predicted class; bias is its 0-1 loss; variance is how often a model
  disagrees with it. Variance *hurts* on images where the main prediction is right and *helps*
  where it is wrong, so the error is bias + net variance, with
  net variance = unbiased variance − biased variance.
* cross-entropy (log loss): Heskes (1998), *Bias/variance decompositions for likelihood-based
  estimators*. The "average model" is the normalised geometric mean of the models'
  distributions; bias is its cross-entropy; variance is the mean KL divergence from it to each
  model, and error = bias + variance exactly.

:func:`compare_methods` puts both side by side for several methods (single checkpoints, soups,
soft voting), and :func:`describe_changes` turns the table into sentences for the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CrossEntropyDecomposition",
    "ZeroOneDecomposition",
    "compare_methods",
    "cross_entropy_decomposition",
    "describe_changes",
    "geometric_mean",
    "log_probabilities",
    "main_prediction",
    "zero_one_decomposition",
]

#: probabilities are clipped here before taking logs (a model that is certain and wrong would
#: otherwise have an infinite cross-entropy and swamp every mean)
EPS = 1e-12


def _check(probas: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapes and label range checked once, so a transposed array fails loudly."""
    p = np.asarray(probas, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError(f"probas must be 3-D (models, images, classes); got shape {p.shape}")
    m, n, c = p.shape
    if m == 0 or n == 0 or c == 0:
        raise ValueError(f"probas must not be empty; got shape {p.shape}")
    labels = np.asarray(y)
    if labels.shape != (n,):
        raise ValueError(f"y must have shape ({n},) to match probas {p.shape}; got {labels.shape}")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"y contains labels outside [0, {c - 1}]")
    return p, labels


def log_probabilities(probas: np.ndarray) -> np.ndarray:
    """log of the probabilities after clipping at ``EPS`` and renormalising (last axis).

    Renormalising keeps every row a distribution, so the KL terms below stay non-negative and
    the identities hold exactly for the clipped models."""
    p = np.clip(np.asarray(probas, dtype=np.float64), EPS, 1.0)
    return np.log(p / p.sum(axis=-1, keepdims=True))


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(a - top).sum(axis=axis))


def geometric_mean(probas: np.ndarray) -> np.ndarray:
    """Normalised geometric mean over models, p̄(c) = exp(E_i log p_i(c)) / Z (n, C).

    It is the distribution closest to all models in the sense Heskes's decomposition needs:
    p̄ = argmin_q E_i KL(q ‖ p_i)."""
    g = log_probabilities(probas).mean(axis=0)
    return np.exp(g - _logsumexp(g, axis=1)[:, None])


def main_prediction(probas: np.ndarray) -> np.ndarray:
    """Domingos' main prediction for 0-1 loss: the class predicted by most models (n,).

    Ties between equally frequent classes go to the one with the highest mean probability over
    the models (the soft vote among the tied classes), then to the lowest class index. Any
    tie-break keeps error = bias + net variance; this one is deterministic and uses the
    models' confidence rather than the class order.
    """
    p = np.asarray(probas, dtype=np.float64)
    preds = p.argmax(axis=2)  # (m, n)
    c = p.shape[2]
    votes = (preds[:, :, None] == np.arange(c)).sum(axis=0)  # (n, C)
    tied = votes == votes.max(axis=1, keepdims=True)
    # argmax returns the first maximum: equal mean probabilities go to the lowest index
    return np.where(tied, p.mean(axis=0), -np.inf).argmax(axis=1)


def _summary(decomposition: Any) -> dict[str, float | int]:
    """A decomposition's scalar fields, in order: the per-image arrays (``repr=False``) are
    left out, so a new summary number cannot be forgotten in ``to_dict``."""
    return {f.name: getattr(decomposition, f.name) for f in fields(decomposition) if f.repr}


@dataclass
class ZeroOneDecomposition:
    """Domingos' decomposition of the mean 0-1 loss over models and images.

    With t the true class, y_i model i's prediction and y_m the main prediction of an image:

    * bias B(x) = 1[y_m ≠ t];
    * variance V(x) = P_i(y_i ≠ y_m), the fraction of models disagreeing with y_m;
    * E_i 1[y_i ≠ t] = B(x) + c(x) V(x), with c = 1 where B = 0 and c = −P_i(y_i = t | y_i ≠ y_m)
      where B = 1 (Domingos 2000, theorem 2; for two classes c = −1);
    * unbiased variance = mean_x (1 − B) V; biased variance = mean_x B · P_i(y_i = t | y_i ≠ y_m)
      · V = mean_x B · P_i(y_i = t) (the models that are right although the main prediction is
      wrong); net variance = unbiased − biased, so error = bias + net_variance.
    """

    error: float  # mean over models and images of the 0-1 loss
    bias: float
    variance: float  # mean_x V(x), before splitting it by where it falls
    unbiased_variance: float
    biased_variance: float
    net_variance: float
    n_models: int
    main_prediction: np.ndarray = field(repr=False)  # (n,)
    image_error: np.ndarray = field(repr=False)  # (n,) mean 0-1 loss over models
    image_bias: np.ndarray = field(repr=False)  # (n,) B(x)
    image_variance: np.ndarray = field(repr=False)  # (n,) V(x)

    def to_dict(self) -> dict[str, float | int]:
        return _summary(self)


def zero_one_decomposition(probas: np.ndarray, y: np.ndarray) -> ZeroOneDecomposition:
    """Decompose the 0-1 error of ``probas`` (m, n, C) against ``y`` (n,) (Domingos 2000)."""
    p, y = _check(probas, y)
    preds = p.argmax(axis=2)  # (m, n); a model's own ties go to the lowest index
    main = main_prediction(p)
    image_error = (preds != y).mean(axis=0)
    image_bias = (main != y).astype(np.float64)
    image_variance = (preds != main).mean(axis=0)
    right = (preds == y).mean(axis=0)  # P_i(y_i = t); equals c·V where the main one is wrong
    unbiased = float(np.mean((1.0 - image_bias) * image_variance))
    biased = float(np.mean(image_bias * right))
    return ZeroOneDecomposition(
        error=float(image_error.mean()),
        bias=float(image_bias.mean()),
        variance=float(image_variance.mean()),
        unbiased_variance=unbiased,
        biased_variance=biased,
        net_variance=unbiased - biased,
        n_models=p.shape[0],
        main_prediction=main,
        image_error=image_error,
        image_bias=image_bias,
        image_variance=image_variance,
    )


@dataclass
class CrossEntropyDecomposition:
    """Heskes' decomposition of the mean cross-entropy over models and images.

    With p̄ the normalised geometric mean of the models' distributions (:func:`geometric_mean`)
    and y the true class, for every image

        E_i[−log p_i(y)] = −log p̄(y) + E_i[KL(p̄ ‖ p_i)]

    (Heskes 1998): the bias is the cross-entropy of the "average model" p̄, the variance the
    mean KL divergence from it to each model. With log p̄ = E_i log p_i − log Z, the variance
    per image is −log Z ≥ 0, which is 0 exactly when all models agree.
    """

    error: float  # mean over models and images of −log p_i(y)
    bias: float  # mean over images of −log p̄(y)
    variance: float  # mean over images and models of KL(p̄ ‖ p_i)
    n_models: int
    mean_model: np.ndarray = field(repr=False)  # (n, C) p̄
    image_error: np.ndarray = field(repr=False)
    image_bias: np.ndarray = field(repr=False)
    image_variance: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, float | int]:
        return _summary(self)


def cross_entropy_decomposition(probas: np.ndarray, y: np.ndarray) -> CrossEntropyDecomposition:
    """Decompose the cross-entropy of ``probas`` (m, n, C) against ``y`` (n,) (Heskes 1998).

    Probabilities are clipped at 1e-12 and renormalised first (:func:`log_probabilities`)."""
    p, y = _check(probas, y)
    log_p = log_probabilities(p)  # (m, n, C)
    g = log_p.mean(axis=0)
    log_mean = g - _logsumexp(g, axis=1)[:, None]  # log p̄, (n, C)
    rows = np.arange(p.shape[1])
    image_error = -log_p[:, rows, y].mean(axis=0)
    image_bias = -log_mean[rows, y]
    kl = (np.exp(log_mean)[None] * (log_mean[None] - log_p)).sum(axis=2)  # (m, n)
    image_variance = kl.mean(axis=0)
    return CrossEntropyDecomposition(
        error=float(image_error.mean()),
        bias=float(image_bias.mean()),
        variance=float(image_variance.mean()),
        n_models=p.shape[0],
        mean_model=np.exp(log_mean),
        image_error=image_error,
        image_bias=image_bias,
        image_variance=image_variance,
    )


#: columns of :func:`compare_methods`, in order
COLUMNS = (
    "models",
    "error_01",
    "bias_01",
    "variance_01",
    "unbiased_variance_01",
    "biased_variance_01",
    "net_variance_01",
    "error_ce",
    "bias_ce",
    "variance_ce",
)


def compare_methods(groups: Mapping[str, np.ndarray], y: np.ndarray) -> pd.DataFrame:
    """Both decompositions for each method's set of models, one row per method.

    ``groups`` maps a method (``single_checkpoints``, ``greedy_soup``, …) to the probabilities
    of its models (m, n, C), all on the same images ``y``. A method given as one model has zero
    variance by construction: its error is all bias relative to that set.
    """
    rows = {}
    for method, probas in groups.items():
        zo = zero_one_decomposition(probas, y)
        ce = cross_entropy_decomposition(probas, y)
        rows[method] = {
            "models": zo.n_models,
            "error_01": zo.error,
            "bias_01": zo.bias,
            "variance_01": zo.variance,
            "unbiased_variance_01": zo.unbiased_variance,
            "biased_variance_01": zo.biased_variance,
            "net_variance_01": zo.net_variance,
            "error_ce": ce.error,
            "bias_ce": ce.bias,
            "variance_ce": ce.variance,
        }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(COLUMNS))
    table.index.name = "method"
    return table.astype({"models": int})


def _num(value: float) -> str:
    """3 decimals, or 2 significant digits for small non-zero values (rounding noise is 0)."""
    if abs(value) < 1e-9:
        return "0.000"
    return f"{value:.3f}" if abs(value) >= 1e-3 else f"{value:.1e}"


def _change(new: float, ref: float) -> str:
    """Relative change in percent, e.g. '−56 %'; 'n/a' when the reference is not positive."""
    if ref <= 1e-12:
        return "n/a"
    pct = 100.0 * (new - ref) / ref
    return f"{pct:+.0f} %".replace("-", "−")


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "−") + _num(abs(value))


def _verb(new: float, ref: float) -> str:
    if new < ref - 1e-12:
        return "reduces"
    return "increases" if new > ref + 1e-12 else "leaves unchanged"


def describe_changes(
    table: pd.DataFrame, reference: str = "single_checkpoints", *, across_seeds: bool = True
) -> list[str]:
    """One sentence per method, from the measured numbers, on variance removed and bias added
    relative to ``reference`` (a row of :func:`compare_methods`).

    ``across_seeds=True``: each method's row is a set of models (one per run), so its own
    variance is measured and compared. ``False`` (one run): a soup is a single model whose
    variance within the run is zero by construction; the sentence compares its error with the
    reference's mean error and with the reference's bias (the error of its main prediction /
    geometric-mean model), i.e. how much of the variance it removed and what bias it added.
    """
    if reference not in table.index:
        return []
    ref = table.loc[reference]
    ref_name = reference.replace("_", " ")
    out = []
    for method in table.index:
        if method == reference:
            continue
        row = table.loc[method]
        name = str(method).replace("_", " ")
        if across_seeds:
            out.append(
                f"{name} ({int(row.models)} models): 0-1 loss — "
                f"{_verb(row.net_variance_01, ref.net_variance_01)} the net variance, "
                f"{_num(row.net_variance_01)} vs {_num(ref.net_variance_01)} for {ref_name} "
                f"({_change(row.net_variance_01, ref.net_variance_01)}), bias "
                f"{_signed(row.bias_01 - ref.bias_01)}; cross-entropy — "
                f"{_verb(row.variance_ce, ref.variance_ce)} the variance, "
                f"{_num(row.variance_ce)} vs {_num(ref.variance_ce)} "
                f"({_change(row.variance_ce, ref.variance_ce)}), bias "
                f"{_signed(row.bias_ce - ref.bias_ce)}."
            )
        else:
            out.append(
                f"{name}: 0-1 error {_num(row.error_01)} vs {_num(ref.error_01)} for {ref_name} "
                f"on average ({_change(row.error_01, ref.error_01)}): it removes their net "
                f"variance {_num(ref.net_variance_01)} and its bias is "
                f"{_signed(row.error_01 - ref.bias_01)} relative to their bias "
                f"{_num(ref.bias_01)}; cross-entropy {_num(row.error_ce)} vs "
                f"{_num(ref.error_ce)} ({_change(row.error_ce, ref.error_ce)}): it removes "
                f"their variance {_num(ref.variance_ce)} and its bias is "
                f"{_signed(row.error_ce - ref.bias_ce)} relative to {_num(ref.bias_ce)}."
            )
    return out
