"""The explorer's web app: FastAPI routes that render :class:`~heritage.explore.Explorer`'s
answers with Jinja2 templates (server-side HTML, inline SVG charts, a few lines of own
JavaScript; nothing from a CDN).

Security, in order of the requests that reach it:

* every page state is in the URL (GET) and read-only;
* every POST carries a CSRF token (a cookie set with the page, echoed in a hidden field:
  another site can post a form but cannot read the cookie to echo it);
* reviews also need the start token: ``/login?token=…`` (the URL printed at start) sets it
  as an HttpOnly, SameSite=Strict cookie; ``--read-only`` disables reviews altogether;
* images are served only from the ``--images`` roots (:class:`~heritage.explore.images.ImageRoots`)
  and uploads are size-limited and checked before decoding.
"""

from __future__ import annotations

import hmac
import mimetypes
import secrets
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from heritage.explore.charts import bars_svg, histogram_svg
from heritage.explore.explorer import FACET_VALUES_SHOWN, Explorer, ExplorerError, SearchState
from heritage.explore.i18n import LANGUAGES, translator
from heritage.explore.images import MAX_UPLOAD_BYTES, UploadError, thumbnail

__all__ = ["create_app"]

HERE = Path(__file__).parent
TOKEN_COOKIE = "heritage_token"
CSRF_COOKIE = "heritage_csrf"


