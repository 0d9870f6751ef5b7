"""MetadataPredictor: every modality, out-of-fold stacking and calibration behind fit/predict.

``fit`` takes a :class:`~heritage.metadata.records.RecordTable`. With a split column, its
``train`` records fit the modalities and the stacker, its ``val`` records choose the stacker
and calibrate the confidences, and ``test`` records are left alone. Without validation
records, choice and calibration use cross-validated stacker predictions on the training
records' out-of-fold inputs instead, so no record is held back and none is scored in-sample.

Each property is learnt only from the records where it is known, and predicted for every
record. The prediction table (:meth:`MetadataPredictor.predict`) has one row per record and
property: the value, its calibrated confidence, the next most likely values, the modalities
that had something to say, and a status:

* ``predicted``: the property was unknown and at least one modality could be used;
* ``catalogued``: the record already has this value (it is in ``catalogued``); the prediction is
  still given, so disagreements between catalogue and model can be reviewed;
* ``no prediction``: no modality had any input for this record (no text, no image, no tabular
  value): an explicit abstention rather than a guess from the class prior.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from heritage.evaluation import _json_default, evaluate, expected_calibration_error
from heritage.locking import locks_folder
from heritage.metadata.base import Modality, Targets
from heritage.metadata.flat import FlatText
from heritage.metadata.fusion import (
    STACKER_KINDS,
    FusionConfig,
    ModalityChoice,
    Stacker,
    StackerKind,
    TemperatureScaling,
    fold_indices,
    fusion_from_state,
    out_of_fold,
)
from heritage.metadata.persist import (
    ArrayStore,
    ModelFileError,
    modality_from_state,
    modality_state,
    read_model_files,
    write_model_files,
)
from heritage.metadata.records import RecordError, RecordSpec, RecordTable
from heritage.metadata.tabular import TabularConfig, TabularModel
from heritage.metadata.text import EncoderText, TfidfText
from heritage.prediction_table import PREDICTION_COLUMNS, STATUSES
from heritage.progress import progress_bar

__all__ = [
    "MODALITY_NAMES",
    "MODEL_FILES",
    "PREDICTION_COLUMNS",
    "STATUSES",
    "MetadataPredictor",
    "ModelFileError",
    "default_modalities",
    "make_modality",
]

MODALITY_NAMES = ("tfidf", "flat", "use", "e5", "tabular", "image", "image_multitask")
# a saved predictor: its structure as JSON, its arrays in safetensors (nothing that runs code
# when opened, see heritage.metadata.persist), and its card
STATE_FILE = "predictor.json"
ARRAYS_FILE = "predictor.safetensors"
MODEL_FILES = (STATE_FILE, ARRAYS_FILE)
CARD_FILE = "card.json"
# the pickle older heritage versions wrote: recognised, never opened
LEGACY_MODEL_FILE = "predictor.joblib"


def make_modality(
    name: str, *, seed: int = 0, cache_dir: str | Path | None = None, **options: Any
) -> Modality:
    """A modality by short name (``tfidf``, ``flat`` (TF-IDF of texts and tabular fields
    together, :mod:`heritage.metadata.flat`), ``use``, ``e5``, ``tabular``, ``image`` (frozen
    features), ``image_multitask`` (fine-tuned, one head per property); the ``text_`` prefix
    is accepted too). ``options`` go to the image modality's config (:class:`ImageConfig` or
    :class:`MultiTaskConfig`, whose ``train`` mapping is a training config)."""
    key = name.removeprefix("text_")
    if key == "tfidf":
        return TfidfText()
    if key == "flat":
        return FlatText()
    if key in ("use", "e5"):
        return EncoderText(key, cache_dir=cache_dir)
    if key == "tabular":
        return TabularModel(TabularConfig(seed=seed))
    if key == "image":
        from heritage.metadata.image import ImageConfig, ImageModel

        _check_options(key, options, ImageConfig)
        return ImageModel(ImageConfig(**options))
    if key == "image_multitask":
        from heritage.metadata.multitask import (
            MultiTaskConfig,
            MultiTaskImageModel,
            train_config,
        )

        _check_options(key, options, MultiTaskConfig)
        options = dict(options)
        train = options.pop("train", None) or {}
        if isinstance(train, dict):  # the modality's defaults, then the caller's changes
            train = train_config({"seed": seed, **train})
        return MultiTaskImageModel(MultiTaskConfig(train=train, **options))
    from heritage.metadata.text import TEXT_ENCODERS

    if key in TEXT_ENCODERS:  # a registered encoder
        return EncoderText(key, cache_dir=cache_dir)
    raise ValueError(f"unknown modality {name!r}; use one of {MODALITY_NAMES}")


def _check_options(name: str, options: dict[str, Any], config: type) -> None:
    known = {f.name for f in fields(config)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown {name} options {unknown}; valid: {sorted(known)}")


def _can_read(name: str, spec: RecordSpec) -> bool:
    """Whether a modality (by its name) has a column of the spec to read."""
    fields = bool(spec.tabular_columns) or len(spec.properties) > 1  # properties inform others
    if name == "text_flat":
        return bool(spec.text_columns) or fields
    if name.startswith("text_"):
        return bool(spec.text_columns)
    if name == "tabular":
        return fields
    if name.startswith("image"):
        return bool(spec.image_columns)
    return True  # a modality of the user's own: it knows what it reads


def default_modalities(table: RecordTable) -> list[str]:
    """What the table can feed: TF-IDF and USE for texts (both cheap; e5 is opt-in, it costs
    minutes of encoding on a CPU), tabular for other fields or several properties, the flat
    TF-IDF of texts and fields together, image for image columns."""
    spec = table.spec
    names = ["tfidf", "use"] if spec.text_columns else []
    if spec.tabular_columns or len(spec.properties) > 1:
        names.append("tabular")
    if spec.text_columns or spec.tabular_columns:
        names.append("flat")
    if spec.image_columns:
        names.append("image")
    return names


def _macro_f1(y: np.ndarray, proba: np.ndarray, classes: Sequence[str]) -> float:
    return evaluate(y, proba, classes).macro_f1


#: bootstrap resamples of the held-out records, and the share of them a candidate must win
#: to replace the default: a one-sided paired test at the 5 % level
BOOTSTRAP_RESAMPLES = 500
CLEAR_WIN = 0.95


def _p_better(
    y: np.ndarray,
    held: Mapping[str, np.ndarray],
    reference: str,
    candidates: Sequence[str],
    seed: int,
) -> dict[str, float]:
    """For each candidate, the share of paired bootstrap resamples of the held-out records
    in which its macro-F1 is above ``reference``'s (the same resamples for all)."""
    others = [c for c in candidates if c != reference]
    if not others:
        return {}
    k = held[reference].shape[1]
    guesses = {c: held[c].argmax(axis=1) for c in [reference, *others]}
    rng = np.random.default_rng(seed)
    wins = dict.fromkeys(others, 0)
    for _ in range(BOOTSTRAP_RESAMPLES):
        idx = rng.integers(0, len(y), size=len(y))
        base = _macro_f1_of_labels(y[idx], guesses[reference][idx], k)
        for c in others:
            wins[c] += _macro_f1_of_labels(y[idx], guesses[c][idx], k) > base
    return {c: wins[c] / BOOTSTRAP_RESAMPLES for c in others}


