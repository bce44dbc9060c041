"""The engine against a real SGLang server: plan mode, a streamed plan's eager steps,
streamed tool-call deltas, a follow-up, thinking, a small context window, and plan mode's
fallback. Run with `make test-live SGLANG_URL=http://host:30000/v1` (SGLANG_MODEL when the
served model is not "default"); the server needs its tool-call and reasoning parsers (e.g.
`--tool-call-parser qwen --reasoning-parser qwen3`). A real model decides what to call, so
these check what the service does with what it decides, not its wording."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import RunningApp
from tests.test_tracing import stored_trace
from tests.tool_server import ToolServer, http_tool

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not os.environ.get("SGLANG_URL"),
        reason="live SGLang suite: set SGLANG_URL (e.g. http://localhost:30000/v1) to run it",
    ),
]

SMALL_WINDOW = 4096


def backends() -> str:
    """The server again as a backend with a small context window."""
    return json.dumps([{"name": "small", "base_url": os.environ["SGLANG_URL"],
                        "model": os.environ.get("SGLANG_MODEL", "default"),
                        "api_key": os.environ.get("SGLANG_API_KEY"),
                        "context_window": SMALL_WINDOW, "max_completion_tokens": 512}])


@pytest.fixture
async def app(start_app: Callable[..., Any], database_url: str, tools: ToolServer) -> RunningApp:
    running: RunningApp = await start_app(
        database_url, model_url=os.environ["SGLANG_URL"],
        model_name=os.environ.get("SGLANG_MODEL", "default"),
        model_api_key=os.environ.get("SGLANG_API_KEY"), model_backends=backends())
    specs = [http_tool(f"{tools.url}/weather", "get_weather", "Current weather in a city",
                       {"city": {"type": "string", "description": "City name"}}, ["city"],
                       idempotent=True),
             http_tool(f"{tools.url}/page", "fetch_page", "Fetch the full text of a web page",
                       {"url": {"type": "string"}, "chars": {"type": "integer"}}, ["url"],
                       idempotent=True)]
    response = await running.client.post("/v1/tools/bulk", json={"tools": specs})
    assert response.status_code == 200, response.text
    return running


async def turn(app: RunningApp, message: str, **body: Any) -> dict[str, Any]:
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    response = await app.client.post(f"/v1/conversations/{conversation}/turns",
                                     json={"message": message, **body}, timeout=600)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_plan_of_two_independent_calls_runs_them_in_one_step(
    app: RunningApp, tools: ToolServer
) -> None:
    done = await turn(app, "Get the current weather in Oslo and in Paris, then compare them.",
                      mode="plan")
    assert done["status"] == "completed", done
    cities = sorted(str(r.body.get("city", "")).lower() for r in tools.calls("/weather"))
    assert cities == ["oslo", "paris"]
    assert len({c["step"] for c in done["tool_calls"] if c["name"] == "get_weather"}) == 1


async def test_a_streamed_turn_sends_tool_call_events_and_the_answer_in_deltas(
    app: RunningApp,
) -> None:
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    kinds: list[str] = []
    async with app.client.stream(
        "POST", f"/v1/conversations/{conversation}/turns", timeout=600,
        json={"message": "What is the weather in Oslo? Use the tool.", "stream": True},
    ) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
    assert kinds[0] == "turn.started" and kinds[-1] == "turn.completed"
    assert "tool_call.started" in kinds and "message.delta" in kinds


async def test_a_streamed_plan_starts_its_first_step_before_the_plan_is_complete(
    app: RunningApp, tools: ToolServer
) -> None:
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    kinds: list[str] = []
    async with app.client.stream(
        "POST", f"/v1/conversations/{conversation}/turns", timeout=600,
        json={"message": "Get the current weather in Oslo, Paris, Rome and Madrid.",
              "mode": "plan", "stream": True},
    ) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
    assert kinds[-1] == "turn.completed"
    assert kinds.index("tool_call.started") < kinds.index("plan.created")
    assert len(tools.calls("/weather")) == 4


async def test_a_follow_up_keeps_the_tools_of_the_turn_before(app: RunningApp) -> None:
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    path = f"/v1/conversations/{conversation}/turns"
    first = await app.client.post(path, json={"message": "What is the weather in Oslo?"},
                                  timeout=600)
    follow_up = await app.client.post(path, json={"message": "And in Paris?"}, timeout=600)
    assert first.json()["status"] == follow_up.json()["status"] == "completed"
    assert [c["name"] for c in follow_up.json()["tool_calls"]] == ["get_weather"]


async def test_thinking_on_returns_reasoning_apart_from_the_answer(app: RunningApp) -> None:
    done = await turn(app, "Is 17 a prime number? Answer yes or no.", thinking=True)
    assert done["status"] == "completed"
    message = done["message"]
    assert message["content"].strip()
    assert "<think>" not in message["content"]  # the reasoning parser took it out


async def test_sixteen_pages_fit_a_small_context_window(app: RunningApp) -> None:
    done = await turn(app, "Fetch these pages with fetch_page, all at once, with chars=20000: "
                      + ", ".join(f"https://example.org/{n}" for n in range(16))
                      + ". Then say how many you read.", model="small")
    assert done["status"] == "completed", done
    trace = await stored_trace(app.client, done["id"])
    chats = [s for s in trace["spans"] if s["name"].startswith("chat")]
    for span in chats:
        assert span["attributes"]["switchboard.context.window"] == SMALL_WINDOW
        used = span["attributes"].get("gen_ai.usage.input_tokens", 0)
        assert used + 512 <= SMALL_WINDOW, used  # the server's own count


async def test_plan_mode_without_tools_falls_back_to_auto(
    start_app: Callable[..., Any], database_url: str
) -> None:
    bare: RunningApp = await start_app(
        database_url, model_url=os.environ["SGLANG_URL"],
        model_name=os.environ.get("SGLANG_MODEL", "default"),
        model_api_key=os.environ.get("SGLANG_API_KEY"))
    done = await turn(bare, "Say hello.", mode="plan")
    assert done["status"] == "completed"
    assert done["message"]["content"].strip()
