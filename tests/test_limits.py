"""Limits that hold under any input: parallel calls per step, plan size, output kept, steps."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from tests.scripted_model import ScriptedModel, ScriptedReply, scripted_model
from tests.tool_server import http_tool, tool_server

SLEEP = {"ms": {"type": "number"}, "label": {"type": "string"}}


async def run(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    response = await client.post(f"/v1/conversations/{conversation}/turns",
                                 json={"message": "go", **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def app_with(start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
                   url: str, **limits: Any) -> httpx.AsyncClient:
    app = await start_app(database_url, model_url=model.url, **limits)
    await app.client.post("/v1/tools", json=http_tool(f"{url}/sleep", "wait", "Wait", SLEEP,
                                                      ["ms"]))
    client: httpx.AsyncClient = app.client
    return client


async def test_calls_beyond_the_parallel_limit_are_refused_not_run(
    start_app: Callable[..., Any], database_url: str
) -> None:
    async with scripted_model() as model, tool_server() as tools:
        client = await app_with(start_app, database_url, model, tools.url, max_parallel_calls=2)
        model.push(ScriptedReply(tool_calls=[("wait", {"ms": 1, "label": str(i)})
                                             for i in range(3)]),
                   ScriptedReply(content="ok"))
        turn = await run(client)
    assert [c["error"] for c in turn["tool_calls"]].count(
        "refused: at most 2 calls run per step") == 1
    assert len(tools.calls("/sleep")) == 2


async def test_a_plan_longer_than_the_limit_runs_nothing(
    start_app: Callable[..., Any], database_url: str
) -> None:
    async with scripted_model() as model, tool_server() as tools:
        client = await app_with(start_app, database_url, model, tools.url, max_plan_steps=2)
        plan = {"steps": [{"id": f"s{i}", "tool": "wait", "arguments": {"ms": 1}}
                          for i in range(3)]}
        # The plan, and the same again when it is sent back to be corrected.
        model.push(ScriptedReply(content=json.dumps(plan)), ScriptedReply(content=json.dumps(plan)),
                   ScriptedReply(content="no"))
        turn = await run(client, mode="plan")
        schema = model.requests[0]["response_format"]["json_schema"]["schema"]
    assert turn["tool_calls"] == []
    assert tools.received == []
    assert schema["properties"]["steps"]["maxItems"] == 2


async def test_tool_output_beyond_the_limit_is_cut_and_marked(
    start_app: Callable[..., Any], database_url: str
) -> None:
    async with scripted_model() as model, tool_server() as tools:
        client = await app_with(start_app, database_url, model, tools.url, max_output_bytes=64)
        model.push(ScriptedReply(tool_calls=[("wait", {"ms": 1, "label": "x" * 500})]),
                   ScriptedReply(content="ok"))
        turn = await run(client)
    call = turn["tool_calls"][0]
    assert call["truncated"] is True
    assert call["result"].endswith("…[truncated: 527 bytes, kept 64]")


async def test_a_turn_stops_calling_tools_after_max_steps(
    start_app: Callable[..., Any], database_url: str
) -> None:
    async with scripted_model() as model, tool_server() as tools:
        client = await app_with(start_app, database_url, model, tools.url)
        model.push(*[ScriptedReply(tool_calls=[("wait", {"ms": 1})])] * 2,
                   ScriptedReply(content="Stopping here."))
        turn = await run(client, max_steps=2)
        last = model.requests[-1]
    assert len(turn["tool_calls"]) == 2
    assert last["tool_choice"] == "none"
    assert turn["message"]["content"] == "Stopping here."
