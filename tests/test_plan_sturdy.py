"""Plan mode when things go wrong: a server that refuses the plan's schema, a tenant with no
tools, a plan that fails its checks, a step that fails, and a join that asks to replan."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from tests.scripted_model import ScriptedFailure, ScriptedModel, ScriptedReply, scripted_model
from tests.test_tracing import stored_trace
from tests.test_turns import chat, new_conversation
from tests.tool_server import ToolServer, http_tool

__all__ = ["chat"]  # the fixture, used by name

REFUSED = ScriptedFailure(status=400, body={
    "object": "error", "message": "Failed to compile the JSON schema grammar", "type":
    "BadRequestError", "param": None, "code": 400})


def plan(*steps: tuple[str, str, dict[str, Any]]) -> ScriptedReply:
    return ScriptedReply(content=json.dumps(
        {"steps": [{"id": i, "tool": t, "arguments": a} for i, t, a in steps]}))


async def plan_turn(client: httpx.AsyncClient) -> dict[str, Any]:
    conversation = await new_conversation(client)
    response = await client.post(f"/v1/conversations/{conversation}/turns",
                                 json={"message": "weather in Oslo", "mode": "plan"})
    assert response.status_code == 200, response.text
    turn: dict[str, Any] = response.json()
    return turn


def notes(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"]
            if str(m.get("content") or "").startswith("[switchboard]")]


async def test_a_refused_plan_schema_is_tried_looser_and_the_plan_runs(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(REFUSED, plan(("s1", "get_weather", {"city": "Oslo"})),
               ScriptedReply(content="7 degrees."))
    turn = await plan_turn(chat)
    assert turn["status"] == "completed"
    loose = model.requests[1]["response_format"]["json_schema"]["schema"]
    assert loose["properties"]["steps"]["items"]["properties"]["arguments"] == {"type": "object"}
    assert [c.body for c in tools.calls("/weather")] == [{"city": "Oslo"}]
    assert notes(model.requests[2]) == [
        "[switchboard] Plan mode fell back to a looser plan schema: the model server refused "
        "the plan schema (HTTP 400: Failed to compile the JSON schema grammar)."]
    trace = await stored_trace(chat, turn["id"])
    [root] = [s for s in trace["spans"] if s["parent_span_id"] is None]
    assert [(e["name"], e["attributes"]["to"]) for e in root["events"]] == [
        ("switchboard.plan.fallback", "a looser plan schema")]


async def test_a_server_that_takes_no_plan_schema_runs_the_turn_in_auto_mode(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(REFUSED, REFUSED, ScriptedReply(tool_calls=[("get_weather", {"city": "Oslo"})]),
               ScriptedReply(content="7 degrees."))
    turn = await plan_turn(chat)
    assert turn["status"] == "completed"
    auto = model.requests[2]
    assert "response_format" not in auto or auto["response_format"] is None
    assert "replan" not in [t["function"]["name"] for t in auto["tools"]]
    assert notes(auto)[-1].startswith("[switchboard] Plan mode fell back to auto mode: the "
                                      "model server refused the looser plan schema")
    assert len(tools.calls("/weather")) == 1


async def test_a_tenant_without_tools_plans_nothing_and_answers_in_auto_mode(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel
) -> None:
    app = await start_app(database_url, model_url=model.url)
    model.push(ScriptedReply(content="Hello."))
    turn = await plan_turn(app.client)
    assert turn["message"]["content"] == "Hello."
    [only] = model.requests
    assert only.get("response_format") is None
    assert notes(only) == ["[switchboard] Plan mode fell back to auto mode: the turn has no "
                           "tools to plan with."]


async def test_a_plan_that_fails_its_checks_goes_back_once_with_why(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(plan(("s1", "get_weather", {"city": "$s2"})),
               plan(("s1", "get_weather", {"city": "Oslo"})), ScriptedReply(content="7 degrees."))
    turn = await plan_turn(chat)
    assert turn["status"] == "completed"
    [repair] = notes(model.requests[1])
    assert repair.startswith("[switchboard] The plan was rejected and nothing ran: ")
    assert repair.endswith("Write the plan again, corrected.")
    assert model.requests[1]["response_format"] is not None
    assert len(tools.calls("/weather")) == 1


async def test_a_failed_step_makes_a_new_plan_at_once(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(plan(("s1", "slow_tool", {"ms": 2000})),
               plan(("s1", "get_weather", {"city": "Oslo"})), ScriptedReply(content="7 degrees."))
    turn = await plan_turn(chat)
    assert turn["status"] == "completed"
    second = model.requests[1]
    assert second["response_format"] is not None  # a plan, not a join
    [said] = notes(second)
    assert said.startswith("[switchboard] Steps of the plan failed: s1 (slow_tool): ")
    assert said.endswith("Write a new plan for what is left.")
    assert [c["id"] for c in turn["tool_calls"]] == ["p0_s1", "p1_s1"]
    assert len(tools.calls("/weather")) == 1


async def test_a_join_that_calls_replan_gets_a_new_plan(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(plan(("s1", "get_weather", {"city": "Bergen"})),
               ScriptedReply(tool_calls=[("replan", {"reason": "the user meant Oslo"})]),
               plan(("s1", "get_weather", {"city": "Oslo"})), ScriptedReply(content="7 degrees."))
    turn = await plan_turn(chat)
    assert turn["status"] == "completed"
    assert [r.get("response_format") is not None for r in model.requests] == [
        True, False, True, False]
    assert [c.body["city"] for c in tools.calls("/weather")] == ["Bergen", "Oslo"]


async def test_a_plan_turn_may_join_on_another_backend_than_it_plans_on(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer
) -> None:
    async with scripted_model(ScriptedReply(content="7 degrees.")) as small:
        backends = json.dumps([{"name": "small", "base_url": small.url}])
        app = await start_app(database_url, model_url=model.url, model_backends=backends)
        weather = http_tool(f"{tools.url}/weather", "get_weather", "Current weather in a city",
                            {"city": {"type": "string"}}, ["city"])
        assert (await app.client.post("/v1/tools", json=weather)).status_code == 201
        model.push(plan(("s1", "get_weather", {"city": "Oslo"})))
        conversation = await new_conversation(app.client)
        path = f"/v1/conversations/{conversation}/turns"
        response = await app.client.post(path, json={
            "message": "weather in Oslo", "mode": "plan", "join_model": "small"})
        turn = response.json()
        assert (turn["status"], turn["message"]["content"]) == ("completed", "7 degrees.")
        assert [r.get("response_format") is not None for r in model.requests] == [True]
        [joined] = small.requests
        assert joined["messages"][-1]["role"] == "tool"
        assert turn["usage_by_backend"].keys() == {"default", "small"}
        unknown = await app.client.post(path, json={
            "message": "weather in Oslo", "mode": "plan", "join_model": "tiny"})
        assert unknown.status_code == 422
        assert unknown.json()["detail"].startswith("unknown model backend 'tiny'")
