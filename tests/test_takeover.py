"""A turn outlives its replica: one whose replica died is taken over by another and finished from
what was stored; a replica that stops lets its turns finish, then hands the rest over."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from planner.records import TurnRequest
from planner.takeovers import MAX_TAKEOVERS
from tests.replicas import Replica, replicas, sigkill, sigterm
from tests.scripted_model import ScriptedHang, ScriptedReply, Step, scripted_model
from tests.sse import read_stream
from tests.test_tracing import stored_trace
from tests.tool_server import ToolServer, http_tool, tool_server

SLEEP = {"ms": {"type": "number"}, "label": {"type": "string"}}


def _tools(tools: ToolServer) -> list[dict[str, Any]]:
    return [
        http_tool(f"{tools.url}/sleep", "look_up_order", "Look up an order", SLEEP, ["ms"],
                  idempotent=True, timeout_s=30),
        http_tool(f"{tools.url}/sleep", "charge_card", "Charge the card", SLEEP, ["ms"],
                  timeout_s=30),
    ]


def _answer_after_tools(body: dict[str, Any]) -> Step:
    """Call both tools, then answer once every result is in."""
    if body["messages"][-1]["role"] == "tool":
        return ScriptedReply(content="Done.")
    return ScriptedReply(tool_calls=[("look_up_order", {"ms": 1500, "label": "look"}),
                                     ("charge_card", {"ms": 1500, "label": "charge"})])


async def _until(check: Callable[[], Any], timeout_s: float = 60) -> None:
    for _ in range(int(timeout_s * 20)):
        if await check() if asyncio.iscoroutinefunction(check) else check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def _finished(client: httpx.AsyncClient, turn_id: str, timeout_s: float = 60
                    ) -> dict[str, Any]:
    for _ in range(int(timeout_s * 10)):
        turn = (await client.get(f"/v1/turns/{turn_id}")).json()
        if turn["status"] not in ("running",):
            return dict(turn)
        await asyncio.sleep(0.1)
    raise AssertionError(f"turn {turn_id} did not finish")


async def _register(replica: Replica, tools: ToolServer) -> None:
    response = await replica.client.post("/v1/tools/bulk", json={"tools": _tools(tools)})
    assert response.status_code == 200, response.text


async def _start_turn(replica: Replica, message: str, *, stream: bool = False
                      ) -> tuple[str, asyncio.Task[Any]]:
    """A conversation and a turn posted in the background; the turn's id once it is written."""
    conversation = (await replica.client.post("/v1/conversations", json={})).json()["id"]
    posted = asyncio.create_task(replica.client.post(
        f"/v1/conversations/{conversation}/turns", json={"message": message, "stream": stream}))
    turn_id = ""

    async def written() -> bool:
        nonlocal turn_id
        turns = (await replica.client.get(f"/v1/conversations/{conversation}")).json()["turns"]
        turn_id = turns[0]["id"] if turns else ""
        return bool(turn_id)

    await _until(written)
    return turn_id, posted


