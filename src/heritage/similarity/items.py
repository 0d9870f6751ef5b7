"""The items triplets talk about: one row per item id, one or more image columns.

Each image column is one *group* of images of the same items, e.g. the ``ennis`` and
``stpeters`` renderings of every material in ``material-similarity``. A judgement is about the
item, so it can be scored with the images of any group; a context model (see
:mod:`heritage.similarity.contexts`) may specialise in one group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from heritage.collection import IMAGE_SUFFIXES, read_csv_strings
from heritage.similarity.triplets import TripletError

if TYPE_CHECKING:
    import numpy as np

    from heritage.similarity.embedding import EmbeddingConfig

__all__ = ["ItemTable"]


@dataclass(frozen=True)
class ItemTable:
    """Item ids and, per image column, the absolute path of each item's image."""

    ids: tuple[str, ...]
    images: dict[str, tuple[str, ...]]  # image column -> one path per id
    source: str = "items"

    @property
    def groups(self) -> list[str]:
        return list(self.images)

    def paths(self, group: str) -> list[str]:
        if group not in self.images:
            raise TripletError(f"{self.source}: no image column {group!r}; have {self.groups}")
        return list(self.images[group])

    def features(
        self,
        embedding: EmbeddingConfig,
        cache_dir: str | Path,
        ids: Sequence[str] | None = None,
        groups: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Image features per group (default: every group), one row per id in ``ids`` order
        (default: the table's), embedded with ``embedding`` and cached in ``cache_dir``. An
        id the table lacks is an error: a saved model's items must all be there."""
        from heritage.similarity.embedding import ImageEmbedder

        ids = self.ids if ids is None else ids
        position = {i: n for n, i in enumerate(self.ids)}
        missing = [i for i in ids if i not in position]
        if missing:
            raise ValueError(f"{self.source} lacks the model's item ids, e.g. {missing[:5]}")
        embedder = ImageEmbedder(embedding, cache_dir)
        return {
            g: embedder.features([self.paths(g)[position[i]] for i in ids], f"features {g}")
            for g in (self.groups if groups is None else groups)
        }

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        *,
        id_column: str | None = None,
        image_columns: Sequence[str] | None = None,
        check_files: bool = True,
    ) -> ItemTable:
        """Read an item table. ``id_column`` defaults to the first column; ``image_columns`` to
        every column whose values all end in an image suffix. Relative paths are relative to
        the CSV's folder. Missing files and duplicate ids are errors naming the row."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"item table not found: {path}")
        frame = read_csv_strings(
            path,
            TripletError,
            f"item table {path}",
            "save it as UTF-8 CSV with a header row: an id column and one column of image "
            "paths per group",
        )
        if len(frame) == 0:
            raise TripletError(f"{path} has no data rows; add one row per item.")
        id_column = id_column or str(frame.columns[0])
        if id_column not in frame.columns:
            raise TripletError(
                f"{path}: no id column {id_column!r}; found {', '.join(frame.columns)}"
            )
        if image_columns is None:
            image_columns = [
                c
                for c in frame.columns
                if c != id_column
                and frame[c].str.strip().str.lower().str.endswith(IMAGE_SUFFIXES).all()
            ]
            if not image_columns:
                raise TripletError(
                    f"{path}: no column holds image paths (names ending in "
                    f"{', '.join(IMAGE_SUFFIXES)}); name one with --image-column"
                )
        missing = [c for c in image_columns if c not in frame.columns]
        if missing:
            raise TripletError(
                f"{path}: no image column(s) {missing}; found {', '.join(frame.columns)}"
            )
        ids = frame[id_column].str.strip()
        problems = [f"row {r}: empty id" for r in (ids.index[ids == ""] + 1)]
        dup = ids[ids.duplicated(keep=False) & (ids != "")]
        problems += [
            f"row {r}: duplicate id {v!r}" for r, v in zip(dup.index + 1, dup, strict=True)
        ]
        root = path.parent
        images: dict[str, tuple[str, ...]] = {}
        for column in image_columns:
            paths = []
            for r, value in enumerate(frame[column].str.strip(), start=1):
                if not value:
                    problems.append(f"row {r}: empty {column!r}")
                    paths.append("")
                    continue
                p = Path(value).expanduser()
                p = p if p.is_absolute() else root / p
                if check_files and not p.is_file():
                    problems.append(f"row {r}: {column} file not found: {p}")
                paths.append(str(p.resolve()) if p.exists() else str(p))
            images[column] = tuple(paths)
        if problems:
            shown = "\n".join(f"  - {p}" for p in problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise TripletError(
                f"{path}: {len(problems)} problem(s) (row = data row, 1-based):\n{shown}{more}"
            )
        return cls(ids=tuple(ids), images=images, source=str(path))
