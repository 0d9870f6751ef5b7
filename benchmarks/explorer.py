"""Explorer load test (issue 19): page latency of `heritage explore` over the synthetic-100k
knowledge graph (100,000 predictions; benchmarks/kg.py) under 8 concurrent clients.

    python benchmarks/explorer.py                       # build once, then a 30 s load test
    python benchmarks/explorer.py --seconds 5 --dry-run # a smoke run: prints, writes nothing

What it does:

1. Builds (once; reused from benchmarks/runs/explorer/) the synthetic-100k store on disk with
   benchmarks/kg.py's ``silknow()`` and ``synthetic()``, and a flat similarity index over the
   store's record ids. The index's 64-d vectors are seeded *random* numbers: this benchmark
   measures page latency, not similarity quality.
2. Startup, timed in this process around ``Explorer.open`` (store, index and cache as the
   server opens them, read-only): ``startup_uncached`` with an empty cache (facet table and
   text index read from the graph at start, as for a store loaded by another tool or a SPARQL
   server), ``startup`` with the tables ``heritage kg load`` builds (``STORE.explorer``), the
   start a user of ``heritage kg load`` + ``heritage explore`` gets.
3. Serves ``heritage explore --store … --index … --read-only`` as a subprocess on a free port
   of 127.0.0.1 (loopback only), waits for ``/health``, warms up each page type, then runs
   8 client threads in this process (one keep-alive ``http.client`` connection each) for
   30 s or 20,000 requests, whichever comes first (requests in flight then finish, or
   time out after 30 s). Each client cycles through four page types with random,
   realistic states: ``search_page`` (``/`` with a word from the records'
   texts, from the value labels or the start of a record id, or no text; a threshold from
   the slider's 0.05 steps, a source, a sort and one of the first pages), ``facet_page``
   (``/`` with one or two facet values that exist, read from the explorer's facet table,
   and a threshold), ``object_page`` (``/object?id=``) and ``similar_page``
   (``/similar?id=``) of a random record. The server is always stopped at the end.

Per page type it records p50_ms and p95_ms (wall-clock latency as the client sees it, of
every request: a failed one counts with the time it took to fail, a timeout with the 30 s
client timeout), errors (non-200 answers, timeouts and other exceptions) and requests. The
machine has 2 CPU cores, shared by the server and the 8 clients (hardware ``cpu-2core``),
so latencies include waiting for a core. Targets (issue 19): p95 ≤ 200 ms for every page
type, no errors, startup ≤ 10 s. ``--pages`` restricts the page types (a diagnosis: which
page slows the others down); a run with a subset should be a ``--dry-run``.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np

from heritage.progress import console

try:  # run as a script (python benchmarks/explorer.py) or as a module
    import kg as kgbench
    from records import RecordBook
except ImportError:
    from benchmarks import kg as kgbench
    from benchmarks.records import RecordBook

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "benchmarks" / "runs" / "explorer"
STORE = RUNS / "synthetic-100k-store"
INDEX = RUNS / "synthetic-100k-index"
READY = RUNS / "ready.json"
DATASET = kgbench.SYNTHETIC
HOST = "127.0.0.1"  # loopback only, for the server and the clients alike
PAGES = ("search_page", "facet_page", "object_page", "similar_page")
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(21))  # the search page's slider steps
DIM = 64
TIMEOUT = 30.0  # seconds a client waits for a page before counting it as an error


# ------------------------------------------------------------------------------ the data


def build() -> None:
    """The synthetic-100k store and a random-vector similarity index over its record ids
    (reused when ``ready.json`` says both are there for the store's generation)."""
    from heritage.kg import KnowledgeGraph
    from heritage.similarity.index import SimilarityIndex

    if READY.is_file() and STORE.is_dir() and (INDEX / "index.json").is_file():
        ready = json.loads(READY.read_text())
        if ready.get("generation") == KnowledgeGraph(STORE, read_only=True).generation():
            console.print(f"reusing {STORE.relative_to(ROOT)} and {INDEX.relative_to(ROOT)}")
            return
    console.rule(f"{DATASET}: building the store and the index (once; in {RUNS})")
    w = kgbench.synthetic(kgbench.silknow())
    shutil.rmtree(STORE, ignore_errors=True)
    shutil.rmtree(Path(f"{STORE}.explorer"), ignore_errors=True)
    shutil.rmtree(INDEX, ignore_errors=True)
    t0 = time.perf_counter()
    with KnowledgeGraph(STORE) as graph:
        triples = graph.load(w.export())
        generation = graph.generation()
    console.print(f"  {w.n_predictions:,} predictions, {triples:,} triples loaded in "
                  f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    ids = sorted(set(w.catalogue.frame["object"]) | set(w.predictions["record"]))
    vectors = np.random.default_rng(0).standard_normal((len(ids), DIM)).astype(np.float32)
    SimilarityIndex(DIM, kind="flat").add(vectors, ids).save(INDEX)
    (INDEX / "paths.json").write_text("{}")
    READY.write_text(json.dumps({"generation": generation, "records": len(ids)}) + "\n")


@dataclass
class Choices:
    """What the clients pick their page states from (read from the explorer's tables)."""

    record_ids: list[str]
    words: list[str]
    facets: list[tuple[str, str]]  # (property, concept URI) with records behind them
    pages: tuple[str, ...] = PAGES  # the page types the clients request, in turn
    properties: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for prop, concept in self.facets:
            self.properties.setdefault(prop, []).append((prop, concept))


def startup(book: RecordBook, repeats: int) -> Choices:
    """Time ``Explorer.open`` with an empty cache and with the cache, as the server opens
    the store (read-only, with the index); return what the clients choose from."""
    from heritage.explore import Explorer, ExplorerConfig

    config = ExplorerConfig(store=STORE, index=INDEX, read_only=True)
    cache = Path(f"{STORE}.explorer")
    choices = None
    for r in range(repeats):
        for method, fresh in (("startup_uncached", True), ("startup", False)):
            if fresh:
                shutil.rmtree(cache, ignore_errors=True)
            gc.collect()
            t0 = time.perf_counter()
            ex = Explorer.open(config)
            seconds = time.perf_counter() - t0
            book.add(DATASET, method, "seconds", seconds)
            console.print(
                f"  repeat {r}: {method} {seconds:.2f} s (Explorer.startup_seconds "
                f"{ex.startup_seconds:.2f} s; {ex.table.n_records:,} records, "
                f"{len(ex.table.pred_uri):,} predictions)"
            )
            if choices is None:
                choices = _choices(ex)
            del ex
    assert choices is not None
    gc.collect()
    return choices


def _choices(ex) -> Choices:  # ex: an Explorer
    table = ex.table
    missing = [i for i in table.record_ids[:1000] if i not in ex._index]
    if missing:
        raise SystemExit(f"record {missing[0]!r} is not in the index: delete {RUNS} and rerun")
    rng = random.Random(0)
    words: set[str] = set()
    sample = rng.sample(range(table.n_records), min(3000, table.n_records))
    for rec in sample:  # words of the records' texts (synthetic-100k has none) ...
        text = " ".join([*table.titles[rec].values(), *table.excerpts[rec].values()])
        words.update(w for w in re.findall(r"[^\W\d_]{4,}", text) if len(w) <= 20)
    for labels in table.labels.values():  # ... of the value labels people type ...
        for label in labels.values():
            words.update(w for w in re.findall(r"[^\W\d_]{4,}", label) if len(w) <= 20)
    for rec in sample[:50]:  # ... and the start of an identifier, as a prefix
        words.add(table.record_ids[rec][: rng.randint(4, 8)])
    cat, pred = table.counts(np.ones(table.n_records, bool), 0.5)
    facets = [table.values[k] for k in range(len(table.values)) if cat[k] + pred[k] > 0]
    return Choices(list(table.record_ids), sorted(words), facets)


# ------------------------------------------------------------------------------ the server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(port: int, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("heritage")
    command = [
        str(exe) if exe.is_file() else "heritage",
        "explore",
        "--store", str(STORE),
        "--index", str(INDEX),
        "--read-only",
        "--host", HOST,
        "--port", str(port),
    ]  # fmt: skip
    console.print("  " + " ".join(command))
    env = {**os.environ, "NO_COLOR": "1", "PYTHONFAULTHANDLER": "1"}  # a crash's stack to the log
    with log.open("w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_for_health(server: subprocess.Popen, port: int, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} (see its log)")
        try:
            con = http.client.HTTPConnection(HOST, port, timeout=5)
            con.request("GET", "/health")
            response = con.getresponse()
            body = response.read()
            con.close()
            if response.status == 200:
                return json.loads(body)
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"no /health from the server within {timeout:.0f} s")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


# ------------------------------------------------------------------------------ the clients


def page_url(kind: str, c: Choices, rng: random.Random) -> str:
    """A URL of page type ``kind`` in a random, realistic state."""
    if kind == "search_page":
        params = []
        if rng.random() < 0.8:
            params.append(("q", rng.choice(c.words)))
        params.append(("t", f"{rng.choice(THRESHOLDS):g}"))
        source = rng.choices(("both", "catalogued", "predicted"), (6, 1, 2))[0]
        if source != "both":
            params.append(("source", source))
        sort = rng.choice(("id", "confidence", "-confidence"))
        if sort != "id":
            params.append(("sort", sort))
        page = rng.choices((1, 2, 3, 5, 10), (10, 3, 2, 1, 1))[0]
        if page != 1:
            params.append(("page", str(page)))
        return "/?" + urlencode(params)
    if kind == "facet_page":
        first = rng.choice(c.facets)
        chosen = [first]
        if rng.random() < 0.5:  # a second value: of another property (AND) or the same (OR)
            pool = c.facets if rng.random() < 0.7 else c.properties[first[0]]
            second = rng.choice(pool)
            if second != first:
                chosen.append(second)
        params = [("f", f"{p}|{v}") for p, v in chosen]
        params.append(("t", f"{rng.choice(THRESHOLDS):g}"))
        if rng.random() < 0.2:
            params.append(("sort", rng.choice(("confidence", "-confidence"))))
        return "/?" + urlencode(params)
    record = quote(rng.choice(c.record_ids), safe="")
    return f"/object?id={record}" if kind == "object_page" else f"/similar?id={record}"


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PAGES})
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PAGES, 0))
    examples: list[str] = field(default_factory=list)
    requests: int = 0
    wall: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(
    n: int, port: int, c: Choices, tally: Tally, deadline: float, max_requests: int, seed: int
) -> None:
    """One client: a keep-alive connection, the page types in turn, until the deadline or
    until all clients together have sent ``max_requests``."""
    rng = random.Random(seed * 1000 + n)
    con = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    turn = n  # clients start at different page types
    try:
        while time.monotonic() < deadline:
            with tally.lock:
                if tally.requests >= max_requests:
                    return
                tally.requests += 1
            kind = c.pages[turn % len(c.pages)]
            turn += 1
            url = page_url(kind, c, rng)
            t0 = time.perf_counter()
            try:
                con.request("GET", url)
                response = con.getresponse()
                response.read()
                ok = response.status == 200
                problem = f"{response.status} {url}"
            except (OSError, http.client.HTTPException) as exc:
                ok, problem = False, f"{type(exc).__name__}: {exc} ({url})"
                con.close()
                time.sleep(0.05)  # a refused connection fails at once: do not spin
                con = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
            ms = 1000 * (time.perf_counter() - t0)
            with tally.lock:
                tally.latencies[kind].append(ms)
                if not ok:
                    tally.errors[kind] += 1
                    if len(tally.examples) < 5:
                        tally.examples.append(problem)
    finally:
        con.close()


