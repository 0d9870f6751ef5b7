"""Triplet judgements ("is ``closer`` or ``farther`` nearer to ``reference``?"), validated up
front, and the agreement of a model with them.

People cannot put a number on how alike two objects are, but they answer "which of these two
is more like that one?" consistently (Liao & Chen, KDD 2024; Lagunas et al., SIGGRAPH 2019).
So the labels are triplets, and a model is judged by **agreement**: the share of triplets in
which it places ``closer`` nearer to ``reference`` than ``farther``. Vote counts, when present,
tell a clear majority from a 1–1 tie; a tie carries no information about the right answer,
which is why agreement is also reported on clear-majority triplets only.

A triplet CSV has ``reference,closer,farther`` (item ids), optionally
``votes_closer,votes_farther`` (whole numbers) and a context column. Every problem is listed
with its data row (1-based, header excluded) before anything is trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from heritage.collection import _format_problems

__all__ = [
    "Agreement",
    "TripletError",
    "TripletTable",
    "agreement",
    "margins_from_embeddings",
]

REQUIRED = ("reference", "closer", "farther")
VOTES = ("votes_closer", "votes_farther")


class TripletError(ValueError):
    """Raised when triplet judgements cannot be used; the message lists every problem."""


def _id_text(values: pd.Series) -> np.ndarray:
    """Ids as strings: ``3``, ``3.0`` and ``" 3"`` are the same item (CSV readers disagree)."""
    out = values.astype(str).str.strip().to_numpy(dtype=object)
    for i, v in enumerate(out):
        if v.endswith(".0") and v[:-2].lstrip("-").isdigit():
            out[i] = v[:-2]
        elif v.lower() == "nan":
            out[i] = ""
    return out


def _check_columns(frame: pd.DataFrame, context_column: str | None, source: str) -> bool:
    """Whether the judgements carry vote counts; a missing column (or one vote column
    without the other) and a table without rows are a :class:`TripletError`."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if context_column is not None and context_column not in frame.columns:
        missing.append(context_column)
    has_votes = [c in frame.columns for c in VOTES]
    if any(has_votes) and not all(has_votes):
        missing += [c for c, present in zip(VOTES, has_votes, strict=True) if not present]
    if missing:
        raise TripletError(
            f"{source}: missing column(s) {', '.join(map(repr, missing))}; found "
            f"{', '.join(map(repr, frame.columns))}. A triplet file needs "
            f"{','.join(REQUIRED)} and may have {','.join(VOTES)} and a context column."
        )
    if len(frame) == 0:
        raise TripletError(f"{source} has no data rows; add one row per judgement.")
    return all(has_votes)


def _id_problems(ids: dict[str, np.ndarray], rows: np.ndarray) -> list[str]:
    """Empty ids, and triplets that name one item twice (no judgement to learn from)."""
    problems: list[str] = []
    for c in REQUIRED:
        problems += [f"row {r}: empty {c!r}" for r in rows[ids[c] == ""]]
    for a, b in (("reference", "closer"), ("reference", "farther"), ("closer", "farther")):
        same = (ids[a] == ids[b]) & (ids[a] != "")
        problems += [
            f"row {r}: {a} and {b} are the same item {v!r}"
            for r, v in zip(rows[same], ids[a][same], strict=True)
        ]
    return problems


