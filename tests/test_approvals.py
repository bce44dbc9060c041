"""Humans in the loop: calls that wait for a person's approval, client tools whose output the
frontend sends, and turns that pause on them and go on once they have their answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import RunningApp
from tests.scripted_model import ScriptedModel, ScriptedReply
from tests.test_turns import new_conversation, tool_messages, turn
from tests.tool_server import ToolServer, http_tool

SLEEP = {"ms": {"type": "number"}, "label": {"type": "string"}}


def tools_for(tools: ToolServer) -> list[dict[str, Any]]:
    return [
        http_tool(f"{tools.url}/sleep", "transfer_funds", "Move money between accounts", SLEEP,
                  ["ms"], requires_approval=True),
        http_tool(f"{tools.url}/sleep", "wire_abroad", "Send money to another country", SLEEP,
                  ["ms"], requires_approval=True),
        http_tool(f"{tools.url}/weather", "get_weather", "Current weather in a city",
                  {"city": {"type": "string"}}, ["city"]),
        {"name": "pick_file", "description": "Let the user pick a file on their device",
         "parameters": {"type": "object", "properties": {"kind": {"type": "string"}}},
         "executor": {"kind": "client"}},
    ]


async def start_chat(start_app: Callable[..., Any], url: str, model: ScriptedModel,
                     tools: ToolServer, **settings: Any) -> RunningApp:
    app: RunningApp = await start_app(url, model_url=model.url, **settings)
    response = await app.client.post("/v1/tools/bulk", json={"tools": tools_for(tools)})
    assert response.status_code == 200, response.text
    return app


@pytest.fixture
async def chat(start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
               tools: ToolServer) -> httpx.AsyncClient:
    return (await start_chat(start_app, database_url, model, tools)).client


async def paused_turn(chat: httpx.AsyncClient, model: ScriptedModel,
                      *calls: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """A turn whose model asks for `calls` in one reply, and answers "Done." after."""
    model.push(ScriptedReply(tool_calls=list(calls)), ScriptedReply(content="Done."))
    response = await turn(chat, await new_conversation(chat), "do it")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def approve(chat: httpx.AsyncClient, turn_id: str, call_id: str, **decision: Any
                  ) -> httpx.Response:
    body = {"call_id": call_id, "approve": True, **decision}
    return await chat.post(f"/v1/turns/{turn_id}/approvals", json=body)


async def read_events(chat: httpx.AsyncClient, path: str, body: dict[str, Any]
                      ) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    async with chat.stream("POST", path, json=body) as streamed:
        assert streamed.status_code == 200
        fields: dict[str, str] = {}
        async for line in streamed.aiter_lines():
            if line == "" and fields:
                events.append((fields["event"], json.loads(fields["data"])))
                fields = {}
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    return events


async def test_a_call_that_needs_approval_pauses_the_turn_while_the_steps_other_calls_run(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    body = await paused_turn(chat, model, ("transfer_funds", {"ms": 1, "label": "rent"}),
                             ("get_weather", {"city": "Oslo"}))
    assert body["status"] == "awaiting_approval"
    assert body["message"] is None
    [pending] = body["pending"]
    assert {k: pending[k] for k in ("name", "arguments", "waits_for")} == {
        "name": "transfer_funds", "arguments": {"ms": 1, "label": "rent"},
        "waits_for": "approval"}
    assert [c["name"] for c in body["tool_calls"]] == ["get_weather"]
    assert [r.body for r in tools.calls("/weather")] == [{"city": "Oslo"}]
    assert tools.calls("/sleep") == []
    assert len(model.requests) == 1
    stored = (await chat.get(f"/v1/turns/{body['id']}")).json()
    assert stored["status"] == "awaiting_approval"
    assert stored["pending"] == body["pending"]

    response = await approve(chat, body["id"], pending["id"])
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["status"] == "completed"
    assert done["message"]["content"] == "Done."
    assert [c["name"] for c in done["tool_calls"]] == ["transfer_funds", "get_weather"]
    assert done["pending"] == []
    assert [r.body for r in tools.calls("/sleep")] == [{"ms": 1, "label": "rent"}]
    # The model hears back from the whole step at once, in the order it asked.
    assert tool_messages(model.requests[1]) == [
        {"result": {"slept_ms": 1, "label": "rent"}},
        {"result": {"city": "Oslo", "temp_c": 7}},
    ]


async def test_a_rejected_call_reaches_the_model_as_a_rejection_with_its_reason(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    body = await paused_turn(chat, model, ("transfer_funds", {"ms": 1, "label": "all of it"}))
    call_id = body["pending"][0]["id"]
    response = await chat.post(f"/v1/turns/{body['id']}/approvals",
                               json={"call_id": call_id, "approve": False, "reason": "too much"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert tools.calls("/sleep") == []
    assert tool_messages(model.requests[1]) == [{
        "error": "a person rejected this call: too much; it was not made",
        "error_type": "rejected",
    }]
    [call] = response.json()["tool_calls"]
    assert (call["error_type"], call["attempts"]) == ("rejected", 0)


async def test_edited_arguments_are_checked_again_and_a_bad_edit_loses_nothing(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    body = await paused_turn(chat, model, ("transfer_funds", {"ms": 1, "label": "rent"}))
    call_id = body["pending"][0]["id"]
    bad = await approve(chat, body["id"], call_id, arguments={"ms": "lots"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["errors"] == [
        {"pointer": "/arguments", "message": "arguments invalid: /ms: 'lots' is not of type "
                                             "'number'"}]
    assert bad.json()["detail"] == (
        f"the edited arguments of call {call_id!r} of turn {body['id']!r} do not fit tool "
        "'transfer_funds': arguments invalid: /ms: 'lots' is not of type 'number'; send "
        "arguments its parameters schema accepts")
    still = (await chat.get(f"/v1/turns/{body['id']}")).json()
    assert (still["status"], still["pending"]) == ("awaiting_approval", body["pending"])

    response = await approve(chat, body["id"], call_id, arguments={"ms": 2, "label": "half"})
    assert response.status_code == 200, response.text
    assert [r.body for r in tools.calls("/sleep")] == [{"ms": 2, "label": "half"}]
    [call] = response.json()["tool_calls"]
    assert call["arguments"] == {"ms": 2, "label": "half"}


async def test_a_new_message_while_a_turn_waits_gets_a_409_that_says_what_is_pending(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    body = await paused_turn(chat, model, ("transfer_funds", {"ms": 1}), ("pick_file", {}))
    conversation, turn_id = body["conversation_id"], body["id"]
    first, second = (p["id"] for p in body["pending"])
    response = await turn(chat, conversation, "hello?")
    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"conversation {conversation!r} has turn {turn_id!r} awaiting approval: it waits on "
        f"approval of call {first!r} (transfer_funds); the output of call {second!r} "
        f"(pick_file); answer those (POST /v1/turns/{turn_id}/approvals or "
        f"/v1/turns/{turn_id}/outputs) and the turn goes on")


async def test_the_turn_goes_on_only_after_the_last_waiting_call_has_its_answer(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    body = await paused_turn(chat, model, ("transfer_funds", {"ms": 1}),
                             ("wire_abroad", {"ms": 1, "label": "abroad"}))
    first, second = body["pending"]
    response = await approve(chat, body["id"], first["id"])
    assert response.status_code == 202
    assert response.json()["status"] == "awaiting_approval"
    assert response.json()["pending"] == [second]
    assert tools.calls("/sleep") == [] and len(model.requests) == 1

    again = await approve(chat, body["id"], first["id"])
    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"call {first['id']!r} of turn {body['id']!r} already has its answer")

    response = await approve(chat, body["id"], second["id"])
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert sorted(r.body.get("label", "") for r in tools.calls("/sleep")) == ["", "abroad"]

    late = await approve(chat, body["id"], second["id"])
    assert late.status_code == 409
    assert late.json()["detail"] == (
        f"turn {body['id']!r} is completed, so it waits on no approval or client output")


async def test_answers_go_to_the_route_for_their_kind(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    body = await paused_turn(chat, model, ("transfer_funds", {"ms": 1}))
    turn_id, call_id = body["id"], body["pending"][0]["id"]
    wrong = await chat.post(f"/v1/turns/{turn_id}/outputs",
                            json={"call_id": call_id, "output": "ok"})
    assert wrong.status_code == 409
    assert wrong.json()["detail"] == (
        f"call {call_id!r} of turn {turn_id!r} waits for approval; POST "
        f"/v1/turns/{turn_id}/approvals instead")
    unknown = await approve(chat, turn_id, "call_nope")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == f"call 'call_nope' of turn {turn_id!r} does not exist"


async def test_a_client_tool_is_handed_to_the_frontend_and_the_turn_goes_on_with_its_output(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(tool_calls=[("pick_file", {"kind": "photo"})]),
               ScriptedReply(content="Nice photo."))
    conversation = await new_conversation(chat)
    events = await read_events(chat, f"/v1/conversations/{conversation}/turns",
                               {"message": "use a photo", "stream": True})
    kinds = [kind for kind, _ in events]
    assert kinds[-2:] == ["requires_action", "turn.paused"]
    action = events[-2][1]
    assert (action["call"]["name"], action["call"]["arguments"], action["call"]["waits_for"]) == (
        "pick_file", {"kind": "photo"}, "output")
    paused = events[-1][1]["turn"]
    assert paused["status"] == "requires_action"
    assert paused["pending"] == [action["call"]]

    resumed = await read_events(
        chat, f"/v1/turns/{paused['id']}/outputs",
        {"call_id": action["call"]["id"], "output": {"path": "/tmp/cat.jpg"}, "stream": True})
    kinds = [kind for kind, _ in resumed]
    assert kinds[0] == "turn.resumed" and kinds[-1] == "turn.completed"
    finished = next(d for k, d in resumed if k == "tool_call.finished")
    assert finished["call"]["result"] == {"path": "/tmp/cat.jpg"}
    assert resumed[-1][1]["turn"]["message"]["content"] == "Nice photo."
    assert tool_messages(model.requests[1]) == [{"result": {"path": "/tmp/cat.jpg"}}]


async def test_a_client_tools_error_reaches_the_model_as_an_error(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    body = await paused_turn(chat, model, ("pick_file", {}))
    assert body["status"] == "requires_action"
    response = await chat.post(f"/v1/turns/{body['id']}/outputs", json={
        "call_id": body["pending"][0]["id"], "error": "the user closed the picker"})
    assert response.status_code == 200, response.text
    assert tool_messages(model.requests[1]) == [
        {"error": "the user closed the picker", "error_type": "client_error"}]


async def test_a_pause_survives_a_restart_of_the_service(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer
) -> None:
    first = await start_chat(start_app, database_url, model, tools)
    body = await paused_turn(first.client, model, ("transfer_funds", {"ms": 1, "label": "x"}),
                             ("get_weather", {"city": "Oslo"}))
    await first.stop()

    second = await start_app(database_url, model_url=model.url)
    stored = (await second.client.get(f"/v1/turns/{body['id']}")).json()
    assert (stored["status"], stored["pending"]) == ("awaiting_approval", body["pending"])
    response = await approve(second.client, body["id"], body["pending"][0]["id"])
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert [r.body for r in tools.calls("/sleep")] == [{"ms": 1, "label": "x"}]
    assert tool_messages(model.requests[1]) == [
        {"result": {"slept_ms": 1, "label": "x"}},
        {"result": {"city": "Oslo", "temp_c": 7}},
    ]


async def test_a_call_no_one_approves_in_time_is_not_made_and_the_turn_goes_on(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer
) -> None:
    app = await start_chat(start_app, database_url, model, tools, approval_timeout_s=0.2,
                           turn_lease_s=0.6)
    body = await paused_turn(app.client, model, ("transfer_funds", {"ms": 1}))
    for _ in range(100):
        stored = (await app.client.get(f"/v1/turns/{body['id']}")).json()
        if stored["status"] == "completed":
            break
        await asyncio.sleep(0.1)
    assert stored["status"] == "completed"
    assert stored["message"]["content"] == "Done."
    assert tools.calls("/sleep") == []
    [observed] = tool_messages(model.requests[1])
    assert observed["error_type"] == "approval_timeout"
    assert observed["error"].startswith("no one approved this call within ")
    assert observed["error"].endswith(" s; it was not made")


async def test_in_a_plan_a_step_that_waits_holds_back_only_the_steps_that_need_its_output(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    plan = {"steps": [
        {"id": "s1", "tool": "transfer_funds", "arguments": {"ms": 1, "label": "Oslo"}},
        {"id": "s2", "tool": "get_weather", "arguments": {"city": "$s1.label"}},
        {"id": "s3", "tool": "get_weather", "arguments": {"city": "Bergen"}},
    ]}
    model.push(ScriptedReply(content=json.dumps(plan)), ScriptedReply(content="Done."))
    response = await turn(chat, await new_conversation(chat), "plan it", mode="plan")
    body = response.json()
    assert body["status"] == "awaiting_approval"
    assert [p["id"] for p in body["pending"]] == ["p0_s1"]
    assert [r.body for r in tools.calls("/weather")] == [{"city": "Bergen"}]

    response = await approve(chat, body["id"], "p0_s1")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert [r.body for r in tools.calls("/sleep")] == [{"ms": 1, "label": "Oslo"}]
    assert tool_messages(model.requests[1]) == [
        {"result": {"slept_ms": 1, "label": "Oslo"}},
        {"error": "skipped: step s1 waits for an answer (its approval or its client's output); "
                  "call this again once it has one, if it is still needed",
         "error_type": "refused"},
        {"result": {"city": "Bergen", "temp_c": 7}},
    ]
    assert model.requests[1]["tool_choice"] == "auto"  # the join of the same plan


async def test_a_resumed_turn_continues_the_same_trace(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    body = await paused_turn(chat, model, ("transfer_funds", {"ms": 1}))
    response = await approve(chat, body["id"], body["pending"][0]["id"])
    assert response.status_code == 200, response.text
    for _ in range(100):
        spans = (await chat.get(f"/v1/turns/{body['id']}/trace")).json().get("spans", [])
        turns = [s for s in spans if s["name"].startswith("invoke_agent")]
        if len(turns) == 2 and len([s for s in spans if s["name"].startswith("chat")]) == 2:
            break
        await asyncio.sleep(0.05)
    first, resumed = sorted(turns, key=lambda s: s["start_time_unix_nano"])
    assert first["parent_span_id"] is None
    assert resumed["parent_span_id"] == first["span_id"]
    assert resumed["attributes"]["switchboard.turn.resumed"] is True
    transfer = sorted((s for s in spans if s["name"] == "execute_tool transfer_funds"),
                      key=lambda s: s["start_time_unix_nano"])
    assert [s["attributes"].get("switchboard.tool.waits_for") for s in transfer] == [
        "approval", None]
    assert [s["parent_span_id"] for s in transfer] == [first["span_id"], resumed["span_id"]]
