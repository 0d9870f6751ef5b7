"""`heritage explore`: the curators' explorer over a knowledge graph."""

from pathlib import Path
from typing import Annotated

import typer

from heritage.cli.base import EXPLORER_PORT, Port, app, fail
from heritage.cli.kg import Password, User


@app.command()
def explore(
    store: Annotated[
        Path | None, typer.Option(help="Embedded store folder (`heritage kg load`).")
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            help="A SPARQL 1.1 query URL instead of a store (Virtuoso: http://host:8890/sparql; "
            "with --user and --password, reviews go to its Graph Store)."
        ),
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(help="`heritage index build` folder: similar objects and search by image."),
    ] = None,
    images: Annotated[
        list[Path] | None,
        typer.Option("--images", help="Folder images are served from (repeatable)."),
    ] = None,
    curator: Annotated[
        str | None, typer.Option(help="Your name, recorded with every review you make.")
    ] = None,
    read_only: Annotated[bool, typer.Option(help="Browse only: reviews disabled.")] = False,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Port = EXPLORER_PORT,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Where the facet table and text index are kept (default: STORE.explorer)."
        ),
    ] = None,
    user: User = None,
    password: Password = None,
) -> None:
    """Browse, search and review the predictions of a knowledge graph in a web browser."""
    import getpass

    from heritage.explore import Explorer, ExplorerConfig, ExplorerError
    from heritage.kg import EndpointError, QueryError

    if store is None and endpoint is None:
        store = Path("kg-store")
    if not read_only and curator is None:
        curator = getpass.getuser()
    try:
        explorer = Explorer.open(
            ExplorerConfig(
                store=None if endpoint else store,
                endpoint=endpoint,
                endpoint_user=user,
                endpoint_password=password,
                index=index,
                images=tuple(images or ()),
                curator=curator,
                read_only=read_only,
                cache=cache,
            )
        )
    except (ExplorerError, QueryError, EndpointError, ValueError, OSError) as exc:
        fail(exc)
    from heritage.explore.app import serve

    serve(explorer, host=host, port=port)