def warm_up(port: int, c: Choices, seconds: float) -> None:
    """A few requests of every page type from one client, not recorded."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    client(0, port, c, tally, deadline, 10**9, seed=-1)
    if sum(tally.errors.values()):
        console.print(f"  [yellow]errors while warming up[/]: {tally.examples}")


def load_test(port: int, c: Choices, clients: int, seconds: float, max_requests: int) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(
            target=client, args=(n, port, c, tally, deadline, max_requests, 0), daemon=True
        )
        for n in range(clients)
    ]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    tally.wall = time.perf_counter() - t0
    return tally


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="load-test duration")
    parser.add_argument("--max-requests", type=int, default=20_000, help="load-test bound")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up")
    parser.add_argument("--startup-repeats", type=int, default=3)
    parser.add_argument(
        "--pages", nargs="+", choices=PAGES, default=list(PAGES), help="page types to request"
    )
    parser.add_argument("--dry-run", action="store_true", help="print records, write nothing")
    args = parser.parse_args()

    from heritage.runtime import configure_threads, hardware_label, resolve_device

    configure_threads()
    book = RecordBook("explorer", hardware_label(resolve_device("cpu")))
    RUNS.mkdir(parents=True, exist_ok=True)
    build()
    console.rule(f"{DATASET}: startup")
    choices = startup(book, args.startup_repeats)
    choices.pages = tuple(args.pages)
    console.print(
        f"  clients choose among {len(choices.record_ids):,} records, {len(choices.words):,} "
        f"words and {len(choices.facets):,} facet values"
    )

    console.rule(f"{DATASET}: {args.clients} clients for {args.seconds:.0f} s")
    port = free_port()
    log = RUNS / "server.log"
    server = start_server(port, log)
    try:
        health = wait_for_health(server, port)
        console.print(f"  server up on {HOST}:{port}: {health}")
        warm_up(port, choices, args.warmup)
        tally = load_test(port, choices, args.clients, args.seconds, args.max_requests)
        crashed = server.poll()
    finally:
        stop_server(server)
    if crashed is not None:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(f"the server exited with {crashed} during the test; nothing written. "
                         f"The end of {log}:\n{tail}")  # fmt: skip
    total = sum(len(v) for v in tally.latencies.values())
    console.print(f"  {total:,} requests in {tally.wall:.1f} s ({total / tally.wall:.0f}/s)")
    for kind in choices.pages:
        ms = np.array(tally.latencies[kind])
        p50, p95 = np.percentile(ms, [50, 95]) if len(ms) else (float("nan"),) * 2
        book.add(DATASET, kind, "p50_ms", p50)
        book.add(DATASET, kind, "p95_ms", p95)
        book.add(DATASET, kind, "errors", tally.errors[kind])
        book.add(DATASET, kind, "requests", len(ms))
        worst, errors = (ms.max() if len(ms) else 0.0), tally.errors[kind]
        console.print(
            f"  {kind:13s} p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  max {worst:6.0f} ms  "
            f"errors {errors}  requests {len(ms)}"
        )
    for example in tally.examples:
        console.print(f"  [red]error[/]: {example}")
    if args.dry_run:
        console.print_json(data=book.records())
    else:
        console.print(f"wrote {book.write()}")


if __name__ == "__main__":
    main()
