"""What a tool call costs by where the tool lives, and what a turn costs by the route it comes
in by: the real service over HTTP, a real Postgres, real tool servers on loopback, and the
scripted model answering at once.

Sources: a builtin function, an HTTP tool, an OpenAPI operation (an HTTP tool whose arguments go
to the path and query), and one MCP server's `add` tool over stdio and over Streamable HTTP.
Each source runs in a service of its own on a fresh database (one MCP server's tools, one tool
name). Per source: N turns, each one call and an answer; the call's time is what the turn
recorded (`started_at` to `finished_at`: argument checks, the call and its policy), the turn's is
the client's wall time. The HTTP tools answer at once (the tool server's /sleep with 0 ms).
Routes: a new conversation and one builtin call, through `POST /v1/conversations` then
`POST /v1/conversations/{id}/turns` (two requests), and through one `POST /v1/chat/completions`
(as the openai client does without a conversation id).

    .venv/bin/python -m bench.tool_sources            # 60 turns each, rewrites the block below
    .venv/bin/python -m bench.tool_sources --quick    # 15 turns each, prints only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.main import create_app
from app.settings import Settings
from bench._markdown import publish
from bench._stack import embedded_postgres, fresh_database
from tests.loopback import LoopbackServer
from tests.scripted_model import ScriptedReply, Step, scripted_model
from tests.tool_server import http_tool, tool_server
from tools.embed import SentenceTransformerEmbedder

ADMIN_KEY = "sbk_bench_tool_sources_admin_key"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
MCP_SERVER = str(Path(__file__).parents[1] / "tests" / "mcp_server.py")
SECTION = "## Tool sources and the OpenAI-compatible route"
BEGIN, END = "<!-- tool-sources:begin -->", "<!-- tool-sources:end -->"
WARM_UP = 3
_numbers = itertools.count()

Register = Callable[[httpx.AsyncClient, str], Awaitable[None]]


class BenchError(RuntimeError):
    """The service did not do what a measured turn needs."""


@dataclass(frozen=True)
class Source:
    label: str
    tool: str
    arguments: dict[str, Any]
    register: Register
    builtins: bool = False


@dataclass
class Timings:
    call_ms: list[float]
    turn_ms: list[float]


def answering(tool: str, arguments: dict[str, Any]) -> Callable[[dict[str, Any]], Step]:
    """The model: call `tool` once, then answer with what it returned."""

    def respond(body: dict[str, Any]) -> Step:
        last = (body.get("messages") or [{}])[-1]
        if last.get("role") == "tool":
            return ScriptedReply(content=f"Result: {str(last.get('content'))[:100]}")
        return ScriptedReply(tool_calls=[(tool, json.dumps(arguments))])

    return respond


async def _expect(response: httpx.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise BenchError(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
    return response.json()


async def no_tools(client: httpx.AsyncClient, tools_url: str) -> None:
    return None


async def echo_tool(client: httpx.AsyncClient, tools_url: str) -> None:
    spec = http_tool(f"{tools_url}/sleep", "echo_label", "Echo a label back at once",
                     {"ms": {"type": "number"}, "label": {"type": "string"}}, ["ms"])
    await _expect(await client.post("/v1/tools", json=spec), 201, "registering echo_label")


async def openapi_operation(client: httpx.AsyncClient, tools_url: str) -> None:
    document = {
        "openapi": "3.1.0", "info": {"title": "echo", "version": "1"},
        "servers": [{"url": tools_url}],
        "paths": {"/sleep": {"post": {
            "operationId": "echo_operation", "summary": "Echo a label back at once",
            "parameters": [{"name": "trace", "in": "query", "schema": {"type": "string"}}],
            "requestBody": {"content": {"application/json": {"schema": {
                "type": "object", "properties": {"ms": {"type": "number"},
                                                 "label": {"type": "string"}},
                "required": ["ms"]}}}},
            "responses": {"200": {"description": "the label"}},
        }}},
    }
    body = {"document": document, "namespace": "echo"}
    await _expect(await client.post("/v1/tools/import/openapi", json=body), 200,
                  "importing the OpenAPI document")


def mcp_server(transport: dict[str, Any]) -> Register:
    async def register(client: httpx.AsyncClient, tools_url: str) -> None:
        body = {"name": "calc", "transport": transport}
        await _expect(await client.post("/v1/mcp/servers", json=body), 201,
                      "registering the MCP server")

    return register


@contextlib.asynccontextmanager
async def service(database_url: str, model_url: str, embedder: SentenceTransformerEmbedder,
                  builtins: bool) -> AsyncIterator[httpx.AsyncClient]:
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as data:
        settings = Settings(database_url=database_url, model_url=model_url, data_dir_path=data,
                            register_builtins=builtins, admin_key=ADMIN_KEY,
                            egress_allowlist="127.0.0.0/8", mcp_stdio_commands=sys.executable,
                            rate_limit_per_minute=0)
        server = LoopbackServer(create_app(settings, embedder=embedder), lifespan="on")
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=AUTH) as client:
                yield client
        finally:
            await server.stop()


async def native_turn(client: httpx.AsyncClient, message: str) -> dict[str, Any]:
    made = await _expect(await client.post("/v1/conversations", json={}), 201, "conversation")
    body = {"message": message, "stream": False}
    response = await client.post(f"/v1/conversations/{made['id']}/turns", json=body)
    turn: dict[str, Any] = await _expect(response, 200, "turn")
    return turn


async def openai_turn(client: httpx.AsyncClient, message: str) -> dict[str, Any]:
    body = {"model": "default", "messages": [{"role": "user", "content": message}]}
    completion = await _expect(await client.post("/v1/chat/completions", json=body), 200,
                               "chat completion")
    turn: dict[str, Any] = completion["switchboard"]
    return turn


Turn = Callable[[httpx.AsyncClient, str], Awaitable[dict[str, Any]]]


async def measure(client: httpx.AsyncClient, turns: int, run: Turn, tool: str) -> Timings:
    timings = Timings([], [])
    for i in range(WARM_UP + turns):
        started = time.perf_counter()
        turn = await run(client, f"use {tool}")
        wall = (time.perf_counter() - started) * 1000
        calls = turn["tool_calls"]
        if len(calls) != 1 or calls[0]["error"] is not None:
            raise BenchError(f"{tool}: expected one successful call, got {calls}")
        if i < WARM_UP:
            continue
        call = calls[0]
        span = datetime.fromisoformat(call["finished_at"]) - datetime.fromisoformat(
            call["started_at"])
        timings.call_ms.append(span.total_seconds() * 1000)
        timings.turn_ms.append(wall)
    return timings


async def run_source(url: str, source: Source, turns: int, tools_url: str,
                     embedder: SentenceTransformerEmbedder, run: Turn = native_turn) -> Timings:
    database = await fresh_database(url, f"bench_sources_{os.getpid()}_{next(_numbers)}")
    async with (
        scripted_model(responder=answering(source.tool, source.arguments)) as model,
        service(database, model.url, embedder, source.builtins) as client,
    ):
        await source.register(client, tools_url)
        return await measure(client, turns, run, source.tool)


def _ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.2f}"


def report(sources: dict[str, Timings], routes: dict[str, Timings], turns: int,
           seconds: float) -> str:
    head = (f"`python -m bench.tool_sources` on {date.today().isoformat()}; "
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
            f"{turns} measured turns per row after {WARM_UP} warm-ups; {seconds:.0f} s in all.")
    lines = [BEGIN, head, "",
             "| tool source | call p50 ms | call p90 ms | call p99 ms | turn p50 ms |",
             "|---|---|---|---|---|"]
    for label, t in sources.items():
        lines.append(f"| {label} | {_ms(t.call_ms, 50)} | {_ms(t.call_ms, 90)} | "
                     f"{_ms(t.call_ms, 99)} | {_ms(t.turn_ms, 50)} |")
    lines += ["", "| route (a new conversation and one builtin call each) | turn p50 ms | "
              "turn p90 ms |", "|---|---|---|"]
    for label, t in routes.items():
        lines.append(f"| {label} | {_ms(t.turn_ms, 50)} | {_ms(t.turn_ms, 90)} |")
    lines.append(END)
    return "\n".join(lines)


async def main_async(turns: int) -> str:
    embedder = SentenceTransformerEmbedder()
    started = time.monotonic()
    calculate = Source("builtin function", "calculate", {"expression": "2 + 3"}, no_tools,
                       builtins=True)
    sources = [
        calculate,
        Source("HTTP tool", "echo_label", {"ms": 0, "label": "x"}, echo_tool),
        Source("OpenAPI operation (query and body mapped)", "echo_operation",
               {"ms": 0, "label": "x", "trace": "t1"}, openapi_operation),
        Source("MCP over stdio", "add", {"a": 2, "b": 3},
               mcp_server({"kind": "stdio", "command": sys.executable, "args": [MCP_SERVER]})),
    ]
    results: dict[str, Timings] = {}
    http_mcp = subprocess.Popen([sys.executable, MCP_SERVER, "--http"], stdout=subprocess.PIPE,
                                text=True)
    try:
        assert http_mcp.stdout is not None
        mcp_url = http_mcp.stdout.readline().strip()
        sources.append(Source("MCP over Streamable HTTP", "add", {"a": 2, "b": 3},
                              mcp_server({"kind": "http", "url": mcp_url})))
        with embedded_postgres() as url:
            async with tool_server() as tools:
                for source in sources:
                    results[source.label] = await run_source(url, source, turns, tools.url,
                                                              embedder)
                routes = {
                    "native: POST /v1/conversations/{id}/turns": await run_source(
                        url, calculate, turns, tools.url, embedder, native_turn),
                    "OpenAI-compatible: POST /v1/chat/completions": await run_source(
                        url, Source("openai route", *_fields(calculate)), turns, tools.url,
                        embedder, openai_turn),
                }
    finally:
        http_mcp.terminate()
        http_mcp.wait(timeout=10)
        embedder.close()
    return report(results, routes, turns, time.monotonic() - started)


def _fields(source: Source) -> tuple[str, dict[str, Any], Register, bool]:
    return source.tool, source.arguments, source.register, source.builtins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="15 turns each; print only")
    args = parser.parse_args(argv)
    markdown = asyncio.run(main_async(15 if args.quick else 60))
    publish(markdown, quick=args.quick, heading=SECTION, markers=(BEGIN, END))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
