"""The Litestar application: its lifespan owns the database, the embedder and the registry."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from app.database import database
from app.problems import EXCEPTION_HANDLERS
from app.routes.tools import ToolController
from app.settings import Settings, load_settings
from tools.embed import Embedder, SentenceTransformerEmbedder
from tools.registry import ToolRegistry
from tools.sync import ChangeListener

log = logging.getLogger("switchboard")


class Health(msgspec.Struct, frozen=True):
    status: str
    database: str
    tools_indexed: int


@get("/health", tags=["service"], summary="Ready when it answers 200")
async def health(request: Request[Any, Any, Any]) -> Response[Health]:
    registry: ToolRegistry = request.app.state.registry
    try:
        await registry.pool.fetchval("SELECT 1")
    except Exception as exc:  # any failure to reach the database means "not ready"
        log.warning("health check: database unreachable: %s", exc)
        body = Health("unavailable", f"unreachable: {type(exc).__name__}", 0)
        return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE)
    indexed = sum(registry.index_size(t) for t in registry.tenants())
    return Response(Health("ok", "ok", indexed))


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None) -> Litestar:
    """The app; `embedder` lets several apps in one process share a loaded model."""
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        model = embedder or SentenceTransformerEmbedder(settings.embedding_model)
        async with database(settings.database_url, settings.data_dir) as (dsn, pool):
            registry = ToolRegistry(pool, model)
            listener = ChangeListener(registry, dsn)
            await listener.start()
            app.state.registry = registry
            app.state.listener = listener
            log.info(
                "ready: %d tools indexed", sum(registry.index_size(t) for t in registry.tenants())
            )
            try:
                yield
            finally:
                await listener.stop()

    return Litestar(
        route_handlers=[health, ToolController],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        state=_state(settings),
        openapi_config=OpenAPIConfig(
            title="Switchboard",
            version="0.1.0",
            description="Function-calling orchestration: register tools, find them by meaning.",
            path="/docs",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
        debug=False,
    )


def _state(settings: Settings) -> Any:
    from litestar.datastructures import State

    return State({"settings": settings})
