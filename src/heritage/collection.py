"""Load an image collection for classification and validate it before any training.

A collection is either a folder with one sub-folder per class, or a CSV manifest with an
image-path column, one or more label columns and an optional split column. Problems are
found up front (missing files, corrupt images, tiny classes, bad split values) so that a
training run never dies an hour in; every message names the file or manifest row and says
what to do about it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from heritage.progress import progress_bar

__all__ = [
    "IMAGE_SUFFIXES",
    "SPLITS",
    "Collection",
    "CollectionError",
    "CollectionSpec",
    "CollectionWarning",
    "ExtraImagesReport",
    "SkippedImage",
    "check_image",
    "image_list",
    "load_image",
    "read_csv_strings",
    "to_rgb",
]

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# Common spellings of the validation split found in public datasets.
_SPLIT_SYNONYMS = {"valid": "val", "validation": "val", "dev": "val"}
_MAX_LINES = 20
_BASE_COLUMNS = ("path", "label", "split", "row")
_MANIFEST_ONLY_KWARGS = ("image_column", "label_column", "split_column", "root", "ignore_splits")
#: columns every extra-labels table needs (``heritage kg reviews`` writes these and more)
LABEL_TABLE_COLUMNS = ("record", "property", "value")


class CollectionError(ValueError):
    """Raised when a collection cannot be used; the message lists every problem found."""


class CollectionWarning(UserWarning):
    """Warned when images are skipped or a split lacks classes; loading still succeeds."""


@dataclass(frozen=True)
class SkippedImage:
    """An image left out of the collection, kept so the user can fix or review it."""

    path: str
    row: int | None
    reason: str


def _format_problems(header: str, problems: Sequence[str], limit: int = _MAX_LINES) -> str:
    """One message with every problem, capped so a broken 10k-row manifest stays readable.
    Record tables and triplet judgements word their errors the same way, with this."""
    lines = [header]
    lines += [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def _normalise_split(value: str) -> str:
    v = value.strip().lower()
    return _SPLIT_SYNONYMS.get(v, v)


def _unusable_rows(
    source: str,
    images: np.ndarray,
    labels: np.ndarray,
    image_column: str,
    label_column: str,
) -> str:
    """Why no row of a manifest can be used (every one lacks an image path or a label)."""
    no_image, no_label = images == "", labels == ""
    if no_label.all():
        return (
            f"Manifest {source}: the label column {label_column!r} is empty on every row; fill "
            "it in, or name the column that holds the labels with --label-column "
            "(label_column=)."
        )
    if no_image.all():
        return (
            f"Manifest {source}: the image column {image_column!r} is empty on every row; fill "
            "it in, or name the column that holds the image paths with --image-column "
            "(image_column=)."
        )
    return (
        f"Manifest {source}: every row lacks an image path ({int(no_image.sum())} rows, column "
        f"{image_column!r}) or a label ({int(no_label.sum())} rows, column {label_column!r}); "
        "fill them in."
    )


def _repeated_images(
    paths: Sequence[str],
    usable: np.ndarray,
    rows: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    splits: np.ndarray | None,
) -> list[str]:
    """One line per image that more than one usable row names."""
    where: dict[str, list[int]] = {}
    for i, path in enumerate(paths):
        if usable[i]:
            where.setdefault(path, []).append(i)
    out = []
    for positions in where.values():
        if len(positions) < 2:
            continue
        rows_text = ", ".join(str(int(rows[i])) for i in positions)
        seen = ", ".join(
            repr(str(labels[i])) + (f" in {splits[i]}" if splits is not None else "")
            for i in positions
        )
        out.append(f"rows {rows_text}: {images[positions[0]]} (labelled {seen})")
    return out


def _read_manifest(
    manifest: Path, image_column: str, label_column: str, split_column: str | None
) -> tuple[pd.DataFrame, bool]:
    """A manifest's rows as strings, and whether it has the split column; a missing image,
    label or (explicitly named) split column, or no data row, is a :class:`CollectionError`."""
    hint = "save it as UTF-8 CSV with a header row."
    df = read_csv_strings(manifest, CollectionError, f"Manifest {manifest}", hint)
    columns = [str(c) for c in df.columns]
    available = ", ".join(repr(c) for c in columns)
    missing = [
        f"{what} column {col!r} not found"
        for what, col in (("image", image_column), ("label", label_column))
        if col not in columns
    ]
    has_split_col = split_column is not None and split_column in columns
    # the default "split" may be absent (no split); a column the user named may not
    if split_column is not None and not has_split_col and split_column != "split":
        missing.append(f"split column {split_column!r} not found")
    if missing:
        raise CollectionError(
            _format_problems(
                f"Manifest {manifest}: " + "; ".join(missing) + ". "
                f"Available columns: {available}. Pass image_column=, label_column= or "
                "split_column= to name the right ones.",
                [],
            )
        )
    if len(df) == 0:
        raise CollectionError(f"Manifest {manifest} has no data rows; add one row per image.")
    return df, has_split_col


def _manifest_splits(
    df: pd.DataFrame,
    row_numbers: np.ndarray,
    manifest: Path,
    split_column: str,
    ignore_splits: Sequence[str],
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """The rows left once ``ignore_splits`` are dropped, their row numbers, and their split
    names (``None`` when the column is empty throughout). Every bad split value is reported
    at once, so that a manifest is fixed in one pass."""
    splits = df[split_column].astype(str).map(_normalise_split)
    ignored = {_normalise_split(s) for s in ignore_splits}
    keep = ~splits.isin(ignored).to_numpy()
    df, splits, row_numbers = df[keep], splits[keep], row_numbers[keep]
    if len(df) == 0:
        raise CollectionError(
            f"Manifest {manifest}: every row has a split in ignore_splits="
            f"{tuple(ignore_splits)!r}; nothing is left to load. Drop those values."
        )
    problems: list[str] = []
    empty = (splits == "").to_numpy()
    if empty.any() and not empty.all():
        problems += [
            f"row {r}: empty {split_column!r} value while other rows have one; "
            "fill it in or clear the whole column"
            for r in row_numbers[empty]
        ]
    bad = (~splits.isin((*SPLITS, "")) & ~empty).to_numpy()
    raw = df[split_column].to_numpy()
    problems += [
        f"row {r}: {split_column!r} value {v!r} is not one of {', '.join(SPLITS)}; "
        f"fix it or pass ignore_splits=({v.strip().lower()!r},) to drop such rows"
        for r, v in zip(row_numbers[bad], raw[bad], strict=True)
    ]
    if problems:
        raise CollectionError(
            _format_problems(
                f"Manifest {manifest}: {len(problems)} bad split value(s) "
                "(row = data row, 1-based, header excluded):",
                problems,
            )
        )
    return df, row_numbers, splits.to_numpy(dtype=object) if not empty.all() else None


def _rows_without_image_or_label(
    images: np.ndarray, labels: np.ndarray, row_numbers: np.ndarray
) -> tuple[list[SkippedImage], np.ndarray]:
    """Rows that lack an image path or a label, as skipped images, and a mask of the others:
    a half-filled row is skipped with a warning rather than failing the whole manifest."""
    skipped: list[SkippedImage] = []
    usable = np.ones(len(images), dtype=bool)
    for i, (img, lab, r) in enumerate(zip(images, labels, row_numbers, strict=True)):
        if not img:
            skipped.append(SkippedImage(img, int(r), "no image path"))
            usable[i] = False
        elif not lab:
            skipped.append(SkippedImage(img, int(r), "no label"))
            usable[i] = False
    return skipped, usable


def _manifest_records(
    df: pd.DataFrame,
    paths: list[str],
    labels: np.ndarray,
    split_values: np.ndarray | None,
    row_numbers: np.ndarray,
    consumed: set[str],
) -> pd.DataFrame:
    """The records table of a manifest: path, label, split, row, then every column not
    ``consumed``, renamed ``manifest_<name>`` where it would clash with those four."""
    records = pd.DataFrame(
        {
            "path": paths,
            "label": labels,
            "split": split_values if split_values is not None else [""] * len(df),
            "row": row_numbers.astype(np.int64),
        }
    )
    for col in (str(c) for c in df.columns):
        if col in consumed:
            continue
        name = f"manifest_{col}" if col in _BASE_COLUMNS else col
        records[name] = df[col].to_numpy()
    return records


def _drop_unreadable(
    records: pd.DataFrame, skipped: list[SkippedImage], check_images: bool, progress: bool
) -> pd.DataFrame:
    """``records`` without the images that are missing or (``check_images``) do not open;
    each one dropped is appended to ``skipped`` with its reason."""
    reasons = _check_all(records["path"].tolist(), check_images, progress)
    bad = np.array([r is not None for r in reasons], dtype=bool)
    row_arr = records["row"].to_numpy() if len(records) else np.array([], dtype=int)
    for i in np.flatnonzero(bad):
        row = int(row_arr[i])
        skipped.append(
            SkippedImage(str(records.at[i, "path"]), row if row > 0 else None, str(reasons[i]))
        )
    if bad.any():
        records = records[~bad].reset_index(drop=True)
    return records


def _skipped_examples(skipped: Sequence[SkippedImage]) -> str:
    """The first three skipped images, with their manifest rows, for a one-line message."""
    return "; ".join(
        (f"row {s.row}: " if s.row is not None else "") + f"{s.path} ({s.reason})"
        for s in skipped[:3]
    )


def _no_usable_images(
    source: str, root: Path, skipped: Sequence[SkippedImage], new_skips: Sequence[SkippedImage]
) -> CollectionError:
    """The error for a collection whose every image was skipped, with a hint that depends on
    why: missing files usually mean a wrong root, not bad images."""
    first = _skipped_examples(new_skips)
    if all(s.reason == "file not found" for s in new_skips):
        hint = (
            f"Relative image paths are read from {root}: check that the files are "
            "there (or pass the manifest that sits beside them)."
        )
    else:
        hint = (
            "Replace the unreadable files with images that open (JPEG, PNG, TIFF, ...) "
            "or remove them."
        )
    return CollectionError(
        f"{source}: no usable images (all {len(skipped)} skipped, e.g. {first}). {hint}"
    )


def _too_few_classes(
    source: str,
    label_column: str,
    all_classes: set[str],
    counts: pd.Series,
    min_classes: int,
    expected_classes: Sequence[str] | None,
) -> CollectionError:
    """The error for fewer than ``min_classes`` classes, worded for a folder of class
    sub-folders (``expected_classes`` given) or for a manifest's label column."""
    found = ", ".join(f"{c!r} ({int(counts.get(c, 0))} images)" for c in sorted(all_classes))
    if expected_classes is not None:
        what = f"{source} has {len(all_classes)} class sub-folder(s) with images ({found})"
        fix = "add one sub-folder of images per class"
    else:
        what = (
            f"{source}: the label column {label_column!r} has {len(all_classes)} value(s) ({found})"
        )
        fix = (
            "check that --label-column (label_column=) names the column to learn, or "
            "add images of other classes"
        )
    return CollectionError(
        f"{what}; a classifier learns to tell classes apart and needs at least "
        f"{min_classes}: {fix}."
    )


