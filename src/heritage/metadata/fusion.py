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
from typing import Any, Literal, get_args

import numpy as np
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from heritage.calibration import TemperatureScaling, softmax
from heritage.config import check_choice
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
    "LogLinearPool",
    "ModalityChoice",
    "Stacker",
    "TemperatureScaling",
    "fold_indices",
    "fusion_from_state",
    "out_of_fold",
    "stack_features",
]

StackerKind = Literal["logistic", "pool", "lightgbm", "blend"]
STACKER_KINDS: tuple[StackerKind, ...] = get_args(StackerKind)  # simplest first
_LOG_FLOOR = 1e-4  # log(1e-4) ≈ -9.2: a confident "no" without an unbounded feature


@dataclass
class FusionConfig:
    """How the modalities are fused.

    Stackers: ``logistic`` (multinomial logistic regression on the modalities'
    log-probabilities: a weight per modality *and class pair*), ``pool`` (a log-linear pool:
    one weight per modality and one bias per class, :class:`LogLinearPool`; it holds up with
    many classes and few records, where the logistic stacker has thousands of weights to
    learn), ``lightgbm`` (trees that find interactions, e.g. "trust the text when the
    tabular model is unsure") and ``blend`` (the mean of logistic and LightGBM).
    ``stacker="auto"`` (the default) fits each per property and scores them by macro-F1 on
    held-out data (validation records, else cross-validation over the training records'
    out-of-fold inputs). ``blend`` is kept unless another stacker beats it clearly: in at
    least 95 % of paired bootstrap resamples of the held-out records (taking the top score
    among close candidates mostly picks the noise of a few hundred records). With
    ``select_modalities`` each single modality is then a candidate against that stacker, by
    the same rule (it answers wherever it has input, the stacker elsewhere,
    :class:`ModalityChoice`): the fusion is not kept when one of its own inputs does clearly
    better on held-out data. One kind fixes the stacker.
    ``calibration="temperature"`` rescales the fused probabilities on held-out data;
    ``"none"`` leaves them as the stacker gives them.
    """

    folds: int = 5
    stacker: Literal["auto", "logistic", "pool", "lightgbm", "blend"] = "auto"
    select_modalities: bool = True
    calibration: Literal["temperature", "none"] = "temperature"
    modality_dropout: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 for out-of-fold stacking, got {self.folds}")
        if self.stacker not in ("auto", *STACKER_KINDS):
            raise ValueError(
                f"stacker must be auto or one of {STACKER_KINDS}, got {self.stacker!r}"
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

    Logistic and pool: log-probabilities (the natural input of a softmax) with 0 for an
    absent modality — 0 for every class shifts all logits equally, so
    it carries no vote. LightGBM: raw probabilities with NaN kept, which trees route as
    missing. Both get one present/absent indicator per modality.
    """
    parts, present = [], []
    for block in blocks:
        here = ~np.isnan(block).any(axis=1)
        present.append(here.astype(float))
        if kind in ("logistic", "pool"):
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
        check_choice("stacker kind", kind, STACKER_KINDS)
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
        if self.kind == "pool":
            self.model_ = LogLinearPool(len(blocks), self.n_classes).fit(x, y)
            self.seen_ = np.arange(self.n_classes)  # the pool scores every class
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
        elif self.kind == "pool":
            out["model"] = self.model_.state(arrays, f"{prefix}.model")
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
        elif stacker.kind == "pool":
            stacker.model_ = LogLinearPool.from_state(state["model"], arrays)
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


class LogLinearPool:
    """``p(c) ∝ exp(Σ_m w_m log p_m(c) + b_c)``: the modalities' log-probabilities pooled
    with one weight per modality, plus one bias per class.

    Why: a multinomial logistic stacker learns a weight per (modality, class, class) triple,
    over 10,000 of them for 59 classes and four modalities, from the few hundred records a
    property has; it overfits and then trails its own best input. The pool has M + K
    parameters, so it can only learn how far to trust each modality and a class prior. It is
    fitted by class-balanced log-likelihood (as the other stackers weigh classes) with a
    small L2 penalty on the biases. An absent modality has log-probabilities 0 in the
    stacker's inputs (:func:`stack_features`), so it casts no vote. Learnt state: ``weights_``,
    ``bias_``.
    """

    def __init__(self, n_modalities: int, n_classes: int, l2: float = 1e-2) -> None:
        self.n_modalities = n_modalities
        self.n_classes = n_classes
        self.l2 = l2

    def _logp(self, x: np.ndarray) -> np.ndarray:
        m, k = self.n_modalities, self.n_classes
        return np.asarray(x[:, : m * k], dtype=float).reshape(len(x), m, k)

    def fit(self, x: np.ndarray, y: np.ndarray) -> LogLinearPool:
        logp, y = self._logp(x), np.asarray(y, dtype=np.int64)
        m, k = self.n_modalities, self.n_classes
        counts = np.bincount(y, minlength=k).astype(float)
        weight = len(y) / (np.count_nonzero(counts) * counts[y])  # balanced, as elsewhere
        weight /= weight.sum()
        onehot = np.zeros((len(y), k))
        onehot[np.arange(len(y)), y] = 1.0

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:m], theta[m:]
            z = np.einsum("nmk,m->nk", logp, w) + b
            z -= z.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(z).sum(axis=1, keepdims=True))
            log_q = z - log_norm
            nll = -float(np.sum(weight * log_q[np.arange(len(y)), y]))
            g = (np.exp(log_q) - onehot) * weight[:, None]
            grad_w = np.einsum("nk,nmk->m", g, logp)
            grad_b = g.sum(axis=0) + 2 * self.l2 * b
            return nll + self.l2 * float(b @ b), np.concatenate([grad_w, grad_b])

        theta0 = np.concatenate([np.ones(m), np.zeros(k)])
        result = minimize(loss, theta0, jac=True, method="L-BFGS-B")
        self.weights_, self.bias_ = result.x[:m], result.x[m:]
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = np.einsum("nmk,m->nk", self._logp(x), self.weights_) + self.bias_
        return softmax(z)

    def state(self, arrays: ArrayStore, prefix: str) -> dict[str, Any]:
        return {
            "n_modalities": self.n_modalities,
            "n_classes": self.n_classes,
            "l2": self.l2,
            "weights": [float(v) for v in self.weights_],
            "bias": arrays.put(f"{prefix}.bias", self.bias_),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], arrays: ArrayStore) -> LogLinearPool:
        pool = cls(int(state["n_modalities"]), int(state["n_classes"]), float(state["l2"]))
        pool.weights_ = np.asarray(state["weights"], dtype=float)
        pool.bias_ = np.asarray(arrays.get(state["bias"]), dtype=float)
        return pool


class ModalityChoice:
    """One modality on its own wherever it has input, the stacker ``fallback`` elsewhere.

    What the fusion keeps when held-out data say a single input beats every stacker (a
    strong flat TF-IDF on a many-class property, say): fusion must never be worse than its
    own best part. Rows where that modality is absent still get the stacker's answer from
    the others."""

    kind = "modality"

    def __init__(self, index: int, name: str, fallback: Stacker) -> None:
        self.index = index
        self.name = name
        self.fallback = fallback

    def predict_proba(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        out = self.fallback.predict_proba(blocks)
        own = np.asarray(blocks[self.index], dtype=float)
        here = ~np.isnan(own).any(axis=1)
        out[here] = own[here]
        return out

    def state(self, arrays: ArrayStore, prefix: str) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "index": self.index,
            "name": self.name,
            "fallback": self.fallback.state(arrays, f"{prefix}.fallback"),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], arrays: ArrayStore) -> ModalityChoice:
        fallback = Stacker.from_state(state["fallback"], arrays)
        return cls(int(state["index"]), str(state["name"]), fallback)


def fusion_from_state(state: Mapping[str, Any], arrays: ArrayStore) -> Stacker | ModalityChoice:
    """A property's fusion model (a stacker or a single-modality choice) from its state."""
    if state.get("kind") == ModalityChoice.kind:
        return ModalityChoice.from_state(state, arrays)
    return Stacker.from_state(state, arrays)
