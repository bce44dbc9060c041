"""Expert models as tools: a `model` tool asks another backend of the service, in parallel with
other calls, its JSON checked against its output schema and its tokens on the turn."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from planner.messages import Usage
from tests.scripted_model import ScriptedFailure, ScriptedModel, ScriptedReply, scripted_model
from tests.test_tracing import stored_trace
from tests.tool_server import ToolServer, http_tool

LABEL = {"type": "object", "properties": {"label": {"enum": ["positive", "negative"]}},
         "required": ["label"], "additionalProperties": False}
CLASSIFY = {
    "name": "classify_sentiment",
    "description": "Say whether a text is positive or negative",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}},
                   "required": ["text"]},
    "executor": {"kind": "model", "backend": "expert", "system": "Classify the sentiment.",
                 "output_schema": LABEL, "max_tokens": 64},
}
EXPERT_USAGE = Usage(prompt_tokens=50, completion_tokens=5)


@pytest.fixture
async def expert() -> AsyncIterator[ScriptedModel]:
    """The expert backend, a scripted server of its own that takes a while to answer."""
    async with scripted_model(latency_s=0.3) as model:
        yield model


@pytest.fixture
async def chat(start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
               expert: ScriptedModel, tools: ToolServer) -> httpx.AsyncClient:
    backends = json.dumps([{"name": "expert", "base_url": expert.url, "model": "small"}])
    app = await start_app(database_url, model_url=model.url, model_backends=backends)
    weather = http_tool(f"{tools.url}/weather", "get_weather", "Current weather in a city",
                        {"city": {"type": "string"}}, ["city"])
    response = await app.client.post("/v1/tools/bulk", json={"tools": [CLASSIFY, weather]})
    assert response.status_code == 200, response.text
    client: httpx.AsyncClient = app.client
    return client


async def ask(chat: httpx.AsyncClient) -> dict[str, Any]:
    conversation = (await chat.post("/v1/conversations", json={})).json()["id"]
    response = await chat.post(f"/v1/conversations/{conversation}/turns",
                               json={"message": "Is 'I love Oslo' positive? And the weather?"})
    assert response.status_code == 200, response.text
    turn: dict[str, Any] = response.json()
    return turn


def both_calls() -> ScriptedReply:
    return ScriptedReply(tool_calls=[("classify_sentiment", {"text": "I love Oslo"}),
                                     ("get_weather", {"city": "Oslo"})],
                         usage=Usage(prompt_tokens=300, completion_tokens=20))


ANSWER = ScriptedReply(content="Positive, and 7 degrees.",
                       usage=Usage(prompt_tokens=400, completion_tokens=10))


async def test_an_expert_tool_answers_checked_json_beside_an_http_call_and_its_usage_counts(
    chat: httpx.AsyncClient, model: ScriptedModel, expert: ScriptedModel, tools: ToolServer
) -> None:
    model.push(both_calls(), ANSWER)
    expert.push(ScriptedReply(content='{"label": "positive"}', usage=EXPERT_USAGE))
    turn = await ask(chat)
    assert turn["status"] == "completed"
    classify, weather = turn["tool_calls"]
    assert (classify["result"], classify["usage"]) == (
        {"label": "positive"},
        {"backend": "expert", "prompt_tokens": 50, "completion_tokens": 5,
         "cached_tokens": None})
    assert classify["step"] == weather["step"]
    [asked] = expert.requests
    assert asked["messages"] == [{"role": "system", "content": "Classify the sentiment."},
                                 {"role": "user", "content": '{"text": "I love Oslo"}'}]
    assert asked["response_format"]["json_schema"]["schema"] == LABEL
    assert asked["max_completion_tokens"] == 64
    # The weather call ran while the expert was still answering (it takes 0.3 s).
    [weather_call] = tools.calls("/weather")
    assert weather_call.finished < expert.answered[0]
    expected = {"default": {"prompt_tokens": 700, "completion_tokens": 30, "cached_tokens": None},
                "expert": {"prompt_tokens": 50, "completion_tokens": 5, "cached_tokens": None}}
    assert turn["usage"] == {"prompt_tokens": 750, "completion_tokens": 35,
                             "cached_tokens": None}
    assert turn["usage_by_backend"] == expected
    stored = (await chat.get(f"/v1/turns/{turn['id']}")).json()
    assert stored["usage_by_backend"] == expected


async def test_an_experts_chat_span_sits_under_its_tool_calls_span(
    chat: httpx.AsyncClient, model: ScriptedModel, expert: ScriptedModel
) -> None:
    model.push(both_calls(), ANSWER)
    expert.push(ScriptedReply(content='{"label": "positive"}', usage=EXPERT_USAGE))
    turn = await ask(chat)
    spans = (await stored_trace(chat, turn["id"]))["spans"]
    tool = next(s for s in spans if s["attributes"].get("gen_ai.tool.name")
                == "classify_sentiment")
    [asked] = [s for s in spans if s["attributes"].get("switchboard.phase") == "expert"]
    assert asked["parent_span_id"] == tool["span_id"]
    assert (asked["name"], asked["attributes"]["gen_ai.usage.input_tokens"]) == (
        "chat small", 50)


async def test_an_expert_answer_outside_its_output_schema_is_a_bad_output_error(
    chat: httpx.AsyncClient, model: ScriptedModel, expert: ScriptedModel
) -> None:
    model.push(both_calls(), ANSWER)
    expert.push(ScriptedReply(content='{"label": "meh"}', usage=EXPERT_USAGE))
    turn = await ask(chat)
    classify = turn["tool_calls"][0]
    assert (classify["error_type"], classify["error"]) == (
        "bad_output", "model backend 'expert' answered with JSON that does not fit the tool's "
        "output schema: /label: 'meh' is not one of ['positive', 'negative']")
    assert turn["usage_by_backend"]["expert"]["prompt_tokens"] == 50  # spent all the same


async def test_an_expert_backend_that_is_down_fails_the_call_not_the_turn(
    chat: httpx.AsyncClient, model: ScriptedModel, expert: ScriptedModel
) -> None:
    model.push(both_calls(), ANSWER)
    expert.push(*[ScriptedFailure(status=400, body={"object": "error", "message": "bad request",
                                                    "code": 400})])
    turn = await ask(chat)
    assert turn["status"] == "completed"
    classify = turn["tool_calls"][0]
    assert classify["error_type"] == "tool_error"
    assert classify["error"].startswith("model backend 'expert' did not answer: model server "
                                        "at ")
    assert turn["usage_by_backend"] == {
        "default": {"prompt_tokens": 700, "completion_tokens": 30, "cached_tokens": None}}


async def test_a_model_tool_naming_a_backend_not_configured_is_refused_naming_those_that_are(
    chat: httpx.AsyncClient,
) -> None:
    typo = {**CLASSIFY, "name": "classify_again",
            "executor": {**CLASSIFY["executor"], "backend": "exprt"}}  # type: ignore[dict-item]
    response = await chat.post("/v1/tools", json=typo)
    assert response.status_code == 422
    assert response.json()["errors"] == [{
        "pointer": "/executor/backend",
        "message": "model backend 'exprt' is not configured; configured backends: default, "
                   "expert (MODEL_BACKENDS)"}]
    bulk = await chat.post("/v1/tools/bulk", json={"tools": [CLASSIFY, typo]})
    assert bulk.status_code == 422
    assert [e["pointer"] for e in bulk.json()["errors"]] == ["/tools/1/executor/backend"]


async def test_a_model_tools_output_schema_is_checked_when_it_is_registered(
    chat: httpx.AsyncClient,
) -> None:
    broken = {**CLASSIFY, "name": "classify_broken",
              "executor": {**CLASSIFY["executor"],  # type: ignore[dict-item]
                           "output_schema": {"type": "object", "minProperties": "two"}}}
    response = await chat.post("/v1/tools", json=broken)
    assert response.status_code == 422
    assert [e["pointer"] for e in response.json()["errors"]] == [
        "/executor/output_schema/minProperties"]
