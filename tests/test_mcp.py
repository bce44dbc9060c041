"""MCP servers as tool sources, end to end: real MCP server processes over stdio and over
Streamable HTTP on loopback, the app over HTTP, a real Postgres, the scripted model."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import RunningApp
from tests.loopback import free_port
from tests.scripted_model import ScriptedModel, ScriptedReply
from tests.test_turns import new_conversation, tool_messages, turn

SERVER_SCRIPT = str(Path(__file__).with_name("mcp_server.py"))
ENV_SECRET = "env-secret-value-4711"
HEADER_SECRET = "header-secret-value-0815"
EXPECTED_TOOLS = [
    "add", "environment", "fail", "forget", "grow", "header", "pid", "sleep",
    # "text.echo" and "text/echo" both become "text_echo", so each ends in a hash of its name.
    f"text_echo_{hashlib.sha256(b'text.echo').hexdigest()[:8]}",
    f"text_echo_{hashlib.sha256(b'text/echo').hexdigest()[:8]}",
]
ECHO = EXPECTED_TOOLS[8]
# The commands stdio servers may be started with in these tests.
COMMANDS = f"{sys.executable},/nonexistent/mcp-server"


def stdio(**env: str) -> dict[str, Any]:
    return {"kind": "stdio", "command": sys.executable, "args": [SERVER_SCRIPT], "env": env}


@pytest.fixture
def http_server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The test MCP server over Streamable HTTP, as a process on a free loopback port."""
    process = subprocess.Popen(
        [sys.executable, SERVER_SCRIPT, "--http"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    try:
        yield url, process
    finally:
        stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
async def app(
    start_app: Callable[..., Awaitable[RunningApp]], database_url: str, model: ScriptedModel
) -> RunningApp:
    # Every tool of the test server is a candidate of every turn.
    return await start_app(
        database_url, model_url=model.url, candidate_k=32, mcp_stdio_commands=COMMANDS
    )


async def register(client: httpx.AsyncClient, name: str, transport: dict[str, Any]) -> Any:
    response = await client.post("/v1/mcp/servers", json={"name": name, "transport": transport})
    assert response.status_code == 201, response.text
    return response.json()


async def call(
    client: httpx.AsyncClient, model: ScriptedModel, tool: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """Run a turn in which the model calls one tool; the call as the turn recorded it."""
    model.push(ScriptedReply(tool_calls=[(tool, arguments)]), ScriptedReply(content="done"))
    response = await turn(client, await new_conversation(client), f"use {tool}")
    assert response.status_code == 200, response.text
    recorded: dict[str, Any] = response.json()["tool_calls"][0]
    return recorded


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until `check` holds (the server's notification arrives in its own time)."""
    for _ in range(400):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


# --- registering ---------------------------------------------------------------------------


async def test_registering_a_server_imports_its_tools_with_names_schemas_and_policies(
    app: RunningApp,
) -> None:
    body = await register(app.client, "calc", stdio())
    assert body["tools"] == EXPECTED_TOOLS
    assert body["added"] == EXPECTED_TOOLS
    assert body["server"]["name"] == "calc"
    assert body["server"]["refresh_status"] == "ok"
    add = (await app.client.get("/v1/tools/add", params={"namespace": "calc"})).json()
    assert add["description"] == "Add two numbers."
    assert add["parameters"] == {
        "type": "object",
        "properties": {
            "a": {"title": "A", "type": "number"},
            "b": {"title": "B", "type": "number"},
        },
        "required": ["a", "b"],
        "title": "addArguments",
    }
    assert add["executor"] == {"kind": "mcp", "server": "calc", "tool": "add"}
    # readOnlyHint and idempotentHint make a tool idempotent, so it may be retried.
    assert add["policy"]["idempotent"] is True and add["policy"]["max_retries"] == 2
    sleep = (await app.client.get("/v1/tools/sleep", params={"namespace": "calc"})).json()
    assert (sleep["policy"]["idempotent"], sleep["policy"]["max_retries"]) == (True, 2)
    fail = (await app.client.get("/v1/tools/fail", params={"namespace": "calc"})).json()
    assert (fail["policy"]["idempotent"], fail["policy"]["max_retries"]) == (False, 0)
    echo = (await app.client.get(f"/v1/tools/{ECHO}", params={"namespace": "calc"})).json()
    assert echo["executor"] == {"kind": "mcp", "server": "calc", "tool": "text.echo"}


async def test_imported_tools_are_searchable_in_the_servers_namespace(app: RunningApp) -> None:
    await register(app.client, "calc", stdio())
    response = await app.client.get(
        "/v1/tools/search", params={"q": "add two numbers", "namespace": "calc", "k": 3}
    )
    hits = response.json()["results"]
    assert hits[0]["name"] == "add" and hits[0]["namespace"] == "calc"


async def test_a_failing_command_is_a_clear_problem_and_stores_nothing(app: RunningApp) -> None:
    code = "import sys; print('no config file', file=sys.stderr); sys.exit(3)"
    transport = {"kind": "stdio", "command": sys.executable, "args": ["-c", code]}
    response = await app.client.post(
        "/v1/mcp/servers", json={"name": "broken", "transport": transport}
    )
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    command = shlex.join([sys.executable, "-c", code])
    assert response.json()["detail"] == (
        f"MCP server command {command!r}: closed the connection during the handshake; "
        "it wrote to stderr: no config file"
    )
    assert (await app.client.get("/v1/mcp/servers")).json() == {"items": [], "next_cursor": None}
    assert (await app.client.get("/v1/tools")).json()["items"] == []


async def test_a_command_that_never_answers_is_given_up_after_the_connect_timeout(
    start_app: Callable[..., Awaitable[RunningApp]], database_url: str
) -> None:
    app = await start_app(database_url, mcp_stdio_commands=COMMANDS, mcp_connect_timeout_s=1)
    code = "import time; time.sleep(60)"
    transport = {"kind": "stdio", "command": sys.executable, "args": ["-c", code]}
    response = await app.client.post(
        "/v1/mcp/servers", json={"name": "silent", "transport": transport}
    )
    assert response.status_code == 502
    command = shlex.join([sys.executable, "-c", code])
    assert response.json()["detail"] == (
        f"MCP server command {command!r}: did not complete the MCP handshake within 1 s"
    )
    assert (await app.client.get("/v1/mcp/servers")).json() == {"items": [], "next_cursor": None}


async def test_a_command_that_does_not_exist_is_a_clear_problem(app: RunningApp) -> None:
    transport = {"kind": "stdio", "command": "/nonexistent/mcp-server"}
    response = await app.client.post(
        "/v1/mcp/servers", json={"name": "missing", "transport": transport}
    )
    assert response.status_code == 502
    assert response.json()["detail"] == (
        "MCP server command '/nonexistent/mcp-server': could not be started: "
        "No such file or directory"
    )
    assert (await app.client.get("/v1/mcp/servers")).json() == {"items": [], "next_cursor": None}


async def test_an_unreachable_url_is_a_clear_problem_and_stores_nothing(app: RunningApp) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    response = await app.client.post(
        "/v1/mcp/servers", json={"name": "away", "transport": {"kind": "http", "url": url}}
    )
    assert response.status_code == 502
    assert response.json()["detail"] == (
        f"MCP server at {url}: could not be reached during the handshake "
        "(ConnectError: All connection attempts failed)"
    )
    assert (await app.client.get("/v1/mcp/servers")).json() == {"items": [], "next_cursor": None}


async def test_a_url_that_does_not_parse_is_an_invalid_field(app: RunningApp) -> None:
    transport = {"kind": "http", "url": "http://[::1/mcp"}
    response = await app.client.post(
        "/v1/mcp/servers", json={"name": "odd", "transport": transport}
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"pointer": "/transport/url", "message": "not a usable URL: Invalid port: ':1'"}
    ]


async def test_a_url_the_egress_policy_refuses_is_an_invalid_field(
    start_app: Callable[..., Awaitable[RunningApp]],
    database_url: str,
    http_server: tuple[str, subprocess.Popen[str]],
) -> None:
    app = await start_app(database_url, egress_allowlist="")
    url, _ = http_server
    response = await app.client.post(
        "/v1/mcp/servers", json={"name": "inside", "transport": {"kind": "http", "url": url}}
    )
    assert response.status_code == 422
    reason = (
        "refused to call 127.0.0.1: 127.0.0.1 resolves to 127.0.0.1, a loopback address; tools "
        "may call public addresses only, unless EGRESS_ALLOWLIST names the host, address or "
        "network"
    )
    assert response.json()["errors"] == [{"pointer": "/transport/url", "message": reason}]
    assert (await app.client.get("/v1/mcp/servers")).json() == {"items": [], "next_cursor": None}


async def test_a_refresh_the_egress_policy_now_refuses_is_a_bad_gateway_not_a_field(
    start_app: Callable[..., Awaitable[RunningApp]],
    database_url: str,
    http_server: tuple[str, subprocess.Popen[str]],
) -> None:
    url, _ = http_server
    allowed = await start_app(database_url)  # loopback allowed
    await register(allowed.client, "inside", {"kind": "http", "url": url})
    strict = await start_app(database_url, egress_allowlist="")
    response = await strict.client.post("/v1/mcp/servers/inside/refresh")
    assert response.status_code == 502
    body = response.json()
    reason = (
        "refused to call 127.0.0.1: 127.0.0.1 resolves to 127.0.0.1, a loopback address; tools "
        "may call public addresses only, unless EGRESS_ALLOWLIST names the host, address or "
        "network"
    )
    assert body["type"] == "/problems/mcp-unreachable"
    assert body["detail"] == f"MCP server at {url}: {reason}"
    assert "errors" not in body
    server = (await strict.client.get("/v1/mcp/servers/inside")).json()["server"]
    assert (server["refresh_status"], server["refresh_error"]) == ("failed", body["detail"])


async def test_a_url_whose_host_does_not_resolve_is_an_invalid_field(app: RunningApp) -> None:
    url = "http://mcp.example.invalid/mcp"  # .invalid never resolves (RFC 6761)
    response = await app.client.post(
        "/v1/mcp/servers", json={"name": "nowhere", "transport": {"kind": "http", "url": url}}
    )
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["pointer"] == "/transport/url"
    assert error["message"].startswith("cannot resolve mcp.example.invalid: ")
    assert (await app.client.get("/v1/mcp/servers")).json() == {"items": [], "next_cursor": None}


async def test_a_command_the_operator_did_not_list_is_refused_naming_the_field(
    start_app: Callable[..., Awaitable[RunningApp]], database_url: str
) -> None:
    app = await start_app(database_url)  # MCP_STDIO_COMMANDS unset: no command may run
    response = await app.client.post(
        "/v1/mcp/servers", json={"name": "calc", "transport": stdio()}
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [{
        "pointer": "/transport/command",
        "message": f"command {sys.executable!r} may not be run: MCP_STDIO_COMMANDS lists the "
        "commands MCP servers may be started with (now: none; * allows any)",
    }]
    assert (await app.client.get("/v1/mcp/servers")).json() == {"items": [], "next_cursor": None}


async def test_a_second_server_by_the_same_name_is_a_conflict(app: RunningApp) -> None:
    await register(app.client, "calc", stdio())
    response = await app.client.post(
        "/v1/mcp/servers", json={"name": "calc", "transport": stdio()}
    )
    assert response.status_code == 409
    assert response.json()["detail"] == (
        "MCP server 'calc' cannot be registered: a server by that name is registered"
    )


async def test_header_values_are_sent_but_never_returned(
    app: RunningApp, model: ScriptedModel, http_server: tuple[str, subprocess.Popen[str]]
) -> None:
    url, _ = http_server
    await register(app.client, "web", {
        "kind": "http", "url": url, "headers": {"X-Api-Key": HEADER_SECRET}
    })
    sent = await call(app.client, model, "header", {"name": "X-Api-Key"})
    assert sent["result"] == {"result": HEADER_SECRET}
    listed = await app.client.get("/v1/mcp/servers")
    one = await app.client.get("/v1/mcp/servers/web")
    assert HEADER_SECRET not in listed.text and HEADER_SECRET not in one.text
    assert one.json()["server"]["transport"] == {
        "kind": "http", "url": url, "header_names": ["X-Api-Key"]
    }
    assert listed.json()["items"][0]["transport"] == one.json()["server"]["transport"]


async def test_env_values_reach_the_process_but_are_never_returned(
    app: RunningApp, model: ScriptedModel
) -> None:
    await register(app.client, "local", stdio(API_TOKEN=ENV_SECRET))
    given = await call(app.client, model, "environment", {"name": "API_TOKEN"})
    assert given["result"] == {"result": ENV_SECRET}
    listed = await app.client.get("/v1/mcp/servers")
    one = await app.client.get("/v1/mcp/servers/local")
    assert ENV_SECRET not in listed.text and ENV_SECRET not in one.text
    assert one.json()["server"]["transport"] == {
        "kind": "stdio", "command": sys.executable, "args": [SERVER_SCRIPT],
        "env_names": ["API_TOKEN"],
    }


# --- calling -------------------------------------------------------------------------------


async def test_a_turn_calls_an_imported_tool_and_reads_the_mcp_result(
    app: RunningApp, model: ScriptedModel
) -> None:
    await register(app.client, "calc", stdio())
    model.push(
        ScriptedReply(tool_calls=[("add", {"a": 2, "b": 3}), (ECHO, {"text": "hi"})]),
        ScriptedReply(content="5, and hi."),
    )
    response = await turn(app.client, await new_conversation(app.client), "2 + 3, and echo hi")
    assert response.status_code == 200, response.text
    calls = response.json()["tool_calls"]
    assert [(c["name"], c["error"]) for c in calls] == [("add", None), (ECHO, None)]
    # structuredContent when the tool gives it, else the content items (text as strings).
    assert tool_messages(model.requests[1]) == [
        {"result": {"result": 5.0}}, {"result": ["hi"]}
    ]


async def test_an_error_result_becomes_a_tool_error_observation(
    app: RunningApp, model: ScriptedModel
) -> None:
    await register(app.client, "calc", stdio())
    recorded = await call(app.client, model, "fail", {"message": "the disk is full"})
    assert recorded["error_type"] == "tool_error"
    assert recorded["error"] == (
        "MCP tool 'fail' of server 'calc' failed: Error executing tool fail: the disk is full"
    )
    assert recorded["attempts"] == 1
    assert tool_messages(model.requests[1])[0]["error_type"] == "tool_error"


async def test_a_call_runs_under_the_tools_timeout_and_the_session_lives_on(
    app: RunningApp, model: ScriptedModel
) -> None:
    await register(app.client, "calc", stdio())
    sleep = (await app.client.get("/v1/tools/sleep", params={"namespace": "calc"})).json()
    sleep["policy"]["timeout_s"] = 0.2
    spec = {k: sleep[k] for k in ("name", "namespace", "description", "parameters", "executor",
                                  "policy")}
    put = await app.client.put("/v1/tools/sleep", params={"namespace": "calc"}, json=spec)
    assert put.status_code == 200, put.text
    recorded = await call(app.client, model, "sleep", {"seconds": 30})
    assert recorded["error_type"] == "timeout"
    assert recorded["error"] == (
        "MCP tool 'sleep' of server 'calc' did not finish within 0.2 s (the tool's timeout) "
        "and was abandoned"
    )
    assert recorded["attempts"] == 3  # idempotent: the first try and two retries
    after = await call(app.client, model, "add", {"a": 1, "b": 1})
    assert after["result"] == {"result": 2.0}


async def test_a_server_process_that_died_is_started_again_on_the_next_call(
    app: RunningApp, model: ScriptedModel
) -> None:
    await register(app.client, "calc", stdio())
    first = (await call(app.client, model, "pid", {}))["result"]["result"]
    os.kill(first, signal.SIGKILL)
    again = await call(app.client, model, "add", {"a": 1, "b": 2})
    assert again["result"] == {"result": 3.0}
    second = (await call(app.client, model, "pid", {}))["result"]["result"]
    assert second != first


async def test_a_server_that_is_gone_is_reported_naming_it(
    app: RunningApp, model: ScriptedModel, http_server: tuple[str, subprocess.Popen[str]]
) -> None:
    url, process = http_server
    await register(app.client, "web", {"kind": "http", "url": url})
    stop(process)
    recorded = await call(app.client, model, "pid", {})
    assert recorded["error_type"] == "unreachable"
    assert recorded["error"] == (
        f"MCP server at {url}: could not be reached during the handshake "
        "(ConnectError: All connection attempts failed)"
    )


async def test_the_app_restarted_on_the_same_database_still_calls_the_tools(
    start_app: Callable[..., Awaitable[RunningApp]], database_url: str, model: ScriptedModel
) -> None:
    settings = {"model_url": model.url, "candidate_k": 32, "mcp_stdio_commands": COMMANDS}
    first = await start_app(database_url, **settings)
    await register(first.client, "calc", stdio())
    await first.stop()
    second = await start_app(database_url, **settings)
    recorded = await call(second.client, model, "add", {"a": 20, "b": 22})
    assert recorded["result"] == {"result": 42.0}


# --- keeping in step -----------------------------------------------------------------------


async def test_a_list_changed_notification_adds_the_new_tool_without_a_refresh(
    app: RunningApp, model: ScriptedModel, http_server: tuple[str, subprocess.Popen[str]]
) -> None:
    url, _ = http_server
    await register(app.client, "web", {"kind": "http", "url": url})
    assert (await call(app.client, model, "grow", {}))["result"] == {"result": "grown"}

    async def imported() -> bool:
        body = (await app.client.get("/v1/mcp/servers/web")).json()
        return "multiply" in body["tools"]

    await eventually(imported, "multiply imported after tools/list_changed")
    multiply = (await app.client.get("/v1/tools/multiply", params={"namespace": "web"})).json()
    assert multiply["description"] == "Multiply two numbers."
    assert multiply["executor"] == {"kind": "mcp", "server": "web", "tool": "multiply"}
    product = await call(app.client, model, "multiply", {"a": 6, "b": 7})
    assert product["result"] == {"result": 42.0}


async def test_a_list_changed_notification_over_stdio_adds_the_new_tool(
    app: RunningApp, model: ScriptedModel
) -> None:
    await register(app.client, "calc", stdio())
    await call(app.client, model, "grow", {})

    async def imported() -> bool:
        body = (await app.client.get("/v1/mcp/servers/calc")).json()
        return "multiply" in body["tools"]

    await eventually(imported, "multiply imported after tools/list_changed")


async def test_a_refresh_removes_a_tool_that_disappeared(
    app: RunningApp, model: ScriptedModel
) -> None:
    await register(app.client, "calc", stdio())
    assert (await call(app.client, model, "forget", {"name": "pid"}))["error"] is None
    response = await app.client.post("/v1/mcp/servers/calc/refresh")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["added"], body["updated"], body["removed"]) == ([], [], ["pid"])
    assert body["tools"] == [t for t in EXPECTED_TOOLS if t != "pid"]
    gone = await app.client.get("/v1/tools/pid", params={"namespace": "calc"})
    assert gone.status_code == 404
    versions = await app.client.get("/v1/tools/pid/versions", params={"namespace": "calc"})
    assert [v["version"] for v in versions.json()["items"]] == [1]


async def test_delete_stops_the_server_and_deletes_its_tools(
    app: RunningApp, model: ScriptedModel
) -> None:
    await register(app.client, "calc", stdio())
    pid = (await call(app.client, model, "pid", {}))["result"]["result"]
    response = await app.client.delete("/v1/mcp/servers/calc")
    assert response.status_code == 204
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    missing = await app.client.get("/v1/mcp/servers/calc")
    assert missing.status_code == 404
    assert missing.json()["detail"] == (
        "MCP server 'calc' not found; list servers with GET /v1/mcp/servers"
    )
    assert (await app.client.get("/v1/tools", params={"namespace": "calc"})).json()["items"] == []
    search = await app.client.get("/v1/tools/search", params={"q": "add two numbers"})
    assert search.json()["results"] == []


async def test_a_deleted_servers_name_can_be_registered_again(app: RunningApp) -> None:
    await register(app.client, "calc", stdio())
    assert (await app.client.delete("/v1/mcp/servers/calc")).status_code == 204
    again = await register(app.client, "calc", stdio())
    assert again["tools"] == EXPECTED_TOOLS
    add = (await app.client.get("/v1/tools/add/versions",
                                params={"namespace": "calc"})).json()["items"]
    assert [v["version"] for v in add] == [1, 2]


# --- a server from PyPI --------------------------------------------------------------------


async def test_the_mcp_server_time_package_is_imported_and_called(
    app: RunningApp, model: ScriptedModel
) -> None:
    transport = {"kind": "stdio", "command": sys.executable,
                 "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"]}
    body = await register(app.client, "time", transport)
    assert body["tools"] == ["convert_time", "get_current_time"]
    recorded = await call(app.client, model, "get_current_time", {"timezone": "Europe/Oslo"})
    assert recorded["error"] is None
    assert recorded["result"]["timezone"] == "Europe/Oslo"



def readme_registration() -> dict[str, Any]:
    """The body of the README's stdio example (its MCP servers section's first `-d '...'`),
    and the MCP_STDIO_COMMANDS it is run with."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("\n## MCP servers\n", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = re.search(r"^MCP_STDIO_COMMANDS=(\S+) make run$", block, re.MULTILINE)
    body = re.search(r"-d '(\{.*?\})'", block, re.DOTALL)
    assert commands and body, block
    return {"commands": commands[1], "body": json.loads(body[1])}


async def test_the_readmes_stdio_example_works_without_the_virtualenv_on_path(
    start_app: Callable[..., Awaitable[RunningApp]], database_url: str, model: ScriptedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    here = str(Path(sys.executable).parent)
    # As `make run` starts it: .venv/bin/python, with .venv/bin not on PATH.
    monkeypatch.setenv("PATH", os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if d != here))
    example = readme_registration()
    app = await start_app(database_url, model_url=model.url,
                          mcp_stdio_commands=example["commands"])
    response = await app.client.post("/v1/mcp/servers", json=example["body"])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["server"]["transport"] == {"kind": "stdio", "command": "mcp-server-time",
                                           "args": [], "env_names": ["TZ"]}
    assert body["server"]["refresh_status"] == "ok"
    assert body["tools"] == ["convert_time", "get_current_time"]
    recorded = await call(app.client, model, "get_current_time", {"timezone": "Europe/Oslo"})
    assert (recorded["error"], recorded["result"]["timezone"]) == (None, "Europe/Oslo")


async def test_a_bare_command_found_nowhere_says_where_it_was_looked_for(
    start_app: Callable[..., Awaitable[RunningApp]], database_url: str
) -> None:
    app = await start_app(database_url, mcp_stdio_commands="mcp-server-nowhere")
    transport = {"kind": "stdio", "command": "mcp-server-nowhere"}
    response = await app.client.post(
        "/v1/mcp/servers", json={"name": "nowhere", "transport": transport})
    assert response.status_code == 502
    assert response.json()["detail"] == (
        "MCP server command 'mcp-server-nowhere': could not be started: 'mcp-server-nowhere' "
        f"is not on PATH nor in {Path(sys.executable).parent}")
