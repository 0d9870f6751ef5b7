"""Tabular modality: gradient-boosted trees on a record's other fields.

As in SILKNOW, each property is predicted from the museum-level fields *and the other
properties where they are known*: a velvet is more likely to be Italian than a Catalan
"voraviu" fragment, and the museum alone says much about place. The property being predicted
is never among its own features. Trees take missing values as they come (LightGBM learns a
default direction per split), so a record with some fields unknown still gets a prediction;
one with none of the features known gets an absent (NaN) row. Class imbalance is handled
with ``class_weight="balanced"`` (weights ∝ 1 / class frequency), the tree counterpart of the
focal loss's α.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from heritage.metadata.base import ConfiguredModality, Targets, absent, expand_proba
from heritage.metadata.persist import ArrayStore, lightgbm_from_state, lightgbm_state
from heritage.metadata.records import RecordTable

__all__ = ["TabularConfig", "TabularModel"]


@dataclass
class TabularConfig:
    """LightGBM settings for small tables (hundreds to a few thousand records)."""

    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 10
    colsample_bytree: float = 0.8  # also makes the seed matter, for honest seed variance
    reg_lambda: float = 1.0
    class_weight: str | None = "balanced"
    use_other_properties: bool = True
    seed: int = 0
    n_jobs: int = 1  # one thread: these fits are small, and the folds already run in a loop


def _is_number(values: np.ndarray) -> bool:
    known = values[values != ""]
    if len(known) == 0:
        return False
    return bool(pd.to_numeric(pd.Series(known), errors="coerce").notna().all())


class TabularModel(ConfiguredModality[TabularConfig]):
    """One LightGBM classifier per property. Learnt state: ``columns_`` (column -> "number"
    or its category list), ``models_`` (property -> (model, seen classes, feature columns)
    or None), ``classes_``."""

    name = "tabular"
    config_class = TabularConfig

    def _feature_columns(self, records: RecordTable, prop: str) -> list[str]:
        cols = list(records.spec.tabular_columns)
        if self.config.use_other_properties:
            cols += [p for p in records.spec.properties if p != prop]
        return cols

    def _encode(self, records: RecordTable) -> pd.DataFrame:
        """Numbers as floats, categories as their index in the training categories (unseen
        values and blanks become NaN, i.e. missing)."""
        out = {}
        for col, kind in self.columns_.items():
            values = records.frame[col].to_numpy(dtype=object)
            if kind == "number":
                out[col] = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float)
            else:
                index = {c: i for i, c in enumerate(kind)}
                out[col] = np.array([index.get(v, np.nan) for v in values], dtype=float)
        return pd.DataFrame(out, index=range(len(records)))  # rows even without a column

    def fit(self, records: RecordTable, targets: Targets) -> TabularModel:
        import lightgbm as lgb

        cfg = self.config
        self.classes_ = {p: list(c) for p, c in targets.classes.items()}
        all_cols = dict.fromkeys(
            c for p in self.classes_ for c in self._feature_columns(records, p)
        )
        self.columns_: dict[str, str | list[str]] = {}
        for col in all_cols:
            values = records.frame[col].to_numpy(dtype=object)
            self.columns_[col] = (
                "number" if _is_number(values) else sorted({v for v in values if v})
            )
        x_all = self._encode(records)
        self.models_: dict[str, tuple[Any, np.ndarray, list[str]] | None] = {}
        for prop, codes in targets.codes.items():
            cols = self._feature_columns(records, prop)
            x = x_all[cols]
            usable = x.notna().any(axis=1).to_numpy()
            rows = np.flatnonzero(usable & (codes >= 0))
            if not cols or len(np.unique(codes[rows])) < 2:
                self.models_[prop] = None
                continue
            categorical = [c for c in cols if self.columns_[c] != "number"]
            model = lgb.LGBMClassifier(
                n_estimators=cfg.n_estimators,
                learning_rate=cfg.learning_rate,
                num_leaves=cfg.num_leaves,
                min_child_samples=cfg.min_child_samples,
                colsample_bytree=cfg.colsample_bytree,
                reg_lambda=cfg.reg_lambda,
                class_weight=cfg.class_weight,
                random_state=cfg.seed,
                n_jobs=cfg.n_jobs,
                verbose=-1,
                # LightGBM's categorical defaults assume big data (100 rows per category)
                min_data_per_group=cfg.min_child_samples,
                cat_smooth=1.0,
            )
            model.fit(x.iloc[rows], codes[rows], categorical_feature=categorical or "auto")
            self.models_[prop] = (model, model.classes_, cols)
        return self

    def state(self, arrays: ArrayStore, prefix: str) -> dict[str, Any]:
        models: dict[str, Any] = {}
        for prop, fitted in self.models_.items():
            models[prop] = None
            if fitted is not None:
                model, seen, cols = fitted
                name = f"{prefix}.models.{prop}"
                models[prop] = {
                    "model": lightgbm_state(model, arrays, name),
                    "seen": arrays.put(f"{name}.seen", seen),
                    "columns": list(cols),
                }
        return {
            "config": asdict(self.config),
            "classes": self.classes_,
            "columns": self.columns_,
            "models": models,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], arrays: ArrayStore) -> TabularModel:
        model = cls(TabularConfig(**state["config"]))
        model.classes_ = {p: list(c) for p, c in state["classes"].items()}
        model.columns_ = dict(state["columns"])
        model.models_ = {
            prop: None
            if fitted is None
            else (
                lightgbm_from_state(fitted["model"], arrays),
                arrays.get(fitted["seen"]),
                list(fitted["columns"]),
            )
            for prop, fitted in state["models"].items()
        }
        return model

    def predict_proba(self, records: RecordTable) -> dict[str, np.ndarray]:
        out = {p: absent(len(records), len(c)) for p, c in self.classes_.items()}
        x_all = self._encode(records)
        for prop, fitted in self.models_.items():
            if fitted is None:
                continue
            model, seen, cols = fitted
            x = x_all[cols]
            usable = x.notna().any(axis=1).to_numpy()
            if usable.any():
                out[prop][usable] = expand_proba(
                    model.predict_proba(x[usable]), seen, len(self.classes_[prop])
                )
        return out
