"""Retrieval that learns from use: the requests of good calls become learned examples of their
tools, users' ratings confirm or undo them, and nothing learnt crosses tenants."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import numpy as np
import pytest

from app.database import connect_pool
from tests.scripted_model import ScriptedFailure, ScriptedModel, ScriptedReply
from tests.test_auth import new_key
from tests.tool_server import ToolServer, http_tool
from tools import learned
from tools.learned import NewExample

TICKET = "Has anyone answered my complaint yet? It is SUP-4471"
SIMILAR = "has anyone replied to my complaint SUP-9020"


def specs(tools: ToolServer) -> list[dict[str, Any]]:
    """Tools whose descriptions share no words with the requests about tickets."""
    city = {"user": {"type": "string"}}
    return [
        http_tool(f"{tools.url}/city", "zd_fetch", "Zendesk object fetch by key",
                  {"id": {"type": "string"}}, ["id"]),
        http_tool(f"{tools.url}/city", "get_user_city", "The city a user lives in", city,
                  ["user"]),
        http_tool(f"{tools.url}/weather", "get_weather", "Current weather in a city",
                  {"city": {"type": "string"}}, ["city"]),
        http_tool(f"{tools.url}/weather", "get_forecast", "Weather forecast for the week",
                  {"city": {"type": "string"}}, ["city"]),
        http_tool(f"{tools.url}/city", "find_invoice", "Look up an invoice by its number",
                  {"id": {"type": "string"}}, ["id"]),
        http_tool(f"{tools.url}/city", "read_document", "Read a document from the archive",
                  {"id": {"type": "string"}}, ["id"]),
    ]


@pytest.fixture
async def app(start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
              tools: ToolServer) -> Any:
    running = await start_app(database_url, model_url=model.url, candidate_k=3)
    response = await running.client.post("/v1/tools/bulk", json={"tools": specs(tools)})
    assert response.status_code == 200, response.text
    return running


async def run_turn(client: httpx.AsyncClient, message: str, **extra: Any) -> dict[str, Any]:
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    response = await client.post(f"/v1/conversations/{conversation}/turns",
                                 json={"message": message, **extra})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def examples(client: httpx.AsyncClient, tool: str) -> dict[str, Any]:
    response = await client.get(f"/v1/tools/{tool}/examples")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def learned_texts(client: httpx.AsyncClient, tool: str, count: int = 1) -> list[str]:
    """The tool's learned examples, once it has `count` of them (learning runs after the turn
    has answered); what it has after 10 s otherwise."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        texts = [e["text"] for e in (await examples(client, tool))["learned"]]
        if len(texts) >= count or asyncio.get_running_loop().time() > deadline:
            return texts
        await asyncio.sleep(0.05)


async def settled(app: Any) -> None:
    """Wait for whatever learning the app's turns started (the background tasks)."""
    await app.state["learner"].settle()


async def rank(client: httpx.AsyncClient, query: str, tool: str) -> int:
    response = await client.get("/v1/tools/search", params={"q": query, "k": 6})
    names = [h["name"] for h in response.json()["results"]]
    return names.index(tool)


def ticket_call(model: ScriptedModel, tool: str = "zd_fetch") -> None:
    model.push(ScriptedReply(tool_calls=[(tool, {"id": "SUP-4471"}, "call_1")]),
               ScriptedReply(content="It is open."))


async def test_a_good_call_in_a_completed_turn_becomes_a_learned_example(
    app: Any, model: ScriptedModel
) -> None:
    ticket_call(model)
    turn = await run_turn(app.client, TICKET)
    assert await learned_texts(app.client, "zd_fetch") == [TICKET]
    shown = await examples(app.client, "zd_fetch")
    example = shown["learned"][0]
    assert (example["version"], example["uses"], example["confirmed"],
            example["found_by_search"], example["turn_id"], example["call_id"]) == (
        1, 1, False, False, turn["id"], "call_1")
    assert (shown["registered"], shown["found_by_search"], shown["learn_from_use"]) == (
        [], 0, True)
    assert (await examples(app.client, "get_weather"))["learned"] == []


