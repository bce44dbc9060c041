"""ModelClient against a real SGLang server: run with SGLANG_URL=http://host:30000/v1 (and
SGLANG_MODEL when the served model is not "default"). The reasoning test needs the server
started with a reasoning parser, e.g. `--reasoning-parser qwen3`."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from planner.messages import (
    ChatMessage,
    ContentDelta,
    Delta,
    ModelRequest,
    ReasoningDelta,
    ToolChoiceFunction,
)
from planner.model_client import ModelBackend, ModelClient
from tests.test_model_client import WEATHER_TOOL

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not os.environ.get("SGLANG_URL"),
        reason="live SGLang suite: set SGLANG_URL (e.g. http://localhost:30000/v1) to run it",
    ),
]


@pytest.fixture
async def client() -> AsyncIterator[ModelClient]:
    backend = ModelBackend(
        base_url=os.environ["SGLANG_URL"],
        model=os.environ.get("SGLANG_MODEL", "default"),
        api_key=os.environ.get("SGLANG_API_KEY"),
        temperature=0.0,
        max_completion_tokens=2048,
    )
    async with httpx.AsyncClient() as http:
        yield ModelClient(backend, http)


def ask(text: str, **options: object) -> ModelRequest:
    return ModelRequest(messages=[ChatMessage(role="user", content=text)], **options)  # type: ignore[arg-type]


async def test_a_plain_completion_answers(client: ModelClient) -> None:
    reply = await client.complete(ask("Reply with exactly one word: pong", enable_thinking=False))
    assert "pong" in reply.content.lower()
    assert reply.finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.tool_calls == []


async def test_the_weather_tool_is_called_with_parseable_arguments(client: ModelClient) -> None:
    request = ask(
        "What's the weather in Paris right now?",
        tools=[WEATHER_TOOL],
        tool_choice=ToolChoiceFunction("get_weather"),
        enable_thinking=False,
    )
    reply = await client.complete(request)
    assert [call.name for call in reply.tool_calls] == ["get_weather"]
    arguments = json.loads(reply.tool_calls[0].arguments)
    assert "paris" in arguments["city"].lower()
    assert reply.tool_calls[0].id


async def test_a_streamed_reply_carries_reasoning(client: ModelClient) -> None:
    deltas: list[Delta] = []

    async def record(delta: Delta) -> None:
        deltas.append(delta)

    request = ask("Which is larger, 9.11 or 9.8? Answer briefly.", enable_thinking=True)
    reply = await client.complete(request, stream=True, on_delta=record)
    reasoning = "".join(d.text for d in deltas if isinstance(d, ReasoningDelta))
    content = "".join(d.text for d in deltas if isinstance(d, ContentDelta))
    assert reply.reasoning, "no reasoning: start SGLang with --reasoning-parser (e.g. qwen3)"
    assert (reasoning, content) == (reply.reasoning, reply.content)
    assert "9.8" in reply.content
    assert reply.usage.completion_tokens > 0