async def _stored_events(database_url: str, turn_id: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM turn_events WHERE turn_id = $1 AND run = 1", turn_id))
    finally:
        await conn.close()


async def test_a_killed_replicas_turn_is_finished_by_another_and_no_call_is_made_twice(
    database_url: str, start_app: Callable[..., Any], tmp_path: Path
) -> None:
    """The idempotent call that was running is made again; the other is reported `unknown`,
    to the model and in the turn, and not made again."""
    async with tool_server() as tools, scripted_model(responder=_answer_after_tools) as model, \
            replicas(1, database_url, model.url, tmp_path, TURN_LEASE_S="1") as [first]:
        await _register(first, tools)
        turn_id, posted = await _start_turn(first, "charge my order", stream=True)
        await _until(lambda: len(tools.arrived) == 2)
        # Killed once its first events are stored (they are written in batches; on a loaded
        # machine the calls can arrive first), so the stored stream has both runs to check.

        async def stored() -> bool:
            return await _stored_events(database_url, turn_id)

        await _until(stored)
        sigkill(first)
        await first.exited()
        posted.cancel()

        second = await start_app(database_url, model_url=model.url, turn_lease_s=1.0)
        turn = await _finished(second.client, turn_id)

        assert turn["status"] == "completed", turn
        assert turn["message"]["content"] == "Done."
        assert [(path, body["label"]) for path, body in tools.arrived] == [
            ("/sleep", "look"), ("/sleep", "charge"), ("/sleep", "look")]
        calls = {c["name"]: c for c in turn["tool_calls"]}
        assert calls["look_up_order"]["result"] == {"slept_ms": 1500, "label": "look"}
        assert calls["charge_card"]["error_type"] == "outcome_unknown"
        assert calls["charge_card"]["error"].startswith(
            "this call had started when the replica running the turn stopped")
        [takeover] = turn["takeovers"]
        assert takeover["from"] != takeover["by"]
        told = [m for m in model.requests[-1]["messages"] if m["role"] == "tool"]
        assert [m["tool_call_id"] for m in told] == [c["id"] for c in turn["tool_calls"]]
        assert '"error_type": "outcome_unknown"' in told[1]["content"]
        statuses = await _call_statuses(database_url, turn_id)
        assert statuses == {"look_up_order": "succeeded", "charge_card": "unknown"}
        root, went_on = await _root_and_continuation(second.client, turn_id)
        assert root["attributes"]["switchboard.turn.lost_with"] == takeover["from"]
        assert root["status"]["code"] == "ERROR"
        assert went_on["attributes"]["switchboard.turn.taken_over_from"] == takeover["from"]
        [link] = [link for link in went_on["links"] if link["span_id"] == root["span_id"]]
        assert link["attributes"] == {"switchboard.link": "takeover"}
        stored = await read_stream(second.client, "GET", f"/v1/turns/{turn_id}/events")
        runs = [(e.id, e.type) for e in stored.events]
        assert runs[0] == ("1.1", "turn.started")
        taken = runs.index(("2.1", "turn.taken_over"))
        assert all(i.startswith("1.") for i, _ in runs[:taken])
        assert runs[-1][1] == "turn.completed" and runs[-1][0].startswith("2.")


async def test_a_plan_taken_over_reruns_its_idempotent_step_and_reports_the_unstarted_one(
    database_url: str, start_app: Callable[..., Any], tmp_path: Path
) -> None:
    """The plan's message names every step: the running one (idempotent) is made again, the
    one waiting for it had not started and is reported as not made; the join goes on."""
    steps = [{"id": "s1", "tool": "look_up_order", "arguments": {"ms": 1500, "label": "a"}},
             {"id": "s2", "tool": "charge_card", "arguments": {"ms": 10, "label": "$s1.label"}}]

    def respond(body: dict[str, Any]) -> Step:
        if body["messages"][-1]["role"] == "tool":
            return ScriptedReply(content="Looked it up; nothing charged.")
        return ScriptedReply(content=json.dumps({"steps": steps}))

    async with tool_server() as tools, scripted_model(responder=respond) as model, \
            replicas(1, database_url, model.url, tmp_path, TURN_LEASE_S="1") as [first]:
        await _register(first, tools)
        conversation = (await first.client.post("/v1/conversations", json={})).json()["id"]
        posted = asyncio.create_task(first.client.post(
            f"/v1/conversations/{conversation}/turns",
            json={"message": "look up and charge", "mode": "plan"}))
        await _until(lambda: len(tools.arrived) == 1)
        sigkill(first)
        await first.exited()
        posted.cancel()

        second = await start_app(database_url, model_url=model.url, turn_lease_s=1.0)
        turns = (await second.client.get(f"/v1/conversations/{conversation}")).json()["turns"]
        turn = await _finished(second.client, turns[0]["id"])

    assert (turn["status"], turn["message"]["content"]) == (
        "completed", "Looked it up; nothing charged.")
    calls = {c["id"]: c for c in turn["tool_calls"]}
    assert calls["p0_s1"]["result"] == {"slept_ms": 1500, "label": "a"}
    assert (calls["p0_s2"]["error_type"], calls["p0_s2"]["attempts"]) == ("not_started", 0)
    assert [body["label"] for _, body in tools.arrived] == ["a", "a"]
    told = {m["tool_call_id"]: m["content"] for m in model.requests[-1]["messages"]
            if m["role"] == "tool"}
    assert '"error_type": "not_started"' in told["p0_s2"]


async def test_a_turn_killed_while_the_model_answered_asks_again_from_the_same_history(
    database_url: str, start_app: Callable[..., Any], tmp_path: Path
) -> None:
    async with scripted_model(ScriptedHang(60)) as model, \
            replicas(1, database_url, model.url, tmp_path, TURN_LEASE_S="1") as [first]:
        turn_id, posted = await _start_turn(first, "remember this")
        await _until(lambda: bool(model.requests))
        sigkill(first)
        await first.exited()
        posted.cancel()

        model.push(ScriptedReply(content="Remembered."))
        second = await start_app(database_url, model_url=model.url, turn_lease_s=1.0)
        turn = await _finished(second.client, turn_id)
        assert (turn["status"], turn["message"]["content"]) == ("completed", "Remembered.")
        assert model.requests[0]["messages"] == model.requests[1]["messages"]
        conversation = turn["conversation_id"]
        messages = (await second.client.get(f"/v1/conversations/{conversation}/messages")).json()
        assert [(m["role"], m["content"]) for m in messages["items"]] == [
            ("user", "remember this"), ("assistant", "Remembered.")]


async def test_a_made_up_tool_call_cut_short_is_refused_again_not_reported_as_possibly_made(
    database_url: str, start_app: Callable[..., Any]
) -> None:
    """A misbehaving model called a tool the turn does not have, and its replica died before
    refusing it: the call was never made, so the takeover refuses it as unknown again."""
    async with scripted_model(ScriptedReply(content="I cannot send money.")) as model:
        app = await start_app(database_url, model_url=model.url, turn_lease_s=0.6)
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                """INSERT INTO turns (tenant_id, id, conversation_id, status, mode, model,
                                      request, owner, heartbeat_at)
                   VALUES ('default', 'turn_cut', $1, 'running', 'auto', 'default',
                           '{"message": "send 5 to bob"}', 'gone', now() - interval '1 hour')""",
                conversation)
            await conn.execute(
                """INSERT INTO messages (tenant_id, conversation_id, turn_id, role, content,
                                         tool_calls)
                   VALUES ('default', $1, 'turn_cut', 'user', 'send 5 to bob', NULL),
                          ('default', $1, 'turn_cut', 'assistant', '', $2::jsonb)""",
                conversation, json.dumps([{"id": "call_1", "type": "function", "function": {
                    "name": "send_money", "arguments": '{"to": "bob"}'}}]))
            await conn.execute(
                """INSERT INTO tool_calls (tenant_id, turn_id, id, conversation_id, step, name,
                                           arguments, raw_arguments, status)
                   VALUES ('default', 'turn_cut', 'call_1', $1, 1, 'send_money',
                           '{"to": "bob"}', '{"to": "bob"}', 'running')""", conversation)
        finally:
            await conn.close()

        turn = await _finished(app.client, "turn_cut")

    assert (turn["status"], turn["message"]["content"]) == ("completed", "I cannot send money.")
    [call] = turn["tool_calls"]
    assert (call["id"], call["error_type"]) == ("call_1", "unknown_tool")
    assert await _call_statuses(database_url, "turn_cut") == {"send_money": "failed"}
    told = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]
    assert len(told) == 1 and '"error_type": "unknown_tool"' in told[0]


