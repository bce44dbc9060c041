"""MCP server routes: register a server as a tool source, list, refresh and delete it."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from app.auth import require
from app.pages import Cursor, Limit, page_of
from app.tenancy import tenant_of
from tools.mcp.servers import McpServerRecord, McpServers, McpServerSpec, McpServerTools

Servers = NamedDependency[McpServers]
WRITE = require("tools:write")


class McpServerPage(msgspec.Struct, frozen=True):
    items: list[McpServerRecord]
    next_cursor: str | None = None


class McpServerController(Controller):
    path = "/v1/mcp/servers"
    tags = ["mcp"]
    guards = [require("tools:read")]

    @post("/", status_code=HTTP_201_CREATED, summary="Register an MCP server and import its tools",
          guards=[WRITE])
    async def register_server(
        self, request: Request[Any, Any, Any], servers: Servers, data: JSONBody[McpServerSpec]
    ) -> McpServerTools:
        """Connects, lists the server's tools and imports them into the namespace `name`; an
        unreachable server or a failing command stores nothing."""
        return await servers.register(tenant_of(request), data)

    @get("/", summary="List registered MCP servers")
    async def list_servers(
        self, request: Request[Any, Any, Any], servers: Servers, cursor: Cursor = None,
        limit: Limit = 50,
    ) -> McpServerPage:
        found = await servers.list_servers(tenant_of(request))
        return McpServerPage(*page_of(found, lambda s: s.name, cursor, limit))

    @get("/{name:str}", summary="An MCP server and the names of its tools")
    async def get_server(
        self, request: Request[Any, Any, Any], servers: Servers, name: FromPath[str]
    ) -> McpServerTools:
        return await servers.get(tenant_of(request), name)

    @post("/{name:str}/refresh", status_code=HTTP_200_OK, guards=[WRITE],
          summary="Bring the server's tools in step with its listing")
    async def refresh_server(
        self, request: Request[Any, Any, Any], servers: Servers, name: FromPath[str]
    ) -> McpServerTools:
        return await servers.refresh(tenant_of(request), name)

    @delete("/{name:str}", status_code=HTTP_204_NO_CONTENT, guards=[WRITE],
            summary="Close the server's session and delete its tools (versions stay)")
    async def delete_server(
        self, request: Request[Any, Any, Any], servers: Servers, name: FromPath[str]
    ) -> None:
        await servers.delete(tenant_of(request), name)