def _known_items(
    ids: dict[str, np.ndarray], items: Sequence[str | int] | None, rows: np.ndarray, source: str
) -> tuple[list[str], list[str]]:
    """The item universe (``items``, or else the ids the triplets use, sorted) and one
    problem per id outside it. No id in common at all is an error of its own: it means the
    wrong item table or id column, not hundreds of typos."""
    used = sorted({v for c in REQUIRED for v in ids[c] if v}, key=_natural)
    if items is None:
        return used, []
    known = [str(v).strip() for v in items]
    if len(set(known)) != len(known):
        raise TripletError(f"{source}: the item list has duplicate ids")
    known_set = set(known)
    if used and not known_set.intersection(used):
        raise TripletError(
            f"{source}: none of the {len(used)} item ids its triplets use (e.g. "
            f"{', '.join(map(repr, used[:3]))}) is in the item table (whose ids are e.g. "
            f"{', '.join(map(repr, known[:3]))}); check that both files are about the "
            "same items and that --id-column names the item table's id column"
        )
    problems: list[str] = []
    for c in REQUIRED:
        bad = np.array([v != "" and v not in known_set for v in ids[c]], dtype=bool)
        problems += [
            f"row {r}: unknown {c} id {v!r} (not in the item table)"
            for r, v in zip(rows[bad], ids[c][bad], strict=True)
        ]
    return known, problems


