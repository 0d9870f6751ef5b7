"""Late fusion: a stacker over out-of-fold modality probabilities, then calibration.

Why out-of-fold: a modality's predictions on the records it was trained on are far more
confident and accurate than on new records (TF-IDF + logistic regression nearly memorises its
training texts). A stacker trained on such in-sample predictions learns to trust whichever
modality overfits most, and fails at test time. So the stacker's training inputs come from
K-fold cross-fitting on the training records (:func:`out_of_fold`): each record's
probabilities come from copies of the modalities that never saw it. The modalities are then
refitted on all training records for prediction (Wolpert's stacked generalisation, as in
scikit-learn's ``StackingClassifier``).

The stacker sees, per property, each modality's class probabilities plus a 0/1 indicator of
whether that modality had anything to go on; SILKNOW's released code fused predicted *labels*,
fusing *probabilities* keeps how sure each modality was. ``modality_dropout`` adds copies of
the training rows with one present modality hidden, so the stacker also learns what to do
when a modality that is usually there is missing at prediction time.

Its probabilities are then calibrated on held-out data with temperature scaling (Guo et al.,
"On Calibration of Modern Neural Networks", ICML 2017): one parameter per property, fitted by
log-likelihood, that never changes the predicted value — only how confident it claims to be.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from heritage.metadata.base import Modality, Targets, expand_proba
from heritage.metadata.persist import (
    ArrayStore,
    lightgbm_from_state,
    lightgbm_state,
    logistic_from_state,
    logistic_state,
)
from heritage.metadata.records import RecordTable
from heritage.progress import progress_bar

__all__ = [
    "FusionConfig",
    "Stacker",
    "TemperatureScaling",
    "fold_indices",
    "out_of_fold",
    "stack_features",
]

StackerKind = Literal["logistic", "lightgbm", "blend"]
_KINDS = ("logistic", "lightgbm", "blend")
_LOG_FLOOR = 1e-4  # log(1e-4) ≈ -9.2: a confident "no" without an unbounded feature


@dataclass
class FusionConfig:
    """How the modalities are fused.

    ``stacker="blend"`` (the default) averages the probabilities of a logistic-regression and
    a LightGBM stacker: the first is a smooth log-linear pool, the second finds interactions
    between modalities (e.g. "trust the text when the tabular model is unsure"); their errors
    differ, so the average has lower variance than either — the same reason soups and soft
    voting help. On silknow-records, 5-fold cross-validation over the training records'
    out-of-fold inputs put the blend ahead of both on macro-F1, averaged over 3 seeds
    (``stacker_cv_*`` in benchmarks/results/multimodal.json).
    ``"auto"`` fits all three per property and keeps the best on validation data (the
    simpler one on a tie); ``"logistic"``/``"lightgbm"`` use one.
    ``calibration="temperature"`` rescales the fused probabilities on validation data;
    ``"none"`` leaves them as the stacker gives them.
    """

    folds: int = 5
    stacker: Literal["auto", "logistic", "lightgbm", "blend"] = "blend"
    calibration: Literal["temperature", "none"] = "temperature"
    modality_dropout: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 for out-of-fold stacking, got {self.folds}")
        if self.stacker not in ("auto", *_KINDS):
            raise ValueError(
                f"stacker must be auto, logistic, lightgbm or blend, got {self.stacker!r}"
            )
        if self.calibration not in ("temperature", "none"):
            raise ValueError(f"calibration must be temperature or none, got {self.calibration!r}")


def fold_indices(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled K-fold (train, held-out) positions. Not stratified: each property has its own
    labels and gaps, so no single stratification fits all; modalities cope with a class that a
    fold lacks (its column is 0)."""
    if n < folds:
        raise ValueError(f"{n} training records cannot be split into {folds} folds")
    return list(KFold(folds, shuffle=True, random_state=seed).split(np.arange(n)))


