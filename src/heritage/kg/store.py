"""The embedded knowledge graph: an Oxigraph store in a folder, no server to run.

Most collections fit comfortably in an embedded store (Oxigraph on RocksDB): millions of
triples, SPARQL 1.1, nothing to install or administer, and the same queries run unchanged
against a server later (:mod:`heritage.kg.endpoint`). Loading uses Oxigraph's bulk loader,
which writes index files directly instead of one transaction per triple.

Exports can be loaded into the default graph or into a named graph per export (``graph=``),
so one batch of predictions can later be replaced or dropped as a unit; queries see the
union of all graphs either way.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd

from heritage.kg.export import Export, rdf_format
from heritage.kg.queries import GraphQueries, python_value
from heritage.kg.terms import check_iri
from heritage.locking import FolderLocked, folder_lock

__all__ = ["GENERATION_FILE", "KnowledgeGraph", "QueryError", "read_query"]

#: written into an on-disk store by every load: tools that keep tables derived from the graph
#: (the explorer's facet table) rebuild them when it changes
GENERATION_FILE = "heritage-generation"


class QueryError(ValueError):
    """A SPARQL query that could not be parsed or run; the message says where."""


def read_query(text: str | None = None, file: str | Path | None = None) -> str:
    """A query given inline or in a file (exactly one of them)."""
    if (text is None) == (file is None):
        raise ValueError("give a SPARQL query or a file holding one (not both)")
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"query file {path} not found")
        return path.read_text()
    return str(text)


class KnowledgeGraph(GraphQueries):
    """An Oxigraph store: on disk in ``path``, or in memory with ``path=None``.

    ``read_only`` opens an existing store for queries only (several processes may then read
    it while none writes). Opened to write, the store's folder is locked (one writer: another
    gets :class:`~heritage.locking.FolderLocked` naming the holder). The store is closed, and
    the lock released, when the object is closed or garbage-collected; use it as a context
    manager to flush at a known point.
    """

    def __init__(self, path: str | Path | None = None, *, read_only: bool = False) -> None:
        import pyoxigraph as ox

        self.path = None if path is None else Path(path)
        self._lock = None
        if read_only and self.path is not None and not self.path.is_dir():
            raise FileNotFoundError(
                f"no store at {self.path}; create one with `heritage kg load FILE "
                f"--store {self.path}`"
            )
        try:
            if self.path is None:
                self._store = ox.Store()
            elif read_only:
                self._store = ox.Store.read_only(str(self.path))
            else:
                self._lock = folder_lock(self.path, "writing the knowledge graph")
                self._store = ox.Store(str(self.path))
        except FolderLocked:
            raise
        except OSError as exc:
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            if "lock" in str(exc).lower() and self.path is not None and not read_only:
                raise FolderLocked(self.path, _store_locked_message(self.path, exc)) from exc
            raise OSError(
                f"could not open the store at {self.path}: {exc} (is another process writing "
                "to it?)"
            ) from exc

    @classmethod
    def in_memory(cls, path: str | Path) -> KnowledgeGraph:
        """A copy of the on-disk store at ``path`` held in memory, for a process that asks
        many questions (a notebook, a web service): queries run about 2× faster than on
        RocksDB, where every join step is a disk-index seek (the faceted query over 100,000
        predictions: benchmarks/kg.md), at the cost of the copy (tens of seconds and about
        0.5 kB of RAM per triple for millions of triples). Changes made to the copy stay in
        memory; the store on disk is only read."""
        disk = cls(path, read_only=True)
        graph = cls(None)
        graph._store.bulk_extend(disk._store)
        return graph

    def __enter__(self) -> KnowledgeGraph:
        return self

    def __exit__(self, *_: object) -> None:
        self.flush()

    def __len__(self) -> int:
        return len(self._store)

    def close(self) -> None:
        """Flush and release the store (its lock, for an on-disk store opened to write);
        the object cannot be queried afterwards."""
        self.flush()
        self.__dict__.pop("_store", None)
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def flush(self) -> None:
        if self.path is not None and "_store" in self.__dict__:
            # read-only stores have nothing to flush
            with contextlib.suppress(OSError, RuntimeError):
                self._store.flush()

    # ------------------------------------------------------------------ loading

    def load(
        self,
        source: Export | str | Path | bytes,
        *,
        fmt: str | None = None,
        graph: str | None = None,
        replace: bool = False,
    ) -> int:
        """Add an export, an RDF file (Turtle, N-Triples, JSON-LD; format from the extension
        unless ``fmt``) or N-Triples bytes. ``graph``: a named graph to load into (default:
        the default graph); ``replace`` empties it first. Returns the triples read."""
        import pyoxigraph as ox

        target = ox.NamedNode(check_iri(graph, "graph")) if graph else ox.DefaultGraph()
        if replace:
            self._store.clear_graph(target)
        if isinstance(source, Export):
            data, form, count = source.ntriples(), ox.RdfFormat.N_TRIPLES, len(source)
        elif isinstance(source, bytes):
            data, form, count = source, ox.RdfFormat.N_TRIPLES, None
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"RDF file {path} not found")
            data, form, count = None, rdf_format(fmt, path), None
        try:
            if data is not None:
                self._store.bulk_load(data, form, to_graph=target)
            else:
                self._store.bulk_load(path=str(source), format=form, to_graph=target)
        except SyntaxError as exc:
            what = "the data" if data is not None else source
            raise ValueError(f"could not parse {what}: {exc}") from exc
        if self.path is not None:
            # right after a bulk load, queries ran 2-5x slower until the store was optimised
            # (or reopened); optimising takes milliseconds
            self._store.optimize()
        if count is None:
            count = _count_triples(data, form, None if data is not None else Path(source))
        self._new_generation()
        return count

    def add_lines(self, lines: list[str], graph: str) -> int:
        """Add a few N-Triples lines to the named graph ``graph`` in one transaction (a
        curator's review: small, and visible to queries at once). Returns the triples
        added. Unlike :meth:`load`, this does not mark a new generation: derived tables
        stay valid, since only ``graph`` changed."""
        import pyoxigraph as ox

        target = ox.NamedNode(check_iri(graph, "graph"))
        try:
            triples = list(ox.parse("".join(lines).encode(), format=ox.RdfFormat.N_TRIPLES))
        except SyntaxError as exc:
            raise ValueError(f"could not parse the triples to add: {exc}") from exc
        self._store.extend(ox.Quad(t.subject, t.predicate, t.object, target) for t in triples)
        return len(triples)

    def generation(self) -> str | None:
        """What the last load wrote into :data:`GENERATION_FILE` (None: in memory, or a
        store loaded before heritage kept one)."""
        if self.path is None or not (self.path / GENERATION_FILE).is_file():
            return None
        return (self.path / GENERATION_FILE).read_text().strip() or None

    def _new_generation(self) -> None:
        if self.path is None:
            return
        import uuid

        (self.path / GENERATION_FILE).write_text(uuid.uuid4().hex + "\n")

    def dump(self, path: str | Path, fmt: str | None = None) -> Path:
        """Every triple (all graphs merged) to a Turtle, N-Triples or JSON-LD file."""
        import pyoxigraph as ox

        from heritage.kg.terms import PREFIXES

        path = Path(path)
        target = rdf_format(fmt, path)
        triples = (ox.Triple(q.subject, q.predicate, q.object) for q in self._store)
        ox.serialize(triples, output=str(path), format=target, prefixes=PREFIXES)
        return path

    # ------------------------------------------------------------------ queries

    def _run(self, sparql: str):
        # the union of all graphs only when there are named graphs: unions cost a third
        # more on the faceted query, for nothing when everything is in the default graph
        union = next(iter(self._store.named_graphs()), None) is not None
        try:
            return self._store.query(sparql, use_default_graph_as_union=union)
        except SyntaxError as exc:
            raise QueryError(f"SPARQL syntax error: {exc}") from exc
        except OSError as exc:
            raise QueryError(f"query failed: {exc}") from exc

    def query(self, sparql: str) -> pd.DataFrame | bool | list:
        """Any query: SELECT → DataFrame, ASK → bool, CONSTRUCT/DESCRIBE → pyoxigraph
        triples."""
        import pyoxigraph as ox

        result = self._run(sparql)
        if isinstance(result, ox.QuerySolutions):
            return _frame(result, typed=True)
        if isinstance(result, ox.QueryBoolean):
            return bool(result)
        return list(result)

    def select(self, sparql: str, *, typed: bool = True) -> pd.DataFrame:
        import pyoxigraph as ox

        result = self._run(sparql)
        if not isinstance(result, ox.QuerySolutions):
            raise QueryError("expected a SELECT query")
        return _frame(result, typed=typed)

    def query_to(self, sparql: str, fmt: str) -> bytes:
        """A query's results in a standard format: ``csv``/``tsv``/``json`` (SPARQL results)
        for SELECT and ASK, ``ttl``/``nt``/``jsonld`` for CONSTRUCT and DESCRIBE."""
        import pyoxigraph as ox

        from heritage.kg.terms import PREFIXES

        result = self._run(sparql)
        if isinstance(result, (ox.QuerySolutions, ox.QueryBoolean)):
            formats = {
                "csv": ox.QueryResultsFormat.CSV,
                "tsv": ox.QueryResultsFormat.TSV,
                "json": ox.QueryResultsFormat.JSON,
            }
            if fmt not in formats:
                raise ValueError(f"SELECT/ASK results can be csv, tsv or json, not {fmt!r}")
            return result.serialize(format=formats[fmt])
        return ox.serialize(result, format=rdf_format(fmt), prefixes=PREFIXES)


def _store_locked_message(path: Path, exc: OSError) -> str:
    """Oxigraph's own lock is held although heritage's is not: this process has the store
    open already, or a program that does not record itself (an older heritage, another
    Oxigraph tool) is writing to it."""
    if "current process" in str(exc):
        return (
            f"{path} is already open for writing in this process; close() that "
            "KnowledgeGraph first (or open it read_only=True to query)"
        )
    return (
        f"{path} is in use by another process writing to it (it did not record which: an "
        f"older heritage or another Oxigraph program; `fuser -v {path / 'LOCK'}` names it). "
        "Wait for it to finish or stop it, or use another --store."
    )


def _frame(solutions, *, typed: bool) -> pd.DataFrame:
    """pyoxigraph solutions as a DataFrame (IRIs and literals as their string values)."""
    import pyoxigraph as ox

    names = [v.value for v in solutions.variables]
    rows = []
    for solution in solutions:
        row = []
        for term in solution:
            if term is None:
                row.append(None)
            elif isinstance(term, ox.Literal):
                row.append(python_value(term.value, "literal", term.datatype.value, typed))
            elif isinstance(term, ox.BlankNode):
                row.append(f"_:{term.value}")
            else:
                row.append(term.value)
        rows.append(row)
    return pd.DataFrame(rows, columns=names)


def _count_triples(data: bytes | None, form, path: Path | None) -> int:
    """Triples in what was loaded: lines for N-Triples (fast), a parse otherwise."""
    import pyoxigraph as ox

    if form == ox.RdfFormat.N_TRIPLES:
        if data is None and path is not None:
            with open(path, "rb") as fh:
                return sum(1 for line in fh if line.strip() and not line.lstrip().startswith(b"#"))
        assert data is not None
        return sum(1 for line in data.splitlines() if line.strip() and not line.startswith(b"#"))
    return sum(1 for _ in ox.parse(input=data, path=None if data else str(path), format=form))
