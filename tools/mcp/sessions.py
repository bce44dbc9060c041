"""The process's MCP sessions, one per registered server, opened on first use."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import mcp_types as types

from tools.egress import EgressPolicy
from tools.errors import McpServerNotFound, McpUnreachable
from tools.mcp import store
from tools.mcp.session import McpSession
from tools.mcp.transport import McpTransport, StdioTransport, describe
from tools.sealed import SecretBox

SessionKey = tuple[str, str]
"""(tenant, server name)"""

OnToolsChanged = Callable[[str, str], Awaitable[None]]
"""Called with (tenant, server name) when a server says its tool list changed."""


class McpSessions:
    """Holds one session per server. A session found dead is replaced by a new one when next
    used (once per use: a server that cannot be reached again is reported, not retried)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        egress: EgressPolicy,
        *,
        stdio_commands: frozenset[str] | None = frozenset(),
        connect_timeout_s: float = 10.0,
        on_tools_changed: OnToolsChanged | None = None,
        box: SecretBox | None = None,
    ) -> None:
        self.pool = pool
        self.box = box
        self.egress = egress
        self.stdio_commands = stdio_commands
        self.connect_timeout_s = connect_timeout_s
        self.on_tools_changed = on_tools_changed
        self._sessions: dict[SessionKey, McpSession] = {}
        self._locks: dict[SessionKey, asyncio.Lock] = {}

    async def connect(self, tenant: str, name: str, transport: McpTransport) -> McpSession:
        """A new session that is not held yet: `adopt` it once the server is registered."""
        self._refuse_command(transport)
        session = McpSession(
            transport, self.egress, on_tools_changed=self._changed_callback(tenant, name)
        )
        await session.open(self.connect_timeout_s)
        return session

    async def adopt(self, tenant: str, name: str, session: McpSession) -> None:
        async with self._lock((tenant, name)):
            old = self._sessions.pop((tenant, name), None)
            self._sessions[(tenant, name)] = session
        if old is not None:
            await old.close()

    async def session(self, tenant: str, name: str) -> McpSession:
        """The live session of a registered server, connecting if there is none."""
        key = (tenant, name)
        async with self._lock(key):
            session = self._sessions.get(key)
            if session is not None and session.alive:
                return session
            row = await store.get(self.pool, tenant, name, self.box)
            if row is None:
                raise McpServerNotFound(name)
            if session is not None:
                await session.close()
                del self._sessions[key]
            session = await self.connect(tenant, name, row.transport)
            self._sessions[key] = session
            return session

    async def call_tool(
        self, tenant: str, server: str, tool: str, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        session = await self.session(tenant, server)
        return await session.call_tool(tool, arguments)

    async def close(self, tenant: str, name: str) -> None:
        async with self._lock((tenant, name)):
            session = self._sessions.pop((tenant, name), None)
        if session is not None:
            await session.close()

    async def close_all(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions))

    def _refuse_command(self, transport: McpTransport) -> None:
        """A stdio server is a process on this host: only commands the operator lists may run
        (None allows any)."""
        if not isinstance(transport, StdioTransport) or self.stdio_commands is None:
            return
        if transport.command not in self.stdio_commands:
            allowed = ", ".join(sorted(self.stdio_commands)) or "none"
            raise McpUnreachable(
                describe(transport),
                f"command {transport.command!r} may not be run: MCP_STDIO_COMMANDS lists the "
                f"commands MCP servers may be started with (now: {allowed}; * allows any)",
                field="/transport/command",
            )

    def _lock(self, key: SessionKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _changed_callback(self, tenant: str, name: str) -> Callable[[], Awaitable[None]] | None:
        callback = self.on_tools_changed
        if callback is None:
            return None

        async def changed() -> None:
            await callback(tenant, name)

        return changed
