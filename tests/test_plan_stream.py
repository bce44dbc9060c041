"""Eager dispatch: a streamed plan's steps start as their JSON objects complete, before the
model has finished writing the plan, with the plan's checks still deciding what runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from planner.plan_stream import StepScanner
from tests.scripted_model import ScriptedDisconnect, ScriptedModel, ScriptedReply
from tests.test_approvals import read_events
from tests.test_tracing import stored_trace
from tests.test_turns import chat, new_conversation
from tests.tool_server import ToolServer

__all__ = ["chat"]  # the fixture, used by name

LABEL = "a label long enough that writing it takes the model a while " * 2
STEPS = [
    {"id": "s1", "tool": "get_user_city", "arguments": {"user": "ada"}},
    {"id": "s2", "tool": "get_weather", "arguments": {"city": "$s1.city"}},
    {"id": "s3", "tool": "sleep_a", "arguments": {"ms": 1, "label": LABEL}},
]


def plan_text(steps: list[dict[str, Any]]) -> str:
    return json.dumps({"steps": steps})


async def streamed_plan_turn(chat: httpx.AsyncClient) -> list[tuple[str, dict[str, Any]]]:
    conversation = await new_conversation(chat)
    return await read_events(chat, f"/v1/conversations/{conversation}/turns",
                             {"message": "weather where ada lives", "mode": "plan",
                              "stream": True})


def kinds_and_ids(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [f"{kind} {data['id']}" if kind == "tool_call.started" else kind
            for kind, data in events if kind in {"tool_call.started", "plan.created"}]


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_the_scanner_hands_out_each_step_whole_however_the_text_is_cut(piece: int) -> None:
    steps = [{"id": "s1", "tool": "t", "arguments": {"q": "a } ] { [ \" \\\\ brace", "n": [1, {}]}},
             {"id": "s2", "tool": "u", "arguments": {"nested": {"deep": [{"x": "$s1.q"}]}}}]
    text = json.dumps({"note": {"steps": [{"not": "a step"}]}, "steps": steps})
    scanner, found = StepScanner(), []
    for start in range(0, len(text), piece):
        found += scanner.feed(text[start:start + piece])
    assert [json.loads(f) for f in found] == steps


def test_the_scanner_hands_out_nothing_until_a_step_is_closed() -> None:
    scanner = StepScanner()
    assert scanner.feed('{"steps": [{"id": "s1", "tool": "t", "arguments": {"q": "}"}') == []
    assert scanner.feed("}, ") == ['{"id": "s1", "tool": "t", "arguments": {"q": "}"}}']


async def test_a_streamed_plans_first_step_runs_while_the_plan_is_still_written(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.tokens_per_s = 100
    model.push(ScriptedReply(content=plan_text(STEPS)), ScriptedReply(content="7 degrees."))
    events = await streamed_plan_turn(chat)
    assert events[-1][0] == "turn.completed"
    [city] = tools.calls("/city")
    plan_sent = model.answered[0]
    assert city.started < plan_sent  # the call was made before the plan's last token
    # s3 completes with the plan's last step, so it starts about when the plan is created.
    assert kinds_and_ids(events)[:2] == ["tool_call.started p0_s1", "tool_call.started p0_s2"]
    assert [c.body for c in tools.calls("/weather")] == [{"city": "Oslo"}]
    calls = events[-1][1]["turn"]["tool_calls"]
    assert [(c["id"], c.get("error")) for c in calls] == [
        ("p0_s1", None), ("p0_s2", None), ("p0_s3", None)]
    join = model.requests[1]["messages"]
    [planned] = [m for m in join if m.get("tool_calls")]
    assert [c["id"] for c in planned["tool_calls"]] == ["p0_s1", "p0_s2", "p0_s3"]
    assert [m["tool_call_id"] for m in join if m["role"] == "tool"] == [
        "p0_s1", "p0_s2", "p0_s3"]


async def test_a_step_started_early_is_traced_under_the_turn_not_the_plans_model_call(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    model.tokens_per_s = 100
    model.push(ScriptedReply(content=plan_text(STEPS)), ScriptedReply(content="7 degrees."))
    events = await streamed_plan_turn(chat)
    spans = (await stored_trace(chat, events[-1][1]["turn"]["id"]))["spans"]
    [root] = [s for s in spans if s["parent_span_id"] is None]
    plan_call = next(s for s in spans if s["attributes"].get("switchboard.phase") == "plan")
    step = next(s for s in spans if s["attributes"].get("gen_ai.tool.call.id") == "p0_s1")
    assert step["parent_span_id"] == root["span_id"]
    assert step["start_time_unix_nano"] < plan_call["end_time_unix_nano"]


async def test_with_eager_plans_off_no_step_starts_before_the_plan_is_complete(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer,
    chat: httpx.AsyncClient,
) -> None:
    app = await start_app(database_url, model_url=model.url, eager_plans=False)
    model.tokens_per_s = 100
    model.push(ScriptedReply(content=plan_text(STEPS)), ScriptedReply(content="7 degrees."))
    events = await streamed_plan_turn(app.client)
    assert events[-1][0] == "turn.completed"
    assert tools.calls("/city")[0].started > model.answered[0]
    assert kinds_and_ids(events)[:2] == ["plan.created", "tool_call.started p0_s1"]


async def test_a_streamed_plan_rejected_once_complete_keeps_only_the_steps_that_began(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.tokens_per_s = 100
    steps = [STEPS[0], {"id": "s2", "tool": "get_weather", "arguments": {"city": "$s9"}},
             STEPS[2] | {"id": "s3"}]
    model.push(ScriptedReply(content=plan_text(steps)), ScriptedReply(content="Ada is in Oslo."))
    events = await streamed_plan_turn(chat)
    turn = events[-1][1]["turn"]
    assert turn["status"] == "completed"
    assert [(c["id"], c.get("error")) for c in turn["tool_calls"]] == [
        ("p0_s1", None), ("p0_s3", None)]
    assert tools.calls("/weather") == []
    join = model.requests[1]["messages"]
    [planned] = [m for m in join if m.get("tool_calls")]
    assert [c["id"] for c in planned["tool_calls"]] == ["p0_s1", "p0_s3"]
    assert join[-1] == {"role": "user", "content": (
        "[switchboard] The rest of the plan was rejected and did not run: step s2 refers to "
        "$s9, which is not a step of this plan. Only the steps above ran.")}
    [created] = [d for kind, d in events if kind == "plan.created"]
    assert [s["id"] for s in created["steps"]] == ["s1", "s3"]


async def test_a_plan_stream_that_breaks_after_a_step_began_fails_the_turn_and_keeps_the_step(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.tokens_per_s = 100
    text = plan_text([STEPS[0], STEPS[2]])
    cut = text.index("takes the model") // 4  # four characters a chunk, after the role's
    model.push(ScriptedDisconnect(after_chunks=cut, reply=ScriptedReply(content=text)))
    events = await streamed_plan_turn(chat)
    assert events[-1][0] == "turn.failed"
    turn = events[-1][1]["turn"]
    assert turn["error"]["title"] == "Model unavailable"
    assert [(c["id"], c.get("error")) for c in turn["tool_calls"]] == [("p0_s1", None)]
    assert len(tools.calls("/city")) == 1
    stored = await chat.get(f"/v1/conversations/{turn['conversation_id']}/messages")
    assert [m["role"] for m in stored.json()["items"]] == ["user", "assistant", "tool"]


async def test_a_streamed_step_naming_an_unknown_tool_stops_the_rest_from_starting(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.tokens_per_s = 100
    steps = [STEPS[0], {"id": "s2", "tool": "get_wether", "arguments": {"city": "Oslo"}},
             STEPS[2]]
    model.push(ScriptedReply(content=plan_text(steps)), ScriptedReply(content="Ada is in Oslo."))
    events = await streamed_plan_turn(chat)
    turn = events[-1][1]["turn"]
    assert [(c["id"], c.get("error")) for c in turn["tool_calls"]] == [("p0_s1", None)]
    assert tools.calls("/sleep") == []  # s3 came after the bad step: it never started
    assert model.requests[1]["messages"][-1]["content"].startswith(
        "[switchboard] The rest of the plan was rejected and did not run: step s2 calls "
        "unknown tool 'get_wether'")
