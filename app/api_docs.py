"""The API docs: Swagger UI at /docs, its files served from the installed `swagger-ui-bundle-v2`
package (no CDN, so the page works offline), and the document at /openapi.json too."""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import OpenAPIMediaType, SwaggerRenderPlugin
from litestar.params import FromPath
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
"""What the page loads; the package's other files (its demo page points at a public document)
are not served."""
# The package's files change only with its version: browsers may keep them for a day.
_HEADERS = {"cache-control": "public, max-age=86400", "x-content-type-options": "nosniff"}


def openapi_config() -> OpenAPIConfig:
    """Swagger UI at /docs (and /docs/swagger, where it used to be), loading only this
    service's own files."""
    swagger = SwaggerRenderPlugin(
        path=["/", "/swagger"],
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f'<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png">',
    )
    return OpenAPIConfig(
        title="Switchboard",
        version="0.1.0",
        description="Function-calling orchestration: register tools, find them by meaning, and "
        "hold conversations in which a model plans and runs them.",
        path=DOCS_PATH,
        render_plugins=[swagger],
    )


@get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False)
async def docs_asset(name: FromPath[str]) -> Response[bytes]:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundException(f"no docs asset {name!r}; the page loads {', '.join(ASSETS)}")
    return Response(_asset(name), media_type=media_type, headers=_HEADERS)


@functools.cache
def _asset(name: str) -> bytes:
    """A file of the package, read once (the bundle is over a megabyte: not read from disk on
    the event loop for every page load)."""
    return (swagger_ui_path / name).read_bytes()


@get("/openapi.json", include_in_schema=False)
async def openapi_document(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The document /docs/openapi.json serves, where tools look for it first."""
    document = request.app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    return Response(msgspec.json.encode(document), media_type=OpenAPIMediaType.OPENAPI_JSON)


DOCS_ROUTES: list[HTTPRouteHandler] = [docs_asset, openapi_document]
