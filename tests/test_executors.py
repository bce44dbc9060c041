"""The tool runner against real HTTP endpoints on loopback and real builtin functions."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.loopback import serving
from tools.builtins import BuiltinFunctions, default_builtins
from tools.executors import Backoff, ExecutableTool, ToolRunner
from tools.outcome import CallOutcome
from tools.spec import (
    ArgumentMap,
    BuiltinExecutor,
    Executor,
    HttpExecutor,
    ToolPolicy,
    ToolRecord,
)

SECRET = "s3cret-key-never-shown"
CITY_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
    "additionalProperties": False,
}


@dataclass
class Seen:
    """A request as the tool's server received it."""

    method: str
    path: str
    query: bytes
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"ok": true}'
    content_type: str = "application/json"


Route = Callable[[Seen], Awaitable[Reply | None]]


@dataclass
class ToolServer:
    """An ASGI app playing tool endpoints; it records what arrives and how much at once."""

    url: str = ""
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    # Set when the test ends, so handlers that hang let the server shut down.
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def reset(self) -> None:
        self.routes, self.seen = {}, []
        self.max_in_flight = 0
        self.released = asyncio.Event()

    async def release(self) -> None:
        """Let hanging handlers finish, and wait until they have."""
        self.released.set()
        async with asyncio.timeout(5):
            while self.in_flight:
                await asyncio.sleep(0.005)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while (message := await receive())["type"] == "http.request":
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = Seen(
            scope["method"],
            scope["path"],
            scope["query_string"],
            {k.decode(): v.decode() for k, v in scope["headers"]},
            body,
        )
        self.seen.append(seen)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = await self.routes[seen.path](seen)
        finally:
            self.in_flight -= 1
        if reply is None:
            return
        headers = [(b"content-type", reply.content_type.encode())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[ToolServer]:
    app = ToolServer()
    async with serving(app) as loopback:
        app.url = loopback.url
        yield app


@pytest.fixture
async def server(served: ToolServer) -> AsyncIterator[ToolServer]:
    """The module's tool server, with no routes and nothing seen yet."""
    served.reset()
    yield served
    await served.release()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def runner(http: httpx.AsyncClient) -> ToolRunner:
    return ToolRunner(http, backoff=Backoff(base_s=0.001, max_s=0.005))


def make_tool(
    executor: Executor | None,
    *,
    parameters: dict[str, Any] | None = None,
    secret: str | None = None,
    name: str = "weather",
    **policy: Any,
) -> ExecutableTool:
    record = ToolRecord(
        name=name,
        namespace="default",
        description="A tool under test.",
        parameters=parameters or {"type": "object", "properties": {}},
        output_schema=None,
        tags=[],
        examples=[],
        executor=executor,
        policy=ToolPolicy(**policy),
        version=1,
        created_at=datetime.now(UTC),
        has_secret=secret is not None,
    )
    return ExecutableTool(record=record, tenant="default", secret=secret)


def http_tool(server: ToolServer, path: str, **options: Any) -> ExecutableTool:
    method = options.pop("method", "POST")
    headers = options.pop("headers", {})
    return make_tool(HttpExecutor(url=server.url + path, method=method, headers=headers), **options)


def answer(reply: Reply) -> Route:
    async def route(seen: Seen) -> Reply:
        return reply

    return route


def signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- arguments ---------------------------------------------------------------------------------


async def test_invalid_arguments_never_reach_the_tool(
    runner: ToolRunner, server: ToolServer
) -> None:
    server.routes["/weather"] = answer(Reply())
    tool = http_tool(server, "/weather", parameters=CITY_PARAMETERS)

    outcome = await runner.execute_call(tool, {"city": 3})

    assert (outcome.ok, outcome.error_type, outcome.attempts) == (False, "invalid_arguments", 0)
    assert outcome.error == "arguments invalid: /city: 3 is not of type 'string'"
    assert server.seen == []


async def test_every_argument_problem_is_listed_with_its_pointer(runner: ToolRunner) -> None:
    tool = make_tool(BuiltinExecutor(function="calculate"), parameters=CITY_PARAMETERS)

    outcome = await runner.execute_call(tool, {"days": "two", "when": "now"})

    assert outcome.error == (
        "arguments invalid: /: 'city' is a required property; "
        "/: Additional properties are not allowed ('when' was unexpected); "
        "/days: 'two' is not of type 'integer'"
    )


async def test_arguments_that_are_not_an_object_are_invalid(runner: ToolRunner) -> None:
    tool = make_tool(BuiltinExecutor(function="calculate"))

    outcome = await runner.execute_call(tool, ["1 + 1"])

    assert outcome.error_type == "invalid_arguments"
    assert outcome.error == (
        "arguments invalid: /: expected a JSON object of named arguments, got an array"
    )


# --- http --------------------------------------------------------------------------------------


async def test_post_sends_the_arguments_as_json_with_the_configured_headers(
    runner: ToolRunner, server: ToolServer
) -> None:
    server.routes["/weather"] = answer(Reply(body=b'{"temp_c": 21.5, "sky": "clear"}'))
    tool = http_tool(server, "/weather", parameters=CITY_PARAMETERS, headers={"X-Team": "ops"})

    outcome = await runner.execute_call(tool, {"city": "Lyon", "days": 2})

    assert (outcome.ok, outcome.result, outcome.attempts) == (
        True,
        {"temp_c": 21.5, "sky": "clear"},
        1,
    )
    [seen] = server.seen
    assert (seen.method, json.loads(seen.body)) == ("POST", {"city": "Lyon", "days": 2})
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-team"] == "ops"
    assert "x-switchboard-signature" not in seen.headers


async def test_signature_verifies_against_the_exact_body_received(
    runner: ToolRunner, server: ToolServer
) -> None:
    server.routes["/weather"] = answer(Reply())
    tool = http_tool(server, "/weather", parameters=CITY_PARAMETERS, secret=SECRET)

    await runner.execute_call(tool, {"city": "Zürich", "days": 1})

    [seen] = server.seen
    assert seen.headers["x-switchboard-signature"] == signature(seen.body)
    assert json.loads(seen.body) == {"city": "Zürich", "days": 1}


async def test_get_sends_the_arguments_as_a_signed_query_string(
    runner: ToolRunner, server: ToolServer
) -> None:
    server.routes["/forecast"] = answer(Reply())
    tool = http_tool(server, "/forecast", method="GET", secret=SECRET)

    await runner.execute_call(tool, {"city": "São Paulo", "days": 3, "tags": ["rain", "wind"]})

    [seen] = server.seen
    assert (seen.method, seen.body) == ("GET", b"")
    assert urllib.parse.parse_qsl(seen.query.decode()) == [
        ("city", "São Paulo"),
        ("days", "3"),
        ("tags", "rain"),
        ("tags", "wind"),
    ]
    assert seen.headers["x-switchboard-signature"] == signature(seen.query)


async def test_non_2xx_reports_the_status_and_the_start_of_the_body(
    runner: ToolRunner, server: ToolServer
) -> None:
    body = "no such city: Atlantis. " + "x" * 1000
    server.routes["/weather"] = answer(Reply(404, body.encode(), "text/plain"))
    tool = http_tool(server, "/weather")

    outcome = await runner.execute_call(tool, {})

    assert (outcome.ok, outcome.error_type) == (False, "http_status")
    assert outcome.error == (
        f"POST {server.url}/weather answered HTTP 404 "
        f"(check the arguments against the tool's parameters): {body[:500]}"
    )


async def test_an_html_error_page_reaches_the_model_as_its_status_and_a_plain_excerpt(
    runner: ToolRunner, server: ToolServer
) -> None:
    page = ("<!DOCTYPE html><html><head><title>501 Not Implemented</title><style>"
            + "body { font-family: sans-serif; } " * 200 + "</style><script>var x = 1;"
            "</script></head><body><h1>Not Implemented</h1><p>POST to /weather not "
            "supported.</p><hr><address>Apache/2.4.58 Server at tools.example Port 80"
            "</address></body></html>")
    server.routes["/weather"] = answer(Reply(501, page.encode(), "text/html; charset=utf-8"))

    outcome = await runner.execute_call(http_tool(server, "/weather"), {})

    assert (outcome.ok, outcome.error_type) == (False, "http_status")
    assert outcome.error == (
        f"POST {server.url}/weather answered HTTP 501 (the tool's server does not do this; its "
        "owner must fix the tool): (an HTML page) 501 Not Implemented: "
        "Not Implemented POST to /weather not supported. Apache/2.4.58 Server at "
        "tools.example Port 80")


async def test_html_body_is_bad_output_naming_the_content_type(
    runner: ToolRunner, server: ToolServer
) -> None:
    html = b"<html><body>Service temporarily moved</body></html>"
    server.routes["/weather"] = answer(Reply(200, html, "text/html; charset=utf-8"))
    tool = http_tool(server, "/weather")

    outcome = await runner.execute_call(tool, {})

    assert (outcome.ok, outcome.error_type) == (False, "bad_output")
    assert outcome.error == (
        f"POST {server.url}/weather answered with a body that is not JSON "
        "(content-type 'text/html; charset=utf-8'): "
        "<html><body>Service temporarily moved</body></html>"
    )


async def test_ten_megabyte_body_is_truncated_and_marked(
    runner: ToolRunner, server: ToolServer
) -> None:
    body = b'"' + b"x" * (10 * 1024 * 1024 - 2) + b'"'
    server.routes["/dump"] = answer(Reply(body=body))
    tool = http_tool(server, "/dump")

    outcome = await runner.execute_call(tool, {})

    assert (outcome.ok, outcome.truncated) == (True, True)
    assert outcome.result == body[:65536].decode() + "…[truncated: 10485760 bytes, kept 65536]"


async def test_hanging_endpoint_times_out_after_one_attempt_when_not_idempotent(
    runner: ToolRunner, server: ToolServer
) -> None:
    async def hang(seen: Seen) -> Reply:
        await server.released.wait()
        return Reply()

    server.routes["/hang"] = hang
    tool = http_tool(server, "/hang", timeout_s=0.2, max_retries=3, idempotent=False)

    outcome = await runner.execute_call(tool, {})

    assert (outcome.ok, outcome.error_type, outcome.attempts) == (False, "timeout", 1)
    assert outcome.error == (
        f"POST {server.url}/hang did not finish within 0.2 s (the tool's timeout) and was abandoned"
    )
    assert len(server.seen) == 1


def failing_then_ok(failures: int, status: int = 503) -> Route:
    async def route(seen: Seen) -> Reply:
        nonlocal failures
        failures -= 1
        return Reply(status, b"busy", "text/plain") if failures >= 0 else Reply()

    return route


async def test_idempotent_tool_retries_503_until_it_succeeds(
    runner: ToolRunner, server: ToolServer
) -> None:
    server.routes["/flaky"] = failing_then_ok(2)
    tool = http_tool(server, "/flaky", idempotent=True, max_retries=2)

    outcome = await runner.execute_call(tool, {})

    assert (outcome.ok, outcome.result, outcome.attempts) == (True, {"ok": True}, 3)
    assert len(server.seen) == 3


async def test_idempotent_tool_gives_up_when_retries_run_out(
    runner: ToolRunner, server: ToolServer
) -> None:
    server.routes["/flaky"] = failing_then_ok(5, status=429)
    tool = http_tool(server, "/flaky", idempotent=True, max_retries=2)

    outcome = await runner.execute_call(tool, {})

    assert (outcome.error_type, outcome.attempts, len(server.seen)) == ("http_status", 3, 3)
    assert outcome.error == (
        f"POST {server.url}/flaky answered HTTP 429 (the tool's server is failing or busy): busy"
    )


async def test_non_idempotent_tool_is_not_retried_after_503(
    runner: ToolRunner, server: ToolServer
) -> None:
    server.routes["/flaky"] = failing_then_ok(2)
    tool = http_tool(server, "/flaky", idempotent=False, max_retries=2)

    outcome = await runner.execute_call(tool, {})

    assert (outcome.ok, outcome.error_type, outcome.attempts) == (False, "http_status", 1)
    assert len(server.seen) == 1


async def test_4xx_is_not_retried_even_when_idempotent(
    runner: ToolRunner, server: ToolServer
) -> None:
    server.routes["/flaky"] = failing_then_ok(2, status=400)
    tool = http_tool(server, "/flaky", idempotent=True, max_retries=2)

    outcome = await runner.execute_call(tool, {})

    assert (outcome.error_type, outcome.attempts, len(server.seen)) == ("http_status", 1, 1)


async def test_unreachable_endpoint_names_the_url_and_is_retried_when_idempotent(
    runner: ToolRunner,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/weather"
    tool = make_tool(HttpExecutor(url=url + "?key=abc"), idempotent=True, max_retries=1)

    outcome = await runner.execute_call(tool, {})

    assert (outcome.ok, outcome.error_type, outcome.attempts) == (False, "unreachable", 2)
    assert outcome.error == (
        f"could not connect to {url} (ConnectError); the tool's server is down or its URL is wrong"
    )


async def test_concurrency_cap_holds_at_the_server(runner: ToolRunner, server: ToolServer) -> None:
    async def wait_for_company(seen: Seen) -> Reply:
        # Hold each request until a third is in flight, or give up after a moment: without the
        # cap the third would arrive and the maximum below would be over 2.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                while server.in_flight < 3:
                    await asyncio.sleep(0.005)
        return Reply()

    server.routes["/slow"] = wait_for_company
    tool = http_tool(server, "/slow", max_concurrency=2)

    outcomes = await asyncio.gather(*(runner.execute_call(tool, {}) for _ in range(6)))

    assert [o.ok for o in outcomes] == [True] * 6
    assert (len(server.seen), server.max_in_flight) == (6, 2)


async def test_secret_never_appears_in_error_text(runner: ToolRunner, server: ToolServer) -> None:
    server.routes["/leak"] = answer(
        Reply(500, f"bad signature for {SECRET}".encode(), "text/plain")
    )
    tool = http_tool(server, "/leak", secret=SECRET)

    outcome = await runner.execute_call(tool, {})

    assert outcome.error == (
        f"POST {server.url}/leak answered HTTP 500 (the tool's server is failing or busy): "
        "bad signature for [redacted]"
    )


async def test_a_credential_in_a_plain_header_never_appears_in_error_text(
    runner: ToolRunner, server: ToolServer
) -> None:
    server.routes["/echo"] = answer(Reply(401, b"token tk-5550123 is expired", "text/plain"))
    tool = http_tool(server, "/echo", headers={"Authorization": "Bearer tk-5550123"})

    outcome = await runner.execute_call(tool, {})

    assert outcome.error == (
        f"POST {server.url}/echo answered HTTP 401 (check the arguments against the tool's "
        "parameters): token [redacted] is expired"
    )


async def test_times_are_utc_and_ordered(runner: ToolRunner, server: ToolServer) -> None:
    server.routes["/weather"] = answer(Reply())

    outcome = await runner.execute_call(http_tool(server, "/weather"), {})

    assert outcome.started_at.tzinfo is UTC and outcome.finished_at.tzinfo is UTC
    assert outcome.started_at <= outcome.finished_at


# --- builtin and catalogue-only ----------------------------------------------------------------


async def test_builtin_function_runs_and_returns_its_json(runner: ToolRunner) -> None:
    tool = make_tool(BuiltinExecutor(function="calculate"), name="calculate")

    outcome = await runner.execute_call(tool, {"expression": "(3 + 4) * 2 ** 5"})

    assert (outcome.ok, outcome.result, outcome.attempts) == (
        True,
        {"expression": "(3 + 4) * 2 ** 5", "result": 224},
        1,
    )


def runner_with(http: httpx.AsyncClient, **functions: Any) -> ToolRunner:
    builtins = BuiltinFunctions()
    for name, fn in functions.items():
        builtins.register(name, fn)
    return ToolRunner(http, builtins, max_output_bytes=16)


async def test_async_builtin_is_awaited(http: httpx.AsyncClient) -> None:
    async def greet(name: str) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"hi": name}

    outcome = await runner_with(http, greet=greet).execute_call(
        make_tool(BuiltinExecutor(function="greet")), {"name": "Ada"}
    )

    assert (outcome.ok, outcome.result) == (True, {"hi": "Ada"})


async def test_builtin_exception_becomes_tool_error(runner: ToolRunner) -> None:
    tool = make_tool(BuiltinExecutor(function="calculate"))

    outcome = await runner.execute_call(tool, {"expression": "1 / 0"})

    assert (outcome.ok, outcome.error_type) == (False, "tool_error")
    assert outcome.error == (
        "builtin function 'calculate' failed: ValueError: cannot evaluate '1 / 0': division by zero"
    )


async def test_builtin_output_over_the_cap_is_truncated(http: httpx.AsyncClient) -> None:
    def shout() -> str:
        return "A" * 40

    outcome = await runner_with(http, shout=shout).execute_call(
        make_tool(BuiltinExecutor(function="shout")), {}
    )

    assert (outcome.ok, outcome.truncated) == (True, True)
    assert outcome.result == '"' + "A" * 15 + "…[truncated: 42 bytes, kept 16]"


async def test_unknown_builtin_lists_the_available_names(runner: ToolRunner) -> None:
    outcome = await runner.execute_call(make_tool(BuiltinExecutor(function="fortune")), {})

    assert (outcome.ok, outcome.error_type, outcome.attempts) == (False, "unknown_function", 0)
    assert outcome.error == (
        "builtin function 'fortune' is not available in this service; "
        f"available: {', '.join(default_builtins().names())}"
    )
    assert default_builtins().names() == [
        "calculate",
        "convert_time",
        "convert_units",
        "current_time",
    ]


async def test_catalogue_only_tool_cannot_be_called(runner: ToolRunner) -> None:
    outcome: CallOutcome = await runner.execute_call(make_tool(None, name="crm_lookup"), {})

    assert (outcome.ok, outcome.error_type, outcome.attempts) == (False, "no_executor", 0)
    assert outcome.error == (
        "tool 'crm_lookup' is catalogue-only: it has no executor, so it cannot be called; "
        "answer without it or use another tool"
    )


def mapped_tool(server: ToolServer, method: str, where: ArgumentMap) -> ExecutableTool:
    properties = {"shop": {"type": "integer"}, "dry_run": {"type": "boolean"},
                  "X-Tag": {"type": "string"}, "name": {"type": "string"}}
    executor = HttpExecutor(url=f"{server.url}/shops/{{shop}}", method=method,  # type: ignore[arg-type]
                            arguments=where)
    return make_tool(executor, parameters={"type": "object", "properties": properties},
                     secret=SECRET)


async def test_an_argument_map_places_arguments_and_signs_the_body_it_sends(
    runner: ToolRunner, server: ToolServer
) -> None:
    server.routes["/shops/7"] = answer(Reply())
    where = ArgumentMap(path=["shop"], query=["dry_run"], header=["X-Tag"], body=["name"])

    await runner.execute_call(mapped_tool(server, "PATCH", where),
                              {"shop": 7, "dry_run": True, "X-Tag": "t-1", "name": "Rex"})

    [seen] = server.seen
    assert (seen.method, seen.path, seen.query, seen.body) == (
        "PATCH", "/shops/7", b"dry_run=true", b'{"name":"Rex"}')
    assert seen.headers["x-tag"] == "t-1"
    assert seen.headers["x-switchboard-signature"] == signature(seen.body)


async def test_an_argument_map_without_a_body_signs_the_query_string(
    runner: ToolRunner, server: ToolServer
) -> None:
    server.routes["/shops/7"] = answer(Reply())
    where = ArgumentMap(path=["shop"], query=["dry_run"])

    await runner.execute_call(mapped_tool(server, "DELETE", where), {"shop": 7, "dry_run": False})

    [seen] = server.seen
    assert (seen.method, seen.query, seen.body) == ("DELETE", b"dry_run=false", b"")
    assert "content-type" not in seen.headers
    assert seen.headers["x-switchboard-signature"] == signature(seen.query)


async def test_a_header_argument_with_a_line_break_is_refused_before_sending(
    runner: ToolRunner, server: ToolServer
) -> None:
    where = ArgumentMap(path=["shop"], header=["X-Tag"])

    outcome = await runner.execute_call(mapped_tool(server, "GET", where),
                                        {"shop": 7, "X-Tag": "a\r\nX-Evil: 1"})

    assert (outcome.ok, outcome.error_type, outcome.attempts) == (False, "invalid_arguments", 0)
    assert outcome.error == (
        f"arguments invalid for GET {server.url}/shops/{{shop}}: /X-Tag: goes in an HTTP "
        "header, which holds ASCII text on one line only")
    assert server.seen == []
