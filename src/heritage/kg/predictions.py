"""Prediction tables heritage writes, read into one shape for export.

Two producers, two layouts:

* ``heritage metadata predict`` (:class:`~heritage.metadata.MetadataPredictor`): one row per
  record and property with ``record, property, value, confidence, alternatives, modalities,
  status, catalogued`` — alternatives as JSON ``[[value, p], ...]``;
* ``heritage predict`` (image classifier): one row per image with ``image, label_1,
  confidence_1, label_2, confidence_2, ...``.

Both become the metadata layout (:data:`~heritage.metadata.PREDICTION_COLUMNS`); an image
classifier's labels become the values of one property (``label`` unless named). The layout
is detected from the columns, so ``heritage kg export`` takes either file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from heritage.collection import read_csv_strings
from heritage.prediction_table import PREDICTION_COLUMNS, STATUSES

__all__ = [
    "PREDICTION_COLUMNS",
    "PredictionKind",
    "detect_kind",
    "normalise_predictions",
    "read_predictions",
]

PredictionKind = Literal["auto", "metadata", "classifier"]
_METADATA_REQUIRED = ("record", "property", "value", "confidence")
_RANKED = re.compile(r"^(label|confidence)_(\d+)$")


def detect_kind(columns: list[str]) -> Literal["metadata", "classifier"]:
    """Which producer wrote a table with these columns (a ValueError if neither)."""
    if all(c in columns for c in _METADATA_REQUIRED):
        return "metadata"
    if "label_1" in columns and "confidence_1" in columns:
        return "classifier"
    raise ValueError(
        "not a heritage prediction table: expected the columns of `heritage metadata predict` "
        f"({', '.join(_METADATA_REQUIRED)}, ...) or of `heritage predict` (image, label_1, "
        f"confidence_1, ...); found {', '.join(columns) or 'none'}"
    )


def read_predictions(
    path: str | Path, kind: PredictionKind = "auto", prop: str = "label"
) -> pd.DataFrame:
    """A prediction CSV in the metadata layout (see :func:`normalise_predictions`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file {path} not found")
    df = read_csv_strings(path, ValueError, str(path))
    return normalise_predictions(df, kind, prop, source=str(path))


def normalise_predictions(
    df: pd.DataFrame,
    kind: PredictionKind = "auto",
    prop: str = "label",
    *,
    source: str = "<predictions>",
) -> pd.DataFrame:
    """The metadata layout with clean types: strings (``""`` for none), float confidences
    (NaN where there is no value), alternatives as lists of ``(value, p)`` pairs.

    Checks what would otherwise publish nonsense: confidences outside [0, 1], an unknown
    status, two rows for the same record and property, unreadable alternatives. Messages name
    the data row (1-based, header excluded).
    """
    columns = [str(c) for c in df.columns]
    if kind == "auto":
        kind = detect_kind(columns)
    if kind == "classifier":
        df = _from_classifier(df, prop, source)
    elif kind == "metadata":
        missing = [c for c in _METADATA_REQUIRED if c not in columns]
        if missing:
            raise ValueError(f"{source}: column(s) {missing} not found; columns: {columns}")
    else:
        raise ValueError(f"unknown prediction kind {kind!r}; use auto, metadata or classifier")
    if len(df) == 0:
        raise ValueError(f"{source} has no predictions")

    out = pd.DataFrame(index=range(len(df)))
    for col in ("record", "property", "value", "modalities", "status", "catalogued"):
        values = df[col] if col in df.columns else pd.Series([""] * len(df))
        out[col] = values.fillna("").astype(str).str.strip().to_numpy(dtype=object)
    conf = pd.to_numeric(df["confidence"].replace("", np.nan), errors="coerce").to_numpy(float)
    out["confidence"] = conf
    problems: list[str] = []
    bad_conf = (out["value"] != "").to_numpy() & ~((conf >= 0) & (conf <= 1))
    problems += [
        f"row {i + 1}: confidence {df['confidence'].iloc[i]!r} is not in [0, 1]"
        for i in np.flatnonzero(bad_conf)
    ]
    empty_id = (out["record"] == "") | (out["property"] == "")
    problems += [f"row {i + 1}: empty record or property" for i in np.flatnonzero(empty_id)]
    if not (out["status"] == "").all():
        out.loc[out["status"] == "", "status"] = "predicted"
        unknown = ~out["status"].isin(STATUSES)
        problems += [
            f"row {i + 1}: status {out['status'].iloc[i]!r} is not one of {', '.join(STATUSES)}"
            for i in np.flatnonzero(unknown)
        ]
    else:
        out["status"] = np.where(out["value"] != "", "predicted", "no prediction")
    dup = out.duplicated(["record", "property"], keep="first").to_numpy()
    problems += [
        f"row {i + 1}: a second prediction for record {out['record'].iloc[i]!r} and property "
        f"{out['property'].iloc[i]!r}"
        for i in np.flatnonzero(dup)
    ]
    alternatives = []
    raw = df["alternatives"] if "alternatives" in df.columns else [""] * len(df)
    for i, cell in enumerate(raw):
        try:
            alternatives.append(_parse_alternatives(cell))
        except ValueError as exc:
            problems.append(f"row {i + 1}: alternatives {str(cell)[:60]!r}: {exc}")
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"{source}: {len(problems)} problem(s):\n{lines}{more}")
    out["alternatives"] = alternatives
    return out[list(PREDICTION_COLUMNS)]


