"""Live MCP sessions: one per registered server per process, opened on first use, closed on
shutdown, and told when the server's tool list changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client, MCPError
from mcp.client.subscriptions import ListenNotSupportedError
from mcp_types import CONNECTION_CLOSED
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from tools.egress import EgressPolicy
from tools.errors import McpCallFailed, McpUnreachable
from tools.mcp.transport import (
    EgressRefusedMcp,
    McpTransport,
    StderrTail,
    UnresolvableMcp,
    connected,
    describe,
    secret_values,
)
from tools.redaction import Redactor

log = logging.getLogger(__name__)

ToolsChanged = Callable[[], Awaitable[None]]
_MAX_LIST_PAGES = 1000  # a server whose cursor never ends cannot hang a listing
_CLIENT = types.Implementation(name="switchboard", version="0.1.0")


class McpSession:
    """One MCP connection. It lives in a task of its own: the MCP library's cancel scopes must
    be entered and left in one task, and a failing connection then ends that task only."""

    def __init__(
        self,
        transport: McpTransport,
        egress: EgressPolicy,
        *,
        on_tools_changed: ToolsChanged | None = None,
    ) -> None:
        self.transport = transport
        self.target = describe(transport)
        self._redact = Redactor(secret_values(transport))
        self._egress = egress
        self._on_tools_changed = on_tools_changed
        self._stderr = StderrTail()
        self._client: Client | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._broken = False

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and not self._broken

    async def open(self, timeout_s: float) -> None:
        """Connect and finish the handshake; raise `McpUnreachable` saying why not."""
        self._task = asyncio.create_task(self._hold(), name=f"mcp-session {self.target}")
        ready = asyncio.create_task(self._ready.wait())
        try:
            done, _ = await asyncio.wait({ready, self._task}, timeout=timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._ready.is_set() and not self._task.done():
            return
        if not done:
            # Stuck in the handshake, the task cannot see the stop signal: cancel it.
            self._task.cancel()
            await self.close()
            raise McpUnreachable(self.target, self._redact(
                f"did not complete the MCP handshake within {timeout_s:g} s{self._stderr_note()}"
            ))
        raise self._unreachable(self._task.exception(), "during the handshake")

    async def close(self) -> None:
        self._stop.set()
        # A refresh running in the session's own task may replace it; it cannot wait for itself.
        if self._task is None or self._task is asyncio.current_task():
            return
        # The library bounds its own shutdown (a stdio server gets a grace period, then a kill).
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self._task

    async def list_tools(self) -> list[types.Tool]:
        """Every tool the server lists, all pages."""
        client = self._live()
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_LIST_PAGES):
            try:
                page = await client.list_tools(cursor=cursor)
            except MCPError as exc:
                raise self._call_error(exc, "tools/list") from exc
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                return tools
        raise McpCallFailed(self.target, "tools/list", f"listed more than {_MAX_LIST_PAGES} pages")

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        client = self._live()
        try:
            return await client.call_tool(name, arguments)
        except MCPError as exc:
            raise self._call_error(exc, f"tool {name!r}") from exc
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, httpx2.TransportError) as exc:
            self._broken = True
            raise self._unreachable(exc, f"while calling tool {name!r}") from exc
        except RuntimeError as exc:
            # The library checks structured results against the tool's output schema.
            raise McpCallFailed(self.target, f"tool {name!r}", self._redact(str(exc)),
                                error_type="bad_output") from exc

    # --- the session's own task ------------------------------------------------------------

    async def _hold(self) -> None:
        client = Client(
            connected(self.transport, self._egress, self._stderr),
            cache=None,  # a refresh must see the server's listing, not a remembered one
            message_handler=self._on_message,
            client_info=_CLIENT,
        )
        async with client:
            self._client = client
            self._ready.set()
            async with anyio.create_task_group() as group:
                group.start_soon(self._listen, client)
                group.start_soon(self._watch_changes)
                await self._stop.wait()
                group.cancel_scope.cancel()

    async def _listen(self, client: Client) -> None:
        """Keep a change subscription open on servers of the 2026 protocol. Its notifications
        reach `_on_message` like the older protocol's do; this only holds the stream open, and
        ends the session when the stream drops, so the next call reconnects before sending."""
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            return
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _ in subscription:
                    pass
        except (ListenNotSupportedError, MCPError) as exc:
            if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
                raise
            log.info("MCP server %s offers no change subscription (%s)", self.target, exc)
            await self._stop.wait()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._changed.set()

    async def _watch_changes(self) -> None:
        while self._on_tools_changed is not None:
            await self._changed.wait()
            self._changed.clear()
            await self._on_tools_changed()

    # --- errors ----------------------------------------------------------------------------

    def _live(self) -> Client:
        if not self.alive or self._client is None:
            raise McpUnreachable(self.target, "the session is closed")
        return self._client

    def _call_error(self, exc: MCPError, what: str) -> McpCallFailed | McpUnreachable:
        if exc.code == CONNECTION_CLOSED:
            self._broken = True
            return McpUnreachable(self.target, self._redact(
                f"the connection closed before {what} was answered{self._stderr_note()}"
            ))
        return McpCallFailed(
            self.target, what, self._redact(f"MCP error {exc.code}: {exc.error.message}")
        )

    def _unreachable(self, exc: BaseException | None, when: str) -> McpUnreachable:
        cause = _first_cause(exc)
        if isinstance(cause, EgressRefusedMcp | UnresolvableMcp):
            # The URL itself cannot be used: a fault of the request, named by its field.
            return McpUnreachable(self.target, str(cause), field="/transport/url")
        match cause:
            case MCPError(code=code) if code == CONNECTION_CLOSED:
                reason = f"closed the connection {when}"
            case MCPError() as error:
                reason = f"answered with MCP error {error.code} {when}: {error.error.message}"
            case OSError(strerror=strerror) if strerror:
                reason = f"could not be started: {strerror}"
            case httpx2.HTTPStatusError(response=response):
                reason = f"answered HTTP {response.status_code} {when}"
            case httpx2.TransportError():
                reason = f"could not be reached {when} ({type(cause).__name__}: {cause})"
            case _:
                reason = f"failed {when} ({type(cause).__name__}: {cause})"
        return McpUnreachable(self.target, self._redact(reason + self._stderr_note()))

    def _stderr_note(self) -> str:
        text = self._stderr.text()
        return f"; it wrote to stderr: {text}" if text else ""



def _first_cause(exc: BaseException | None) -> BaseException | None:
    """The first real error inside the task groups' exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    return exc
