"""The whole service against a real SGLang server: run with SGLANG_URL=http://host:30000/v1 (and
SGLANG_MODEL when the served model is not "default"); the server needs a tool-call parser, e.g.
`--tool-call-parser qwen`. A real model decides what to call, so these check what the service
does with its calls, not the model's wording."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from openai import AsyncOpenAI

from tests.conftest import ADMIN_KEY, RunningApp
from tests.tool_server import ToolServer, http_tool

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not os.environ.get("SGLANG_URL"),
        reason="live SGLang suite: set SGLANG_URL (e.g. http://localhost:30000/v1) to run it",
    ),
]

ASK = ("Publish today's weather report for Oslo with the post_weather tool. Call the tool; do "
       "not ask me anything first.")


@pytest.fixture
async def app(start_app: Callable[..., Any], database_url: str, tools: ToolServer) -> RunningApp:
    running: RunningApp = await start_app(
        database_url, model_url=os.environ["SGLANG_URL"],
        model_name=os.environ.get("SGLANG_MODEL", "default"),
        model_api_key=os.environ.get("SGLANG_API_KEY"),
    )
    spec = http_tool(f"{tools.url}/weather", "post_weather", "Publish the weather report for a "
                     "city", {"city": {"type": "string", "description": "City name"}}, ["city"],
                     requires_approval=True)
    response = await running.client.post("/v1/tools", json=spec)
    assert response.status_code == 201, response.text
    return running


async def test_a_real_models_call_that_needs_approval_waits_for_it_and_then_runs(
    app: RunningApp, tools: ToolServer
) -> None:
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    response = await app.client.post(f"/v1/conversations/{conversation}/turns",
                                     json={"message": ASK}, timeout=300)
    body = response.json()
    assert body["status"] == "awaiting_approval", body
    [pending] = body["pending"]
    assert pending["name"] == "post_weather"
    assert tools.calls("/weather") == []

    done = await app.client.post(f"/v1/turns/{body['id']}/approvals",
                                 json={"call_id": pending["id"], "approve": True}, timeout=300)
    assert done.json()["status"] == "completed", done.text
    [received] = tools.calls("/weather")
    assert "oslo" in str(received.body.get("city", "")).lower()
    assert done.json()["message"]["content"]


async def test_the_openai_client_holds_a_conversation_with_a_real_model(app: RunningApp) -> None:
    client = AsyncOpenAI(base_url=f"{app.url}/v1", api_key=ADMIN_KEY, timeout=300)
    first = await client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "My name is Ann. Say hello."}])
    assert first.choices[0].finish_reason == "stop"
    conversation = (first.model_extra or {})["switchboard"]["conversation_id"]
    stream = await client.chat.completions.create(
        model="default", stream=True, metadata={"conversation_id": conversation},
        messages=[{"role": "user", "content": "What is my name? Answer with the name only."}])
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert "ann" in text.lower()
