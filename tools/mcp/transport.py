"""How to reach an MCP server: a command run over stdio, or a Streamable HTTP URL."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shlex
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx2
import msgspec
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tools.egress import EgressPolicy, pin_to_checked_address
from tools.errors import FieldError, SpecInvalid
from tools.http_request import header_problems, public_url
from tools.spec import URL_PATTERN
from tools.validation import pointer

_STDERR_TAIL_BYTES = 2000
# Connecting and each request are bounded elsewhere; reads of a long-lived event stream are not.
_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=None)


class StdioTransport(
    msgspec.Struct, tag="stdio", tag_field="kind", frozen=True, kw_only=True,
    forbid_unknown_fields=True
):
    """Run `command` with `args` as a child process and speak MCP over its stdin and stdout."""

    command: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    args: list[Annotated[str, msgspec.Meta(max_length=4096)]] = []
    # Write-only: added to the process environment; the values are never returned or logged.
    env: dict[str, str] = {}


class HttpTransport(
    msgspec.Struct, tag="http", tag_field="kind", frozen=True, kw_only=True,
    forbid_unknown_fields=True,
):
    """Speak MCP over Streamable HTTP at `url`."""

    url: Annotated[str, msgspec.Meta(pattern=URL_PATTERN, description="http(s) URL")]
    # Write-only: sent with every request; the values are never returned or logged.
    headers: dict[str, str] = {}


McpTransport = StdioTransport | HttpTransport


class StdioTransportView(msgspec.Struct, tag="stdio", tag_field="kind", frozen=True, kw_only=True):
    command: str
    args: list[str]
    env_names: list[str]


class HttpTransportView(msgspec.Struct, tag="http", tag_field="kind", frozen=True, kw_only=True):
    url: str
    header_names: list[str]


McpTransportView = StdioTransportView | HttpTransportView


def check(transport: McpTransport) -> None:
    """Raise `SpecInvalid` for what the type alone cannot catch: a URL that does not parse,
    headers that cannot be sent."""
    if not isinstance(transport, HttpTransport):
        return
    errors = [FieldError(pointer("transport", "headers", name), message)
              for name, value in transport.headers.items()
              for message in header_problems(name, value)]
    try:
        httpx2.URL(transport.url)
    except httpx2.InvalidURL as exc:
        errors.insert(0, FieldError("/transport/url", f"not a usable URL: {exc}"))
    if errors:
        raise SpecInvalid(errors)


def public_view(transport: McpTransport) -> McpTransportView:
    """The transport as the API returns it: names of environment variables and headers only."""
    match transport:
        case StdioTransport(command=command, args=args, env=env):
            return StdioTransportView(command=command, args=list(args), env_names=sorted(env))
        case HttpTransport(url=url, headers=headers):
            return HttpTransportView(url=url, header_names=sorted(headers))


def describe(transport: McpTransport) -> str:
    """Which server, for error messages: the command line, or the URL without credentials."""
    match transport:
        case StdioTransport(command=command, args=args):
            return f"command {shlex.join([command, *args])!r}"
        case HttpTransport(url=url):
            return f"at {public_url(url)}"


def secret_values(transport: McpTransport) -> list[str]:
    """Values that must not appear in anything written out: every environment value and
    header the transport was given (all write-only)."""
    match transport:
        case StdioTransport(env=env):
            return list(env.values())
        case HttpTransport(headers=headers):
            return list(headers.values())


class EgressRefusedMcp(httpx2.ConnectError):
    """The MCP server's URL is not a public address and is not on the allowlist."""


class UnresolvableMcp(httpx2.ConnectError):
    """The MCP server's URL names a host that does not resolve."""


class GuardedMcpTransport(httpx2.AsyncBaseTransport):
    """The egress rule of tools/egress.py for the HTTP client the MCP library uses (httpx2)."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self.inner = httpx2.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await pin_to_checked_address(self.policy, request, EgressRefusedMcp, UnresolvableMcp)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class StderrTail:
    """The last few KB a server process wrote to stderr, kept to say why it failed."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._pipe: asyncio.ReadTransport | None = None

    def text(self) -> str:
        return self._data.decode(errors="replace").strip()

    @contextlib.asynccontextmanager
    async def writer(self) -> AsyncIterator[Any]:
        """A file to hand the child as its stderr; read until the child closes it."""
        read_fd, write_fd = os.pipe()
        reader = os.fdopen(read_fd, "rb", buffering=0)
        loop = asyncio.get_running_loop()
        self._pipe, _ = await loop.connect_read_pipe(lambda: _Collect(self._data), reader)
        with os.fdopen(write_fd, "w") as child_end:
            try:
                yield child_end
            finally:
                self._pipe.close()


class _Collect(asyncio.Protocol):
    def __init__(self, data: bytearray) -> None:
        self.data = data

    def data_received(self, chunk: bytes) -> None:
        self.data += chunk
        del self.data[:-_STDERR_TAIL_BYTES]


def _executable(command: str, env: dict[str, str]) -> str:
    """Where a bare command name is: on PATH (the registration's own when it sets one), else
    beside the service's own Python. `make run` starts the service without the virtualenv's
    bin folder on PATH, and a server installed into the virtualenv (`mcp-server-time`) is
    there."""
    if os.sep in command:
        return command
    here = str(Path(sys.executable).parent)
    found = shutil.which(command, path=env.get("PATH")) or shutil.which(command, path=here)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, f"{command!r} is not on PATH nor in {here}")
    return found


@contextlib.asynccontextmanager
async def connected(
    transport: McpTransport, egress: EgressPolicy, stderr: StderrTail
) -> AsyncIterator[Any]:
    """The MCP library's transport streams for `transport`, open while the context lasts."""
    match transport:
        case StdioTransport(command=command, args=args, env=env):
            params = StdioServerParameters(command=_executable(command, env), args=list(args),
                                           env=dict(env))
            async with stderr.writer() as errlog, stdio_client(params, errlog=errlog) as streams:
                yield streams
        case HttpTransport(url=url, headers=headers):
            client = httpx2.AsyncClient(
                headers=headers, timeout=_HTTP_TIMEOUT, transport=GuardedMcpTransport(egress)
            )
            async with client, streamable_http_client(url, http_client=client) as streams:
                yield streams
