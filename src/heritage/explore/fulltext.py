"""Free-text search over the records' texts in every language: an SQLite FTS5 index.

A regular expression over the graph would scan every literal on every request; FTS5 keeps an
inverted index in one file next to the facet table, built at start from the same graph read.
Tokens are Unicode-folded without diacritics (``unicode61 remove_diacritics 2``), so
``tecnica`` finds ``técnica``. A user's words are never passed to FTS5's query language as
they are: each becomes a quoted phrase (the last one a prefix), so quotes, ``NEAR``, ``*``
or column filters in the search box are plain text.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["FullTextIndex", "fts_query"]

_WORD = re.compile(r"\w+", re.UNICODE)
PREFIX_MIN = 3  # the last word is matched as a prefix from this many characters on
CACHED_QUERIES = 256


def fts_query(text: str) -> str | None:
    """An FTS5 query matching every word of ``text`` (the last as a prefix), or None when
    ``text`` has no words."""
    words = _WORD.findall(text)
    if not words:
        return None
    quoted = ['"' + w.replace('"', '""') + '"' for w in words[:32]]
    if len(words[-1]) >= PREFIX_MIN:  # "a*" matches half the vocabulary, and means nothing
        quoted[-1] += "*"
    return " ".join(quoted)


class FullTextIndex:
    """Record texts by record number, searchable by words; one SQLite file, read by any
    number of threads (each opens its own read-only connection)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no text index at {self.path}")
        self._local = threading.local()
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    @classmethod
    def build(cls, path: str | Path, texts: Iterable[tuple[int, str, str]]) -> FullTextIndex:
        """Index ``(record number, language, text)`` rows into a new file at ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        con = sqlite3.connect(tmp)
        try:
            con.execute(
                "CREATE VIRTUAL TABLE texts USING fts5(body, lang UNINDEXED, "
                "tokenize = 'unicode61 remove_diacritics 2')"
            )
            con.execute("CREATE TABLE owner(row INTEGER PRIMARY KEY, rec INTEGER)")
            for row, (rec, lang, text) in enumerate(texts, start=1):
                con.execute(
                    "INSERT INTO texts(rowid, body, lang) VALUES (?, ?, ?)", (row, text, lang)
                )
                con.execute("INSERT INTO owner(row, rec) VALUES (?, ?)", (row, rec))
            con.execute("INSERT INTO texts(texts) VALUES ('optimize')")
            con.commit()
        finally:
            con.close()
        tmp.replace(path)
        return cls(path)

    def _connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self._local.con = con
        return con

    def search(self, text: str, n_records: int) -> np.ndarray:
        """A mask over ``n_records`` records: those whose texts hold every word of ``text``
        (all records when it has no words). The last few hundred answers are kept: moving
        the threshold or choosing a facet asks the same words again."""
        query = fts_query(text)
        if query is None:
            return np.ones(n_records, bool)
        key = (query, n_records)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key].copy()
        rows = self._connection().execute(
            "SELECT DISTINCT owner.rec FROM texts JOIN owner ON owner.row = texts.rowid "
            "WHERE texts MATCH ?",
            (query,),
        )
        found = np.array(rows.fetchall(), dtype=np.int64).reshape(-1)
        mask = np.zeros(n_records, bool)
        mask[found[found < n_records]] = True
        with self._cache_lock:
            self._cache[key] = mask
            while len(self._cache) > CACHED_QUERIES:
                self._cache.popitem(last=False)
        return mask.copy()
