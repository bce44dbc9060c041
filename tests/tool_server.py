"""HTTP tool endpoints on loopback for tests and benchmarks: they record what they received
and when, measured at the server.

As a process, for load tests:

    python -m tests.tool_server --port 30001
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Litestar, Request, post

from tests.loopback import LoopbackServer, serving


class Received(msgspec.Struct, frozen=True):
    path: str
    body: Any
    started: float
    finished: float


class ToolServer:
    def __init__(self, *, keep: bool = True) -> None:
        self.received: list[Received] = []
        self.arrived: list[tuple[str, Any]] = []
        """Each request's path and body as it arrives, before it is answered (a call whose
        caller died mid-call is here, and perhaps never in `received`)."""
        self.keep = keep
        """Record what arrives (tests read it); a long-running load server does not."""
        self.url = ""

    def calls(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def app(self) -> Litestar:
        server = self

        async def record(request: Request[Any, Any, Any], result: Any, sleep_s: float) -> Any:
            started = time.monotonic()
            body = await request.json()
            if server.keep:
                server.arrived.append((request.url.path, body))
            if sleep_s:
                await asyncio.sleep(sleep_s)
            if server.keep:
                server.received.append(
                    Received(request.url.path, body, started, time.monotonic())
                )
            return result

        @post("/sleep", status_code=200)
        async def sleep(request: Request[Any, Any, Any]) -> Any:
            body = await request.json()
            ms = float(body.get("ms", 0))
            return await record(request, {"slept_ms": ms, "label": body.get("label")}, ms / 1000)

        @post("/city", status_code=200)
        async def city(request: Request[Any, Any, Any]) -> Any:
            return await record(request, {"city": "Oslo", "country": "Norway"}, 0.05)

        @post("/weather", status_code=200)
        async def weather(request: Request[Any, Any, Any]) -> Any:
            body = await request.json()
            return await record(request, {"city": body.get("city"), "temp_c": 7}, 0.05)

        @post("/page", status_code=200)
        async def page(request: Request[Any, Any, Any]) -> Any:
            body = await request.json()
            words = f"{body.get('url', 'page')} holds words of its own. "
            size = int(body.get("chars", 1000))
            text = (words * (size // len(words) + 1))[:size]
            return await record(request, {"url": body.get("url"), "text": text}, 0)

        return Litestar([sleep, city, weather, page])


@contextlib.asynccontextmanager
async def tool_server() -> AsyncIterator[ToolServer]:
    tools = ToolServer()
    async with serving(tools.app()) as server:
        tools.url = server.url
        yield tools


def http_tool(
    url: str,
    name: str,
    description: str,
    properties: dict[str, Any],
    required: list[str],
    **policy: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required},
        "executor": {"kind": "http", "url": url},
        "policy": {"timeout_s": 5, **policy},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the tool endpoints until stopped.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30001)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.host, args.port))


async def _serve_forever(host: str, port: int) -> None:
    tools = ToolServer(keep=False)
    server = LoopbackServer(tools.app(), host=host, port=port, own_signals=True, log_config=None,
                            access_log=False)
    print(f"tool server serving {await server.start()}", flush=True)
    await server.wait_closed()


if __name__ == "__main__":
    main()
