"""Retrieval routes: whether a tenant learns from use, and where retrieval misses."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from app.auth import require
from app.tenancy import tenant_of
from tools.learned import SearchFinds
from tools.learning import Learning, RetrievalSettings

Learnt = NamedDependency[Learning]


class MissList(msgspec.Struct, frozen=True):
    items: list[SearchFinds]
    """Each tool the model had to find with `search_tools` before a good call of it, the most
    found first: requests retrieval did not offer the tool for."""


class RetrievalController(Controller):
    path = "/v1/retrieval"
    tags = ["retrieval"]

    @get("/settings", guards=[require("tools:read")], summary="How retrieval learns")
    async def get_settings(self, request: Request[Any, Any, Any], learning: Learnt
                           ) -> RetrievalSettings:
        return await learning.settings(tenant_of(request))

    @put("/settings", guards=[require("tools:write")], summary="Turn learning from use on or off")
    async def put_settings(self, request: Request[Any, Any, Any], learning: Learnt,
                           data: JSONBody[RetrievalSettings]) -> RetrievalSettings:
        return await learning.set_settings(tenant_of(request), data)

    @get("/misses", guards=[require("tools:read")],
         summary="Tools the model had to find with search_tools")
    async def list_misses(self, request: Request[Any, Any, Any], learning: Learnt) -> MissList:
        return MissList(items=await learning.search_finds(tenant_of(request)))
