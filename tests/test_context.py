"""Requests fitted to the model's context window: earlier turns dropped first, then this turn's
tool results cut with a note, the whole result kept and readable with `read_result`."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from planner.context import REPLY_TOKENS, TokenCounter, fit
from planner.errors import ContextOverflow
from planner.messages import AssistantToolCall, ChatMessage, FunctionCall
from planner.prompt import SEARCH_TOOLS_ENTRY
from tests.scripted_model import ScriptedReply, Step, scripted_model
from tests.test_tracing import stored_trace
from tests.tool_server import http_tool, tool_server

WINDOW = 8192
PAGE = {"url": {"type": "string"}, "chars": {"type": "integer"}}


def strict_count(body: dict[str, Any]) -> int:
    """The scripted server's count: 3.3 characters a token over everything sent (denser
    than the 4 an English text has, as JSON and names are)."""
    sent = json.dumps(body.get("messages", [])) + json.dumps(body.get("tools", []))
    return math.ceil(len(sent) / 3.3)


def exchange(n: int, size: int) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=f"question {n}"),
            ChatMessage(role="assistant", content="a" * size)]


def counter_at(chars_per_token: float) -> TokenCounter:
    counter = TokenCounter()
    counter.learn(int(chars_per_token * 1000), 1000)
    return counter


def tool_result(call_id: str, size: int) -> ChatMessage:
    return ChatMessage(role="tool", tool_call_id=call_id, content="r" * size)


def test_earlier_turns_go_first_oldest_and_whole() -> None:
    system = ChatMessage(role="system", content="rules")
    messages = [system, *exchange(1, 6000), *exchange(2, 6000), *exchange(3, 400),
                ChatMessage(role="user", content="now")]
    fitted = fit(messages, [SEARCH_TOOLS_ENTRY], earlier=6, window=4096, reply_tokens=1024,
                 counter=counter_at(4.0))
    assert [m.content[:10] for m in fitted.messages if m.content] == [
        "rules", "question 2", "a" * 10, "question 3", "a" * 10, "now"]
    assert fitted.dropped_messages == 2
    assert fitted.cut_results == []
    assert fitted.tokens <= 4096 - 1024


def test_then_this_turns_results_are_cut_to_one_length_with_a_note() -> None:
    call = AssistantToolCall(id="c1", function=FunctionCall(name="f", arguments="{}"))
    messages = [ChatMessage(role="system", content="rules"), ChatMessage(role="user", content="go"),
                ChatMessage(role="assistant", content="", tool_calls=[call]),
                tool_result("c1", 30_000), tool_result("c2", 900)]
    fitted = fit(messages, [], earlier=0, window=4096, reply_tokens=1024,
                 counter=counter_at(4.0))
    big, small = fitted.messages[3].content or "", fitted.messages[4].content or ""
    assert fitted.cut_results == ["c1"]
    assert small == "r" * 900  # shorter than the length all were cut to
    kept = big.index("\n[switchboard]")
    assert big[:kept] == "r" * kept and kept > 900
    assert big[kept:] == (
        f"\n[switchboard] {30_000 - kept} of 30000 characters of this result were left out to "
        "fit the model's context window. The whole result is stored: call read_result with "
        f'{{"call_id": "c1", "offset": {kept}}} to read on.')
    assert fitted.tokens <= 4096 - 1024
    assert messages[3].content == "r" * 30_000  # the turn's own copy stays whole


def test_what_cannot_fit_however_it_is_cut_is_an_overflow() -> None:
    messages = [ChatMessage(role="system", content="x" * 40_000),
                ChatMessage(role="user", content="go")]
    with pytest.raises(ContextOverflow) as overflow:
        fit(messages, [], earlier=0, window=4096, reply_tokens=1024, counter=counter_at(4.0))
    assert overflow.value.window == 4096
    assert str(overflow.value).startswith("the request needs about ")


def test_the_counter_keeps_the_densest_ratio_the_server_has_shown() -> None:
    counter = TokenCounter()
    assert (counter.method, counter.count(3000)) == ("estimate", 1100)
    counter.learn(4000, 1000)
    counter.learn(3000, 1000)
    counter.learn(5000, 1000)
    assert (counter.method, counter.chars_per_token) == ("calibrated_estimate", 3.0)


def sixteen_pages_then_read(body: dict[str, Any]) -> Step:
    """Sixteen pages at once; then read on in the first result that was cut; then answer."""
    messages = body["messages"]
    tools = [m for m in messages if m.get("role") == "tool"]
    if not tools:
        return ScriptedReply(tool_calls=[
            ("fetch_page", {"url": f"https://example.org/{n}", "chars": 60_000})
            for n in range(16)])
    if not any("read_result" in str(m.get("content")) or '"total"' in str(m.get("content"))
               for m in tools[16:]):
        first = next(m for m in tools if "[switchboard]" in str(m.get("content")))
        offset = int(str(first["content"]).rsplit('"offset": ', 1)[1].split("}")[0])
        return ScriptedReply(tool_calls=[("read_result", {
            "call_id": first["tool_call_id"], "offset": offset, "length": 500})])
    return ScriptedReply(content="Read them all.")


async def test_sixteen_large_results_fit_an_8192_token_window_and_the_rest_can_be_read(
    start_app: Callable[..., Any], database_url: str
) -> None:
    async with scripted_model(responder=sixteen_pages_then_read, context_window=WINDOW,
                              count_prompt=strict_count) as model, tool_server() as tools:
        app = await start_app(database_url, model_url=model.url)
        spec = http_tool(f"{tools.url}/page", "fetch_page", "Fetch a web page's text", PAGE,
                         ["url"], idempotent=True)
        assert (await app.client.post("/v1/tools", json=spec)).status_code == 201
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        response = await app.client.post(f"/v1/conversations/{conversation}/turns",
                                         json={"message": "Read these sixteen pages."})
        turn = response.json()
        requests = list(model.requests)
    assert turn["status"] == "completed", turn
    assert len(requests) == 3
    for body in requests:  # every request, counted the server's way, left room for the reply
        assert strict_count(body) <= WINDOW - REPLY_TOKENS, strict_count(body)
    second = requests[1]
    assert "read_result" in [t["function"]["name"] for t in second["tools"]]
    notes = [m for m in second["messages"] if m["role"] == "tool"]
    assert len(notes) == 16 and all("[switchboard]" in m["content"] for m in notes)

    read = turn["tool_calls"][16]
    assert read["name"] == "read_result"
    page = next(c for c in turn["tool_calls"] if c["id"] == read["arguments"]["call_id"])
    assert len(page["result"]["text"]) == 60_000  # stored whole
    stored = (await app.client.get(f"/v1/conversations/{conversation}/messages")).json()
    whole = next(m["content"] for m in stored["items"]
                 if m.get("tool_call_id") == page["id"])
    offset = read["arguments"]["offset"]
    assert read["result"]["total"] == len(whole)
    assert read["result"]["content"] == whole[offset:offset + 500]
    cut = next(m["content"] for m in notes if m["tool_call_id"] == page["id"])
    assert cut[:offset] == whole[:offset]  # it reads on where the cut left off

    trace = await stored_trace(app.client, turn["id"])
    chats = [s for s in trace["spans"] if s["name"].startswith("chat")]
    assert [s["attributes"]["switchboard.context.window"] for s in chats] == [WINDOW] * 3
    assert chats[0]["attributes"]["switchboard.context.counted_by"] == "estimate"
    assert chats[1]["attributes"]["switchboard.context.counted_by"] == "calibrated_estimate"
    assert len(chats[1]["attributes"]["switchboard.context.cut_results"]) == 16


async def test_a_turn_that_cannot_fit_however_it_is_cut_fails_saying_so(
    start_app: Callable[..., Any], database_url: str
) -> None:
    async with scripted_model(responder=lambda _body: ScriptedReply(content="never"),
                              context_window=2048) as model:
        app = await start_app(database_url, model_url=model.url)
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        response = await app.client.post(f"/v1/conversations/{conversation}/turns", json={
            "message": "hello", "instructions": "Be brief. " * 1000})
        requests = list(model.requests)
        turns = (await app.client.get(f"/v1/conversations/{conversation}")).json()["turns"]
    assert response.status_code == 422
    problem = response.json()
    assert [t["status"] for t in turns] == ["failed"]
    assert problem["type"] == "/problems/context-overflow"
    assert problem["detail"].endswith(
        "and the model's context window is 2048: offer fewer tools (candidate_k) or use a "
        "backend with a larger context_window")
    assert requests == []  # nothing over the window was sent