def _votes(frame: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Votes for closer and for farther, and one problem per count that is not a whole
    non-negative number, per triplet with more votes for farther, and per triplet without
    votes."""
    problems: list[str] = []
    votes = {}
    for c in VOTES:
        v = pd.to_numeric(frame[c].str.strip(), errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(v)
        problems += [
            f"row {r}: {c} {s!r} is not a number"
            for r, s in zip(rows[bad], frame[c].to_numpy()[bad], strict=True)
        ]
        neg = np.isfinite(v) & (v < 0)
        problems += [
            f"row {r}: negative {c} ({x:g})" for r, x in zip(rows[neg], v[neg], strict=True)
        ]
        frac = np.isfinite(v) & (v >= 0) & (v != np.round(v))
        problems += [
            f"row {r}: {c} ({x:g}) is not a whole number of votes"
            for r, x in zip(rows[frac], v[frac], strict=True)
        ]
        votes[c] = v
    vc, vf = votes["votes_closer"], votes["votes_farther"]
    ok = np.isfinite(vc) & np.isfinite(vf) & (vc >= 0) & (vf >= 0)
    fewer = ok & (vc < vf)
    problems += [
        f"row {r}: closer has fewer votes ({a:g}) than farther ({b:g}); swap closer and farther"
        for r, a, b in zip(rows[fewer], vc[fewer], vf[fewer], strict=True)
    ]
    none = ok & (vc + vf == 0)
    problems += [f"row {r}: no votes (both counts are 0)" for r in rows[none]]
    return vc, vf, problems


def _contexts(
    column: pd.Series, rows: np.ndarray, name: str, allowed: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Each triplet's context, and one problem per empty one or (``allowed`` given) one
    outside ``allowed``: a typo would otherwise silently make a new context."""
    context = column.astype(str).str.strip().to_numpy(dtype=object)
    problems = [f"row {r}: empty context in {name!r}" for r in rows[context == ""]]
    if allowed is not None:
        allowed_set = {str(c) for c in allowed}
        bad = np.array([v != "" and v not in allowed_set for v in context], dtype=bool)
        problems += [
            f"row {r}: context {v!r} is not one of {sorted(allowed_set)}"
            for r, v in zip(rows[bad], context[bad], strict=True)
        ]
    return context, problems


@dataclass(frozen=True)
class TripletTable:
    """Validated triplets over a fixed list of items.

    ``items`` is the item universe and fixes the row order of every feature or embedding
    matrix used with this table; ``reference``/``closer``/``farther`` index into it.
    ``rows`` keeps the data row of each triplet for messages.
    """

    items: tuple[str, ...]
    reference: np.ndarray
    closer: np.ndarray
    farther: np.ndarray
    votes_closer: np.ndarray
    votes_farther: np.ndarray
    context: np.ndarray | None = None
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source: str = "triplets"

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        items: Sequence[str | int] | None = None,
        *,
        context_column: str | None = None,
        contexts: Sequence[str] | None = None,
    ) -> TripletTable:
        """Read and validate a triplet CSV (see :meth:`from_frame`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"triplet file not found: {path}")
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            raise TripletError(
                f"{path} is empty; it needs a header row {','.join(REQUIRED)}"
            ) from None
        return cls.from_frame(
            frame, items, context_column=context_column, contexts=contexts, source=str(path)
        )

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        items: Sequence[str | int] | None = None,
        *,
        context_column: str | None = None,
        contexts: Sequence[str] | None = None,
        source: str = "triplets",
    ) -> TripletTable:
        """Validate a table of judgements.

        ``items``: the known item ids (e.g. the id column of an image table); an id outside it
        is an error. Without it, the items are the ids the triplets use, sorted.
        ``context_column``: the column naming each triplet's context; ``contexts`` restricts
        its values (a typo would otherwise silently make a new context).
        Votes are optional; without them every triplet counts as a clear 1–0 judgement.
        """
        has_votes = _check_columns(frame, context_column, source)
        rows = np.arange(1, len(frame) + 1, dtype=np.int64)
        ids = {c: _id_text(frame[c]) for c in REQUIRED}
        problems = _id_problems(ids, rows)
        known, unknown = _known_items(ids, items, rows, source)
        problems += unknown
        if has_votes:
            vc, vf, bad_votes = _votes(frame, rows)
            problems += bad_votes
        else:
            vc, vf = np.ones(len(frame)), np.zeros(len(frame))
        context = None
        if context_column is not None:
            context, bad_contexts = _contexts(frame[context_column], rows, context_column, contexts)
            problems += bad_contexts
        if problems:
            raise TripletError(
                _format_problems(
                    f"{source}: {len(problems)} problem(s) (row = data row, 1-based, header "
                    "excluded):",
                    problems,
                )
            )
        index = {v: i for i, v in enumerate(known)}
        to_index = lambda col: np.array([index[v] for v in col], dtype=np.int64)  # noqa: E731
        return cls(
            items=tuple(known),
            reference=to_index(ids["reference"]),
            closer=to_index(ids["closer"]),
            farther=to_index(ids["farther"]),
            votes_closer=np.asarray(vc, dtype=float),
            votes_farther=np.asarray(vf, dtype=float),
            context=context,
            rows=rows,
            source=source,
        )

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.reference)

    @property
    def clear(self) -> np.ndarray:
        """Triplets with a clear majority (more votes for ``closer``); ties say nothing."""
        return self.votes_closer > self.votes_farther

    @property
    def vote_share(self) -> np.ndarray:
        """Share of votes for ``closer`` (0.5 for a tie): the soft target of the order loss."""
        return self.votes_closer / (self.votes_closer + self.votes_farther)

    def contexts(self) -> list[str]:
        """Context values in order of first appearance (empty without a context column)."""
        return [] if self.context is None else list(dict.fromkeys(self.context))

    def subset(self, mask: np.ndarray) -> TripletTable:
        """The triplets where ``mask`` is true (a boolean mask or integer positions); same
        items, so feature matrices stay aligned."""
        mask = np.asarray(mask)
        return TripletTable(
            items=self.items,
            reference=self.reference[mask],
            closer=self.closer[mask],
            farther=self.farther[mask],
            votes_closer=self.votes_closer[mask],
            votes_farther=self.votes_farther[mask],
            context=None if self.context is None else self.context[mask],
            rows=self.rows[mask],
            source=self.source,
        )

    def split(self, val_fraction: float = 0.15, seed: int = 0) -> tuple[TripletTable, TripletTable]:
        """A seeded random (train, validation) split of the triplets.

        Random over triplets, not over items: the test triplets of a fixed collection are new
        questions about the same items, and that is what a validation split must imitate.
        """
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        n_val = round(len(self) * val_fraction)
        if n_val < 1 or n_val >= len(self):
            raise TripletError(
                f"{self.source}: {len(self)} triplet(s) cannot be split with val_fraction="
                f"{val_fraction}; give more triplets or another fraction"
            )
        order = np.random.default_rng(seed).permutation(len(self))
        val = np.zeros(len(self), dtype=bool)
        val[order[:n_val]] = True
        return self.subset(~val), self.subset(val)

    def with_items(self, items: Sequence[str]) -> TripletTable:
        """The same triplets re-indexed onto another item list that contains all their ids."""
        index = {str(v): i for i, v in enumerate(items)}
        missing = sorted({self.items[i] for i in self._used()} - set(index), key=_natural)
        if missing:
            raise TripletError(f"{self.source}: ids {missing[:10]} are not in the item list")
        remap = np.array([index.get(v, -1) for v in self.items], dtype=np.int64)
        return TripletTable(
            items=tuple(str(v) for v in items),
            reference=remap[self.reference],
            closer=remap[self.closer],
            farther=remap[self.farther],
            votes_closer=self.votes_closer,
            votes_farther=self.votes_farther,
            context=self.context,
            rows=self.rows,
            source=self.source,
        )

    def _used(self) -> np.ndarray:
        return np.unique(np.concatenate([self.reference, self.closer, self.farther]))

    def to_frame(self) -> pd.DataFrame:
        items = np.asarray(self.items, dtype=object)
        frame = pd.DataFrame(
            {
                "reference": items[self.reference],
                "closer": items[self.closer],
                "farther": items[self.farther],
                "votes_closer": self.votes_closer,
                "votes_farther": self.votes_farther,
            }
        )
        if self.context is not None:
            frame["context"] = self.context
        return frame


def _natural(value: str) -> tuple:
    """Numeric ids in numeric order (2 before 10), others after, alphabetically."""
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


@dataclass(frozen=True)
class Agreement:
    """Share of triplets a model gets right, on all and on clear-majority triplets."""

    all: float
    clear: float
    n: int
    n_clear: int

    def __str__(self) -> str:
        return (
            f"agreement {self.all:.4f} on {self.n} triplets, {self.clear:.4f} on the "
            f"{self.n_clear} with a clear majority"
        )


def agreement(margins: np.ndarray, triplets: TripletTable) -> Agreement:
    """Agreement from per-triplet margins ``d(reference, farther) - d(reference, closer)``.

    A positive margin agrees with the judgement; an exact tie (a model that cannot tell the two
    apart) counts as half, the expected score of a coin flip, so that a constant model scores
    0.5 rather than 0 or 1.
    """
    margins = np.asarray(margins, dtype=float)
    if margins.shape != (len(triplets),):
        raise ValueError(f"{margins.shape} margins for {len(triplets)} triplets")
    score = np.where(margins > 0, 1.0, np.where(margins < 0, 0.0, 0.5))
    clear = triplets.clear
    return Agreement(
        all=float(score.mean()) if len(score) else float("nan"),
        clear=float(score[clear].mean()) if clear.any() else float("nan"),
        n=len(score),
        n_clear=int(clear.sum()),
    )


def margins_from_embeddings(
    embeddings: np.ndarray, triplets: TripletTable, metric: str = "cosine"
) -> np.ndarray:
    """``d(r, farther) - d(r, closer)`` per triplet, rows of ``embeddings`` = ``triplets.items``.

    ``cosine``: 1 − cosine similarity (the usual distance for pretrained features);
    ``euclidean``: squared Euclidean (what the learnt heads are trained with; on unit vectors
    it is twice the cosine distance, so both orders agree).
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or len(e) != len(triplets.items):
        raise ValueError(
            f"embeddings must have one row per item ({len(triplets.items)}), got shape {e.shape}"
        )
    r, c, f = e[triplets.reference], e[triplets.closer], e[triplets.farther]
    if metric == "cosine":
        norm = np.linalg.norm(e, axis=1)
        norm = np.where(norm > 0, norm, 1.0)
        nr, nc, nf = norm[triplets.reference], norm[triplets.closer], norm[triplets.farther]
        return (r * c).sum(1) / (nr * nc) - (r * f).sum(1) / (nr * nf)
    if metric == "euclidean":
        return ((r - f) ** 2).sum(1) - ((r - c) ** 2).sum(1)
    raise ValueError(f"metric must be cosine or euclidean, got {metric!r}")