def create_app(explorer: Explorer, token: str | None = None) -> FastAPI:
    """The web app over ``explorer``. ``token``: what reviews must present (a random one
    by default; the CLI prints the login URL with it)."""
    app = FastAPI(title="heritage explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.explorer = explorer
    app.state.token = token or secrets.token_urlsafe(24)
    pages = _Pages(app, explorer)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    # one group of routes per area of the explorer; no two groups share a path
    _add_browse_routes(app, pages)
    _add_similar_routes(app, pages)
    _add_review_routes(app, pages)
    _add_file_routes(app, pages)
    return app


class _Pages:
    """What every route needs to answer with a page (templates, languages, the explorer and
    the app's token), in one object so that the routes can be registered in groups."""

    def __init__(self, app: FastAPI, explorer: Explorer) -> None:
        self.app = app
        self.explorer = explorer
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        # interface languages first, then the data's other language tags: a page in one of
        # those shows labels and texts in it, with English interface strings
        self.languages = LANGUAGES + tuple(
            code for code in explorer.table.languages if code not in LANGUAGES
        )
        self.templates.env.globals.update(
            lang_link=_lang_link,
            bars=_facet_bars,
            shown=FACET_VALUES_SHOWN,
            languages=self.languages,
        )

    @property
    def token(self) -> str:
        """The reviewers' token, read from the app on every request (``app.state.token``)."""
        return self.app.state.token

    def render(
        self, request: Request, name: str, language: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """Template ``name`` in ``language``, setting the CSRF cookie if the request lacks it."""
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(16)
        response = self.templates.TemplateResponse(
            request,
            name,
            {
                "t": translator(language),
                "lang": language,
                "ex": self.explorer,
                "csrf": csrf,
                "signed_in": _signed_in(request, self.token),
                **context,
            },
            status_code=status,
        )
        if request.cookies.get(CSRF_COOKIE) != csrf:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        return response

    def language_of(self, request: Request) -> str:
        """The page's language (``?lang=``), English when absent or unknown."""
        lang = request.query_params.get("lang", "en")
        return lang if lang in self.languages else "en"

    def not_found(self, request: Request, message: str) -> HTMLResponse:
        return self.render(request, "message.html", self.language_of(request), 404, message=message)


def _add_browse_routes(app: FastAPI, pages: _Pages) -> None:
    """Read-only pages: search, a record, and the SPARQL behind either."""
    explorer, render, language_of = pages.explorer, pages.render, pages.language_of

    @app.get("/", response_class=HTMLResponse)
    def search(request: Request):
        state = SearchState.from_params(request.query_params)
        state = SearchState(**{**state.__dict__, "language": language_of(request)})
        page = explorer.search(state)
        t = translator(state.language)
        histogram = histogram_svg(
            page.confidences, state.threshold, title=t("confidence_histogram")
        )
        return render(request, "search.html", state.language, page=page, histogram=histogram)

    @app.get("/object", response_class=HTMLResponse)
    def record(request: Request, id: str = ""):
        lang = language_of(request)
        try:
            view = explorer.record(id, lang)
        except ExplorerError as exc:
            return pages.not_found(request, str(exc))
        return render(request, "object.html", lang, view=view)

    @app.get("/sparql", response_class=HTMLResponse)
    def sparql(request: Request, object: str = ""):
        lang = language_of(request)
        if object:
            try:
                query = explorer.record_sparql(object)
            except ExplorerError as exc:
                return pages.not_found(request, str(exc))
        else:
            query = explorer.sparql(SearchState.from_params(request.query_params))
        return render(request, "sparql.html", lang, query=query)


def _add_similar_routes(app: FastAPI, pages: _Pages) -> None:
    """Search by example: a record of the collection (GET) or an uploaded image (POST)."""
    explorer, render, language_of = pages.explorer, pages.render, pages.language_of

    @app.get("/similar", response_class=HTMLResponse)
    def similar(request: Request, id: str = ""):
        lang = language_of(request)
        try:
            hits = explorer.similar(id)
        except ExplorerError as exc:
            return pages.not_found(request, str(exc))
        return render(request, "similar.html", lang, hits=hits, query_id=id)

    @app.post("/similar", response_class=HTMLResponse)
    async def similar_upload(
        request: Request, image: Annotated[UploadFile, File()], csrf: Annotated[str, Form()] = ""
    ):
        lang = language_of(request)
        if not _csrf_ok(request, csrf):
            return render(request, "message.html", lang, 403, message="CSRF check failed")
        data = await image.read(MAX_UPLOAD_BYTES + 1)
        try:
            hits = explorer.similar_to_image(data)
        except (UploadError, ExplorerError) as exc:
            return render(request, "message.html", lang, 400, message=str(exc))
        return render(request, "similar.html", lang, hits=hits, query_id=None)


def _add_review_routes(app: FastAPI, pages: _Pages) -> None:
    """Curators' side: signing in with the start token, reviewing a prediction, the queue."""
    explorer, render, language_of = pages.explorer, pages.render, pages.language_of

    @app.get("/login")
    def login(request: Request, token: str = ""):
        if not hmac.compare_digest(token.encode(), pages.token.encode()):
            return render(request, "message.html", "en", 403, message="wrong token")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.post("/review")
    def review(
        request: Request,
        prediction: Annotated[str, Form()],
        decision: Annotated[str, Form()],
        value: Annotated[str, Form()] = "",
        csrf: Annotated[str, Form()] = "",
        back: Annotated[str, Form()] = "/",
    ):
        lang = language_of(request)
        if not _csrf_ok(request, csrf):
            return render(request, "message.html", lang, 403, message="CSRF check failed")
        if not _signed_in(request, pages.token):
            return render(request, "message.html", lang, 403, message=translator(lang)("sign_in"))
        try:
            explorer.review(prediction, decision, value or None)
        except ExplorerError as exc:
            return render(request, "message.html", lang, 400, message=str(exc))
        target = back if back.startswith("/") and not back.startswith("//") else "/"
        return RedirectResponse(target, status_code=303)

    @app.get("/queue", response_class=HTMLResponse)
    def queue(request: Request, property: str = "", value: str = "", page: int = 1):
        lang = language_of(request)
        items, left = explorer.queue(property or None, value or None, max(page, 1), lang)
        return render(
            request, "queue.html", lang, items=items, left=left, prop=property, value=value,
            page=max(page, 1),
        )  # fmt: skip


def _add_file_routes(app: FastAPI, pages: _Pages) -> None:
    """Images and thumbnails from the ``--images`` roots only, and a health check."""
    explorer = pages.explorer

    @app.get("/image/{root}/{path:path}")
    def image(request: Request, root: str, path: str):
        found = explorer.images.resolve(int(root), path) if root.isdigit() else None
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(found.read_bytes(), media_type=_media_type(found.suffix))

    @app.get("/thumb/{root}/{path:path}")
    def thumb(request: Request, root: str, path: str):
        found = explorer.images.resolve(int(root), path) if root.isdigit() else None
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        try:
            data = thumbnail(found)
        except OSError:
            return Response("not an image", status_code=404, media_type="text/plain")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "records": explorer.table.n_records,
            "predictions": len(explorer.table.pred_uri),
            "startup_seconds": round(explorer.startup_seconds, 3),
        }


def _lang_link(request: Request, code: str) -> str:
    """This page's URL in another interface language."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    if code != "en":
        items.append(("lang", code))
    return request.url.path + ("?" + urlencode(items) if items else "")


def _facet_bars(facet: Any, shown: int) -> str:
    rows = [(v.label, v.catalogued, v.predicted) for v in facet.values[:shown]]
    return bars_svg(rows, title=f"{facet.property}: catalogued vs predicted")


def _signed_in(request: Request, token: str) -> bool:
    given = request.cookies.get(TOKEN_COOKIE, "")
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def _csrf_ok(request: Request, submitted: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), submitted.encode())


def _media_type(suffix: str) -> str:
    return mimetypes.guess_type(f"x{suffix.lower()}")[0] or "application/octet-stream"


def serve(
    explorer: Explorer, host: str = "127.0.0.1", port: int = 8765, token: str | None = None
) -> None:
    """Serve the explorer until Ctrl-C, printing the address and the reviewer's login URL."""
    import uvicorn

    from heritage.progress import console

    app = create_app(explorer, token)
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(
            f"[yellow]warning[/]: listening on {host}: anyone who can reach this address can "
            "browse the graph (reviews still need the token below)"
        )
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    console.print(
        f"explorer on {url}  ({explorer.table.n_records:,} records, "
        f"{len(explorer.table.pred_uri):,} predictions; ready in {explorer.startup_seconds:.1f} s)"
    )
    if explorer.can_review:
        console.print(
            f"to review as {explorer.config.curator}, open {url}/login?token={app.state.token}"
        )
    console.print("Ctrl-C to stop")
    uvicorn.run(app, host=host, port=port, log_level="warning")
