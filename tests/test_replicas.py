"""Three replicas on one Postgres, as real processes: turns spread across them; one replica is
SIGKILLed and one SIGTERMed mid-turn. Every turn completes, no call of a tool that is not
idempotent is made twice, and each streaming client that reconnects to the replica left sees
every event of its turn once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.replicas import Replica, replicas, sigkill, sigterm
from tests.scripted_model import ScriptedReply, Step, scripted_model
from tests.sse import Event, events_of, read_stream
from tests.tool_server import http_tool, tool_server

TURNS = 6


def _charge_then_answer(body: dict[str, Any]) -> Step:
    last = body["messages"][-1]
    if last["role"] == "tool":
        return ScriptedReply(content="Done.")
    label = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return ScriptedReply(tool_calls=[("charge_card", {"ms": 2000, "label": label})])


async def _stream(replica: Replica, conversation: str, message: str,
                  seen: list[Event]) -> None:
    """Stream a turn, keeping what arrives, until it ends or the replica goes away."""
    try:
        async with replica.client.stream(
            "POST", f"/v1/conversations/{conversation}/turns",
            json={"message": message, "stream": True},
        ) as response:
            async for event in events_of(response):
                seen.append(event)
    except httpx.TransportError:
        pass  # the replica died or stopped: the client reconnects elsewhere


async def test_turns_survive_a_killed_and_a_stopped_replica(
    database_url: str, tmp_path: Path
) -> None:
    async with tool_server() as tools, scripted_model(responder=_charge_then_answer) as model, \
            replicas(3, database_url, model.url, tmp_path, TURN_LEASE_S="2",
                     SHUTDOWN_GRACE_S="0.5") as fleet:
        tool = http_tool(f"{tools.url}/sleep", "charge_card", "Charge the card",
                         {"ms": {"type": "number"}, "label": {"type": "string"}}, ["ms"],
                         timeout_s=30)
        assert (await fleet[0].client.post("/v1/tools", json=tool)).status_code == 201
        conversations = [(await fleet[n % 3].client.post("/v1/conversations", json={})).json()[
            "id"] for n in range(TURNS)]
        seen: list[list[Event]] = [[] for _ in range(TURNS)]
        streams = [asyncio.create_task(_stream(fleet[n % 3], conversations[n], f"order {n}",
                                               seen[n])) for n in range(TURNS)]
        while len(tools.arrived) < TURNS:
            await asyncio.sleep(0.05)

        sigkill(fleet[0])
        sigterm(fleet[1])
        await asyncio.gather(*streams)
        survivor = fleet[2]
        for n in range(TURNS):
            if not seen[n] or seen[n][-1].type != "turn.completed":
                turn_id = seen[n][0].data["turn_id"]
                rest = await read_stream(survivor.client, "GET", f"/v1/turns/{turn_id}/events",
                                         headers={"Last-Event-ID": seen[n][-1].id or ""},
                                         timeout=60)
                seen[n].extend(rest.events)

    for n, events in enumerate(seen):
        ids = [e.id for e in events]
        assert len(ids) == len(set(ids)), f"turn {n} saw an event twice: {ids}"
        assert events[-1].type == "turn.completed", (n, [e.type for e in events])
    labels = Counter(body["label"] for _, body in tools.arrived)
    assert labels == Counter(f"order {n}" for n in range(TURNS))  # each charge made once
    outcomes = Counter(e.data["call"]["error_type"] or "ok" for events in seen for e in events
                       if e.type == "tool_call.finished")
    assert outcomes == Counter({"ok": 2, "outcome_unknown": 4}), outcomes
    taken = [n for n, events in enumerate(seen) if any(e.type == "turn.taken_over" for e in events)]
    assert taken == [0, 1, 3, 4]  # the killed replica's turns and the stopped one's