def _resolve_labelled_image(record: str, bases: Sequence[Path], known: set[str]) -> str:
    """The image a labels table's ``record`` names: an image of the collection if one of
    ``bases`` makes it so, else a file that exists, else the first candidate ("" for none)."""
    candidates: list[str] = []
    if record:
        p = os.path.expanduser(record)
        if os.path.isabs(p):
            candidates = [os.path.normpath(p)]
        else:
            candidates = list(dict.fromkeys(os.path.normpath(os.path.join(b, p)) for b in bases))
    hit = next((c for c in candidates if c in known), None)
    hit = hit or next((c for c in candidates if os.path.isfile(c)), None)
    return hit or (candidates[0] if candidates else "")


def _sort_extra_images(
    df: pd.DataFrame, known: set[str], classes: set[str], check_images: bool
) -> tuple[dict[str, int], list[str], list[str], list[str]]:
    """Sort reviewed rows into kept (already in the collection: the catalogue wins), unknown
    class, missing file, unreadable, and new images to add. Returns the counts, the unknown
    values, and the new images' paths and labels."""
    counts = dict.fromkeys(("kept", "unknown_class", "missing_file", "unreadable"), 0)
    unknown: list[str] = []
    new_paths: list[str] = []
    new_labels: list[str] = []
    for path, value in zip(df["path"], df["value"], strict=True):
        if not path:
            counts["missing_file"] += 1
        elif path in known:
            counts["kept"] += 1
        elif value not in classes:
            counts["unknown_class"] += 1
            unknown.append(value)
        elif not os.path.isfile(path):
            counts["missing_file"] += 1
        elif check_images and check_image(path) is not None:
            counts["unreadable"] += 1
        else:
            new_paths.append(path)
            new_labels.append(value)
    return counts, unknown, new_paths, new_labels