async def test_a_turn_written_but_never_run_is_taken_over_and_answered(
    database_url: str, start_app: Callable[..., Any]
) -> None:
    """A request can fail between writing its turn and running it: its lease runs out like a
    dead replica's, and the turn runs elsewhere instead of blocking its conversation."""
    async with scripted_model(ScriptedReply(content="Still here.")) as model:
        app = await start_app(database_url, model_url=model.url, turn_lease_s=0.6)
        engine = app.server.server.config.app.state.conversations.engine
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        stranded = await engine.start_turn("default", conversation, TurnRequest(message="hi"))
        turn = await _finished(app.client, stranded)
        assert (turn["status"], turn["message"]["content"]) == ("completed", "Still here.")
        assert len(turn["takeovers"]) == 1


async def test_sigterm_lets_short_turns_finish_and_hands_long_ones_over(
    database_url: str, start_app: Callable[..., Any], tmp_path: Path
) -> None:
    """Within SHUTDOWN_GRACE_S a turn in flight finishes where it is; past it, it is handed
    over and another replica finishes it at once, not a lease later."""

    def respond(body: dict[str, Any]) -> Step:
        if body["messages"][-1]["role"] == "tool":
            return ScriptedReply(content="Done.")
        ms = 300 if "short" in body["messages"][-1]["content"] else 4000
        return ScriptedReply(tool_calls=[("look_up_order", {"ms": ms, "label": str(ms)})])

    async with tool_server() as tools, scripted_model(responder=respond) as model, \
            replicas(1, database_url, model.url, tmp_path, TURN_LEASE_S="30",
                     SHUTDOWN_GRACE_S="1.5") as [first]:
        await _register(first, tools)
        short, _ = await _start_turn(first, "a short one")
        long, _ = await _start_turn(first, "a long one")
        await _until(lambda: len(tools.arrived) == 2)
        sigterm(first)
        refused = await _refused_while_stopping(first)
        # uvicorn stops, then raises the signal it caught again: the exit status says SIGTERM.
        assert await first.exited() == -signal.SIGTERM

        second = await start_app(database_url, model_url=model.url, turn_lease_s=30.0)
        done_short, done_long = await _finished(second.client, short), \
            await _finished(second.client, long)
        assert (done_short["status"], done_short["takeovers"]) == ("completed", [])
        assert done_long["status"] == "completed"
        assert len(done_long["takeovers"]) == 1
        assert [body["label"] for _, body in tools.arrived] == ["300", "4000", "4000"]
        assert refused in (None, 503)


