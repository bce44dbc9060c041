"""Hostile input, sent as an outsider would: no request costs a 500, holds the event loop, or
slips past a documented rule. Each test sends the exact request that once did."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.logs import ONE_LINE, OneLine, keep_lines_whole
from tests.conftest import RunningApp
from tests.scripted_model import ScriptedModel, ScriptedReply
from tests.tool_server import ToolServer
from tools.errors import SpecInvalid
from tools.executors import ExecutableTool, ToolRunner
from tools.mcp.importing import function_names
from tools.spec import HttpExecutor, ToolRecord, ToolSpec
from tools.validation import parse_spec

NUL_REQUESTS = [
    ("GET", "/v1/tools?tag=%00", "query parameter 'tag'"),
    ("GET", "/v1/tools/search?q=%00", "query parameter 'q'"),
    ("GET", "/v1/tools/a%00b", "path parameter 'name'"),
    ("GET", "/v1/tools/a%00b/versions", "path parameter 'name'"),
    ("GET", "/v1/tools/a%00b/versions/1", "path parameter 'name'"),
    ("DELETE", "/v1/tools/a%00b", "path parameter 'name'"),
    ("GET", "/v1/conversations/a%00b", "path parameter 'conversation_id'"),
    ("GET", "/v1/conversations/a%00b/messages", "path parameter 'conversation_id'"),
    ("GET", "/v1/turns/a%00b", "path parameter 'turn_id'"),
    ("GET", "/v1/turns/a%00b/trace", "path parameter 'turn_id'"),
    ("GET", "/v1/traces/a%00b", "path parameter 'trace_id'"),
    ("GET", "/v1/traces?tool=%00", "query parameter 'tool'"),
    ("DELETE", "/v1/keys/a%00b", "path parameter 'key_id'"),
    ("GET", "/v1/mcp/servers/a%00b", "path parameter 'name'"),
]
JSON_ROUTES = [
    ("POST", "/v1/tools"), ("PUT", "/v1/tools/deep"), ("POST", "/v1/tools/bulk"),
    ("POST", "/v1/tools/import/openapi"), ("POST", "/v1/conversations"),
    ("POST", "/v1/turns/t/approvals"), ("POST", "/v1/turns/t/outputs"),
    ("POST", "/v1/chat/completions"), ("POST", "/v1/keys"), ("POST", "/v1/mcp/servers"),
]
LOOPING_SCHEMAS = [
    ({"$ref": "#"}, "/parameters/$ref"),
    ({"type": "object", "$defs": {"n": {"$ref": "#/$defs/n"}},
      "properties": {"a": {"$ref": "#/$defs/n"}}}, "/parameters/$defs/n/$ref"),
    ({"type": "object",
      "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}},
      "properties": {"x": {"$ref": "#/$defs/a"}}}, "/parameters/$defs/b/allOf/0/$ref"),
]
LOOPS = ("makes the schema refer back to itself without descending into the arguments, so "
         "checking a call would never end")


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


@pytest.mark.parametrize(("method", "path", "parameter"), NUL_REQUESTS)
async def test_a_nul_in_a_path_or_query_value_is_a_422_naming_it(
    api: httpx.AsyncClient, method: str, path: str, parameter: str
) -> None:
    response = await api.request(method, path)
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [{
        "pointer": "", "parameter": parameter,
        "message": "holds a NUL character (\\u0000), which no value may contain",
    }]


def test_a_line_break_a_request_put_in_a_log_message_is_written_escaped() -> None:
    access = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1", "GET", "/v1/tools/a\nFORGED b", "1.1", 404), None)
    plain = logging.LogRecord("app.problems", logging.ERROR, __file__, 1,
                              "database error on %s: %s", ("/v1/x\r\ny", "gone"), None)
    assert OneLine().filter(access) and OneLine().filter(plain)
    assert access.getMessage() == '127.0.0.1 - "GET /v1/tools/a\\x0aFORGED b HTTP/1.1" 404'
    assert plain.getMessage() == "database error on /v1/x\\x0d\\x0ay: gone"


async def test_every_handler_of_the_services_loggers_writes_one_line_a_record(
    api: httpx.AsyncClient,
) -> None:
    logging.getLogger("uvicorn.access").addHandler(handler := logging.NullHandler())
    try:
        keep_lines_whole()
        assert ONE_LINE in handler.filters
        assert all(ONE_LINE in h.filters for h in logging.getLogger().handlers)
    finally:
        logging.getLogger("uvicorn.access").removeHandler(handler)


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
async def test_a_body_nested_a_thousand_levels_is_a_422_on_every_json_route(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    body = "[" * 1000 + "]" * 1000
    response = await api.request(method, path, content=body,
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == (
        "/: the body is nested 1000 levels deep; at most 64 are allowed")


async def test_a_parameters_schema_nested_95_levels_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/tools", json={"name": "deep", "description": "Deep.",
                                                 "parameters": nested(95)})
    assert response.status_code == 422, response.text
    with pytest.raises(SpecInvalid) as caught:  # as it reaches the registry another way
        parse_spec({"name": "deep", "description": "Deep.", "parameters": nested(95)})
    assert [(e.pointer, e.message) for e in caught.value.errors] == [
        ("/parameters", "is nested 191 levels deep; at most 64 are allowed")]


@pytest.mark.parametrize(("parameters", "pointer"), LOOPING_SCHEMAS)
async def test_a_ref_loop_is_refused_at_registration_naming_the_ref(
    api: httpx.AsyncClient, parameters: dict[str, Any], pointer: str
) -> None:
    response = await api.post("/v1/tools", json={"name": "loops", "description": "Loops.",
                                                 "parameters": parameters})
    assert response.status_code == 422, response.text
    assert {"pointer": pointer, "message": LOOPS} in response.json()["errors"]


async def test_a_pattern_that_is_no_regular_expression_is_refused(api: httpx.AsyncClient) -> None:
    parameters = {"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}}
    response = await api.post("/v1/tools", json={"name": "bad_regex", "description": "Bad.",
                                                 "parameters": parameters})
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [{
        "pointer": "/parameters/properties/a/pattern",
        "message": "is not a regular expression this service can run (missing ): (); "
                   "patterns run on RE2: no lookaround and no backreferences",
    }]


@pytest.mark.parametrize("value", ["a\r\nInjected: yes", "caf\u00e9"])
async def test_an_executor_header_that_cannot_be_sent_is_refused(
    api: httpx.AsyncClient, value: str
) -> None:
    executor = {"kind": "http", "url": "https://api.example.com/x", "headers": {"X-A": value}}
    response = await api.post("/v1/tools", json={"name": "headers", "description": "Headers.",
                                                 "executor": executor})
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [{
        "pointer": "/executor/headers/X-A",
        "message": "a header value holds ASCII text on one line only (no line breaks, control "
                   "characters or non-ASCII characters)",
    }]


async def test_a_tool_stored_before_these_checks_fails_only_its_own_calls(
    tools: ToolServer,
) -> None:
    """A tool registered by an older release may still hold a looping schema or a header that
    cannot be sent: calling it is that call's error (tool_error), which the model reads;
    nothing raises."""
    looping = ToolRecord.of(ToolSpec(name="old", description="Old.", parameters={"$ref": "#"}),
                            1, _now(), has_secret=False)
    headers = ToolRecord.of(ToolSpec(name="old_headers", description="Old.",
                                     executor=HttpExecutor(url=f"{tools.url}/weather",
                                                           headers={"X-A": "a\r\nb"})),
                            1, _now(), has_secret=False)
    async with httpx.AsyncClient() as http:
        runner = ToolRunner(http)
        first = await runner.execute_call(ExecutableTool(record=looping, tenant="t"), {})
        second = await runner.execute_call(ExecutableTool(record=headers, tenant="t"), {})
    assert (first.error_type, second.error_type) == ("tool_error", "tool_error")
    assert first.error is not None and "cannot be checked (RecursionError" in first.error
    assert second.error is not None and second.error.startswith(
        f"the request to {tools.url}/weather could not be sent")


async def test_arguments_nested_too_deeply_to_read_are_the_calls_error_not_the_turns(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel
) -> None:
    app: RunningApp = await start_app(database_url, model_url=model.url, register_builtins=True)
    model.push(ScriptedReply(tool_calls=[("calculate", "[" * 5000 + "]" * 5000, "c1")]),
               ScriptedReply(content="That did not work."))
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    response = await app.client.post(f"/v1/conversations/{conversation}/turns",
                                     json={"message": "work out nothing"})
    assert response.status_code == 200, response.text
    call = response.json()["tool_calls"][0]
    assert (call["error_type"], call["error"]) == (
        "invalid_arguments", "arguments are nested too deeply to read; send a flatter JSON "
        "object. Correct the call and make it again.")


@pytest.mark.parametrize(("headers", "pointer", "message"), [
    ({"Bad Name": "x"}, "/transport/headers/Bad Name",
     "'Bad Name' is not a header name: use letters, digits and !#$%&'*+-.^_`|~ only, no spaces"),
    ({"X-A": "a\nb"}, "/transport/headers/X-A",
     "a header value holds ASCII text on one line only (no line breaks, control characters or "
     "non-ASCII characters)"),
])
async def test_an_mcp_server_with_a_header_that_cannot_be_sent_is_a_422_on_the_field(
    api: httpx.AsyncClient, headers: dict[str, str], pointer: str, message: str
) -> None:
    response = await api.post("/v1/mcp/servers", json={"name": "m", "transport": {
        "kind": "http", "url": "http://127.0.0.1:9/mcp", "headers": headers}})
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [{"pointer": pointer, "message": message}]


async def test_a_catastrophic_pattern_is_checked_in_linear_time(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel
) -> None:
    """`^(a+)+$` against 40 `a`s and a `!` takes a backtracking engine hours; on RE2 the call
    is refused at once (the wait below only keeps a regression from hanging the suite)."""
    app: RunningApp = await start_app(database_url, model_url=model.url)
    parameters = {"type": "object", "required": ["text"],
                  "properties": {"text": {"type": "string", "pattern": "^(a+)+$"}}}
    created = await app.client.post("/v1/tools", json={"name": "hostile", "description": "H.",
                                                       "parameters": parameters})
    assert created.status_code == 201, created.text
    model.push(ScriptedReply(tool_calls=[("hostile", {"text": "a" * 40 + "!"}, "c1")]),
               ScriptedReply(content="It does not match."))
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    response = await asyncio.wait_for(app.client.post(
        f"/v1/conversations/{conversation}/turns", json={"message": "check it"}), 60)
    call = response.json()["tool_calls"][0]
    assert (call["error_type"], call["error"]) == (
        "invalid_arguments",
        f"arguments invalid: /text: '{'a' * 40}!' does not match '^(a+)+$'. Correct the call "
        "and make it again.")


async def test_too_many_properties_or_examples_are_refused_naming_the_cap(
    api: httpx.AsyncClient,
) -> None:
    properties = {f"p{i}": {"type": "string"} for i in range(50_000)}
    wide = await api.post("/v1/tools", json={"name": "wide", "description": "Wide.", "parameters":
                                             {"type": "object", "properties": properties}})
    examples = await api.post("/v1/tools", json={"name": "talkative", "description": "Talks.",
                                                 "examples": ["an example"] * 20_000})
    assert (wide.status_code, examples.status_code) == (422, 422)
    assert wide.json()["errors"] == [{
        "pointer": "/parameters",
        "message": "declares 50000 properties; at most 1000 are allowed per tool"}]
    assert examples.json()["errors"] == [{
        "pointer": "/examples", "message": "Expected `array` of length <= 100"}]


async def test_searches_past_the_queue_are_turned_away_with_retry_after(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app: RunningApp = await start_app(database_url, search_max_wait_s=0.0001)
    tools = [{"name": f"tool_{i}", "description": f"Does thing number {i}."} for i in range(20)]
    assert (await app.client.post("/v1/tools/bulk", json={"tools": tools})).status_code == 200
    answers = await asyncio.gather(*(
        app.client.get("/v1/tools/search", params={"q": f"thing {i}"}) for i in range(40)))
    busy = [a for a in answers if a.status_code == 503]
    assert {a.status_code for a in answers} == {200, 503}
    assert all(a.headers["retry-after"].isdigit() for a in busy)
    assert busy[0].json()["type"] == "/problems/search-busy"


async def test_health_answers_while_every_pooled_connection_is_taken(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app: RunningApp = await start_app(database_url)
    pool = app.server.server.config.app.state.pool
    held = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        response = await asyncio.wait_for(app.client.get("/health"), 10)
    finally:
        for connection in held:
            await pool.release(connection)
    assert (response.status_code, response.json()["status"]) == (200, "ok")


@pytest.mark.parametrize("body", [
    {"name": "tool\n", "description": "d"},
    {"name": "a" * 64 + "\n", "description": "d"},
    {"name": "tool", "namespace": "ns\n", "description": "d"},
])
async def test_a_name_with_a_trailing_line_break_is_refused(
    api: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await api.post("/v1/tools", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["message"] == (
        "Expected `str` matching regex '^[A-Za-z0-9_-]{1,64}$': use 1-64 letters, digits, '_' "
        "or '-' (e.g. math_factorial)")


async def test_a_tenant_with_a_trailing_line_break_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/keys", json={"role": "chat", "tenant": "acme\n"})
    assert response.status_code == 422, response.text


def test_an_mcp_tool_name_with_a_trailing_line_break_is_made_valid() -> None:
    assert function_names(["tool\n", "fine"]) == {"tool\n": "tool_", "fine": "fine"}


async def test_an_admin_who_can_create_a_key_for_another_tenant_can_list_and_revoke_it(
    api: httpx.AsyncClient,
) -> None:
    made = (await api.post("/v1/keys", json={"role": "chat", "tenant": "acme"})).json()
    listed = await api.get("/v1/keys", params={"tenant": "acme"})
    assert [k["id"] for k in listed.json()["items"]] == [made["id"]]
    assert (await api.delete(f"/v1/keys/{made['id']}")).status_code == 204
    refused = await api.get("/v1/tools", headers={"Authorization": f"Bearer {made['key']}"})
    assert refused.status_code == 401


@pytest.mark.parametrize(("path", "allow"), [
    ("/v1/tools", "GET, OPTIONS, POST"),
    ("/v1/tools/x", "DELETE, GET, OPTIONS, PUT"),
    ("/v1/keys", "GET, OPTIONS, POST"),
    ("/v1/conversations/c", "GET, OPTIONS"),
])
async def test_options_names_every_method_of_the_path(
    api: httpx.AsyncClient, path: str, allow: str
) -> None:
    response = await api.options(path)
    assert (response.status_code, response.headers["allow"]) == (204, allow)


async def test_a_method_the_path_does_not_take_is_a_405_with_allow(api: httpx.AsyncClient) -> None:
    response = await api.patch("/v1/tools")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "OPTIONS", "POST"}


@pytest.mark.parametrize(("method", "path", "body", "where"), [
    ("GET", "/v1/tools/search?q=x&k=100.0", None, "query parameter 'k'"),
    ("GET", "/v1/traces?until=0.5", None, "query parameter 'until'"),
    ("GET", "/v1/traces?status=null", None, "query parameter 'status'"),
    ("GET", "/v1/tools?limit=5&limit=6", None, "query parameter 'limit'"),
    ("POST", "/v1/conversations/{c}/turns", {"message": "hi", "stream": 0}, "/stream"),
])
async def test_a_value_of_the_wrong_type_is_refused_not_coerced(
    api: httpx.AsyncClient, method: str, path: str, body: Any, where: str
) -> None:
    """A bad parameter and a bad field are the same problem: a 422."""
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    response = await api.request(method, path.replace("{c}", conversation), json=body)
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert (error.get("parameter") or error["pointer"]) == where


async def test_the_document_declares_what_the_routes_answer(api: httpx.AsyncClient) -> None:
    document = (await api.get("/docs/openapi.json")).json()
    put = document["paths"]["/v1/tools/{name}"]["put"]["responses"]
    turn = document["paths"]["/v1/conversations/{conversation_id}/turns"]["post"]["responses"]
    assert {"200", "201"} <= put.keys()
    assert turn["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TurnResult"}
    assert "text/event-stream" in turn["200"]["content"]
    assert turn["422"]["content"]["application/problem+json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"}


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def test_a_tool_url_no_http_client_can_send_is_a_422_not_a_500(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/tools", json={
        "name": "t", "description": "x", "executor": {"kind": "http", "url": "https://\u0018x/a"}})
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [{
        "pointer": "/executor/url",
        "message": "not a usable URL: Invalid non-printable ASCII character in URL, '\\x18' at "
                   "position 8."}]