def out_of_fold(
    modalities: Sequence[Modality],
    records: RecordTable,
    targets: Targets,
    folds: int = 5,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Per modality and property, probabilities for every record from a clone of the
    modality fitted on the *other* folds only."""
    out = {
        m.name: {p: np.full((len(records), len(c)), np.nan) for p, c in targets.classes.items()}
        for m in modalities
    }
    splits = fold_indices(len(records), folds, seed)
    with progress_bar() as bar:
        task = bar.add_task("out-of-fold fits", total=len(splits) * len(modalities))
        for k, (fit_idx, held_idx) in enumerate(splits):
            fit_part, held_part = records.subset(fit_idx), records.subset(held_idx)
            fit_targets = targets.subset(fit_idx)
            for modality in modalities:
                bar.update(task, info=f"fold {k + 1}/{len(splits)}: {modality.name}")
                fitted = modality.clone().fit(fit_part, fit_targets)
                for prop, proba in fitted.predict_proba(held_part).items():
                    out[modality.name][prop][held_idx] = proba
                bar.advance(task)
    return out


def stack_features(blocks: Sequence[np.ndarray], kind: StackerKind) -> np.ndarray:
    """Stacker inputs from per-modality probability blocks (NaN rows = absent).

    Logistic: log-probabilities (a log-linear pool of the modalities, the natural input of a
    softmax) with 0 for an absent modality — 0 for every class shifts all logits equally, so
    it carries no vote. LightGBM: raw probabilities with NaN kept, which trees route as
    missing. Both get one present/absent indicator per modality.
    """
    parts, present = [], []
    for block in blocks:
        here = ~np.isnan(block).any(axis=1)
        present.append(here.astype(float))
        if kind == "logistic":
            logp = np.log(np.clip(np.nan_to_num(block, nan=1.0), _LOG_FLOOR, 1.0))
            parts.append(np.where(here[:, None], logp, 0.0))
        else:
            parts.append(block)
    return np.column_stack([*parts, *present])


def _with_dropout(blocks: list[np.ndarray], y: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Append copies of rows with two or more present modalities, one modality hidden."""
    present = np.column_stack([~np.isnan(b).any(axis=1) for b in blocks])
    several = present.sum(axis=1) >= 2
    out_blocks = [[b] for b in blocks]
    out_y = [y]
    for m in range(len(blocks)):
        rows = np.flatnonzero(several & present[:, m])
        if len(rows) == 0:
            continue
        for j, b in enumerate(blocks):
            copy = b[rows].copy()
            if j == m:
                copy[:] = np.nan
            out_blocks[j].append(copy)
        out_y.append(y[rows])
    return [np.vstack(parts) for parts in out_blocks], np.concatenate(out_y)


class Stacker:
    """The fusion model of one property over the modality blocks. Learnt state: ``model_``
    (for ``blend``: ``members_``, a logistic and a LightGBM stacker whose probabilities are
    averaged), ``seen_`` (the class indices present in its training rows)."""

    def __init__(
        self,
        kind: StackerKind = "logistic",
        n_classes: int = 2,
        *,
        modality_dropout: bool = True,
        seed: int = 0,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"stacker kind must be one of {_KINDS}, got {kind!r}")
        self.kind = kind
        self.n_classes = n_classes
        self.modality_dropout = modality_dropout
        self.seed = seed

    def fit(self, blocks: Sequence[np.ndarray], y: np.ndarray) -> Stacker:
        if self.kind == "blend":
            self.members_ = [
                Stacker(
                    kind, self.n_classes, modality_dropout=self.modality_dropout, seed=self.seed
                ).fit(blocks, y)
                for kind in ("logistic", "lightgbm")
            ]
            self.seen_ = self.members_[0].seen_
            return self
        blocks = list(blocks)
        if self.modality_dropout and len(blocks) > 1:
            blocks, y = _with_dropout(blocks, y)
        x = stack_features(blocks, self.kind)
        self.seen_ = np.unique(y)
        if len(self.seen_) < 2:  # one class only: predict it, nothing to learn
            self.model_ = None
            return self
        if self.kind == "logistic":
            self.model_ = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
        else:
            import lightgbm as lgb

            self.model_ = lgb.LGBMClassifier(
                n_estimators=150,
                learning_rate=0.05,
                num_leaves=7,
                min_child_samples=10,
                class_weight="balanced",
                random_state=self.seed,
                n_jobs=1,
                verbose=-1,
            )
        self.model_.fit(x, y)
        return self

    def state(self, arrays: ArrayStore, prefix: str) -> dict[str, Any]:
        """Settings and learnt state as data (see :mod:`heritage.metadata.persist`)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "n_classes": self.n_classes,
            "modality_dropout": self.modality_dropout,
            "seed": self.seed,
            "seen": arrays.put(f"{prefix}.seen", self.seen_),
        }
        if self.kind == "blend":
            out["members"] = [m.state(arrays, f"{prefix}.{m.kind}") for m in self.members_]
        elif self.model_ is None:
            out["model"] = None
        elif self.kind == "logistic":
            out["model"] = logistic_state(self.model_, arrays, f"{prefix}.model")
        else:
            out["model"] = lightgbm_state(self.model_, arrays, f"{prefix}.model")
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, Any], arrays: ArrayStore) -> Stacker:
        stacker = cls(
            state["kind"],
            int(state["n_classes"]),
            modality_dropout=bool(state["modality_dropout"]),
            seed=int(state["seed"]),
        )
        stacker.seen_ = arrays.get(state["seen"])
        if stacker.kind == "blend":
            stacker.members_ = [cls.from_state(m, arrays) for m in state["members"]]
        elif state["model"] is None:
            stacker.model_ = None
        elif stacker.kind == "logistic":
            stacker.model_ = logistic_from_state(state["model"], arrays)
        else:
            stacker.model_ = lightgbm_from_state(state["model"], arrays)
        return stacker

    def predict_proba(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        """Fused probabilities; NaN rows where every modality is absent."""
        if self.kind == "blend":
            return np.mean([m.predict_proba(blocks) for m in self.members_], axis=0)
        blocks = list(blocks)
        n = len(blocks[0])
        none = np.column_stack([np.isnan(b).any(axis=1) for b in blocks]).all(axis=1)
        out = np.full((n, self.n_classes), np.nan)
        if self.model_ is None:
            out[~none] = expand_proba(np.ones((int((~none).sum()), 1)), self.seen_, self.n_classes)
            return out
        if (~none).any():
            x = stack_features([b[~none] for b in blocks], self.kind)
            out[~none] = expand_proba(self.model_.predict_proba(x), self.seen_, self.n_classes)
        return out


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(proba, 1e-12, 1.0))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class TemperatureScaling:
    """``softmax(log p / T)`` with ``T`` fitted by log-likelihood on held-out data.

    ``T > 1`` softens an overconfident model, ``T < 1`` sharpens an underconfident one (focal
    loss and class-balanced weights both make models underconfident on the majority class).
    The argmax, hence the predicted value and macro-F1, is unchanged. Learnt state:
    ``temperature_``.
    """

    def __init__(self, bounds: tuple[float, float] = (0.05, 20.0)) -> None:
        self.bounds = bounds

    def fit(self, proba: np.ndarray, y: np.ndarray) -> TemperatureScaling:
        logp = _log(np.asarray(proba, dtype=float))
        y = np.asarray(y, dtype=np.int64)
        if len(y) == 0:
            self.temperature_ = 1.0
            return self

        def nll(log_t: float) -> float:
            p = _softmax(logp / np.exp(log_t))
            return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0))))

        lo, hi = np.log(self.bounds[0]), np.log(self.bounds[1])
        result = minimize_scalar(nll, bounds=(lo, hi), method="bounded")
        self.temperature_ = float(np.exp(result.x))
        return self

    def state(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "temperature": self.temperature_}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TemperatureScaling:
        low, high = state["bounds"]
        scaling = cls((float(low), float(high)))
        scaling.temperature_ = float(state["temperature"])
        return scaling

    def transform(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba, dtype=float)
        out = np.full_like(proba, np.nan)
        rows = ~np.isnan(proba).any(axis=1)
        out[rows] = _softmax(_log(proba[rows]) / self.temperature_)
        return out
