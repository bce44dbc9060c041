"""The built-in viewer: static pages (HTML, JS, CSS) for traces and for eval runs, reading the
service's own routes."""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler

STATIC = Path(__file__).resolve().parent.parent / "static"
# Small files that change with the app: browsers revalidate them on every load. Litestar adds
# "; charset=utf-8" to the text/* media types.
_HEADERS = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}


def _page(name: str, media_type: str) -> Response[bytes]:
    return Response((STATIC / name).read_bytes(), media_type=media_type, headers=_HEADERS)


@get("/viewer", include_in_schema=False)
async def viewer_page() -> Response[bytes]:
    return _page("viewer.html", "text/html")


@get("/viewer/viewer.js", include_in_schema=False)
async def viewer_script() -> Response[bytes]:
    return _page("viewer.js", "text/javascript")


@get("/viewer/viewer.css", include_in_schema=False)
async def viewer_styles() -> Response[bytes]:
    return _page("viewer.css", "text/css")


@get("/viewer/dom.js", include_in_schema=False)
async def dom_script() -> Response[bytes]:
    return _page("dom.js", "text/javascript")


@get("/viewer/evals", include_in_schema=False)
async def evals_page() -> Response[bytes]:
    return _page("evals.html", "text/html")


@get("/viewer/evals.js", include_in_schema=False)
async def evals_script() -> Response[bytes]:
    return _page("evals.js", "text/javascript")


VIEWER_ROUTES: list[HTTPRouteHandler] = [viewer_page, viewer_script, viewer_styles, dom_script,
                                         evals_page, evals_script]
