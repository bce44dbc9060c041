"""Router routes: train a router from an eval run, and list a tenant's routers."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_201_CREATED

from app.auth import require
from app.pages import Cursor, Limit, page_of
from app.tenancy import tenant_of
from planner.routers import Routers, RouterSummary
from planner.routing import RouterIn

RoutersDep = NamedDependency[Routers]


class RouterList(msgspec.Struct, frozen=True):
    items: list[RouterSummary]
    next_cursor: str | None = None
    """Newest first; the first routes the tenant's `"model": "auto"` turns."""


class RouterController(Controller):
    path = "/v1/routers"
    tags = ["routers"]

    @post("/", status_code=HTTP_201_CREATED, guards=[require("evals:write")],
          summary="Train a router from an eval run; it routes model 'auto' turns from now on")
    async def create_router(
        self, request: Request[Any, Any, Any], routers: RoutersDep, data: JSONBody[RouterIn]
    ) -> RouterSummary:
        return await routers.create(tenant_of(request), data)

    @get("/", guards=[require("evals:read")], summary="The tenant's routers, newest first")
    async def list_routers(self, request: Request[Any, Any, Any], routers: RoutersDep,
                           cursor: Cursor = None, limit: Limit = 50) -> RouterList:
        found = await routers.list(tenant_of(request))
        return RouterList(*page_of(found, lambda r: r.id, cursor, limit))
