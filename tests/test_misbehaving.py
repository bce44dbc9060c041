"""The engine against models that misbehave as real ones do: a misspelt tool, arguments that
never parse, a loop, calls and thinking written as text, an empty answer."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from planner.messages import ModelReply, Usage
from planner.text_calls import read_text
from tests.misbehaving import (
    calls_as_text,
    empty_answer,
    loops,
    malformed_forever,
    typo_then_corrected,
)
from tests.scripted_model import Responder, ScriptedModel, scripted_model
from tests.test_approvals import read_events
from tests.tool_server import ToolServer, http_tool

WEATHER = {"city": {"type": "string"}}


@pytest.fixture
async def served(
    start_app: Callable[..., Any], database_url: str, tools: ToolServer
) -> AsyncIterator[Callable[..., Any]]:
    """Start the app on a scripted model with the given profile; returns (client, model)."""
    models: list[Any] = []

    async def start(profile: Responder, **backend: Any) -> tuple[httpx.AsyncClient, ScriptedModel]:
        context = scripted_model(responder=profile)
        model = await context.__aenter__()
        models.append(context)
        extra = {"model_backends": json.dumps([{"name": "odd", "base_url": model.url,
                                                **backend}])} if backend else {}
        app = await start_app(database_url, model_url=model.url, **extra)
        spec = http_tool(f"{tools.url}/weather", "get_weather", "Current weather in a city",
                         WEATHER, ["city"], idempotent=True)
        assert (await app.client.post("/v1/tools", json=spec)).status_code == 201
        return app.client, model

    yield start
    for context in models:
        await context.__aexit__(None, None, None)


async def ask(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    response = await client.post(f"/v1/conversations/{conversation}/turns",
                                 json={"message": "Weather in Oslo?", **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_misspelt_tool_is_answered_with_the_nearest_name_and_corrected(
    served: Callable[..., Any], tools: ToolServer
) -> None:
    client, _model = await served(typo_then_corrected())
    turn = await ask(client)
    first, second = turn["tool_calls"]
    assert first["error"] == (
        "unknown tool 'get_wether' (did you mean 'get_weather'?): only this turn's tools can "
        "be called (get_weather); search_tools finds others. Correct the call and make it "
        "again.")
    assert (second["name"], second["error"]) == ("get_weather", None)
    assert turn["message"]["content"] == "7 degrees in Oslo."
    assert [r.body for r in tools.received] == [{"city": "Oslo"}]


async def test_arguments_that_never_parse_get_one_correction_then_the_tool_is_given_up(
    served: Callable[..., Any], tools: ToolServer
) -> None:
    client, model = await served(malformed_forever())
    turn = await ask(client)
    assert turn["status"] == "completed"
    assert [c["error_type"] for c in turn["tool_calls"]] == ["invalid_arguments"] * 2
    assert turn["tool_calls"][0]["error"].endswith("Correct the call and make it again.")
    assert turn["tool_calls"][1]["error"].endswith(
        "This was the second failed call of 'get_weather' in this turn; it is not made again.")
    assert turn["message"]["content"] == "I could not get the weather."
    assert tools.received == []
    assert len(model.requests) == 3


async def test_a_loop_is_stopped_at_the_third_same_call_and_the_turn_answers(
    served: Callable[..., Any], tools: ToolServer
) -> None:
    client, model = await served(loops())
    turn = await ask(client)
    assert turn["status"] == "completed"
    assert [c["error_type"] for c in turn["tool_calls"]] == [None, None, "repeated_call"]
    assert turn["tool_calls"][2]["error"] == (
        "get_weather was called with these same arguments in 2 earlier steps of this turn, so "
        "it is not made again: answer with the results you have")
    assert len(tools.received) == 2
    assert model.requests[-1]["tool_choice"] == "none"
    assert turn["message"]["content"] == "It is 7 degrees in Oslo."
    assert len(model.requests) == 4  # not MAX_STEPS (8) of them


async def test_calls_and_thinking_written_as_text_are_read_where_the_backend_says_so(
    served: Callable[..., Any], tools: ToolServer
) -> None:
    client, _model = await served(calls_as_text(thinking=True), text_tool_calls=True,
                                  inline_thinking=True)
    turn = await ask(client, model="odd")
    [call] = turn["tool_calls"]
    assert (call["name"], call["arguments"], call["error"]) == (
        "get_weather", {"city": "Oslo"}, None)
    assert turn["message"]["content"] == "It is 7 degrees in Oslo."
    assert turn["message"]["reasoning"] == "The user wants the weather."
    assert [r.body for r in tools.received] == [{"city": "Oslo"}]


async def test_a_streamed_turn_shows_no_call_or_thinking_written_as_text_in_its_answer(
    served: Callable[..., Any], tools: ToolServer
) -> None:
    client, _model = await served(calls_as_text(thinking=True), text_tool_calls=True,
                                  inline_thinking=True)
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    events = await read_events(client, f"/v1/conversations/{conversation}/turns",
                               {"message": "Weather in Oslo?", "model": "odd", "stream": True})
    shown = "".join(d["text"] for kind, d in events if kind == "message.delta")
    thought = "".join(d["text"] for kind, d in events if kind == "reasoning.delta")
    assert shown.strip() == "It is 7 degrees in Oslo."
    assert thought == "The user wants the weather.The user wants the weather."
    assert [kind for kind, _ in events].count("tool_call.started") == 1
    assert events[-1][1]["turn"]["message"]["content"] == "It is 7 degrees in Oslo."


async def test_calls_written_as_text_without_the_setting_are_text_and_the_log_names_the_flag(
    served: Callable[..., Any], tools: ToolServer
) -> None:
    client, _model = await served(calls_as_text())
    logged = Recorded()
    logger = logging.getLogger("planner.model_client")
    logger.addHandler(logged)  # the app's own logging setup replaces the root's handlers
    try:
        turn = await ask(client)
        await ask(client)  # said once per backend, not per reply
    finally:
        logger.removeHandler(logged)
    assert turn["tool_calls"] == []
    assert turn["message"]["content"].startswith("<tool_call>")
    assert tools.received == []
    assert logged.messages == [
        "model backend 'default' wrote tool calls into its text: start SGLang with "
        "--tool-call-parser (qwen for Qwen2.5 and Qwen3, hermes for Hermes-style models), or set "
        "text_tool_calls in MODEL_BACKENDS"]


class Recorded(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize(("empties", "answer"), [(1, "7 degrees in Oslo."), (2, "")])
async def test_an_empty_answer_after_results_gets_one_nudge(
    served: Callable[..., Any], empties: int, answer: str
) -> None:
    client, model = await served(empty_answer(empties))
    turn = await ask(client)
    assert turn["status"] == "completed"
    assert turn["message"]["content"] == answer
    notes = [m["content"] for m in model.requests[-1]["messages"]
             if str(m.get("content", "")).startswith("[switchboard]")]
    assert notes == ["[switchboard] Your reply was empty. Answer the user from the tool results "
                     "above."]
    assert len(model.requests) == 3


def reply(content: str) -> ModelReply:
    return ModelReply(content=content, reasoning="", tool_calls=[], finish_reason="stop",
                      usage=Usage(), model="m")


def test_text_blocks_become_calls_and_a_broken_one_keeps_its_text_for_the_error() -> None:
    text = ('Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
            '</tool_call>\n<tool_call>{"name": "get_time", "arguments": {"zone": </tool_call>')
    read = read_text(reply(text), tool_calls=True, thinking=False)
    assert read.content == "Let me look."
    assert read.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in read.tool_calls] == [
        ("get_weather", '{"city": "Oslo"}'),
        ("get_time", '{"name": "get_time", "arguments": {"zone":')]


def test_thinking_whose_opening_tag_was_in_the_prompt_is_read_too() -> None:
    read = read_text(reply("The user greets me.</think>\n\nHello!"), tool_calls=False,
                     thinking=True)
    assert (read.reasoning, read.content) == ("The user greets me.", "Hello!")
    untouched = reply("No tags here.")
    assert read_text(untouched, tool_calls=True, thinking=True) is untouched
