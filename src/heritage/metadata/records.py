"""Object records for metadata prediction: one row per museum object, validated up front.

A record has an id, zero or more image paths, zero or more texts (each in a known language),
other tabular fields, and the properties to predict (production place, time span, technique,
…), any of which may be empty. Unlike an image collection, nothing here is required per row:
a record with a text but no image, or with a museum but no text, is normal, and an empty
property is exactly what the predictor is for. What *is* checked is everything that would
silently train the wrong thing: a column named in the spec but absent from the table, a
column used in two roles, empty or duplicate ids, unknown split values, a text without a
language. Every message names the columns or data rows (1-based, header excluded) at fault.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from heritage.collection import (
    SPLITS,
    _extra_labels_line,
    _format_problems,
    _known_spelling,
    _labels_table,
    _latest_labels,
    _normalise_split,
    read_csv_strings,
)

__all__ = [
    "SPLITS",
    "ExtraLabelsReport",
    "RecordError",
    "RecordSpec",
    "RecordTable",
    "read_columns",
    "read_records_csv",
]

_IMAGE_NAMES = ("image", "images", "image_path", "image_paths", "path", "paths")


class RecordError(ValueError):
    """Raised when a record table cannot be used; the message lists every problem found."""


def read_records_csv(path: str | Path, nrows: int | None = None) -> pd.DataFrame:
    """A records CSV as strings (``""`` for an empty cell); a missing, empty or unreadable
    file is a :class:`RecordError` naming it."""
    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise RecordError(f"Records file {path} not found; check the path.")
    return read_csv_strings(
        path,
        RecordError,
        f"Records file {path}",
        "save it as UTF-8 CSV with a header row.",
        nrows=nrows,
    )


def read_columns(path: str | Path) -> list[str]:
    """The column names of a records CSV (its header row), or a :class:`RecordError` naming
    the file when it is missing, empty or not CSV."""
    return [str(c) for c in read_records_csv(path, nrows=0).columns]


@dataclass
class RecordSpec:
    """Which column plays which role.

    ``text_columns`` maps a text column to its language (``{"text_en": "en"}``): one column per
    language, so a record may carry several translations. Alternatively name a
    ``language_column`` and map text columns to ``None``: each row's texts are then in the
    language that column gives. ``image_columns`` hold one path each, or several joined by
    ``path_separator``; relative paths are resolved against ``image_root`` (default: the CSV's
    folder). ``tabular_columns`` are any other fields (museum, number of images, …); numeric
    columns are used as numbers, the rest as categories. ``properties`` are what is predicted;
    each property's known values are also tabular evidence for the *other* properties.
    """

    id_column: str
    properties: tuple[str, ...]
    text_columns: dict[str, str | None] = field(default_factory=dict)
    language_column: str | None = None
    image_columns: tuple[str, ...] = ()
    tabular_columns: tuple[str, ...] = ()
    split_column: str | None = None
    image_root: str | None = None
    path_separator: str = "|"

    def __post_init__(self) -> None:
        self.properties = tuple(self.properties)
        self.image_columns = tuple(self.image_columns)
        self.tabular_columns = tuple(self.tabular_columns)
        self.text_columns = dict(self.text_columns)
        problems = []
        if not self.id_column:
            problems.append("id_column is empty; name the column that identifies each record")
        if not self.properties:
            problems.append("no properties: name at least one column to predict")
        if self.language_column is None:
            no_lang = [c for c, lang in self.text_columns.items() if not lang]
            if no_lang:
                problems.append(
                    f"text column(s) {no_lang} have no language; give one per column "
                    "({'text_en': 'en'}) or name a language_column"
                )
        roles: dict[str, list[str]] = {}
        for role, cols in (
            ("id", [self.id_column]),
            ("property", self.properties),
            ("text", list(self.text_columns)),
            ("language", [self.language_column] if self.language_column else []),
            ("image", self.image_columns),
            ("tabular", self.tabular_columns),
            ("split", [self.split_column] if self.split_column else []),
        ):
            for col in cols:
                roles.setdefault(col, []).append(role)
        problems += [
            f"column {col!r} is given {len(r)} roles ({', '.join(r)}); a column may have one"
            for col, r in roles.items()
            if len(r) > 1
        ]
        if problems:
            raise RecordError(_format_problems("Record spec is inconsistent:", problems))

    @property
    def input_columns(self) -> list[str]:
        """Columns a table must have to be predicted on (properties may be absent there)."""
        cols = [self.id_column, *self.text_columns, *self.image_columns, *self.tabular_columns]
        return cols + ([self.language_column] if self.language_column else [])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id_column": self.id_column,
            "properties": list(self.properties),
            "text_columns": dict(self.text_columns),
            "language_column": self.language_column,
            "image_columns": list(self.image_columns),
            "tabular_columns": list(self.tabular_columns),
            "split_column": self.split_column,
            "image_root": self.image_root,
            "path_separator": self.path_separator,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordSpec:
        return cls(**dict(data))

    @classmethod
    def infer(
        cls,
        columns: Sequence[str],
        properties: Sequence[str],
        *,
        id_column: str | None = None,
        text_columns: Mapping[str, str | None] | None = None,
        image_columns: Sequence[str] | None = None,
        tabular_columns: Sequence[str] | None = None,
        split_column: str | None = "split",
        **kwargs: Any,
    ) -> RecordSpec:
        """A spec from a header, filling in what was not given by naming convention.

        id: the first column; texts: ``text_<language>`` columns; images: a column called
        ``image``/``images``/``path`` or starting with ``image_``; split: ``split`` if present;
        tabular: every remaining column. Conventions keep the common case to one option
        (``--properties``) while every role can still be named explicitly.
        """
        columns = [str(c) for c in columns]
        if not columns:
            raise RecordError("the table has no columns")
        id_column = id_column or columns[0]
        if split_column is not None and split_column not in columns:
            if split_column != "split":  # named by the user: a typo must not leak test rows
                raise RecordError(
                    f"split column {split_column!r} not found; columns: {', '.join(columns)}"
                )
            split_column = None  # the conventional name is optional
        if text_columns is None:
            text_columns = {
                c: c[len("text_") :] for c in columns if c.startswith("text_") and c != "text_"
            }
        if image_columns is None:
            image_columns = [
                c for c in columns if c.lower() in _IMAGE_NAMES or c.startswith("image_")
            ]
            image_columns = [c for c in image_columns if c not in text_columns]
        if tabular_columns is None:
            taken = {id_column, split_column, *properties, *text_columns, *image_columns}
            taken.add(kwargs.get("language_column"))
            tabular_columns = [c for c in columns if c not in taken]
        return cls(
            id_column=id_column,
            properties=tuple(properties),
            text_columns=dict(text_columns),
            image_columns=tuple(image_columns),
            tabular_columns=tuple(tabular_columns),
            split_column=split_column,
            **kwargs,
        )


@dataclass(frozen=True)
class ExtraLabelsReport:
    """What :meth:`RecordTable.with_extra_labels` did with each row of a labels table."""

    source: str
    filled: int = 0  # an empty cell now holds the reviewed value
    kept_catalogued: int = 0  # the cell already had a value: the catalogue wins
    unknown_record: int = 0  # no record with that id (or its split was ignored)
    other_property: int = 0  # not one of the properties being learned
    no_value: int = 0  # an empty value (a rejection)
    superseded: int = 0  # an earlier review of a cell reviewed again later

    def summary(self) -> str:
        """One line for the command line."""
        return _extra_labels_line(
            self.source,
            [
                (self.filled, "filled"),
                (self.kept_catalogued, "kept catalogued"),
                (self.unknown_record, "unknown record"),
                (self.other_property, "other property"),
            ],
            [
                (self.no_value, "without a value"),
                (self.superseded, "superseded by a later review"),
            ],
        )


def _needed_columns(spec: RecordSpec, require_properties: bool) -> list[tuple[str, str]]:
    """(role, column) of every column ``spec`` needs, for a message that says what each
    missing one was for; property columns only when ``require_properties``."""
    needed = [("id", spec.id_column)]
    needed += [("text", c) for c in spec.text_columns]
    needed += [("image", c) for c in spec.image_columns]
    needed += [("tabular", c) for c in spec.tabular_columns]
    if spec.language_column:
        needed.append(("language", spec.language_column))
    if spec.split_column:
        needed.append(("split", spec.split_column))
    if require_properties:
        needed += [("property", c) for c in spec.properties]
    return needed


def _spec_frame(
    df: pd.DataFrame, spec: RecordSpec, needed: list[str], columns: list[str]
) -> pd.DataFrame:
    """The ``needed`` columns and every property column as stripped strings (``""`` for an
    empty cell); a property column the table lacks is unknown (``""``) throughout."""
    frame = pd.DataFrame(index=range(len(df)))
    keep_cols = needed + [c for c in spec.properties if c in columns]
    for col in dict.fromkeys(keep_cols):
        frame[col] = (
            df[col].fillna("").astype(str).str.strip().to_numpy(dtype=object)
            if col in columns
            else ""
        )
    for col in spec.properties:
        if col not in frame:
            frame[col] = ""
    return frame


def _split_records(
    frame: pd.DataFrame,
    rows: np.ndarray,
    split_column: str,
    ignore_splits: Sequence[str],
    source: str,
) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """The records left once ``ignore_splits`` are dropped, with split names normalised
    (``valid`` -> ``val``), their row numbers, and one problem per unknown split name."""
    splits = frame[split_column].map(_normalise_split)
    ignored = {_normalise_split(s) for s in ignore_splits}
    keep = ~splits.isin(ignored).to_numpy()
    frame, splits, rows = frame[keep].reset_index(drop=True), splits[keep], rows[keep]
    if len(frame) == 0:
        raise RecordError(f"{source}: every row has a split in {tuple(ignore_splits)}.")
    bad = ~splits.isin(SPLITS).to_numpy()
    problems = [
        f"row {r}: {split_column!r} value {v!r} is not one of {', '.join(SPLITS)} (or dev/valid)"
        for r, v in zip(rows[bad], frame[split_column].to_numpy()[bad], strict=True)
    ]
    frame[split_column] = splits.to_numpy(dtype=object)
    return frame, rows, problems


def _id_problems(ids: np.ndarray, rows: np.ndarray, spec: RecordSpec) -> list[str]:
    """Empty ids, and each repeated id once with every row it is on."""
    problems = [f"row {r}: empty id in {spec.id_column!r}" for r in rows[ids == ""]]
    dup = pd.Series(ids).duplicated(keep=False).to_numpy() & (ids != "")
    if dup.any():
        first: dict[str, list[int]] = {}
        for r, v in zip(rows[dup], ids[dup], strict=True):
            first.setdefault(v, []).append(int(r))
        problems += [
            f"id {v!r} appears on rows {', '.join(map(str, rs))}; ids must be unique"
            for v, rs in first.items()
        ]
    return problems


def _language_problems(frame: pd.DataFrame, rows: np.ndarray, spec: RecordSpec) -> list[str]:
    """Records with a text but no language: which encoder or stemmer applies is unknown."""
    has_text = np.zeros(len(frame), dtype=bool)
    for col in spec.text_columns:
        has_text |= (frame[col] != "").to_numpy()
    no_lang = has_text & (frame[spec.language_column] == "").to_numpy()
    return [f"row {r}: a text but no language in {spec.language_column!r}" for r in rows[no_lang]]


@dataclass(eq=False)
class RecordTable:
    """Validated records: ``frame`` holds every spec column as stripped strings, ``""`` for
    unknown. Build with :meth:`from_csv` or :meth:`from_frame`."""

    frame: pd.DataFrame
    spec: RecordSpec
    source: str = "<records>"
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    image_root: str | None = None  # resolved: spec.image_root, else the CSV's folder

    # ----------------------------------------------------------------- constructors

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        spec: RecordSpec,
        *,
        require_properties: bool = True,
        ignore_splits: Sequence[str] = (),
    ) -> RecordTable:
        """Read a UTF-8 CSV; relative image paths resolve against the CSV's folder unless the
        spec names an ``image_root``."""
        path = Path(path).expanduser().absolute()
        df = read_records_csv(path)
        return cls.from_frame(
            df,
            spec,
            source=str(path),
            require_properties=require_properties,
            ignore_splits=ignore_splits,
            image_root=spec.image_root or str(path.parent),
        )

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        spec: RecordSpec,
        *,
        source: str = "<records>",
        require_properties: bool = True,
        ignore_splits: Sequence[str] = (),
        image_root: str | Path | None = None,
    ) -> RecordTable:
        """Validate a DataFrame against ``spec``.

        ``require_properties=False`` (prediction) accepts a table without some property
        columns: those properties are then unknown for every record. Rows whose split is in
        ``ignore_splits`` (e.g. ``unused``) are dropped. Relative image paths resolve against
        ``image_root``, else ``spec.image_root``, else the working directory.
        """
        columns = [str(c) for c in df.columns]
        available = ", ".join(repr(c) for c in columns)
        needed = _needed_columns(spec, require_properties)
        missing = [f"{role} column {col!r}" for role, col in needed if col not in columns]
        if missing:
            raise RecordError(
                f"{source}: {'; '.join(missing)} not found. Available columns: {available}."
            )
        if len(df) == 0:
            raise RecordError(f"{source} has no data rows; add one row per record.")

        frame = _spec_frame(df, spec, [c for _, c in needed], columns)
        rows = np.arange(1, len(df) + 1, dtype=np.int64)
        problems: list[str] = []
        if spec.split_column:
            frame, rows, problems = _split_records(
                frame, rows, spec.split_column, ignore_splits, source
            )
        problems += _id_problems(frame[spec.id_column].to_numpy(dtype=object), rows, spec)
        if spec.language_column:
            problems += _language_problems(frame, rows, spec)
        if problems:
            raise RecordError(
                _format_problems(
                    f"{source}: {len(problems)} problem(s) (row = data row, 1-based, header "
                    "excluded):",
                    problems,
                )
            )
        root = image_root or spec.image_root or os.getcwd()
        return cls(frame, spec, source, rows, str(Path(root).expanduser().absolute()))

    def with_extra_labels(
        self, labels: pd.DataFrame | str | Path, *, source: str | None = None
    ) -> tuple[RecordTable, ExtraLabelsReport]:
        """Fill empty property cells from a labels table (``heritage kg reviews`` writes one:
        ``record``, ``property``, ``value``, …), or its path; return the new table and what
        was done with each row.

        This closes the loop: values a curator accepted or corrected become training labels.
        The catalogue wins: a cell that has a value is never overwritten, since a review of a
        prediction should never silently change catalogued data. Rows whose record id is not
        in the table, or whose property is not one being learned, are counted and ignored.
        When a cell was reviewed more than once, the latest review (``reviewed_at``) counts.
        """
        df, name, _ = _labels_table(labels, source, RecordError)
        about = df["property"].isin(self.spec.properties).to_numpy()
        has_value = (df["value"] != "").to_numpy()
        position = {v: i for i, v in enumerate(self.ids)}
        known = df["record"].map(lambda r: r in position).to_numpy(dtype=bool)
        df, superseded = _latest_labels(df[about & has_value & known], ["record", "property"])
        frame = self.frame.copy()
        df = df.copy()
        for prop in df["property"].unique():
            rows = (df["property"] == prop).to_numpy()
            classes = set(frame[prop].unique()) - {""}
            df.loc[rows, "value"] = _known_spelling(df.loc[rows, "value"], classes)
        filled = kept = 0
        for record, prop, value in zip(df["record"], df["property"], df["value"], strict=True):
            i = position[record]
            if frame.at[i, prop] == "":
                frame.at[i, prop] = value
                filled += 1
            else:
                kept += 1
        report = ExtraLabelsReport(
            name,
            filled=filled,
            kept_catalogued=kept,
            unknown_record=int((about & has_value & ~known).sum()),
            other_property=int((~about).sum()),
            no_value=int((about & ~has_value).sum()),
            superseded=superseded,
        )
        table = RecordTable(frame, self.spec, self.source, self.rows.copy(), self.image_root)
        return table, report

    # ----------------------------------------------------------------- views

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def ids(self) -> np.ndarray:
        return self.frame[self.spec.id_column].to_numpy(dtype=object)

    @property
    def has_split(self) -> bool:
        return bool(self.spec.split_column) and len(self.frame) > 0

    def split_values(self) -> np.ndarray:
        """Normalised split per record (``train``/``val``/``test``), or ``""`` without one."""
        if not self.has_split:
            return np.full(len(self), "", dtype=object)
        return self.frame[self.spec.split_column].to_numpy(dtype=object)

    def subset(self, index: np.ndarray | Sequence[int]) -> RecordTable:
        """Records at positions ``index`` (or a boolean mask), same spec."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        frame = self.frame.iloc[index].reset_index(drop=True)
        return RecordTable(frame, self.spec, self.source, self.rows[index], self.image_root)

    def split(self, name: str) -> RecordTable:
        key = _normalise_split(name)
        if key not in SPLITS:
            raise RecordError(f"Unknown split {name!r}; use one of {', '.join(SPLITS)}.")
        if not self.has_split:
            raise RecordError(f"{self.source} has no split column.")
        return self.subset(self.split_values() == key)

    def labels(self, prop: str) -> np.ndarray:
        """Known values of one property (object array, ``""`` where unknown)."""
        if prop not in self.spec.properties:
            raise RecordError(
                f"{prop!r} is not a property of this table; "
                f"properties: {list(self.spec.properties)}"
            )
        return self.frame[prop].to_numpy(dtype=object)

    def texts(self) -> list[list[tuple[str, str]]]:
        """Per record, its non-empty texts as ``(language, text)`` pairs."""
        spec = self.spec
        langs = (
            self.frame[spec.language_column].to_numpy(dtype=object)
            if spec.language_column
            else None
        )
        out: list[list[tuple[str, str]]] = [[] for _ in range(len(self))]
        for col, lang in spec.text_columns.items():
            for i, text in enumerate(self.frame[col].to_numpy(dtype=object)):
                if text:
                    out[i].append((str(langs[i]) if langs is not None else str(lang), text))
        return out

    def image_paths(self) -> list[list[str]]:
        """Per record, its image paths (absolute), in column order."""
        root = self.image_root or os.getcwd()
        out: list[list[str]] = [[] for _ in range(len(self))]
        for col in self.spec.image_columns:
            for i, cell in enumerate(self.frame[col].to_numpy(dtype=object)):
                for p in str(cell).split(self.spec.path_separator):
                    p = p.strip()
                    if p:
                        out[i].append(p if os.path.isabs(p) else os.path.normpath(f"{root}/{p}"))
        return out

    def tabular(self) -> pd.DataFrame:
        """The tabular columns (strings, ``""`` unknown)."""
        return self.frame[list(self.spec.tabular_columns)]


def text_columns_from(items: Sequence[str] | None) -> dict[str, str] | None:
    """``COLUMN:LANG`` items as :attr:`RecordSpec.text_columns`; a bare ``text_xx`` takes its
    language from the suffix, any other column must name its language. None stays None
    (every ``text_<lang>`` column, :meth:`RecordSpec.infer`)."""
    if items is None:
        return None
    out = {}
    for item in items:
        column, _, lang = item.partition(":")
        if not lang and column.startswith("text_"):
            lang = column.removeprefix("text_")
        if not lang:
            raise ValueError(f"text column {column!r}: give its language as {column}:LANG")
        out[column] = lang
    return out