def _parse_alternatives(cell: object) -> list[tuple[str, float]]:
    if isinstance(cell, list):
        items = cell
    else:
        text = "" if cell is None or (isinstance(cell, float) and np.isnan(cell)) else str(cell)
        if not text.strip():
            return []
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg})") from exc
    if not isinstance(items, (list, tuple)):
        raise ValueError("expected a list of [value, confidence] pairs")
    pairs = []
    for item in items:
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise ValueError("expected a list of [value, confidence] pairs")
        value = str(item[0]).strip()
        try:
            p = float(item[1])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"confidence {item[1]!r} of {value!r} is not a number") from exc
        if not value:
            raise ValueError("an alternative has an empty value")
        if not 0 <= p <= 1:
            raise ValueError(f"confidence {p} of {value!r} is not in [0, 1]")
        pairs.append((value, p))
    return pairs


def _from_classifier(df: pd.DataFrame, prop: str, source: str) -> pd.DataFrame:
    """``image, label_1, confidence_1, ...`` -> one metadata-layout row per image."""
    columns = [str(c) for c in df.columns]
    ranks = sorted({int(m.group(2)) for c in columns if (m := _RANKED.match(c))})
    id_column = "image" if "image" in columns else columns[0]
    incomplete = [
        r for r in ranks if f"label_{r}" not in columns or f"confidence_{r}" not in columns
    ]
    if incomplete or not ranks or ranks != list(range(1, len(ranks) + 1)):
        raise ValueError(
            f"{source}: classifier columns must come in pairs label_1, confidence_1, label_2, "
            f"... without gaps; found {[c for c in columns if _RANKED.match(c)]}"
        )
    labels = [df[f"label_{r}"].fillna("").astype(str).str.strip().to_numpy() for r in ranks[1:]]
    confs = [pd.to_numeric(df[f"confidence_{r}"], errors="coerce").to_numpy() for r in ranks[1:]]
    alternatives = [
        [(lab[i], float(c[i])) for lab, c in zip(labels, confs, strict=True) if lab[i]]
        for i in range(len(df))
    ]
    return pd.DataFrame(
        {
            "record": df[id_column].astype(str),
            "property": prop,
            "value": df["label_1"].astype(str),
            "confidence": df["confidence_1"],
            "alternatives": alternatives,
            "modalities": "image",
            "status": "predicted",
            "catalogued": "",
        }
    )