async def test_learned_examples_lift_their_tool_for_requests_like_them(
    app: Any, model: ScriptedModel
) -> None:
    before = await rank(app.client, SIMILAR, "zd_fetch")
    ticket_call(model)
    await run_turn(app.client, TICKET)
    await app.state["learner"].settle()  # stored, and in the index
    assert await learned_texts(app.client, "zd_fetch") == [TICKET]
    assert before > 0
    assert await rank(app.client, SIMILAR, "zd_fetch") == 0


async def test_a_repeated_request_is_counted_not_stored_twice(
    app: Any, model: ScriptedModel
) -> None:
    for _ in range(2):
        ticket_call(model)
        await run_turn(app.client, TICKET)
    deadline = asyncio.get_running_loop().time() + 10
    while (await examples(app.client, "zd_fetch"))["learned"][0]["uses"] < 2:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    assert len((await examples(app.client, "zd_fetch"))["learned"]) == 1


async def test_each_tool_of_a_multi_call_request_learns_its_own_sentence(
    app: Any, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(tool_calls=[("get_weather", {"city": "Oslo"}, "c1"),
                                         ("zd_fetch", {"id": "SUP-1"}, "c2")]),
               ScriptedReply(content="Done."))
    await run_turn(app.client, "Is it raining in Oslo right now? Also look up what ticket "
                               "SUP-1 says.")
    assert await learned_texts(app.client, "get_weather") == ["Is it raining in Oslo right now?"]
    assert await learned_texts(app.client, "zd_fetch") == ["look up what ticket SUP-1 says"]