def _macro_f1_of_labels(truth: np.ndarray, predicted: np.ndarray, k: int) -> float:
    """Macro-F1 over the classes that occur in ``truth`` or ``predicted`` (as
    scikit-learn's), from counts: fast enough to run thousands of times."""
    tp = np.bincount(truth[truth == predicted], minlength=k)
    support = np.bincount(truth, minlength=k) + np.bincount(predicted, minlength=k)
    present = support > 0
    return float(np.sum(2 * tp[present] / support[present]) / max(present.sum(), 1))


def _clear_winner(
    reference: str, scores: Mapping[str, float], p_better: Mapping[str, float]
) -> str:
    """``reference``, unless some candidates beat it in at least :data:`CLEAR_WIN` of the
    resamples: then the best-scoring of those."""
    clear = [c for c in scores if c != reference and p_better.get(c, 0.0) >= CLEAR_WIN]
    return max(clear, key=lambda c: scores[c]) if clear else reference


def _known(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Rows where at least one modality is present."""
    return np.column_stack([~np.isnan(b).any(axis=1) for b in blocks]).any(axis=1)


def _input_keys(table: RecordTable) -> np.ndarray:
    """One hash per record over everything a modality may read (id, texts, language, images,
    tabular fields, the properties): equal keys mean the same inputs as at fit time."""
    spec = table.spec
    columns = [
        spec.id_column,
        *spec.text_columns,
        *([spec.language_column] if spec.language_column else []),
        *spec.image_columns,
        *spec.tabular_columns,
        *spec.properties,
    ]
    columns = [c for c in dict.fromkeys(columns) if c in table.frame.columns]
    return pd.util.hash_pandas_object(table.frame[columns].astype(str), index=False).to_numpy()


class MetadataPredictor:
    """Predict missing metadata from texts, tabular fields and images with late fusion.

    ``modalities``: names (see :func:`make_modality`) or :class:`Modality` objects; ``None``
    picks :func:`default_modalities` from the training table. ``fusion``: folds, stacker,
    calibration and seed. ``top_k``: alternatives listed per prediction.

    Learnt state: ``spec_``, ``classes_``, ``modalities_`` (fitted on all training records),
    ``stackers_``, ``calibrators_``, ``selection_`` (stacker scores and choice per property),
    ``calibration_`` (temperature and ECE before/after per property), ``oof_`` (the stacker's
    out-of-fold training inputs), ``train_keys_`` (input hashes of the training records),
    ``n_train_``, ``n_val_``, ``fit_seconds_``.

    Predictions for the training records themselves are never in-sample: a record whose
    inputs are unchanged since ``fit`` gets the probabilities of the modality copies that did
    not see it (the out-of-fold ones the stacker was trained on), because a modality's
    predictions on its own training records (TF-IDF nearly memorises them) would be
    confidently, uselessly right.

    Saved models (:meth:`save`/:meth:`load`) are JSON and safetensors, never pickles: opening
    a model folder from elsewhere runs no code from it.
    """

    def __init__(
        self,
        modalities: Sequence[Modality | str] | None = None,
        fusion: FusionConfig | None = None,
        *,
        top_k: int = 3,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.modalities = None if modalities is None else list(modalities)
        self.fusion = fusion or FusionConfig()
        self.top_k = top_k
        self.cache_dir = cache_dir

    # ----------------------------------------------------------------- fit

    def _resolve(self, table: RecordTable) -> list[Modality]:
        names = self.modalities if self.modalities is not None else default_modalities(table)
        if not names:
            raise RecordError(
                f"{table.source}: nothing to learn from; name text, image or tabular columns "
                "(or several properties, which inform each other)"
            )
        mods = [
            m
            if isinstance(m, Modality)
            else make_modality(m, seed=self.fusion.seed, cache_dir=self.cache_dir)
            for m in names
        ]
        seen = [m.name for m in mods]
        dup = sorted({n for n in seen if seen.count(n) > 1})
        if dup:
            raise ValueError(f"modalities {dup} are given twice")
        blind = [m.name for m in mods if not _can_read(m.name, table.spec)]
        if blind:
            spec = table.spec
            has = [
                f"{role}: {', '.join(cols)}"
                for role, cols in (
                    ("text", list(spec.text_columns)),
                    ("image", list(spec.image_columns)),
                    ("tabular", list(spec.tabular_columns)),
                )
                if cols
            ]
            raise RecordError(
                f"{table.source}: modality {', '.join(map(repr, blind))} has no column to read "
                f"(the table has {'; '.join(has) or 'no text, image or tabular column'}). Texts "
                "feed tfidf, use and e5 (text_<lang> columns or --text-columns), images feed "
                "image (--image-columns), other fields feed tabular (--tabular-columns, or "
                "several --properties); choose --modalities accordingly."
            )
        return mods

    def fit(self, records: RecordTable, validation: RecordTable | None = None) -> MetadataPredictor:
        """Fit on ``records`` (its ``train`` split if it has one; ``val`` as validation unless
        ``validation`` is given)."""
        start = time.perf_counter()
        train = records
        if records.has_split:
            splits = records.split_values()
            train = records.subset(splits == "train")
            if len(train) == 0:
                raise RecordError(f"{records.source}: the split column has no 'train' records")
            if validation is None and (splits == "val").any():
                validation = records.subset(splits == "val")
        targets = Targets.learn(train)
        self.spec_ = train.spec
        self.classes_ = targets.classes
        mods = self._resolve(train)
        cfg = self.fusion
        self.oof_ = out_of_fold(mods, train, targets, min(cfg.folds, len(train)), cfg.seed)
        with progress_bar() as bar:
            task = bar.add_task("fitting modalities", total=len(mods))
            self.modalities_ = []
            for m in mods:
                bar.update(task, info=m.name)
                self.modalities_.append(m.clone().fit(train, targets))
                bar.advance(task)
        val_blocks = None
        if validation is not None and len(validation):
            val_targets = Targets.encode(validation, self.classes_)
            val_blocks = self.modality_proba(validation)

        self.stackers_: dict[str, Stacker | ModalityChoice] = {}
        self.calibrators_: dict[str, TemperatureScaling | None] = {}
        self.selection_: dict[str, dict[str, Any]] = {}
        self.calibration_: dict[str, dict[str, Any]] = {}
        for prop, names in self.classes_.items():
            blocks = [self.oof_[m.name][prop] for m in self.modalities_]
            y = targets.codes[prop]
            rows = (y >= 0) & _known(blocks)
            blocks = [b[rows] for b in blocks]
            y = y[rows]
            if len(np.unique(y)) < 2:
                readable = sorted({names[c] for c in y})
                raise RecordError(
                    f"{records.source}: property {prop!r} has {len(readable)} value(s) "
                    f"{readable} on training records that the modalities "
                    f"({', '.join(m.name for m in self.modalities_)}) can read, and needs at "
                    "least 2: the other values' records have no text, image or tabular value "
                    "these modalities read (a missing or unreadable image file does not count). "
                    "Fill those in, or add modalities for the columns the records do have "
                    "(--modalities)."
                )
            held: tuple[list[np.ndarray], np.ndarray] | None = None
            if val_blocks is not None:
                vb = [val_blocks[m.name][prop] for m in self.modalities_]
                vy = val_targets.codes[prop]
                vrows = (vy >= 0) & _known(vb)
                if vrows.any():
                    held = ([b[vrows] for b in vb], vy[vrows])
            self._fit_property(prop, names, blocks, y, held)
        self.train_keys_ = _input_keys(train)
        self.n_train_ = len(train)
        self.n_val_ = 0 if validation is None else len(validation)
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _fit_property(
        self,
        prop: str,
        classes: list[str],
        blocks: list[np.ndarray],
        y: np.ndarray,
        held: tuple[list[np.ndarray], np.ndarray] | None,
    ) -> None:
        """Choose the fusion on held-out data (validation, else cross-validation on the
        out-of-fold inputs): the default stacker unless another clearly beats it, then that
        stacker unless a single modality clearly beats it (``select_modalities``); then
        calibrate on the same held-out predictions. ``selection_[prop]["p_better"]``: each
        candidate's share of bootstrap resamples won against the one it challenged."""
        cfg = self.fusion
        kinds: list[StackerKind] = (
            list(STACKER_KINDS) if cfg.stacker == "auto" else [cast(StackerKind, cfg.stacker)]
        )
        k = len(classes)
        data, held_blocks, hy, held_proba, fitted = self._held_out_stackers(
            kinds, k, blocks, y, held
        )
        scores = {kind: _macro_f1(hy, held_proba[kind], classes) for kind in kinds}
        # the default stacker stays unless another candidate beats it clearly: picking the
        # top held-out score among many close candidates mostly picks noise (silknow: four
        # stackers within 0.01-0.02 macro-F1 on a few hundred records)
        reference: str = "blend" if "blend" in kinds else kinds[0]
        p_better = _p_better(hy, held_proba, reference, kinds, cfg.seed)
        best = cast(StackerKind, _clear_winner(reference, scores, p_better))
        names = [m.name for m in self.modalities_]
        if cfg.select_modalities and len(names) > 1:
            chosen = self._challenge_with_modalities(
                best, names, held_blocks, hy, classes, held_proba, scores, p_better
            )
        else:
            chosen = best
        fusion: Stacker | ModalityChoice = fitted.get(best) or self._stacker(best, k).fit(blocks, y)
        if chosen not in kinds:  # a single modality, the best stacker where it is absent
            fusion = ModalityChoice(names.index(chosen), chosen, fusion)
        self.stackers_[prop] = fusion
        self.selection_[prop] = {
            "chosen": chosen,
            "stacker": best,
            "macro_f1": scores,
            "p_better": p_better,
            "data": data,
            "n": len(hy),
        }
        self._calibrate(prop, held_proba[chosen], hy, data)

    def _stacker(self, kind: StackerKind, n_classes: int) -> Stacker:
        """An unfitted stacker of ``kind`` with the fusion's dropout and seed."""
        cfg = self.fusion
        return Stacker(kind, n_classes, modality_dropout=cfg.modality_dropout, seed=cfg.seed)

    def _held_out_stackers(
        self,
        kinds: list[StackerKind],
        k: int,
        blocks: list[np.ndarray],
        y: np.ndarray,
        held: tuple[list[np.ndarray], np.ndarray] | None,
    ) -> tuple[
        str, list[np.ndarray], np.ndarray, dict[str, np.ndarray], dict[StackerKind, Stacker]
    ]:
        """Each stacker kind's probabilities on held-out data: the validation records when
        there are some (the stackers fitted on all of ``blocks`` are returned for reuse),
        else cross-validated on the out-of-fold inputs, which are already held out for the
        modalities. Returns which data it was, its blocks and targets, the probabilities
        per kind, and the fitted stackers."""
        cfg = self.fusion
        held_proba: dict[str, np.ndarray] = {}
        fitted: dict[StackerKind, Stacker] = {}
        if held is not None:
            held_blocks, hy = held
            for kind in kinds:
                fitted[kind] = self._stacker(kind, k).fit(blocks, y)
                held_proba[kind] = fitted[kind].predict_proba(held_blocks)
            return "validation", held_blocks, hy, held_proba, fitted
        n_folds = min(cfg.folds, len(y))
        for kind in kinds:
            proba = np.full((len(y), k), np.nan)
            for fit_idx, held_idx in fold_indices(len(y), n_folds, cfg.seed + 1):
                st = self._stacker(kind, k).fit([b[fit_idx] for b in blocks], y[fit_idx])
                proba[held_idx] = st.predict_proba([b[held_idx] for b in blocks])
            held_proba[kind] = proba
        return "cross-validation", blocks, y, held_proba, fitted

    def _challenge_with_modalities(
        self,
        best: str,
        names: list[str],
        held_blocks: list[np.ndarray],
        hy: np.ndarray,
        classes: list[str],
        held_proba: dict[str, np.ndarray],
        scores: dict[str, float],
        p_better: dict[str, float],
    ) -> str:
        """The best stacker unless a single modality clearly beats it. A modality is scored
        as it would predict: its own probabilities where it has any, the stacker's where it
        is absent. Adds each modality's held-out probabilities, score and share of bootstrap
        wins to ``held_proba``, ``scores`` and ``p_better``."""
        for i, name in enumerate(names):
            own = held_blocks[i]
            here = ~np.isnan(own).any(axis=1)
            proba = held_proba[best].copy()
            proba[here] = own[here]
            held_proba[name] = proba
            scores[name] = _macro_f1(hy, proba, classes)
        singles = [best, *names]
        p_better |= _p_better(hy, held_proba, best, singles, self.fusion.seed)
        return _clear_winner(best, {c: scores[c] for c in singles}, p_better)

    def _calibrate(self, prop: str, before: np.ndarray, hy: np.ndarray, data: str) -> None:
        """Fit ``prop``'s calibrator (if any) on the chosen fusion's held-out probabilities
        ``before`` and record the ECE before and after in ``calibration_``."""
        cfg = self.fusion
        info: dict[str, Any] = {
            "method": cfg.calibration,
            "data": data,
            "n": len(hy),
            "ece_before": expected_calibration_error(hy, before),
        }
        if cfg.calibration == "temperature":
            cal = TemperatureScaling().fit(before, hy)
            self.calibrators_[prop] = cal
            info["temperature"] = cal.temperature_
            # on the data it was fitted on: an optimistic figure, reported as such; the
            # benchmark measures ECE on test records
            info["ece_after"] = expected_calibration_error(hy, cal.transform(before))
        else:
            self.calibrators_[prop] = None
            info["ece_after"] = info["ece_before"]
        self.calibration_[prop] = info

    # ----------------------------------------------------------------- predict

    def _table(self, records: RecordTable | pd.DataFrame | str | Path) -> RecordTable:
        """Records to predict, validated with the fitted spec (property columns optional,
        split ignored)."""
        spec = replace(self.spec_, split_column=None)
        if isinstance(records, RecordTable):
            return RecordTable.from_frame(
                records.frame,
                spec,
                source=records.source,
                require_properties=False,
                image_root=records.image_root,
            )
        if isinstance(records, pd.DataFrame):
            return RecordTable.from_frame(records, spec, require_properties=False)
        return RecordTable.from_csv(records, spec, require_properties=False)

    def modality_proba(
        self, records: RecordTable | pd.DataFrame | str | Path
    ) -> dict[str, dict[str, np.ndarray]]:
        """Each fitted modality's own probabilities (NaN rows where it had no input)."""
        table = self._table(records)
        return {m.name: m.predict_proba(table) for m in self.modalities_}

    def predict_proba(
        self, records: RecordTable | pd.DataFrame | str | Path
    ) -> dict[str, np.ndarray]:
        """Calibrated fused probabilities per property, columns in ``classes_[prop]`` order;
        NaN rows where no modality had any input."""
        return self._predict(self._table(records))[0]

    def _use_out_of_fold(
        self, table: RecordTable, blocks: dict[str, dict[str, np.ndarray]]
    ) -> None:
        """Replace, in place, the in-sample probabilities of unchanged training records by
        their out-of-fold ones."""
        keys = getattr(self, "train_keys_", None)
        if keys is None or len(table) == 0:  # a model saved before train_keys_ existed
            return
        where = {k: i for i, k in enumerate(keys)}
        pairs = [(row, where[k]) for row, k in enumerate(_input_keys(table)) if k in where]
        if not pairs:
            return
        rows, train_rows = (np.array(x) for x in zip(*pairs, strict=True))
        for name, by_prop in blocks.items():
            for prop, p in by_prop.items():
                p[rows] = self.oof_[name][prop][train_rows]

    def _predict(self, table: RecordTable) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        blocks = {m.name: m.predict_proba(table) for m in self.modalities_}
        self._use_out_of_fold(table, blocks)
        proba, present = {}, {}
        for prop in self.classes_:
            bl = [blocks[m.name][prop] for m in self.modalities_]
            fused = self.stackers_[prop].predict_proba(bl)
            cal = self.calibrators_.get(prop)
            proba[prop] = cal.transform(fused) if cal is not None else fused
            present[prop] = np.column_stack([~np.isnan(b).any(axis=1) for b in bl])
        return proba, present

    def predict(self, records: RecordTable | pd.DataFrame | str | Path) -> pd.DataFrame:
        """One row per record and property with the columns :data:`PREDICTION_COLUMNS`."""
        table = self._table(records)
        proba, present = self._predict(table)
        names = [m.name for m in self.modalities_]
        ids = table.ids
        parts = []
        for prop, classes in self.classes_.items():
            p = proba[prop]
            known = table.labels(prop)
            order = np.argsort(-np.nan_to_num(p, nan=-1.0), axis=1, kind="stable")
            values, confs, alts, mods, status = [], [], [], [], []
            for i in range(len(table)):
                used = [n for n, here in zip(names, present[prop][i], strict=True) if here]
                if not used:
                    values.append("")
                    confs.append(np.nan)
                    alts.append("[]")
                    mods.append("")
                    status.append("catalogued" if known[i] else "no prediction")
                    continue
                top = order[i]
                values.append(classes[top[0]])
                confs.append(float(p[i, top[0]]))
                alts.append(
                    json.dumps(
                        [[classes[j], round(float(p[i, j]), 4)] for j in top[1 : 1 + self.top_k]],
                        ensure_ascii=False,
                    )
                )
                mods.append("+".join(used))
                status.append("catalogued" if known[i] else "predicted")
            parts.append(
                pd.DataFrame(
                    {
                        "record": ids,
                        "property": prop,
                        "value": values,
                        "confidence": confs,
                        "alternatives": alts,
                        "modalities": mods,
                        "status": status,
                        "catalogued": known,
                    }
                )
            )
        out = pd.concat(parts, ignore_index=True)
        # record-major order: all properties of one record together
        out["_r"] = np.tile(np.arange(len(table)), len(self.classes_))
        return out.sort_values(["_r"], kind="stable").drop(columns="_r").reset_index(drop=True)

    # ----------------------------------------------------------------- persistence

    def card(self) -> dict[str, Any]:
        """What the model is and how well it is calibrated, as JSON-serialisable data."""
        from heritage import __version__

        return {
            "heritage_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "spec": self.spec_.to_dict(),
            "classes": self.classes_,
            "modalities": [m.describe() for m in self.modalities_],
            "fusion": asdict(self.fusion),
            "selection": self.selection_,
            "calibration": self.calibration_,
            "n_train": self.n_train_,
            "n_val": self.n_val_,
            "fit_seconds": round(self.fit_seconds_, 2),
        }

    @locks_folder("writing a metadata model", lambda self, folder, *a, **k: folder)
    def save(self, folder: str | Path) -> Path:
        """Write the fitted predictor (``predictor.json`` + ``predictor.safetensors``, see
        :mod:`heritage.metadata.persist`) and ``card.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = ArrayStore()
        modalities: list[Any] | None = None
        if self.modalities is not None:  # as given: names, or configured modalities by name
            modalities = [m if isinstance(m, str) else {"fitted": m.name} for m in self.modalities]
        tree = {
            "heritage_version": _version(),
            "predictor": {
                "modalities": modalities,
                "fusion": asdict(self.fusion),
                "top_k": self.top_k,
                "cache_dir": None if self.cache_dir is None else str(self.cache_dir),
            },
            "spec": self.spec_.to_dict(),
            "classes": self.classes_,
            "fitted_modalities": [
                modality_state(m, arrays, f"modalities.{m.name}") for m in self.modalities_
            ],
            "stackers": {
                prop: st.state(arrays, f"stackers.{prop}") for prop, st in self.stackers_.items()
            },
            "calibrators": {
                prop: None if cal is None else cal.state()
                for prop, cal in self.calibrators_.items()
            },
            "selection": self.selection_,
            "calibration": self.calibration_,
            "oof": {
                name: {prop: arrays.put(f"oof.{name}.{prop}", p) for prop, p in by_prop.items()}
                for name, by_prop in self.oof_.items()
            },
            "train_keys": arrays.put("train_keys", self.train_keys_),
            "n_train": self.n_train_,
            "n_val": self.n_val_,
            "fit_seconds": self.fit_seconds_,
        }
        write_model_files(folder / STATE_FILE, folder / ARRAYS_FILE, tree, arrays)
        (folder / CARD_FILE).write_text(json.dumps(self.card(), indent=2, default=_json) + "\n")
        (folder / LEGACY_MODEL_FILE).unlink(missing_ok=True)  # a pickle of an earlier fit
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> MetadataPredictor:
        """Read a predictor saved by :meth:`save`. Only JSON and safetensors are parsed; a
        folder holding an older heritage's pickle (``predictor.joblib``), or files of another
        kind under these names, is refused with :class:`ModelFileError` and not opened."""
        folder = Path(folder)
        state_path, arrays_path = folder / STATE_FILE, folder / ARRAYS_FILE
        if not state_path.is_file() or not arrays_path.is_file():
            if (folder / LEGACY_MODEL_FILE).is_file():
                raise ModelFileError(
                    f"{folder} was saved by an older heritage as a pickle ({LEGACY_MODEL_FILE}), "
                    "which can run code when opened, so it is not read. Refit the model with "
                    "`heritage metadata fit` (same records and options) to save it as "
                    f"{STATE_FILE} + {ARRAYS_FILE}"
                )
            missing = state_path if not state_path.is_file() else arrays_path
            raise FileNotFoundError(
                f"{missing} not found; pass a folder written by `heritage metadata fit`"
            )
        tree, arrays = read_model_files(state_path, arrays_path)
        try:
            return cls._from_tree(tree, arrays)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ModelFileError(
                f"{state_path} does not describe a complete predictor ({type(exc).__name__}: "
                f"{exc}); refit the model with `heritage metadata fit`"
            ) from exc

    @classmethod
    def _from_tree(cls, tree: Mapping[str, Any], arrays: ArrayStore) -> MetadataPredictor:
        settings = tree["predictor"]
        model = cls(
            None,
            FusionConfig(**settings["fusion"]),
            top_k=int(settings["top_k"]),
            cache_dir=settings["cache_dir"],
        )
        model.spec_ = RecordSpec.from_dict(tree["spec"])
        model.classes_ = {p: list(c) for p, c in tree["classes"].items()}
        model.modalities_ = [modality_from_state(m, arrays) for m in tree["fitted_modalities"]]
        if settings["modalities"] is not None:
            by_name = {m.name: m for m in model.modalities_}
            model.modalities = [
                m if isinstance(m, str) else by_name[m["fitted"]].clone()
                for m in settings["modalities"]
            ]
        model.stackers_ = {p: fusion_from_state(st, arrays) for p, st in tree["stackers"].items()}
        model.calibrators_ = {
            p: None if cal is None else TemperatureScaling.from_state(cal)
            for p, cal in tree["calibrators"].items()
        }
        model.selection_ = tree["selection"]
        model.calibration_ = tree["calibration"]
        model.oof_ = {
            name: {prop: arrays.get(ref) for prop, ref in by_prop.items()}
            for name, by_prop in tree["oof"].items()
        }
        model.train_keys_ = arrays.get(tree["train_keys"])
        model.n_train_ = int(tree["n_train"])
        model.n_val_ = int(tree["n_val"])
        model.fit_seconds_ = float(tree["fit_seconds"])
        return model

    def summary(self) -> list[str]:
        """One line per property: stacker choice, its held-out macro-F1 and ECE."""
        lines = []
        for prop, sel in self.selection_.items():
            cal = self.calibration_[prop]
            scores = ", ".join(f"{k} {v:.3f}" for k, v in sel["macro_f1"].items())
            line = (
                f"{prop}: stacker {sel['chosen']} (macro-F1 on {sel['data']}, n={sel['n']}: "
                f"{scores}); ECE {cal['ece_before']:.3f}"
            )
            if "temperature" in cal:
                line += f" -> {cal['ece_after']:.3f} (T={cal['temperature']:.2f})"
            lines.append(line)
        return lines


def _version() -> str:
    from heritage import __version__

    return __version__


def _json(obj: Any) -> Any:
    """The reports' JSON fallback (numpy values, paths), widened so that writing a model card
    never fails: mappings and tuples/sets become their JSON forms, anything else its text."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    try:
        return _json_default(obj)
    except TypeError:
        return str(obj)


def read_image_options(path: str | Path, name: str) -> dict[str, Any]:
    """Options of image modality ``name`` (``image``, ``image_multitask``) from a YAML file:
    its own section when the file has sections (one file can set both modalities), else the
    whole mapping. A missing file, or one that is not a mapping, is an error naming it."""
    from heritage.config import read_yaml_mapping

    options = read_yaml_mapping(path, "image config")
    if {"image", "image_multitask"} & set(options):
        return dict(options.get(name) or {})
    return options


def chosen_modalities(
    names: Sequence[str] | None,
    table: RecordTable,
    *,
    seed: int = 0,
    image_config: str | Path | None = None,
    fine_tunes: str | Path = "fine-tunes",
) -> list[Any] | None:
    """What :class:`MetadataPredictor` is given: the modalities ``names`` (None: those the
    table can feed, :func:`default_modalities`), the image ones built with the options of
    ``image_config`` (:func:`read_image_options`). A fine-tuned image modality keeps its
    progress in ``fine_tunes`` unless the file says otherwise, so that a killed fit, rerun,
    resumes it. Only names (None when none was given) when no image modality needs options."""
    if image_config is None and "image_multitask" not in (names or []):
        return list(names) if names else None
    out: list[Any] = []
    for name in names or default_modalities(table):
        if name not in ("image", "image_multitask"):
            out.append(name)
            continue
        options = read_image_options(image_config, name) if image_config is not None else {}
        if name == "image_multitask":
            options.setdefault("checkpoint_dir", str(fine_tunes))
        out.append(make_modality(name, seed=seed, **options))
    return out
