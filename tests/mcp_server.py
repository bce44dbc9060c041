"""An MCP server for tests, run as a process: over stdio by default, or over Streamable HTTP on
a free loopback port with --http (it prints its URL on the first line of stdout).

    python tests/mcp_server.py [--http]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("switchboard-test", log_level="WARNING")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@server.tool()
def fail(message: str) -> str:
    """Always fails with the message given."""
    raise ToolError(message)


@server.tool(annotations=ToolAnnotations(idempotentHint=True))
async def sleep(seconds: float) -> str:
    """Wait a number of seconds, then say so."""
    await asyncio.sleep(seconds)
    return f"slept {seconds:g} s"


@server.tool(name="text.echo", structured_output=False)
def echo(text: str) -> str:
    """Repeat the text."""
    return text


@server.tool(name="text/echo", structured_output=False)
def echo_too(text: str) -> str:
    """Repeat the text, under a name that clashes with text.echo once cleaned."""
    return text


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def environment(name: str) -> str:
    """The value of an environment variable of the server process."""
    return os.environ.get(name, "")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def header(ctx: Context, name: str) -> str:
    """The value of a header of the HTTP request that carried this call."""
    return (ctx.headers or {}).get(name.lower(), "")


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
async def grow(ctx: Context) -> str:
    """Add a `multiply` tool and tell the client the tool list changed."""

    def multiply(a: float, b: float) -> float:
        """Multiply two numbers."""
        return a * b

    server.add_tool(multiply)
    await ctx.notify_tools_changed()
    if (ctx.protocol_version or "") < "2026":
        # Before the 2026 protocol the notification goes on the session itself.
        await ctx.session.send_tool_list_changed()
    return "grown"


@server.tool()
def forget(name: str) -> str:
    """Remove a tool without telling anyone: only a refresh finds it gone."""
    server.remove_tool(name)
    return f"forgot {name}"


async def _serve_http() -> None:
    import uvicorn

    # Made as a TCP socket explicitly: asyncio turns Nagle off only for sockets whose protocol
    # says TCP, and with Nagle on, every kept-alive request waits out a delayed ACK (~40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    print(f"http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
    # Open event streams would hold a graceful shutdown forever.
    config = uvicorn.Config(
        server.streamable_http_app(), log_level="warning", timeout_graceful_shutdown=1
    )
    await uvicorn.Server(config).serve(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the test MCP server.")
    parser.add_argument("--http", action="store_true", help="Streamable HTTP instead of stdio")
    args = parser.parse_args(argv)
    if args.http:
        asyncio.run(_serve_http())
    else:
        server.run()


if __name__ == "__main__":
    main()