def read_csv_strings(
    path: str | Path,
    error: Callable[[str], Exception],
    name: str,
    hint: str = "",
    *,
    nrows: int | None = None,
) -> pd.DataFrame:
    """A user's CSV with every cell a string (``""`` for a blank one, never NaN), or
    ``error("<name> could not be read as CSV (<why>); <hint>")`` for a file pandas cannot
    parse (not CSV, no header, not UTF-8): the one place heritage reads a table a user wrote."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, nrows=nrows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise error(
            f"{name} could not be read as CSV ({exc})" + (f"; {hint}" if hint else "")
        ) from exc


# --------------------------------------------------------------------------- images


def _to_8bit_grey(img: Image.Image) -> Image.Image:
    """Scale integer/float greyscale to 8 bits; a plain convert('L') would clip 16-bit data."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        arr = arr / 257.0
    elif img.mode == "F":
        if arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
    elif arr.size and arr.max() > 255:  # mode "I" holding 16-bit data (older Pillow PNGs)
        arr = arr / 257.0
    arr = np.nan_to_num(arr, nan=0.0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return _to_8bit_grey(img).convert("RGB")
    if mode == "P":
        if "transparency" in img.info:
            img = img.convert("RGBA")
        else:
            return img.convert("RGB")
    if img.mode in ("RGBA", "LA", "La", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation plus conversion to 8-bit RGB: the one normalisation every image gets,
    whether it comes from a file or is handed in as a PIL image."""
    oriented = ImageOps.exif_transpose(img)
    return _to_rgb(oriented if oriented is not None else img)


def load_image(path: str | Path) -> Image.Image:
    """Open any image as 8-bit RGB with EXIF orientation applied.

    Models expect 3-channel 8-bit input, and photos from phones are often stored sideways
    with an EXIF rotation flag; doing both here keeps training and inference consistent.
    The image is fully decoded, so truncated files raise here rather than mid-epoch.
    """
    with Image.open(path) as img:
        img.load()
        out = to_rgb(img)
        if out is img:
            out = img.copy()
    return out


def image_list(items: Iterable[str | Path]) -> list[str]:
    """Image paths from files, folders (searched recursively for image suffixes) and ``.txt``
    lists (one path per line, relative to the list's folder), in the order given. A file that
    is not there stays in the list (the caller reports it as skipped); a list that is not
    there, or is not text, is a :class:`CollectionError`."""
    paths: list[str] = []
    for item in map(Path, items):
        if item.is_dir():
            paths += sorted(
                str(p)
                for p in item.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif item.suffix.lower() == ".txt":
            if not item.is_file():
                raise CollectionError(
                    f"list of images {item} not found; check the path (a .txt list holds one "
                    "image path per line, relative to its own folder)"
                )
            try:
                lines = [ln.strip() for ln in item.read_text().splitlines() if ln.strip()]
            except UnicodeDecodeError:
                raise CollectionError(
                    f"{item} is not a text file; a .txt list holds one image path per line"
                ) from None
            paths += [str(item.parent / ln) for ln in lines]
        else:
            paths.append(str(item))
    return paths


def check_image(path: str | Path) -> str | None:
    """Return None if the image fully decodes, else a short reason.

    Decoding every pixel (not just the header) is the only way to catch truncated
    downloads; Pillow's LOAD_TRUNCATED_IMAGES is left as it is.
    """
    p = Path(path)
    if not p.exists():
        return "file not found"
    if not p.is_file():
        return "not a file"
    try:
        with Image.open(p) as img:
            img.load()
    except UnidentifiedImageError:
        return "not a recognised image format"
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return f"truncated or corrupt image: {exc}"
    except Exception as exc:  # e.g. DecompressionBombError: still not usable
        return f"unreadable image: {type(exc).__name__}: {exc}"
    return None


def _check_all(paths: Sequence[str], check_images: bool, progress: bool) -> list[str | None]:
    """Reason per path (None = fine); threaded because decoding thousands of files is slow."""
    if not check_images:
        return [None if os.path.isfile(p) else "file not found" for p in paths]
    results: list[str | None] = []
    with ThreadPoolExecutor(4) as pool:
        it: Iterable[str | None] = pool.map(check_image, paths)
        if progress:
            with progress_bar() as bar:
                task = bar.add_task("checking images", total=len(paths))
                for r in it:
                    results.append(r)
                    bar.advance(task)
        else:
            results = list(it)
    return results


# --------------------------------------------------------------------------- extra labels


def _labels_table(
    labels: pd.DataFrame | str | Path, source: str | None, error: type[ValueError]
) -> tuple[pd.DataFrame, str, Path | None]:
    """A labels table (``record``, ``property``, ``value``; ``heritage kg reviews`` writes
    it) as stripped strings, with its name for messages and its folder (None for a frame).

    ``error`` is the caller's error class, so that a records table reports a
    :class:`~heritage.metadata.RecordError` and a collection a :class:`CollectionError`.
    """
    folder: Path | None = None
    if isinstance(labels, pd.DataFrame):
        df, name = labels, source or "<labels>"
    else:
        path = Path(labels).expanduser().absolute()
        name, folder = source or str(path), path.parent
        if not path.is_file():
            raise error(
                f"Labels file {path} not found; check the path (`heritage kg reviews -o FILE` "
                "writes one)."
            )
        df = read_csv_strings(
            path,
            error,
            f"Labels file {path}",
            "pass the UTF-8 CSV that `heritage kg reviews` writes, with a header row.",
        )
    columns = [str(c) for c in df.columns]
    missing = [c for c in LABEL_TABLE_COLUMNS if c not in columns]
    if missing:
        have = ", ".join(repr(c) for c in columns) or "none"
        raise error(
            f"Labels {name}: column(s) {', '.join(repr(c) for c in missing)} not found (it has: "
            f"{have}). A labels table needs {', '.join(LABEL_TABLE_COLUMNS)}, one row per "
            "reviewed value, as `heritage kg reviews` writes it."
        )
    wanted = [*LABEL_TABLE_COLUMNS, *(["reviewed_at"] if "reviewed_at" in columns else [])]
    out = pd.DataFrame(
        {c: df[c].fillna("").astype(str).str.strip().to_numpy(dtype=object) for c in wanted}
    )
    return out, name, folder


def _latest_labels(df: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, int]:
    """One row per key: the latest review (by ``reviewed_at`` when present, else the last
    row), so a value reviewed twice counts once; also how many earlier rows were dropped."""
    if "reviewed_at" in df.columns:
        df = df.sort_values("reviewed_at", kind="stable")
    dropped = df.duplicated(keys, keep="last").to_numpy()
    return df[~dropped], int(dropped.sum())


def _known_spelling(values: Iterable[str], known: Iterable[str]) -> list[str]:
    """Each value in the spelling of a known class when they differ only in case or spacing
    ("Damask " → "damask"), so a curator's typing does not create a new class."""
    spelled = {" ".join(k.split()).casefold(): k for k in known}
    return [spelled.get(" ".join(v.split()).casefold(), v) for v in values]


def _extra_labels_line(
    source: str, counts: Sequence[tuple[int, str]], if_any: Sequence[tuple[int, str]]
) -> str:
    """The one-line summary of what a labels table did: every count in ``counts``, and those
    in ``if_any`` only where they are not 0 (collections and record tables say it alike)."""
    parts = [f"{n} {what}" for n, what in counts]
    parts += [f"{n} {what}" for n, what in if_any if n]
    return f"extra labels from {source}: " + ", ".join(parts)


@dataclass(frozen=True)
class ExtraImagesReport:
    """What :meth:`Collection.with_extra_labels` did with each row of a labels table."""

    source: str
    added: int = 0  # new images, added to the train split
    kept: int = 0  # already in the collection: its catalogued label and split win
    unknown_class: int = 0  # a value that is not one of the collection's classes
    missing_file: int = 0  # the image file was not found
    unreadable: int = 0  # the file exists but does not decode
    other_property: int = 0  # a row about another property than the label
    no_value: int = 0  # an empty value (a rejection)
    superseded: int = 0  # an earlier review of an image reviewed again later
    unknown_classes: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for the command line."""
        line = _extra_labels_line(
            self.source,
            [
                (self.added, "added to train"),
                (self.kept, "kept catalogued"),
                (self.unknown_class, "unknown class"),
                (self.missing_file, "missing file"),
                (self.other_property, "other property"),
            ],
            [
                (self.unreadable, "unreadable"),
                (self.no_value, "without a value"),
                (self.superseded, "superseded by a later review"),
            ],
        )
        if self.unknown_classes:
            shown = ", ".join(repr(c) for c in self.unknown_classes[:5])
            more = ", ..." if len(self.unknown_classes) > 5 else ""
            line += (
                f" (classes not in the collection, skipped: {shown}{more}; a new class cannot "
                "be added to a trained head: add catalogued images of it to the collection)"
            )
        return line


# --------------------------------------------------------------------------- collection


@dataclass(frozen=True)
class _Checks:
    """What a constructor asks of the records it loaded (see ``Collection.from_folder``)."""

    min_images_per_class: int
    min_classes: int
    check_images: bool
    progress: bool


@dataclass(eq=False)
class Collection:
    """Validated image records plus the class list; build with from_folder/from_manifest/load."""

    records: pd.DataFrame
    classes: list[str]
    root: Path
    label_column: str
    skipped: list[SkippedImage] = field(default_factory=list)

    # ----------------------------------------------------------------- constructors

    @classmethod
    def from_folder(
        cls,
        root: str | Path,
        *,
        min_images_per_class: int = 2,
        min_classes: int = 1,
        check_images: bool = True,
        progress: bool = False,
    ) -> Collection:
        """Load root/<class>/**/<image>; the folder name is the label and there is no split.

        ``min_classes``: fewest classes the collection may have (2 to train: a classifier
        tells classes apart, and the command line asks for 2; 1 to score a model on the
        images of one class)."""
        root = Path(root).expanduser().absolute()
        if not root.exists():
            raise CollectionError(f"Folder {root} does not exist; check the path.")
        if not root.is_dir():
            raise CollectionError(
                f"{root} is not a folder; pass a folder with one sub-folder per class, "
                "or a CSV manifest."
            )
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        rows: list[tuple[str, str]] = []
        for d in class_dirs:
            for dirpath, dirnames, filenames in os.walk(d):
                dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES):
                        rows.append((os.path.join(dirpath, name), d.name))
        if not rows:
            loose = [
                f for f in root.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES)
            ]
            hint = (
                f" It has {len(loose)} image(s) directly inside; move them into one sub-folder "
                "per class."
                if loose
                else f" Expected files ending in {', '.join(IMAGE_SUFFIXES)} inside sub-folders."
            )
            raise CollectionError(f"Folder {root} has no class sub-folders with images.{hint}")
        records = pd.DataFrame(
            {
                "path": [r[0] for r in rows],
                "label": [r[1] for r in rows],
                "split": [""] * len(rows),
                "row": [-1] * len(rows),
            }
        )
        expected = [d.name for d in class_dirs]
        checks = _Checks(min_images_per_class, min_classes, check_images, progress)
        return cls._finish(records, checks, str(root), root, "label", [], expected)

    @classmethod
    def from_manifest(
        cls,
        manifest: str | Path,
        *,
        image_column: str = "image",
        label_column: str = "label",
        split_column: str | None = "split",
        root: str | Path | None = None,
        ignore_splits: Sequence[str] = (),
        min_images_per_class: int = 2,
        min_classes: int = 1,
        check_images: bool = True,
        progress: bool = False,
    ) -> Collection:
        """Load a CSV manifest; relative image paths are resolved against `root`.

        `root` defaults to the manifest's folder so a dataset can be moved as a whole.
        Rows whose split is in `ignore_splits` (e.g. "unused") are dropped silently.
        Extra columns are kept; one that clashes with path/label/split/row is renamed
        to "manifest_<name>". An image may appear on one row only (a repeated image would be
        trained on twice, or trained on and tested on).
        """
        manifest = Path(manifest).expanduser().absolute()
        if not manifest.is_file():
            raise CollectionError(f"Manifest {manifest} not found; check the path.")
        root = manifest.parent if root is None else Path(root).expanduser().absolute()
        df, has_split_col = _read_manifest(manifest, image_column, label_column, split_column)
        row_numbers = np.arange(1, len(df) + 1)
        split_values = None
        if has_split_col:
            assert split_column is not None
            df, row_numbers, split_values = _manifest_splits(
                df, row_numbers, manifest, split_column, ignore_splits
            )

        images = df[image_column].astype(str).str.strip().to_numpy(dtype=object)
        labels = df[label_column].astype(str).str.strip().to_numpy(dtype=object)
        skipped, usable = _rows_without_image_or_label(images, labels, row_numbers)
        if not usable.any():
            raise CollectionError(
                _unusable_rows(str(manifest), images, labels, image_column, label_column)
            )
        paths = [
            img if os.path.isabs(img) else os.path.normpath(os.path.join(root, img))
            for img in images
        ]
        repeated = _repeated_images(paths, usable, row_numbers, images, labels, split_values)
        if repeated:
            raise CollectionError(
                _format_problems(
                    f"Manifest {manifest}: {len(repeated)} image(s) appear on more than one row "
                    "(row = data row, 1-based, header excluded); keep one row per image, so "
                    "that no image is trained on twice or both trained and tested on:",
                    repeated,
                )
            )
        consumed = {image_column, label_column}
        if has_split_col:
            consumed.add(str(split_column))
        records = _manifest_records(df, paths, labels, split_values, row_numbers, consumed)
        records = records[usable].reset_index(drop=True)
        checks = _Checks(min_images_per_class, min_classes, check_images, progress)
        return cls._finish(records, checks, str(manifest), root, label_column, skipped)

    @classmethod
    def load(cls, source: str | Path, **kwargs: Any) -> Collection:
        """Load a folder (using its manifest.csv if present) or a CSV manifest."""
        src = Path(source).expanduser()
        if src.is_dir():
            if (src / "manifest.csv").is_file():
                return cls.from_manifest(src / "manifest.csv", **kwargs)
            bad = [k for k in kwargs if k in _MANIFEST_ONLY_KWARGS]
            if bad:
                raise CollectionError(
                    f"Folder {src.absolute()} has no manifest.csv, so {', '.join(bad)} do(es) "
                    "not apply; pass the manifest file itself or drop those options."
                )
            return cls.from_folder(src, **kwargs)
        if src.is_file() and src.suffix.lower() == ".csv":
            return cls.from_manifest(src, **kwargs)
        if not src.exists():
            raise CollectionError(f"{src.absolute()} does not exist; check the path.")
        raise CollectionError(
            f"{src.absolute()} is neither a folder nor a .csv manifest; pass a folder with one "
            "sub-folder per class, or a CSV with image and label columns."
        )

    @classmethod
    def _finish(
        cls,
        records: pd.DataFrame,
        checks: _Checks,
        source: str,
        root: Path,
        label_column: str,
        skipped: list[SkippedImage],
        expected_classes: Sequence[str] | None = None,
    ) -> Collection:
        """Shared validation: drop unusable files, then check class sizes and split coverage."""
        min_images_per_class, min_classes = checks.min_images_per_class, checks.min_classes
        counts_before = records["label"].value_counts()
        all_classes = set(counts_before.index) | set(expected_classes or ())
        n_before_skip = len(skipped)
        records = _drop_unreadable(records, skipped, checks.check_images, checks.progress)
        if skipped:
            first = _skipped_examples(skipped)
            warnings.warn(
                f"{source}: skipped {len(skipped)} image(s), e.g. {first}. "
                "See Collection.skipped for the full list; fix or remove them.",
                CollectionWarning,
                stacklevel=3,
            )
        if len(records) == 0:
            raise _no_usable_images(source, root, skipped, skipped[n_before_skip:])
        counts = records["label"].value_counts()
        if len(all_classes) < min_classes:
            raise _too_few_classes(
                source, label_column, all_classes, counts, min_classes, expected_classes
            )
        small = sorted(c for c in all_classes if counts.get(c, 0) < min_images_per_class)
        if small:
            raise CollectionError(
                _format_problems(
                    f"{source}: {len(small)} class(es) have fewer than {min_images_per_class} "
                    "usable images; add images, fix the skipped files, drop the class, or lower "
                    "min_images_per_class:",
                    [f"class {c!r}: {int(counts.get(c, 0))} usable image(s)" for c in small],
                )
            )
        classes = sorted(counts.index.astype(str))
        coll = cls(records, classes, root, label_column, skipped)
        if coll.has_split:
            coll._check_split_coverage(source)
        return coll

    def _check_split_coverage(self, source: str) -> None:
        """Every class needs training images; missing val/test classes only weaken evaluation."""
        present = self.records.groupby("split")["label"].agg(lambda s: set(s))
        no_train = [c for c in self.classes if c not in present.get("train", set())]
        if no_train:
            raise CollectionError(
                _format_problems(
                    f"{source}: {len(no_train)} class(es) have no 'train' image; move at least "
                    "one image of each into the train split:",
                    [f"class {c!r}" for c in no_train],
                )
            )
        for name in SPLITS[1:]:
            if name not in present:
                continue
            lacking = [c for c in self.classes if c not in present[name]]
            if lacking:
                shown = ", ".join(repr(c) for c in lacking[:5])
                more = f" and {len(lacking) - 5} more" if len(lacking) > 5 else ""
                warnings.warn(
                    f"{source}: split {name!r} has no images of {len(lacking)} class(es): "
                    f"{shown}{more}; their {name} scores will be missing.",
                    CollectionWarning,
                    stacklevel=4,
                )

    # ----------------------------------------------------------------- views

    @property
    def has_split(self) -> bool:
        """True when records carry a train/val/test assignment."""
        return bool(len(self.records)) and bool((self.records["split"] != "").any())

    def __len__(self) -> int:
        return len(self.records)

    def _replace(self, records: pd.DataFrame) -> Collection:
        return Collection(
            records.reset_index(drop=True),
            list(self.classes),
            self.root,
            self.label_column,
            list(self.skipped),
        )

    def with_extra_labels(
        self,
        labels: pd.DataFrame | str | Path,
        *,
        source: str | None = None,
        check_images: bool = True,
        seed: int = 0,
        fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    ) -> tuple[Collection, ExtraImagesReport]:
        """Add reviewed images (a labels table from ``heritage kg reviews``, or its path) to
        the train split; return the new collection and what was done with each row.

        Rows about the label (``property`` equal to ``label_column`` or ``label``) count;
        ``record`` is the image path as the predictions CSV wrote it. The catalogue wins: an
        image already in the collection keeps its label and split, so a review can never move
        a val/test image into training. A new image joins *train* only, so val/test stay the
        catalogue's and scores stay comparable with a run without extra labels. Its value must
        be one of the classes (a new class cannot be added to a trained head); relative paths
        resolve against the labels file's folder first, then the collection root.

        A collection without a split is first split (``seed``, ``fractions``, as
        :meth:`with_split`) on the catalogued images alone, so the val/test images are the
        ones a run without extra labels would draw.
        """
        df, name, folder = _labels_table(labels, source, CollectionError)
        wanted = {self.label_column, "label"}
        about = df["property"].isin(wanted).to_numpy()
        has_value = (df["value"] != "").to_numpy()
        other_property, no_value = int((~about).sum()), int((about & ~has_value).sum())
        df = df[about & has_value].copy()

        known = {os.path.normpath(str(p)) for p in self.records["path"]}
        bases = [b for b in (folder, self.root) if b is not None]
        df["path"] = [_resolve_labelled_image(record, bases, known) for record in df["record"]]
        df, superseded = _latest_labels(df, ["path"])

        base = self if self.has_split else self.with_split(seed=seed, fractions=fractions)
        classes = set(self.classes)
        df["value"] = _known_spelling(df["value"], classes)
        counts, unknown, new_paths, new_labels = _sort_extra_images(
            df, known, classes, check_images
        )
        report = ExtraImagesReport(
            name,
            added=len(new_paths),
            kept=counts["kept"],
            unknown_class=counts["unknown_class"],
            missing_file=counts["missing_file"],
            unreadable=counts["unreadable"],
            other_property=other_property,
            no_value=no_value,
            superseded=superseded,
            unknown_classes=tuple(dict.fromkeys(unknown)),
        )
        if not new_paths:
            return base, report
        return base._with_train_images(new_paths, new_labels), report

    def _with_train_images(self, paths: list[str], labels: list[str]) -> Collection:
        """This collection plus images in the train split, with no manifest row (``row`` -1)
        and empty extra columns."""
        added = pd.DataFrame({col: [""] * len(paths) for col in self.records.columns}, dtype=object)
        added["path"], added["label"], added["split"] = paths, labels, "train"
        added["row"] = np.full(len(paths), -1, dtype=np.int64)
        records = pd.concat([self.records, added], ignore_index=True)
        records["row"] = records["row"].astype(np.int64)
        return self._replace(records)

    def with_split(
        self, *, seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    ) -> Collection:
        """Return a stratified, seeded train/val/test split (self if one already exists).

        Uses sklearn's stratified train_test_split twice; if classes are too small for that,
        falls back to a per-class split that gives every class at least one train image.
        """
        if self.has_split:
            return self
        fr = np.asarray(fractions, dtype=float)
        if fr.shape != (3,) or (fr < 0).any() or fr[0] <= 0 or not np.isclose(fr.sum(), 1.0):
            raise CollectionError(
                f"fractions={fractions!r}: need three non-negative (train, val, test) fractions "
                "summing to 1 with train > 0, e.g. (0.6, 0.2, 0.2)."
            )
        labels = self.records["label"].to_numpy(dtype=object)
        try:
            assignment = _sklearn_split(labels, fr, seed)
        except ValueError:
            assignment = None
        if assignment is None or not _every_class_trains(labels, assignment):
            assignment = _per_class_split(labels, fr, seed)
        records = self.records.copy()
        records["split"] = assignment
        return self._replace(records)

    def with_val_from_train(
        self, fraction: float = 0.2, *, seed: int = 0, min_train: int = 2
    ) -> Collection:
        """Move a stratified, seeded share of the train split into val; test untouched.

        For collections published with train and test only. Each class gives
        ``round(fraction × its train images)`` of them, at least one, and keeps at least
        ``min_train`` for training: a class with fewer than ``min_train + 1`` train images
        gives none (it then has no validation score; :meth:`summary` shows which). Classes
        are shuffled in a fixed order with one generator, so one seed always moves the same
        images.
        """
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 < fraction < 1
        ):
            raise CollectionError(f"fraction={fraction!r}: need a share of train in (0, 1).")
        key = self._split_key("train")
        rng = np.random.default_rng(seed)
        in_train = (self.records["split"] == key).to_numpy()
        labels = self.records["label"].to_numpy(dtype=object)
        records = self.records.copy()
        split = records["split"].to_numpy(dtype=object).copy()
        for label in self.classes:
            members = rng.permutation(np.flatnonzero(in_train & (labels == label)))
            n = len(members)
            n_val = min(max(1, round(fraction * n)), n - min_train)
            if n_val > 0:
                split[members[:n_val]] = "val"
        records["split"] = split
        return self._replace(records)

    def split(self, name: str) -> Collection:
        """Records of one split, same class list (so targets stay comparable across splits)."""
        key = self._split_key(name)
        return self._replace(self.records[self.records["split"] == key])

    def _split_key(self, name: str) -> str:
        """The canonical name of an existing split kind, or a clear error."""
        if not self.has_split:
            raise CollectionError("This collection has no split; call with_split() first.")
        key = _normalise_split(name)
        if key not in SPLITS:
            raise CollectionError(f"Unknown split {name!r}; use one of {', '.join(SPLITS)}.")
        return key

    def _thin_split(self, split: str, seed: int, how_many: Callable[[int], int]) -> Collection:
        """Keep ``how_many(class size)`` images of a seeded shuffle of every class in one
        split, others untouched. Every class is shuffled whether or not it is cut, so for one
        seed a smaller share keeps a subset of what a larger one keeps."""
        key = self._split_key(split)
        rng = np.random.default_rng(seed)
        in_split = (self.records["split"] == key).to_numpy()
        labels = self.records["label"].to_numpy(dtype=object)
        keep = np.ones(len(self.records), dtype=bool)
        for label in self.classes:
            members = rng.permutation(np.flatnonzero(in_split & (labels == label)))
            keep[members[how_many(len(members)) :]] = False
        return self._replace(self.records[keep])

    def limit_per_class(self, n: int, *, seed: int = 0, split: str = "train") -> Collection:
        """Keep at most n images per class in one split (a seeded random subset), others
        untouched: the 'low-data' regime, evaluated on the same val/test images as a full run.

        The class list stays the same so targets and heads stay comparable with full runs, and
        for one seed a smaller n keeps a subset of what a larger n keeps (learning curves over
        n are nested).
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise CollectionError(f"n={n!r}: need a whole number of images per class, at least 1.")
        return self._thin_split(split, seed, lambda size: n)

    def keep_fraction(self, fraction: float, *, seed: int = 0, split: str = "train") -> Collection:
        """Keep a seeded share of every class in one split (at least one image each), others
        untouched: a learning-curve point that asks whether labelling more of the same kind
        would help, evaluated on the same val/test images as a full run.

        Unlike :meth:`limit_per_class`, which cuts only the large classes, every class shrinks
        in proportion, so the imbalance (and what macro-F1 sees) stays that of the full split.
        """
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 < fraction <= 1
        ):
            raise CollectionError(f"fraction={fraction!r}: need a share in (0, 1].")
        # rounded first, so that 0.07 * 100 = 7.000000000000001 keeps 7, not 8
        return self._thin_split(
            split, seed, lambda size: max(1, math.ceil(round(fraction * size, 9)))
        )

    def move_split(self, source: str, into: str) -> Collection:
        """Every image of split ``source`` moved into split ``into`` (others untouched): a
        refit trains on train + val once model selection on val is done."""
        keys = self._split_key(source), self._split_key(into)
        records = self.records.copy()
        records.loc[records["split"] == keys[0], "split"] = keys[1]
        return self._replace(records)

    def targets(self) -> np.ndarray:
        """Class indices into self.classes, aligned with records."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[c] for c in self.records["label"]], dtype=np.int64)

    def paths(self) -> list[str]:
        """Absolute image paths, aligned with records."""
        return [str(p) for p in self.records["path"]]

    def save_split(self, path: str | Path) -> None:
        """Write path,label,split so a split can be frozen and reused (paths relative to root)."""
        if not self.has_split:
            raise CollectionError("This collection has no split to save; call with_split() first.")

        def rel(p: str) -> str:
            try:
                return Path(p).relative_to(self.root).as_posix()
            except ValueError:
                return p

        out = pd.DataFrame(
            {
                "path": [rel(p) for p in self.records["path"]],
                "label": self.records["label"].to_numpy(),
                "split": self.records["split"].to_numpy(),
            }
        )
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        out.to_csv(path, index=False)

    @classmethod
    def from_split_file(cls, path: str | Path, root: str | Path, label_column: str) -> Collection:
        """Reopen the exact split a run used (its ``split.csv``), so that resuming, soups and
        evaluation never re-split and can never leak test images into training."""
        coll = cls.from_manifest(
            path,
            image_column="path",
            label_column="label",
            split_column="split",
            root=root,
            check_images=False,
            min_images_per_class=1,
            min_classes=1,
        )
        coll.label_column = label_column
        return coll

    def summary(self) -> pd.DataFrame:
        """Images per class and split, to spot imbalance and empty evaluation cells."""
        cols = [s for s in SPLITS if s in set(self.records["split"])] if self.has_split else []
        table = pd.DataFrame(0, index=pd.Index(self.classes, name="label"), columns=cols)
        if cols:
            ct = pd.crosstab(self.records["label"], self.records["split"])
            for s in cols:
                table[s] = ct[s].reindex(self.classes, fill_value=0).to_numpy()
        table["total"] = (
            self.records["label"].value_counts().reindex(self.classes, fill_value=0).to_numpy()
        )
        return table.astype(np.int64)


# --------------------------------------------------------------------------- splitting


def _sklearn_split(labels: np.ndarray, fr: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    n = len(labels)
    idx = np.arange(n)
    out = np.full(n, "train", dtype=object)
    rest_frac = fr[1] + fr[2]
    if rest_frac <= 0:
        return out
    _, rest = train_test_split(idx, test_size=rest_frac, random_state=seed, stratify=labels)
    if fr[1] == 0 or fr[2] == 0:
        out[rest] = "val" if fr[1] > 0 else "test"
        return out
    val, test = train_test_split(
        rest, test_size=fr[2] / rest_frac, random_state=seed, stratify=labels[rest]
    )
    out[val] = "val"
    out[test] = "test"
    return out


def _every_class_trains(labels: np.ndarray, assignment: np.ndarray) -> bool:
    return set(labels[assignment == "train"]) == set(labels)


def _per_class_split(labels: np.ndarray, fr: np.ndarray, seed: int) -> np.ndarray:
    """Split each class on its own: at least one train image, the rest by the fractions."""
    rng = np.random.default_rng(seed)
    out = np.full(len(labels), "train", dtype=object)
    for c in sorted(set(labels)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        n_train = min(n, max(1, round(n * fr[0])))
        rest = n - n_train
        share = fr[1] / (fr[1] + fr[2]) if fr[1] + fr[2] > 0 else 0.0
        n_val = round(rest * share)
        if rest and fr[1] > 0 and fr[2] > 0 and rest >= 2:
            n_val = min(max(n_val, 1), rest - 1)  # both evaluation splits see the class
        elif rest == 1 and fr[1] > 0 and fr[2] > 0:
            n_val = int(rng.integers(2))  # a lone leftover goes to val or test at random
        out[idx[n_train : n_train + n_val]] = "val"
        out[idx[n_train + n_val :]] = "test"
    return out


@dataclass
class CollectionSpec:
    """Where a collection is and how to read it: what the CLI's data options and a YAML
    ``data:`` section fill in."""

    source: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    split_column: str | None = "split"
    ignore_splits: tuple[str, ...] = ()
    min_images_per_class: int = 2

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectionSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CollectionError(f"unknown data options {unknown}; valid: {sorted(known)}")
        ignore = data.get("ignore_splits") or ()
        ignore = (ignore,) if isinstance(ignore, str) else tuple(ignore)
        return cls(**{**data, "ignore_splits": ignore})

    def load(self, progress: bool = True, *, min_classes: int = 2) -> Collection:
        """Load and validate; manifest options apply only when the source is a manifest.
        ``min_classes``: 2 to train; 1 to score a model on a collection of one class."""
        if not self.source:
            raise CollectionError("no collection given: pass a folder or a CSV manifest")
        src = Path(self.source).expanduser()
        kwargs: dict[str, Any] = {
            "min_images_per_class": self.min_images_per_class,
            "min_classes": min_classes,
            "progress": progress,
        }
        manifest_options = {
            "image_column": self.image_column,
            "label_column": self.label_column,
            "split_column": self.split_column,
            "ignore_splits": self.ignore_splits,
        }
        if src.suffix.lower() == ".csv" or (src / "manifest.csv").is_file():
            kwargs.update(manifest_options)
        elif src.is_dir():  # sub-folder names are the labels: a column option would be ignored
            defaults = {f.name: f.default for f in fields(self)}
            given = [k for k, v in manifest_options.items() if v != defaults[k]]
            if given:
                raise CollectionError(
                    f"Folder {src.absolute()} has no manifest.csv: its sub-folder names are the "
                    f"labels, so {', '.join(given)} do(es) not apply; pass a CSV manifest to "
                    "use columns, or drop those options"
                )
        return Collection.load(src, **kwargs)


def images_given(items: Iterable[str | Path]) -> list[str]:
    """:func:`image_list` of what someone named to predict, which must hold an image: empty
    folders (or folders of other files) are refused with the suffixes searched for, rather
    than answered with an empty table."""
    paths = image_list(items)
    if not paths:
        raise CollectionError(
            "no images given (folders are searched for " + ", ".join(IMAGE_SUFFIXES) + ")"
        )
    return paths


def scoring_images(collection: Collection, split: str, source: str) -> tuple[Collection, str]:
    """The images to score a model on: ``split`` of ``collection`` (named ``source`` in
    messages), or every image when it has no split column. Returns them and a warning to
    show, empty when there is none: without a split, some of the images may be ones the
    model was trained on. A split without images is an error naming the splits there are."""
    if not collection.has_split:
        return collection, (
            "the collection has no split column: scoring every image, including any the model "
            "was trained on"
        )
    part = collection.split(split)
    if len(part) == 0:
        present = sorted(set(collection.records["split"]))
        raise CollectionError(
            f"{source} has no {split!r} images (its splits: {', '.join(present)}); "
            f"choose one with --split, e.g. --split {present[0]}"
        )
    return part, ""
