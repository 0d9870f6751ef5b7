"""The flat modality: one linear model over everything a record says, read as words.

Late fusion learns from held-out records how far to trust each modality. With many classes
and a thousand records that is a lot to learn, and on such collections a single logistic
regression on TF-IDF of *all* fields together (texts as character n-grams, each tabular field
as a ``column=value`` token) beat both the fusion and each modality alone. It is the
strong, cheap baseline a data scientist tries first, so the fusion always has it as an input
and as a candidate to keep on its own (:class:`~heritage.metadata.fusion.ModalityChoice`).

Unlike the tabular modality, it does not read the other properties: one vectoriser serves
every property, and a property must never be among its own features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

from heritage.metadata.base import Targets
from heritage.metadata.persist import (
    ArrayStore,
    tfidf_vectoriser_from_state,
    tfidf_vectoriser_state,
)
from heritage.metadata.records import RecordTable
from heritage.metadata.text import TfidfText, _usable_text, char_tfidf

__all__ = ["FlatText", "field_tokens"]


def field_tokens(records: RecordTable) -> list[str]:
    """Per record, its tabular fields as ``column=value`` tokens (spaces in a value become
    ``_``; a blank field gives none), one space-separated string per record."""
    columns = records.spec.tabular_columns
    frame = records.frame
    out = []
    for i in range(len(records)):
        tokens = []
        for col in columns:
            value = str(frame[col].iat[i]).strip()
            if value and value.lower() != "nan":
                tokens.append(f"{col}={'_'.join(value.split())}")
        out.append(" ".join(tokens))
    return out


def _field_vectoriser() -> TfidfVectorizer:
    # each token is one feature: no lower-casing, no splitting on punctuation
    return TfidfVectorizer(
        analyzer="word", token_pattern=r"\S+", lowercase=False, sublinear_tf=True, dtype=np.float32
    )


class FlatText(TfidfText):
    """TF-IDF of a record's texts (character n-grams) and tabular fields (``column=value``)
    in one matrix, with a balanced logistic regression per property. A record with neither
    text nor fields is absent. Learnt state: ``vectoriser_`` (texts), ``fields_vectoriser_``,
    ``models_``, ``classes_``."""

    name = "text_flat"

    def _inputs(self, records: RecordTable) -> tuple[list[str], list[str], np.ndarray]:
        texts, has_text = _usable_text(records)
        fields = field_tokens(records)
        usable = has_text | np.array([bool(f) for f in fields], dtype=bool)
        return self._documents(texts), fields, usable

    def _matrix(self, docs: list[str], fields: list[str]) -> Any:
        parts = []
        if self.vectoriser_ is not None:
            parts.append(self.vectoriser_.transform(docs))
        if self.fields_vectoriser_ is not None:
            parts.append(self.fields_vectoriser_.transform(fields))
        return sp.hstack(parts, format="csr")

    def fit(self, records: RecordTable, targets: Targets) -> FlatText:
        docs, fields, usable = self._inputs(records)
        self.classes_ = {p: list(c) for p, c in targets.classes.items()}
        self.models_ = dict.fromkeys(self.classes_)
        texts = [d for d, u in zip(docs, usable, strict=True) if u and d]
        tokens = [f for f, u in zip(fields, usable, strict=True) if u and f]
        self.vectoriser_ = char_tfidf(self.config, len(texts)).fit(texts) if texts else None
        self.fields_vectoriser_ = _field_vectoriser().fit(tokens) if tokens else None
        if self.vectoriser_ is None and self.fields_vectoriser_ is None:
            return self
        self._fit_models(self._matrix(docs, fields), usable, targets)
        return self

    def predict_proba(self, records: RecordTable) -> dict[str, np.ndarray]:
        docs, fields, usable = self._inputs(records)
        if self.vectoriser_ is None and self.fields_vectoriser_ is None:
            usable = np.zeros(len(records), dtype=bool)
        rows = np.flatnonzero(usable)
        x = self._matrix([docs[i] for i in rows], [fields[i] for i in rows]) if len(rows) else None
        return self._predict_models(x, usable)

    def state(self, arrays: ArrayStore, prefix: str) -> dict[str, Any]:
        out = super().state(arrays, prefix)
        fields = self.fields_vectoriser_
        out["fields_vectoriser"] = (
            None if fields is None else tfidf_vectoriser_state(fields, arrays, f"{prefix}.fields")
        )
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, Any], arrays: ArrayStore) -> FlatText:
        model = super().from_state(state, arrays)
        fields = state.get("fields_vectoriser", state.get("fields_vectorizer"))  # 0.1 spelling
        model.fields_vectoriser_ = (
            None if fields is None else tfidf_vectoriser_from_state(fields, arrays)
        )
        return model  # type: ignore[return-value]
