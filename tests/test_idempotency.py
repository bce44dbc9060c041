"""Idempotency-Key: a retried request returns the first result and does its work once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from tests.scripted_model import ScriptedHang, ScriptedReply, scripted_model


async def count(database_url: str, sql: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def test_a_retried_turn_returns_the_first_result_and_runs_once(
    start_app: Callable[..., Any], database_url: str
) -> None:
    async with scripted_model(ScriptedReply(content="Only once.")) as model:
        app = await start_app(database_url, model_url=model.url)
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        headers = {"Idempotency-Key": "turn-1"}
        url = f"/v1/conversations/{conversation}/turns"
        first = await app.client.post(url, json={"message": "hi"}, headers=headers)
        again = await app.client.post(url, json={"message": "hi"}, headers=headers)
        assert first.status_code == again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["message"] == {"role": "assistant", "content": "Only once."}
        assert len(model.requests) == 1
    assert await count(database_url, "SELECT count(*) FROM turns") == 1


async def test_a_retry_while_the_first_turn_runs_is_told_so(
    start_app: Callable[..., Any], database_url: str
) -> None:
    async with scripted_model(ScriptedHang(1.0, then=ScriptedReply(content="late"))) as model:
        app = await start_app(database_url, model_url=model.url)
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        headers = {"Idempotency-Key": "slow"}
        url = f"/v1/conversations/{conversation}/turns"
        first = asyncio.create_task(app.client.post(url, json={"message": "x"}, headers=headers))
        while not model.requests:
            await asyncio.sleep(0.02)
        retry = await app.client.post(url, json={"message": "x"}, headers=headers)
        assert retry.status_code == 409
        assert "is still running (turn turn_" in retry.json()["detail"]
        assert (await first).status_code == 200
        replay = await app.client.post(url, json={"message": "x"}, headers=headers)
        assert replay.json()["message"]["content"] == "late"
        assert len(model.requests) == 1


async def test_the_same_key_with_another_body_is_refused(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app = await start_app(database_url)
    headers = {"Idempotency-Key": "tool-a"}
    tool = {"name": "a_tool", "description": "first"}
    assert (await app.client.post("/v1/tools", json=tool, headers=headers)).status_code == 201
    other = await app.client.post("/v1/tools", json={**tool, "description": "second"},
                                  headers=headers)
    assert other.status_code == 422
    assert other.json()["detail"] == (
        "Idempotency-Key 'tool-a' was used with a different request; use a new key for it"
    )


async def test_a_retried_registration_replays_its_response(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app = await start_app(database_url)
    headers = {"Idempotency-Key": "bulk-1"}
    body = {"tools": [{"name": f"t{i}", "description": f"tool {i}"} for i in range(3)]}
    first = await app.client.post("/v1/tools/bulk", json=body, headers=headers)
    again = await app.client.post("/v1/tools/bulk", json=body, headers=headers)
    assert first.json() == again.json() == {"created": 3, "updated": 0, "unchanged": 0}
    single = {"name": "solo", "description": "one tool"}
    made = await app.client.post("/v1/tools", json=single, headers={"Idempotency-Key": "s"})
    redo = await app.client.post("/v1/tools", json=single, headers={"Idempotency-Key": "s"})
    assert (made.status_code, redo.status_code) == (201, 201)
    assert redo.json() == made.json()
    assert await count(database_url, "SELECT count(*) FROM tool_versions") == 4


async def test_a_failed_first_request_leaves_the_key_free_for_a_retry(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app = await start_app(database_url)
    headers = {"Idempotency-Key": "k"}
    await app.client.post("/v1/tools", json={"name": "dup", "description": "x"})
    conflict = await app.client.post("/v1/tools", json={"name": "dup", "description": "x"},
                                     headers=headers)
    assert conflict.status_code == 409
    await app.client.delete("/v1/tools/dup")
    retry = await app.client.post("/v1/tools", json={"name": "dup", "description": "x"},
                                  headers=headers)
    assert retry.status_code == 201


async def test_get_turn_reports_a_finished_turn(
    start_app: Callable[..., Any], database_url: str
) -> None:
    async with scripted_model(ScriptedReply(content="Hello.")) as model:
        app = await start_app(database_url, model_url=model.url)
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        made = (await app.client.post(f"/v1/conversations/{conversation}/turns",
                                      json={"message": "hi"})).json()
        fetched = await app.client.get(f"/v1/turns/{made['id']}")
        assert fetched.json() == made
        assert (await app.client.get("/v1/turns/turn_nope")).status_code == 404
