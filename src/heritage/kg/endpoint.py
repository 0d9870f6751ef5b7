"""Any SPARQL 1.1 server: push exports to it and ask it the same questions as the store.

When a collection outgrows one machine's embedded store, or the graph must be public, the
same exports go to a server: Virtuoso, Fuseki, GraphDB, Blazegraph, Oxigraph server, ... .
Two standard ways in, because servers differ in what they open to whom:

* **SPARQL 1.1 Update** (``protocol="update"``): ``INSERT DATA`` in chunks, POSTed as
  ``application/sparql-update`` to the update endpoint;
* **Graph Store HTTP Protocol** (``protocol="graph-store"``): N-Triples POSTed to
  ``STORE_URL?graph=G`` in chunks (PUT for the first chunk when replacing the graph).

Exports have no blank nodes, so any chunking of their lines is the same graph once loaded.
Authentication is HTTP Digest (Virtuoso's ``/sparql-auth``) or Basic, sent with every
request (:class:`_HttpAuth`); only the standard library is used. Queries use the SPARQL 1.1
Protocol with JSON results (:meth:`SparqlEndpoint.select`), and every question of
:class:`~heritage.kg.queries.GraphQueries` works here as on the embedded store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from heritage.kg.export import Export, rdf_format
from heritage.kg.queries import GraphQueries, python_value
from heritage.kg.terms import check_iri
from heritage.progress import progress_bar

__all__ = ["MEDIA_TYPES", "EndpointError", "PushReport", "SparqlEndpoint"]

Protocol = Literal["update", "graph-store"]

#: the media type a server is asked for, per result format (``--format`` of ``heritage kg
#: query``): SPARQL results for SELECT and ASK, RDF for CONSTRUCT and DESCRIBE
MEDIA_TYPES = {
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
    "json": "application/sparql-results+json",
    "ttl": "text/turtle",
    "nt": "application/n-triples",
    "jsonld": "application/ld+json",
}


class EndpointError(RuntimeError):
    """The server refused a request or could not be reached; the message has its reply."""


@dataclass
class PushReport:
    triples: int
    requests: int
    seconds: float

    @property
    def triples_per_second(self) -> float:
        return self.triples / self.seconds if self.seconds > 0 else float("inf")


class SparqlEndpoint(GraphQueries):
    """A SPARQL server.

    ``query_url``: the SPARQL query endpoint. ``update_url``: where updates go (default: the
    query URL). ``store_url``: the Graph Store endpoint (needed for ``graph-store`` pushes).
    ``user``/``password``: credentials, sent with ``auth`` (``digest`` or ``basic``).
    :meth:`virtuoso` fills the three URLs in for a Virtuoso server.
    """

    def __init__(
        self,
        query_url: str,
        *,
        update_url: str | None = None,
        store_url: str | None = None,
        user: str | None = None,
        password: str | None = None,
        auth: Literal["digest", "basic"] = "digest",
        timeout: float = 300.0,
    ) -> None:
        self.query_url = check_iri(query_url, "endpoint URL")
        self.update_url = check_iri(update_url or query_url, "update URL")
        self.store_url = check_iri(store_url, "graph store URL") if store_url else None
        self.timeout = timeout
        if user is not None and auth not in ("digest", "basic"):
            raise ValueError(f"unknown auth {auth!r}; use digest or basic")
        self._auth = None if user is None else _HttpAuth(user, password or "", auth)
        self._opener = urllib.request.build_opener()

    @classmethod
    def virtuoso(
        cls, root: str, user: str | None = "dba", password: str | None = "dba", **kwargs
    ) -> SparqlEndpoint:
        """Virtuoso at ``root`` (e.g. ``http://localhost:8890``): queries on ``/sparql``,
        authenticated updates on ``/sparql-auth``, the Graph Store on
        ``/sparql-graph-crud-auth``."""
        root = root.rstrip("/")
        return cls(
            f"{root}/sparql",
            update_url=f"{root}/sparql-auth",
            store_url=f"{root}/sparql-graph-crud-auth",
            user=user,
            password=password,
            **kwargs,
        )

    # ------------------------------------------------------------------ HTTP

    def _request(
        self,
        url: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        method: str | None = None,
        *,
        retry: bool = True,
    ) -> bytes:
        method = method or ("POST" if data is not None else "GET")
        sent = dict(headers or {})
        if self._auth is not None:
            if self._auth.needs_challenge:
                self._probe(url)
            authorization = self._auth.header(method, url)
            if authorization:
                sent["Authorization"] = authorization
        request = urllib.request.Request(url, data=data, headers=sent, method=method)
        try:
            with self._opener.open(request, timeout=self.timeout) as reply:
                return reply.read()
        except urllib.error.HTTPError as exc:
            challenge = exc.headers.get("WWW-Authenticate", "")
            if exc.code == 401 and retry and self._auth is not None and self._auth.learn(challenge):
                return self._request(url, data, headers, method, retry=False)  # stale nonce
            body = exc.read().decode("utf-8", "replace").strip()
            detail = "\n".join(body.splitlines()[:8])
            raise EndpointError(f"{url}: HTTP {exc.code} {exc.reason}\n{detail}") from exc
        except urllib.error.URLError as exc:
            raise EndpointError(f"cannot reach {url}: {exc.reason}") from exc
        except (TimeoutError, ConnectionError) as exc:
            raise EndpointError(f"{url}: {exc}") from exc

    def _probe(self, url: str) -> None:
        """Fetch the server's Digest challenge with a body-less request."""
        assert self._auth is not None
        try:
            with self._opener.open(urllib.request.Request(url), timeout=self.timeout):
                pass
        except urllib.error.HTTPError as exc:
            self._auth.learn(exc.headers.get("WWW-Authenticate", ""))
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise EndpointError(f"cannot reach {url}: {exc}") from exc
        self._auth.needs_challenge = False  # answered without one: nothing to learn

    def update(self, sparql: str) -> None:
        """Run a SPARQL 1.1 Update."""
        self._request(
            self.update_url,
            sparql.encode(),
            {"Content-Type": "application/sparql-update; charset=utf-8"},
        )

    def query_raw(self, sparql: str, accept: str) -> bytes:
        """A query's reply in the media type ``accept`` (e.g. ``text/csv``)."""
        data = urllib.parse.urlencode({"query": sparql}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": accept}
        return self._request(self.query_url, data, headers)

    def query_to(self, sparql: str, fmt: str) -> bytes:
        """A query's results in a standard format, as :meth:`KnowledgeGraph.query_to
        <heritage.kg.KnowledgeGraph.query_to>` gives them: ``csv``/``tsv``/``json`` for SELECT
        and ASK, ``ttl``/``nt``/``jsonld`` for CONSTRUCT and DESCRIBE (:data:`MEDIA_TYPES`)."""
        if fmt not in MEDIA_TYPES:
            raise ValueError(f"unknown --format {fmt!r}; use {', '.join(MEDIA_TYPES)} or table")
        return self.query_raw(sparql, MEDIA_TYPES[fmt])

    def select(self, sparql: str, *, typed: bool = True) -> pd.DataFrame:
        reply = json.loads(self.query_raw(sparql, "application/sparql-results+json"))
        if "boolean" in reply:
            raise EndpointError("expected a SELECT query, got an ASK reply")
        names = reply["head"]["vars"]
        rows = []
        for binding in reply["results"]["bindings"]:
            row = []
            for name in names:
                term = binding.get(name)
                if term is None:
                    row.append(None)
                    continue
                kind = term["type"]
                kind = "literal" if kind == "typed-literal" else kind
                row.append(python_value(term["value"], kind, term.get("datatype"), typed))
            rows.append(row)
        return pd.DataFrame(rows, columns=names)

    def ask(self, sparql: str) -> bool:
        reply = json.loads(self.query_raw(sparql, "application/sparql-results+json"))
        if "boolean" in reply:
            return bool(reply["boolean"])
        # Virtuoso answers ASK with a one-cell result set in some versions
        bindings = reply.get("results", {}).get("bindings", [])
        return bool(bindings) and str(next(iter(bindings[0].values()))["value"]) in ("1", "true")

    # ------------------------------------------------------------------ graphs

    def add_lines(self, lines: list[str], graph: str) -> int:
        """Add a few N-Triples lines to the named graph ``graph`` (Graph Store POST where the
        server has one, else INSERT DATA of the escaped lines). Returns the triples sent."""
        return self.push(list(lines), graph=graph).triples

    def generation(self) -> str | None:
        """A server keeps no generation marker: derived tables are rebuilt at each start."""
        return None

    def clear(self, graph: str | None = None) -> None:
        """Empty a named graph (or the default graph)."""
        target = f"GRAPH <{check_iri(graph, 'graph')}>" if graph else "DEFAULT"
        self.update(f"CLEAR SILENT {target}")

    def count(self, graph: str | None = None) -> int:
        """Triples in a named graph (or in the whole dataset)."""
        where = f"GRAPH <{check_iri(graph, 'graph')}> {{ ?s ?p ?o }}" if graph else "?s ?p ?o"
        df = self.select(f"SELECT (COUNT(*) AS ?n) WHERE {{ {where} }}")
        return int(df["n"].iloc[0])

    def push(
        self,
        source: Export | str | Path | Sequence[str],
        *,
        graph: str | None = None,
        protocol: Protocol | None = None,
        chunk_size: int | None = None,
        replace: bool = False,
        fmt: str | None = None,
    ) -> PushReport:
        """Send an export, an RDF file or N-Triples lines to the server, into ``graph``
        (None: the server's default graph); ``replace`` empties the graph first.

        ``protocol``: default ``graph-store`` when the endpoint has a ``store_url``, else
        ``update``. ``chunk_size``: triples per request, default 20,000 for the Graph Store
        and 1,000 for updates — Virtuoso compiles INSERT DATA into SQL and refuses requests
        of a few thousand triples (and loads them 25× slower than the Graph Store)."""
        if protocol is None:
            protocol = "graph-store" if self.store_url else "update"
        if protocol not in ("update", "graph-store"):
            raise ValueError(f"unknown protocol {protocol!r}; use update or graph-store")
        if protocol == "graph-store" and self.store_url is None:
            raise ValueError("a graph-store push needs the server's Graph Store URL (store_url)")
        if chunk_size is None:
            chunk_size = 20_000 if protocol == "graph-store" else 1_000
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        lines = _ntriples_lines(source, fmt)
        if graph is not None:
            check_iri(graph, "graph")
        start = time.perf_counter()
        requests = 0
        # the Graph Store replaces with its first PUT; with nothing to send, clear instead
        if replace and (protocol == "update" or not lines):
            self.clear(graph)
            requests += 1
        with progress_bar() as bar:
            task = bar.add_task("pushing", total=len(lines))
            for i, chunk in enumerate(_chunks(lines, chunk_size)):
                body = "".join(chunk)
                if protocol == "update":
                    inner = f"GRAPH <{graph}> {{\n{body}}}" if graph else body
                    self.update(f"INSERT DATA {{\n{inner}}}")
                else:
                    assert self.store_url is not None
                    target = f"graph={urllib.parse.quote(graph, safe='')}" if graph else "default"
                    self._request(
                        f"{self.store_url}?{target}",
                        body.encode(),
                        {"Content-Type": "application/n-triples; charset=utf-8"},
                        method="PUT" if replace and i == 0 else "POST",
                    )
                requests += 1
                bar.advance(task, len(chunk))
        return PushReport(len(lines), requests, time.perf_counter() - start)


class _HttpAuth:
    """Credentials sent with every request, before the server asks.

    urllib's auth handlers send each request without credentials, read the 401 and send it
    again: with multi-megabyte chunks that doubles the upload, and Virtuoso may reset the
    connection before it has read the first body. Basic credentials are simply always sent;
    for Digest (RFC 7616, MD5, qop=auth) one body-less probe learns the challenge, and each
    request then carries its own response (a stale nonce is relearnt on the next 401).
    """

    def __init__(self, user: str, password: str, scheme: str) -> None:
        self.user, self.password, self.scheme = user, password, scheme
        self.challenge: dict[str, str] = {}
        self.needs_challenge = scheme == "digest"
        self._count = 0

    def learn(self, header: str) -> bool:
        """Take a ``WWW-Authenticate: Digest ...`` challenge; False when it is not one."""
        kind, _, rest = header.partition(" ")
        if self.scheme != "digest" or kind.lower() != "digest":
            return False
        self.challenge = urllib.request.parse_keqv_list(urllib.request.parse_http_list(rest))
        self.needs_challenge = False
        self._count = 0
        return True

    def header(self, method: str, url: str) -> str | None:
        if self.scheme == "basic":
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return f"Basic {token}"
        if not self.challenge:
            return None
        c = self.challenge
        if c.get("algorithm", "MD5").upper() not in ("MD5", "MD5-SESS"):
            raise EndpointError(f"unsupported Digest algorithm {c['algorithm']!r}")
        parts = urllib.parse.urlsplit(url)
        uri = parts.path + (f"?{parts.query}" if parts.query else "")
        self._count += 1
        nc, cnonce = f"{self._count:08x}", secrets.token_hex(8)
        realm, nonce = c.get("realm", ""), c.get("nonce", "")
        ha1 = _md5(f"{self.user}:{realm}:{self.password}")
        if c.get("algorithm", "").upper() == "MD5-SESS":
            ha1 = _md5(f"{ha1}:{nonce}:{cnonce}")
        ha2 = _md5(f"{method}:{uri}")
        qop = "auth" if "auth" in c.get("qop", "").split(",") else None
        if qop:
            response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
        else:
            response = _md5(f"{ha1}:{nonce}:{ha2}")
        fields = [
            f'username="{self.user}"',
            f'realm="{realm}"',
            f'nonce="{nonce}"',
            f'uri="{uri}"',
            f'response="{response}"',
        ]
        if qop:
            fields += [f"qop={qop}", f"nc={nc}", f'cnonce="{cnonce}"']
        if "opaque" in c:
            fields.append(f'opaque="{c["opaque"]}"')
        if "algorithm" in c:
            fields.append(f"algorithm={c['algorithm']}")
        return "Digest " + ", ".join(fields)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # Digest auth's hash, not a security choice


def _chunks(lines: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(lines), size):
        yield lines[i : i + size]


def _ntriples_lines(source: Export | str | Path | Sequence[str], fmt: str | None) -> list[str]:
    """N-Triples lines of what is pushed. Files with blank nodes are refused: chunks sent in
    separate requests would split one blank node into several."""
    import pyoxigraph as ox

    if isinstance(source, Export):
        return source.lines
    if isinstance(source, (str, Path)) and Path(source).is_file():
        path = Path(source)
        form = rdf_format(fmt, path)
        try:
            triples = list(ox.parse(path=str(path), format=form))
        except SyntaxError as exc:
            raise ValueError(f"could not parse {path}: {exc}") from exc
        if any(
            isinstance(t.subject, ox.BlankNode) or isinstance(t.object, ox.BlankNode)
            for t in triples
        ):
            raise ValueError(
                f"{path} has blank nodes, which chunked pushes would split; give them IRIs "
                "(heritage exports have none)"
            )
        return [f"{t} .\n" for t in triples]
    if isinstance(source, (str, Path)):
        raise FileNotFoundError(f"RDF file {source} not found")
    return [line if line.endswith("\n") else line + "\n" for line in source]
