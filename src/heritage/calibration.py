"""Temperature scaling: confidences that mean what they say.

A fine-tuned network's softmax is rarely calibrated: label smoothing and mixing make it
under-confident, long training over-confident. Curators read these numbers in the knowledge
graph and the explorer, so heritage fits one temperature ``T`` per model on validation data
and reports ``softmax(logits / T)`` (Guo et al., "On Calibration of Modern Neural Networks",
ICML 2017). One parameter fitted by log-likelihood cannot overfit a few hundred validation
images, and it never changes the predicted class (the argmax): only how sure the model says
it is. Image classifiers keep ``T`` in their model card; the metadata predictor keeps one per
property.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

__all__ = ["TemperatureScaling", "apply_temperature", "fit_temperature", "log_proba", "softmax"]


def log_proba(proba: np.ndarray) -> np.ndarray:
    """``log p`` with zeros clipped to 1e-12, so a class never seen stays finite."""
    return np.log(np.clip(proba, 1e-12, 1.0))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)``, stable for large logits, in the logits'
    precision (float32 network outputs stay float32, as the caches that store them)."""
    z = np.asarray(logits)
    z = z.astype(np.result_type(z.dtype, np.float32), copy=False) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / temperature)``: the calibrated form of probabilities (a stacker's
    output, an ensemble's mean); rows with NaN (no prediction) stay NaN."""
    proba = np.asarray(proba, dtype=float)
    out = np.full_like(proba, np.nan)
    rows = ~np.isnan(proba).any(axis=1)
    out[rows] = softmax(log_proba(proba[rows]), temperature)
    return out


class TemperatureScaling:
    """``softmax(logits / T)`` with ``T`` fitted by log-likelihood on held-out data.

    ``T > 1`` softens an over-confident model, ``T < 1`` sharpens an under-confident one.
    ``fit_logits`` / ``transform_logits`` take a network's logits; ``fit`` / ``transform``
    take probabilities (their logarithms are logits up to a per-row constant, which softmax
    ignores), e.g. a stacker's or an ensemble's mean. Learnt state: ``temperature_``.
    """

    def __init__(self, bounds: tuple[float, float] = (0.05, 20.0)) -> None:
        self.bounds = bounds

    def fit_logits(self, logits: np.ndarray, y: np.ndarray) -> TemperatureScaling:
        z = np.asarray(logits, dtype=float)
        y = np.asarray(y, dtype=np.int64)
        if len(y) == 0:  # nothing to fit on: leave the model as it is
            self.temperature_ = 1.0
            return self
        rows = np.arange(len(y))

        def nll(log_t: float) -> float:
            s = z / np.exp(log_t)
            s = s - s.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(s).sum(axis=1))
            return float(np.mean(log_norm - s[rows, y]))

        lo, hi = np.log(self.bounds[0]), np.log(self.bounds[1])
        result = minimize_scalar(nll, bounds=(lo, hi), method="bounded")
        self.temperature_ = float(np.exp(result.x))
        return self

    def fit(self, proba: np.ndarray, y: np.ndarray) -> TemperatureScaling:
        return self.fit_logits(log_proba(np.asarray(proba, dtype=float)), y)

    def transform_logits(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, self.temperature_)

    def transform(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities; rows with NaN (no prediction) stay NaN."""
        return apply_temperature(proba, self.temperature_)

    def state(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "temperature": self.temperature_}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TemperatureScaling:
        low, high = state["bounds"]
        scaling = cls((float(low), float(high)))
        scaling.temperature_ = float(state["temperature"])
        return scaling


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature that makes ``softmax(logits / T)`` most likely on ``(logits, y)``."""
    return TemperatureScaling().fit_logits(logits, y).temperature_