async def test_failed_refused_and_unknown_calls_teach_nothing(
    app: Any, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(ScriptedReply(tool_calls=[("get_weather", {"town": "Oslo"}, "bad_args"),
                                         ("send_money", {"to": "x"}, "made_up")]),
               ScriptedReply(content="Sorry."))
    await run_turn(app.client, "Is it raining in Oslo?")
    failing = http_tool(f"{tools.url}/status/500", "zd_fetch", "Fetch a record", {}, [])
    assert (await app.client.put("/v1/tools/zd_fetch", json=failing)).status_code == 200
    ticket_call(model)
    await run_turn(app.client, TICKET)
    await settled(app)
    assert (await examples(app.client, "get_weather"))["learned"] == []
    assert (await examples(app.client, "zd_fetch"))["learned"] == []


async def test_a_tool_the_model_found_with_search_tools_is_counted_as_a_miss(
    app: Any, model: ScriptedModel
) -> None:
    message = "What did the board decide in 1998?"
    model.push(
        ScriptedReply(tool_calls=[("search_tools", {"query": "archive documents"}, "s1")]),
        ScriptedReply(tool_calls=[("read_document", {"id": "minutes-1998"}, "c1")]),
        ScriptedReply(content="Found it."))
    assert await rank(app.client, message, "read_document") >= 1  # not the one offered
    await run_turn(app.client, message, candidate_k=1)
    await learned_texts(app.client, "read_document")
    shown = await examples(app.client, "read_document")
    assert (shown["found_by_search"], shown["learned"][0]["found_by_search"]) == (1, True)
    misses = (await app.client.get("/v1/retrieval/misses")).json()["items"]
    assert [(m["name"], m["finds"]) for m in misses] == [("read_document", 1)]


async def test_good_feedback_confirms_the_turns_learned_examples(
    app: Any, model: ScriptedModel
) -> None:
    ticket_call(model)
    turn = await run_turn(app.client, TICKET)
    await learned_texts(app.client, "zd_fetch")
    response = await app.client.post(f"/v1/turns/{turn['id']}/feedback",
                                     json={"rating": "good"})
    assert response.status_code == 200, response.text
    assert response.json() == {"turn_id": turn["id"], "rating": "good", "calls": ["call_1"],
                               "confirmed": 1, "removed": 0, "negatives": 0}
    assert (await examples(app.client, "zd_fetch"))["learned"][0]["confirmed"] is True


async def test_bad_feedback_removes_the_example_and_pushes_the_tool_down(
    app: Any, model: ScriptedModel
) -> None:
    ticket_call(model, "read_document")
    turn = await run_turn(app.client, TICKET)
    await app.state["learner"].settle()
    lifted = await rank(app.client, TICKET, "read_document")
    response = await app.client.post(f"/v1/turns/{turn['id']}/feedback",
                                     json={"rating": "bad", "calls": ["call_1"]})
    assert response.json() == {"turn_id": turn["id"], "rating": "bad", "calls": ["call_1"],
                               "confirmed": 0, "removed": 1, "negatives": 1}
    assert (await examples(app.client, "read_document"))["learned"] == []
    assert lifted == 0
    assert await rank(app.client, TICKET, "read_document") == 5  # last of six
    assert await rank(app.client, "Read a document from the archive", "read_document") == 0


async def test_feedback_naming_a_call_the_turn_did_not_make_is_refused(
    app: Any, model: ScriptedModel
) -> None:
    ticket_call(model)
    turn = await run_turn(app.client, TICKET)
    response = await app.client.post(f"/v1/turns/{turn['id']}/feedback",
                                     json={"rating": "bad", "calls": ["call_1", "nope"]})
    assert response.status_code == 422
    assert response.json()["errors"] == [{
        "pointer": "/calls/1",
        "message": f"'nope' is not a call of turn '{turn['id']}' that succeeded with a "
                   "registered tool; those are: call_1"}]
    unknown = await app.client.post("/v1/turns/turn_nope/feedback", json={"rating": "good"})
    assert unknown.status_code == 404
    typo = await app.client.post(f"/v1/turns/{turn['id']}/feedback", json={"rating": "meh"})
    assert typo.status_code == 422


async def test_learned_examples_can_be_deleted_one_or_all(
    app: Any, model: ScriptedModel
) -> None:
    for message in (TICKET, "show me ticket SUP-2 in the desk"):
        ticket_call(model)
        await run_turn(app.client, message)
    await learned_texts(app.client, "zd_fetch", 2)
    first = (await examples(app.client, "zd_fetch"))["learned"][0]["id"]
    assert (await app.client.delete(f"/v1/tools/zd_fetch/examples/{first}")).status_code \
        == 204
    assert await learned_texts(app.client, "zd_fetch") == ["show me ticket SUP-2 in the desk"]
    missing = await app.client.delete(f"/v1/tools/zd_fetch/examples/{first}")
    assert missing.status_code == 404
    assert missing.json()["detail"] == (
        f"tool 'zd_fetch' in namespace 'default' has no learned example {first}; "
        "GET /v1/tools/zd_fetch/examples lists them")
    assert (await app.client.delete("/v1/tools/zd_fetch/examples")).status_code == 204
    assert (await examples(app.client, "zd_fetch"))["learned"] == []
    assert (await app.client.get("/v1/tools/nope/examples")).status_code == 404


async def test_a_tool_or_a_tenant_can_say_not_to_learn(
    app: Any, model: ScriptedModel, tools: ToolServer
) -> None:
    quiet = {**specs(tools)[0], "learn_from_use": False}
    assert (await app.client.put("/v1/tools/zd_fetch", json=quiet)).status_code == 200
    ticket_call(model)
    await run_turn(app.client, TICKET)
    assert (await app.client.put("/v1/retrieval/settings", json={"learning": False})).json() \
        == {"learning": False}
    model.push(ScriptedReply(tool_calls=[("get_weather", {"city": "Oslo"})]),
               ScriptedReply(content="Sunny."))
    await run_turn(app.client, "Is it raining in Oslo?")
    await settled(app)
    assert (await examples(app.client, "zd_fetch"))["learned"] == []
    assert (await examples(app.client, "get_weather"))["learn_from_use"] is False
    assert (await examples(app.client, "get_weather"))["learned"] == []
    bad = await app.client.put("/v1/retrieval/settings", json={"learnin": True})
    assert bad.status_code == 422


async def test_nothing_learnt_crosses_tenants(
    app: Any, model: ScriptedModel, tools: ToolServer
) -> None:
    other = httpx.AsyncClient(base_url=app.url, headers={
        "Authorization": f"Bearer {await new_key(app.client, 'admin', tenant='other')}"})
    async with other:
        assert (await other.post("/v1/tools/bulk", json={"tools": specs(tools)})).status_code \
            == 200
        before = await rank(other, SIMILAR, "zd_fetch")
        ticket_call(model)
        await run_turn(app.client, TICKET)
        await learned_texts(app.client, "zd_fetch")
        assert (await examples(other, "zd_fetch"))["learned"] == []
        assert await rank(other, SIMILAR, "zd_fetch") == before


async def test_another_replica_searches_with_what_this_one_learnt(
    app: Any, model: ScriptedModel, start_app: Callable[..., Any], database_url: str
) -> None:
    second = await start_app(database_url, model_url=model.url)
    before = await rank(second.client, SIMILAR, "zd_fetch")
    ticket_call(model)
    await run_turn(app.client, TICKET)
    await learned_texts(app.client, "zd_fetch")
    assert before > 0
    await until(lambda: rank_is(second.client, SIMILAR, "zd_fetch", 0))
    restarted = await start_app(database_url, model_url=model.url)
    assert await rank(restarted.client, SIMILAR, "zd_fetch") == 0


async def rank_is(client: httpx.AsyncClient, query: str, tool: str, place: int) -> bool:
    return await rank(client, query, tool) == place


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_failed_turn_teaches_nothing(app: Any, model: ScriptedModel) -> None:
    model.push(ScriptedReply(tool_calls=[("zd_fetch", {"id": "SUP-4471"}, "call_1")]),
               ScriptedFailure(status=400, body="bad request"))
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    response = await app.client.post(f"/v1/conversations/{conversation}/turns",
                                     json={"message": TICKET})
    assert response.status_code >= 400
    await settled(app)
    assert (await examples(app.client, "zd_fetch"))["learned"] == []


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


async def test_near_duplicates_merge_and_a_full_tool_drops_its_most_redundant_example(
    database_url: str
) -> None:
    pool = await connect_pool(database_url)
    rng = np.random.default_rng(3)
    spread = [_unit(rng.standard_normal(384)) for _ in range(learned.PER_TOOL)]

    def example(text: str, vector: np.ndarray, search: bool = False) -> NewExample:
        return NewExample(namespace="default", name="zd_fetch", version=1, text=text,
                          vector=vector, found_by_search=search, turn_id="t", call_id="c")

    async def add(text: str, vector: np.ndarray, search: bool = False) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            return await learned.add(conn, "default", example(text, vector, search), "m")

    try:
        assert [await add(f"r{i}", v) for i, v in enumerate(spread[:-1])] == [True] * (
            learned.PER_TOOL - 1)
        twin = _unit(spread[0] + 0.01 * rng.standard_normal(384).astype(np.float32))
        assert await add("r0 again", twin) is False  # merged: cosine >= MERGE_COSINE
        near_r1 = _unit(spread[1] + 0.5 * spread[2])  # close to r1 (0.89), not a twin
        assert await add("near r1", near_r1, search=True) is True  # the tool is full now
        assert await add("last", spread[-1]) is True  # one more: the most redundant goes
        shown = await learned.examples_of(pool, "default", ("default", "zd_fetch"))
        assert len(shown) == learned.PER_TOOL
        texts = {e.text: e for e in shown}
        assert texts["r0"].uses == 2
        assert "near r1" in texts  # found by search_tools: kept before the others
        assert "r1" not in texts  # the most redundant of the rest
    finally:
        await pool.close()
