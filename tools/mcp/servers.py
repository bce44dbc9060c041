"""MCP servers as tool sources: register one, keep its tools in step, delete it."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import asyncpg
import msgspec

from tools.egress import EgressPolicy
from tools.errors import (
    McpError,
    McpServerExists,
    McpServerNotFound,
    McpUnreachable,
    ToolsError,
)
from tools.mcp import store
from tools.mcp.importing import tool_specs
from tools.mcp.session import McpSession
from tools.mcp.sessions import McpSessions
from tools.mcp.store import RefreshStatus, ServerRow
from tools.mcp.transport import McpTransport, McpTransportView, check, public_view
from tools.registry import ToolRegistry
from tools.spec import McpExecutor, Name, ToolSpec

log = logging.getLogger(__name__)
_PAGE = 500


class McpServerSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A server to register. Its tools go to the namespace `name`."""

    name: Name
    transport: McpTransport


class McpServerRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A registered server as the API returns it (no environment or header values)."""

    name: str
    transport: McpTransportView
    created_at: datetime
    refreshed_at: datetime | None
    refresh_status: RefreshStatus | None
    refresh_error: str | None

    @classmethod
    def of(cls, row: ServerRow) -> McpServerRecord:
        return cls(
            name=row.name,
            transport=public_view(row.transport),
            created_at=row.created_at,
            refreshed_at=row.refreshed_at,
            refresh_status=row.refresh_status,
            refresh_error=row.refresh_error,
        )


class McpServerTools(msgspec.Struct, frozen=True, kw_only=True):
    """A server and the names of its tools in the registry; after a registration or a refresh,
    also what that changed."""

    server: McpServerRecord
    tools: list[str]
    added: list[str] = []
    updated: list[str] = []
    removed: list[str] = []


class McpServers:
    """Registered MCP servers of every tenant, and this process's sessions to them."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: ToolRegistry,
        egress: EgressPolicy,
        *,
        stdio_commands: frozenset[str] | None = frozenset(),
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.connect_timeout_s = connect_timeout_s
        self.sessions = McpSessions(
            pool, egress, stdio_commands=stdio_commands, connect_timeout_s=connect_timeout_s,
            on_tools_changed=self._on_change, box=registry.box,
        )
        self._refreshing: dict[tuple[str, str], asyncio.Lock] = {}

    async def register(self, tenant: str, spec: McpServerSpec) -> McpServerTools:
        """Connect, list the tools and import them; nothing is stored unless all of it works."""
        check(spec.transport)
        await self._refuse_taken(tenant, spec.name)
        session = await self.sessions.connect(tenant, spec.name, spec.transport)
        try:
            specs = await self._listed_specs(session, spec.name)
            # A change the server announces meanwhile is refreshed once this is done.
            async with self._refresh_lock(tenant, spec.name):
                await self._store(tenant, spec, specs)
                await self.sessions.adopt(tenant, spec.name, session)
        except BaseException:
            await session.close()
            raise
        names = sorted(s.name for s in specs)
        return McpServerTools(server=await self._record(tenant, spec.name), tools=names,
                              added=names)

    async def list_servers(self, tenant: str) -> list[McpServerRecord]:
        rows = await store.list_all(self.pool, tenant, self.registry.box)
        return [McpServerRecord.of(row) for row in rows]

    async def get(self, tenant: str, name: str) -> McpServerTools:
        record = await self._record(tenant, name)
        return McpServerTools(server=record, tools=sorted(await self._imported(tenant, name)))

    async def refresh(self, tenant: str, name: str) -> McpServerTools:
        """Bring the server's tools in step with its listing: add, update, delete."""
        async with self._refresh_lock(tenant, name):
            await self._record(tenant, name)
            try:
                result = await self._refresh(tenant, name)
            except McpError as exc:
                await store.record_refresh(self.pool, tenant, name, str(exc))
                if isinstance(exc, McpUnreachable) and exc.field is not None:
                    # The registered URL or command cannot be used (the egress policy or the
                    # command list changed, or the host stopped resolving): the server is out
                    # of reach, not a field of this request, which has no body.
                    raise McpUnreachable(exc.target, exc.reason) from exc
                raise
            await store.record_refresh(self.pool, tenant, name, None)
        return msgspec.structs.replace(result, server=await self._record(tenant, name))

    async def delete(self, tenant: str, name: str) -> None:
        """Close the session and delete the server's tools (their versions stay readable)."""
        async with self._refresh_lock(tenant, name):
            await self._record(tenant, name)
            await self.sessions.close(tenant, name)
            imported = await self._imported(tenant, name)
            await self.registry.write(tenant, [], remove=[(name, tool) for tool in imported])
            await store.delete(self.pool, tenant, name)

    async def close(self) -> None:
        await self.sessions.close_all()

    # --- steps ----------------------------------------------------------------------------

    async def _refresh(self, tenant: str, name: str) -> McpServerTools:
        session = await self.sessions.session(tenant, name)
        specs = await self._listed_specs(session, name)
        before = await self._imported(tenant, name)
        listed = {s.name for s in specs}
        gone = sorted(before - listed)
        result = await self.registry.write(tenant, specs, remove=[(name, tool) for tool in gone])
        written = {r.name for r in result.records}
        return McpServerTools(
            server=await self._record(tenant, name),
            tools=sorted(listed),
            added=sorted(written - before),
            updated=sorted(written & before),
            removed=gone,
        )

    async def _store(self, tenant: str, spec: McpServerSpec, specs: list[ToolSpec]) -> None:
        """The server row and its tools: both, or neither."""
        if not await store.insert(self.pool, tenant, spec.name, spec.transport,
                                  self.registry.box):
            raise McpServerExists(spec.name, "a server by that name is registered")
        try:
            await self.registry.write(tenant, specs)
        except BaseException:
            await store.delete(self.pool, tenant, spec.name)
            raise

    async def _listed_specs(self, session: McpSession, name: str) -> list[ToolSpec]:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                tools = await session.list_tools()
        except TimeoutError:
            raise McpUnreachable(
                session.target, f"did not list its tools within {self.connect_timeout_s:g} s"
            ) from None
        return await asyncio.to_thread(tool_specs, name, tools)  # checks: off the event loop

    async def _imported(self, tenant: str, name: str) -> set[str]:
        """Names of the live tools this server's listing put in its namespace."""
        names: set[str] = set()
        cursor: str | None = None
        while True:
            page = await self.registry.list_tools(
                tenant, namespace=name, tag=None, cursor=cursor, limit=_PAGE
            )
            names |= {
                r.name for r in page.items
                if isinstance(r.executor, McpExecutor) and r.executor.server == name
            }
            cursor = page.next_cursor
            if cursor is None:
                return names

    async def _refuse_taken(self, tenant: str, name: str) -> None:
        if await store.get(self.pool, tenant, name, self.registry.box) is not None:
            raise McpServerExists(name, "a server by that name is registered")
        page = await self.registry.list_tools(tenant, namespace=name, tag=None, cursor=None,
                                              limit=1)
        if page.items:
            raise McpServerExists(
                name, f"namespace {name!r} already holds tools; a server's tools get a "
                "namespace of their own, so choose another name"
            )

    async def _record(self, tenant: str, name: str) -> McpServerRecord:
        row = await store.get(self.pool, tenant, name, self.registry.box)
        if row is None:
            raise McpServerNotFound(name)
        return McpServerRecord.of(row)

    def _refresh_lock(self, tenant: str, name: str) -> asyncio.Lock:
        return self._refreshing.setdefault((tenant, name), asyncio.Lock())

    async def _on_change(self, tenant: str, name: str) -> None:
        """The server said its tool list changed. No caller waits for this refresh: its
        failure is stored on the server (GET shows it) and logged."""
        try:
            await self.refresh(tenant, name)
        except McpServerNotFound:
            return  # deleted, or not yet stored while it registers
        except (ToolsError, asyncpg.PostgresError, OSError) as exc:
            log.warning("refreshing MCP server %r of tenant %r after a change failed: %s",
                        name, tenant, exc)
