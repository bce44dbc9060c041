"""Faults injected for real: Postgres restarts under a running service; the model server drops
a stream mid-reply. Nothing written is lost and the conversation goes on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pgserver
from pgserver._commands import pg_ctl

from tests.scripted_model import ScriptedDisconnect, ScriptedHang, ScriptedReply, scripted_model


async def statuses(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT status FROM turns ORDER BY started_at")
        return [r["status"] for r in rows]
    finally:
        await conn.close()


async def until_ok(check: Callable[[], Any], timeout_s: float = 20) -> Any:
    """Retry while the service reconnects; returns the first truthy result."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.1)


async def test_postgres_restarting_under_the_service_loses_nothing(
    start_app: Callable[..., Any], tmp_path: Path
) -> None:
    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    try:
        url = server.get_uri()
        async with scripted_model() as model:
            app = await start_app(url, model_url=model.url)
            await app.client.post("/v1/tools", json={"name": "before", "description": "Before."})
            conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
            model.push(ScriptedHang(1.5, then=ScriptedReply(content="Made it.")))
            running = asyncio.create_task(app.client.post(
                f"/v1/conversations/{conversation}/turns", json={"message": "during"}))
            while not model.requests:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(pg_ctl, ["-w", "restart", "-m", "fast"],
                                    pgdata=server.pgdata, user=server.system_user, timeout=60)
            during = await running
            # Either the turn finished after the restart, or it failed with a problem saying so.
            assert during.status_code in (200, 503), during.text

            async def healthy() -> bool:
                return bool((await app.client.get("/health")).status_code == 200)

            assert await until_ok(healthy)
            model.push(ScriptedReply(content="After."))
            after = await app.client.post(f"/v1/conversations/{conversation}/turns",
                                          json={"message": "after"})
            assert after.status_code == 200, after.text
            assert after.json()["message"]["content"] == "After."
            created = await app.client.post("/v1/tools",
                                            json={"name": "after_tool", "description": "After."})
            assert created.status_code == 201
            found = await app.client.get("/v1/tools/search", params={"q": "after"})
            assert "after_tool" in [h["name"] for h in found.json()["results"]]
        turn_statuses = await statuses(url)
        assert "running" not in turn_statuses
        assert turn_statuses[-1] == "completed"
    finally:
        server.cleanup()


async def test_a_stream_dropped_mid_reply_fails_the_turn_cleanly(
    start_app: Callable[..., Any], database_url: str
) -> None:
    reply = ScriptedReply(content="This answer will be cut off before it ends.")
    async with scripted_model(ScriptedDisconnect(after_chunks=3, reply=reply)) as model:
        app = await start_app(database_url, model_url=model.url)
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        events: list[str] = []
        async with app.client.stream("POST", f"/v1/conversations/{conversation}/turns",
                                     json={"message": "tell me", "stream": True}) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    events.append(line.removeprefix("event:").strip())
        assert events[0] == "turn.started" and events[-1] == "turn.failed"
        turn = (await app.client.get(f"/v1/conversations/{conversation}")).json()["turns"][0]
        assert turn["status"] == "failed"
        assert "the stream broke after" in turn["error"]["detail"]
        model.push(ScriptedReply(content="Second try."))
        again = await app.client.post(f"/v1/conversations/{conversation}/turns",
                                      json={"message": "again"})
        assert again.json()["message"]["content"] == "Second try."
        messages = (await app.client.get(f"/v1/conversations/{conversation}/messages")).json()
        assert [(m["role"], m.get("content")) for m in messages["items"]] == [
            ("user", "tell me"), ("user", "again"), ("assistant", "Second try.")]


