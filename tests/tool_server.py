"""HTTP tool endpoints on loopback for tests and benchmarks: they record what they received
and when, measured at the server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Litestar, Request, post

from tests.loopback import serving


class Received(msgspec.Struct, frozen=True):
    path: str
    body: Any
    started: float
    finished: float


class ToolServer:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.url = ""

    def calls(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def app(self) -> Litestar:
        server = self

        async def record(request: Request[Any, Any, Any], result: Any, sleep_s: float) -> Any:
            started = time.monotonic()
            body = await request.json()
            if sleep_s:
                await asyncio.sleep(sleep_s)
            server.received.append(Received(request.url.path, body, started, time.monotonic()))
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

        return Litestar([sleep, city, weather])


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
