"""`heritage kg`: predictions as linked data, stores, SPARQL servers."""

from pathlib import Path
from typing import Annotated

import typer

from heritage.cli.base import RecordIdColumn, fail, group, names, out_option
from heritage.progress import console

kg_app = group(
    "kg",
    "Publish predictions as linked data (RDF with PROV-O provenance, SKOS values), load them "
    "into an embedded store or push them to a SPARQL server, and query them.",
)

StoreDir = Annotated[
    Path, typer.Option("--store", "-s", help="Embedded store folder (created by `kg load`).")
]
EndpointUrl = Annotated[
    str | None,
    typer.Option(help="A SPARQL endpoint URL to use instead of the embedded store."),
]
User = Annotated[str | None, typer.Option(help="User name for the server (HTTP auth).")]
Password = Annotated[
    str | None,
    typer.Option(envvar="HERITAGE_SPARQL_PASSWORD", help="Password (or set the variable)."),
]
Auth = Annotated[str, typer.Option(help="HTTP authentication: digest or basic.")]
RdfFormat = Annotated[
    str | None,
    typer.Option("--format", help="ttl, nt or jsonld (default: from the file's extension)."),
]
NamedGraph = Annotated[
    str | None, typer.Option(help="Named graph to write into (default: the default graph).")
]
Replace = Annotated[bool, typer.Option(help="Empty that graph first (replace an earlier export).")]
Started = Annotated[
    str | None, typer.Option(help="When the prediction run started (ISO; default: --ended).")
]
Ended = Annotated[
    str | None, typer.Option(help="When it ended (ISO; default: the predictions file's mtime).")
]


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict."""
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{what} {item!r}: write it as KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _when(text: str | None, what: str):
    from datetime import datetime

    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{what} {text!r} is not an ISO date-time (2024-05-01T10:30:00Z)") from exc


def _endpoint(url: str, user: str | None, password: str | None, auth: str):
    from heritage.kg import SparqlEndpoint

    if auth not in ("digest", "basic"):
        raise ValueError(f"unknown --auth {auth!r}; use digest or basic")
    return SparqlEndpoint(
        url,
        update_url=url,
        store_url=url,
        user=user,
        password=password,
        auth=auth,  # type: ignore[arg-type]
    )


def _graph(store: Path, endpoint: str | None, user: str | None, password: str | None, auth: str):
    """The graph a reading command asks: the server at ``endpoint``, else the store."""
    from heritage.kg import KnowledgeGraph

    if endpoint:
        return _endpoint(endpoint, user, password, auth)
    return KnowledgeGraph(store, read_only=True)


@kg_app.command("export")
def kg_export(
    predictions: Annotated[
        Path | None,
        typer.Argument(
            help="Predictions CSV from `heritage metadata predict` or `heritage predict` "
            "(the layout is detected); optional with --records."
        ),
    ] = None,
    out: Annotated[Path, out_option("RDF file to write (.ttl, .nt or .jsonld).")] = Path(
        "predictions.ttl"
    ),
    fmt: RdfFormat = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="The model that made the predictions (metadata model folder or image model "
            "file): its SHA-256 goes into the provenance. Required with predictions."
        ),
    ] = None,
    base_uri: Annotated[
        str | None,
        typer.Option(
            help="Namespace for records, minted concepts, predictions and activities (default: "
            "https://example.org/heritage/; set your own before publishing)."
        ),
    ] = None,
    vocabulary: Annotated[
        list[str] | None,
        typer.Option(
            help="[PROPERTY=]FILE: a SKOS file (.ttl, .rdf, .nt, .jsonld) or a "
            "label,uri[,property] table (.csv/.tsv) whose concepts values map to; repeatable."
        ),
    ] = None,
    strict_vocabulary: Annotated[
        bool,
        typer.Option(help="Refuse values the vocabulary lacks instead of minting concepts."),
    ] = False,
    property_uri: Annotated[
        list[str] | None,
        typer.Option(help="PROPERTY=URI: publish a column under a URI of your choice; repeatable."),
    ] = None,
    records: Annotated[
        Path | None,
        typer.Option(help="Records CSV whose catalogued values are exported alongside."),
    ] = None,
    id_column: RecordIdColumn = None,
    concepts: Annotated[
        list[str] | None,
        typer.Option(
            help="Columns of --records whose values become concepts (default with a metadata "
            "--model: its properties and categorical fields)."
        ),
    ] = None,
    literals: Annotated[
        list[str] | None,
        typer.Option(
            help="Columns of --records kept as literals (text_<lang> columns get the language)."
        ),
    ] = None,
    kind: Annotated[
        str, typer.Option(help="Predictions layout: auto, metadata or classifier.")
    ] = "auto",
    prop: Annotated[
        str,
        typer.Option("--property", help="For image-classifier predictions: the property named."),
    ] = "label",
    started: Started = None,
    ended: Ended = None,
    max_alternatives: Annotated[
        int | None, typer.Option(help="Runner-up values kept per prediction (default: all).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--validate", help="Validate the export against the SHACL shapes.")
    ] = False,
) -> None:
    """Write predictions (and catalogued values) as RDF: each predicted value a reified
    statement with its confidence, alternatives and PROV-O provenance; values SKOS concepts.
    The same input always gives the same graph."""
    from heritage.kg import Catalogue, ExportConfig, Vocabulary, export_graph

    try:
        if predictions is None and records is None:
            raise ValueError("give a predictions file and/or --records")
        vocab = Vocabulary.from_specs(vocabulary or [])
        config = ExportConfig(
            property_uris=_pairs(property_uri, "--property-uri"),
            vocabulary=vocab,
            strict_vocabulary=strict_vocabulary,
            max_alternatives=max_alternatives,
        )
        if base_uri:
            config.base_uri = base_uri
        table = activity = catalogue = None
        if predictions is not None:
            table, activity = _predictions(predictions, model, kind, prop, (started, ended))
        if records is not None:
            catalogue = Catalogue.for_export(
                records,
                id_column=id_column,
                concepts=names(concepts) or (),
                literals=names(literals) or (),
                predictions=table,
                model=model,
            )
        graph = export_graph(table, activity=activity, catalogue=catalogue, config=config)
        graph.write(out, fmt)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(exc)
    console.print(f"{out}: {graph.summary()}", markup=False)
    if graph.minted and vocab is not None:
        console.print(
            "[yellow]minted[/] (not in the vocabulary): "
            + ", ".join(f"{n} {p}" for p, n in graph.minted.items())
        )
    if check:
        _validate(out, exit_code=2)


def _predictions(
    path: Path, model: Path | None, kind: str, prop: str, times: tuple[str | None, str | None]
):
    """The predictions table and the activity that made it (``times``: --started, --ended)."""
    from heritage.kg import Activity, ModelEntity, read_predictions

    if model is None:
        raise ValueError(
            "predictions need their provenance: pass --model (the metadata model folder "
            "or image model file that made them)"
        )
    table = read_predictions(path, kind, prop)  # type: ignore[arg-type]
    entity = ModelEntity.from_path(model)
    started, ended = _when(times[0], "--started"), _when(times[1], "--ended")
    return table, Activity.from_file(path, entity, entity.command, started=started, ended=ended)


def _validate(file: Path, exit_code: int) -> None:
    """Check ``file`` against the SHACL shapes; exit with ``exit_code`` when it violates them."""
    from heritage.kg import validate

    try:
        result = validate(file)
    except (ValueError, FileNotFoundError) as exc:
        fail(exc)
    if not result.conforms:
        console.print(result.report, markup=False)
        if exit_code == 2:
            fail(ValueError(f"{file} violates the SHACL shapes ({result.violations} results)"))
        console.print(f"[bold red]invalid[/]: {result.violations} violation(s)")
        raise typer.Exit(code=exit_code)
    console.print(f"[green]valid[/]: {file} conforms to the SHACL shapes")


@kg_app.command("load")
def kg_load(
    files: Annotated[list[Path], typer.Argument(help="RDF files (.ttl, .nt, .jsonld).")],
    store: StoreDir = Path("kg-store"),
    graph: NamedGraph = None,
    replace: Replace = False,
    fmt: RdfFormat = None,
    explorer_tables: Annotated[
        bool,
        typer.Option(
            help="Also build the tables `heritage explore` serves from (STORE.explorer), so "
            "that it starts at once."
        ),
    ] = True,
) -> None:
    """Load RDF files into the embedded store (Oxigraph, on disk; created if absent)."""
    import time

    from heritage.kg import KnowledgeGraph

    missing = [str(f) for f in files if not f.is_file()]
    if missing:  # before the store is opened, so a typo leaves no empty store behind
        fail(FileNotFoundError(f"no such RDF file: {', '.join(missing)}"))
    try:
        kg = KnowledgeGraph(store)
    except (ValueError, OSError) as exc:
        fail(exc)
    try:  # closed, with its lock, even when a file fails: the next writer may open the store
        start = time.perf_counter()
        total = 0
        for i, file in enumerate(files):
            total += kg.load(file, fmt=fmt, graph=graph, replace=replace and i == 0)
        kg.flush()
        seconds = time.perf_counter() - start
        console.print(
            f"{total:,} triples loaded into {store} in {seconds:.1f} s "
            f"({total / max(seconds, 1e-9):,.0f} triples/s); it holds {len(kg):,}"
        )
        if explorer_tables:
            from heritage.explore import build_tables, default_cache

            start = time.perf_counter()
            build_tables(kg, default_cache(store))
            console.print(
                f"explorer tables built in {time.perf_counter() - start:.1f} s "
                f"({default_cache(store)})"
            )
    except (ValueError, FileNotFoundError, OSError) as exc:
        fail(exc)
    finally:
        kg.close()


@kg_app.command("query")
def kg_query(
    sparql: Annotated[str | None, typer.Argument(help="The SPARQL query.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Read the query from a file.")
    ] = None,
    store: StoreDir = Path("kg-store"),
    endpoint: EndpointUrl = None,
    user: User = None,
    password: Password = None,
    auth: Auth = "digest",
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="table, csv, tsv or json (SELECT/ASK); ttl, nt or jsonld (CONSTRUCT).",
        ),
    ] = "table",
    limit: Annotated[int, typer.Option(help="Rows shown as a table.")] = 50,
) -> None:
    """Run a SPARQL query on the embedded store (or a server with --endpoint)."""
    import sys

    from heritage.kg import EndpointError, KnowledgeGraph, QueryError, read_query

    try:
        text = read_query(sparql, file)
        graph = _graph(store, endpoint, user, password, auth)
        if fmt != "table":
            sys.stdout.buffer.write(graph.query_to(text, fmt))
            return
        # a server answers SELECT as a table; the store any query, CONSTRUCT as triples
        result = graph.query(text) if isinstance(graph, KnowledgeGraph) else graph.select(text)
    except (QueryError, EndpointError, ValueError, FileNotFoundError, OSError) as exc:
        fail(exc)
    if isinstance(result, bool):
        console.print("yes" if result else "no")
    elif isinstance(result, list):  # CONSTRUCT/DESCRIBE as a table: N-Triples lines
        for triple in result[:limit]:
            console.print(f"{triple} .", markup=False)
    else:
        print(result.head(limit).to_string(index=False))
        if len(result) > limit:
            console.print(f"… {len(result) - limit} more rows (--limit, or --format csv)")


@kg_app.command("push")
def kg_push(
    file: Annotated[Path, typer.Argument(help="RDF file (.ttl, .nt, .jsonld) to send.")],
    endpoint: Annotated[
        str,
        typer.Option(
            help="Graph Store endpoint (protocol graph-store; Virtuoso: "
            "http://HOST:8890/sparql-graph-crud-auth) or update endpoint (protocol update; "
            "Virtuoso: /sparql-auth)."
        ),
    ],
    protocol: Annotated[
        str,
        typer.Option(
            help="graph-store (Graph Store HTTP protocol: N-Triples POSTs, fast) or update "
            "(SPARQL 1.1 INSERT DATA: works wherever updates do, slower)."
        ),
    ] = "graph-store",
    graph: NamedGraph = None,
    replace: Replace = False,
    chunk_size: Annotated[
        int | None,
        typer.Option(help="Triples per request (default: 20,000 graph-store, 1,000 update)."),
    ] = None,
    user: User = None,
    password: Password = None,
    auth: Auth = "digest",
) -> None:
    """Send an RDF file to a SPARQL 1.1 server in chunks."""
    from heritage.kg import EndpointError

    try:
        server = _endpoint(endpoint, user, password, auth)
        report = server.push(
            file,
            graph=graph,
            protocol=protocol,  # type: ignore[arg-type]
            chunk_size=chunk_size,
            replace=replace,
        )
    except (EndpointError, ValueError, FileNotFoundError) as exc:
        fail(exc)
    console.print(
        f"{report.triples:,} triples pushed to {endpoint} in {report.requests} requests, "
        f"{report.seconds:.1f} s ({report.triples_per_second:,.0f} triples/s)"
    )


@kg_app.command("records")
def kg_records(
    out: Annotated[Path, out_option("Records CSV to write.")] = Path("records.csv"),
    store: StoreDir = Path("kg-store"),
    endpoint: EndpointUrl = None,
    user: User = None,
    password: Password = None,
    auth: Auth = "digest",
    id_column: Annotated[str, typer.Option(help="Name of the id column.")] = "record",
    columns: Annotated[
        list[str] | None, typer.Option(help="Columns to write, in order (default: all).")
    ] = None,
    fill_threshold: Annotated[
        float | None,
        typer.Option(
            help="Fill unknown values with predictions of at least this confidence "
            "(catalogued, else predicted)."
        ),
    ] = None,
    language: Annotated[
        str | None, typer.Option(help="Preferred language of concept labels.")
    ] = None,
) -> None:
    """Read the catalogue back out of the graph as a records table that `heritage metadata
    fit/predict` accept."""
    from heritage.kg import EndpointError, QueryError

    try:
        table = _graph(store, endpoint, user, password, auth).records(
            names(columns), id_column=id_column, fill_threshold=fill_threshold, language=language
        )
    except (QueryError, EndpointError, ValueError, FileNotFoundError, OSError) as exc:
        fail(exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    console.print(f"{len(table)} records, {len(table.columns) - 1} columns written to {out}")


@kg_app.command("reviews")
def kg_reviews(
    out: Annotated[Path, out_option("Labels CSV to write.")] = Path("reviewed.csv"),
    store: StoreDir = Path("kg-store"),
    endpoint: EndpointUrl = None,
    user: User = None,
    password: Password = None,
    auth: Auth = "digest",
    include_rejected: Annotated[
        bool, typer.Option(help="Also list rejected predictions (with an empty value).")
    ] = False,
) -> None:
    """Export curators' reviews (from `heritage explore`) as a labels table: accepted and
    corrected values, with who decided and when. `heritage metadata fit --extra-labels` and
    `heritage train --extra-labels` read it."""
    from heritage.kg import EndpointError, QueryError, read_reviews

    try:
        graph = _graph(store, endpoint, user, password, auth)
        table = read_reviews(graph, include_rejected=include_rejected)
    except (QueryError, EndpointError, ValueError, FileNotFoundError, OSError) as exc:
        fail(exc)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    decided = table["decision"].value_counts().to_dict() if len(table) else {}
    summary = ", ".join(f"{n} {d}" for d, n in sorted(decided.items())) or "no reviews yet"
    console.print(f"{len(table)} reviewed labels ({summary}) written to {out}")


@kg_app.command("validate")
def kg_validate(
    file: Annotated[Path, typer.Argument(help="RDF file to check (.ttl, .nt, .jsonld).")],
) -> None:
    """Check a file against heritage's SHACL shapes (pySHACL; exits 1 when it violates them)."""
    _validate(file, exit_code=1)


@kg_app.command("shapes")
def kg_shapes() -> None:
    """Print the SHACL shapes (Turtle) that describe heritage's graphs."""
    from heritage.kg import SHAPES_TTL

    print(SHAPES_TTL, end="")