async def test_a_turn_finishing_within_the_grace_period_keeps_its_lease_meanwhile(
    database_url: str, start_app: Callable[..., Any], tmp_path: Path
) -> None:
    """A grace period longer than the lease: the stopping replica renews its turns' leases
    while they finish, so the replica watching does not take them over."""

    def respond(body: dict[str, Any]) -> Step:
        if body["messages"][-1]["role"] == "tool":
            return ScriptedReply(content="Done.")
        return ScriptedReply(tool_calls=[("charge_card", {"ms": 2500, "label": "once"})])

    async with tool_server() as tools, scripted_model(responder=respond) as model, \
            replicas(1, database_url, model.url, tmp_path, TURN_LEASE_S="1",
                     SHUTDOWN_GRACE_S="6") as [first]:
        watching = await start_app(database_url, model_url=model.url, turn_lease_s=1.0)
        await _register(first, tools)
        turn_id, _ = await _start_turn(first, "charge once")
        await _until(lambda: len(tools.arrived) == 1)
        sigterm(first)
        await first.exited()
        turn = await _finished(watching.client, turn_id)
        assert (turn["status"], turn["takeovers"]) == ("completed", [])
        assert [body["label"] for _, body in tools.arrived] == ["once"]


async def _refused_while_stopping(replica: Replica) -> int | None:
    """What a new turn gets from a replica that is stopping: 503, or no connection at all."""
    try:
        conversation = (await replica.client.post("/v1/conversations", json={})).json()["id"]
        response = await replica.client.post(f"/v1/conversations/{conversation}/turns",
                                             json={"message": "one more"})
    except (httpx.TransportError, KeyError, ValueError):
        return None
    return response.status_code


async def test_a_turn_taken_over_too_often_is_interrupted_with_a_problem(
    database_url: str, start_app: Callable[..., Any]
) -> None:
    async with scripted_model() as model:
        app = await start_app(database_url, model_url=model.url, turn_lease_s=0.5)
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                """INSERT INTO turns (tenant_id, id, conversation_id, status, mode, model,
                                      request, owner, heartbeat_at, takeovers)
                   VALUES ('default', 'turn_poison', $1, 'running', 'auto', 'default',
                           '{"message": "x"}', 'gone', now() - interval '1 hour',
                           (SELECT jsonb_agg(jsonb_build_object('from', 'a', 'by', 'b',
                                                                'at', now()))
                            FROM generate_series(1, $2)))""",
                conversation, MAX_TAKEOVERS)
        finally:
            await conn.close()
        turn = await _finished(app.client, "turn_poison")
        assert turn["status"] == "interrupted"
        assert turn["error"] == {
            "type": "/problems/turn-interrupted", "title": "Turn interrupted", "status": 503,
            "detail": f"the replicas running this turn stopped {MAX_TAKEOVERS + 1} times before "
                      "it finished, so it is not taken over again; send the message again to "
                      "retry"}
        assert model.requests == []

        # A retry of the request that started it replays the turn, its problem as the answer.
        body = b'{"message": "x"}'
        await _tie_key(database_url, "retry-1", f"POST turns {conversation}", body, "turn_poison")
        replayed = await app.client.post(
            f"/v1/conversations/{conversation}/turns", content=body,
            headers={"Idempotency-Key": "retry-1", "Content-Type": "application/json"})
        assert replayed.status_code == 503
        assert replayed.headers["content-type"] == "application/problem+json"
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert replayed.json()["type"] == "/problems/turn-interrupted"
        assert (replayed.json()["status"], replayed.json()["turn"]["status"]) == (
            503, "interrupted")


async def _root_and_continuation(client: httpx.AsyncClient, turn_id: str
                                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The turn's first span and the one that went on from it, once both are stored (spans
    are written in batches, the continuation's after the turn ends)."""
    for _ in range(200):
        spans = (await stored_trace(client, turn_id))["spans"]
        root = next(s for s in spans if s["parent_span_id"] is None)
        went_on = [s for s in spans if s["parent_span_id"] == root["span_id"]
                   and s["name"] == root["name"]]
        if went_on:
            [continuation] = went_on
            return root, continuation
        await asyncio.sleep(0.05)
    raise AssertionError(f"turn {turn_id}: no span went on from its first one")


async def _tie_key(database_url: str, key: str, route: str, body: bytes, turn_id: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO idempotency_keys (tenant_id, key, route, request_hash, turn_id)
               VALUES ('default', $1, $2, $3, $4)""",
            key, route, hashlib.sha256(body).hexdigest(), turn_id)
    finally:
        await conn.close()


async def _call_statuses(database_url: str, turn_id: str) -> dict[str, str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT name, status FROM tool_calls WHERE turn_id = $1",
                                turn_id)
    finally:
        await conn.close()
    return {r["name"]: r["status"] for r in rows}

