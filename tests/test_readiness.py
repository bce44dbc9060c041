"""`GET /ready`: 200 with each check when Postgres and every model backend answer, 503 naming
what is down, one answer reused for a few seconds; `/health` stays the liveness check."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx

from app.readiness import READY_CACHE_S
from tests.loopback import free_port
from tests.scripted_model import ScriptedModel


def connection_refused(port: int) -> str:
    """How a check reads a model server that refuses the connection."""
    return (f"ConnectError: Cannot connect to host 127.0.0.1:{port} ssl:default "
            f"[Connect call failed ('127.0.0.1', {port})]")


def statuses(body: dict[str, Any]) -> dict[str, Any]:
    """The answer without its latencies, which vary."""
    return {"status": body["status"], "detail": body["detail"],
            "database": body["database"]["status"],
            "models": {name: check["status"] for name, check in body["models"].items()}}


async def test_ready_answers_200_with_each_check_when_everything_answers_and_needs_no_key(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel
) -> None:
    app = await start_app(database_url, model_url=model.url)
    async with httpx.AsyncClient(base_url=app.url) as anonymous:
        response = await anonymous.get("/ready")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert statuses(response.json()) == {"status": "ready", "detail": "every check is ok",
                                         "database": "ok", "models": {"default": "ok"}}
    assert set(response.json()["models"]["default"]) == {"status", "latency_ms"}


async def test_ready_answers_503_naming_the_backend_that_is_down_while_health_says_alive(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel
) -> None:
    port = free_port()
    away = f"http://127.0.0.1:{port}/v1"
    refused = connection_refused(port)
    backends = json.dumps([{"name": "big", "base_url": away, "model": "qwen"}])
    app = await start_app(database_url, model_url=model.url, model_backends=backends)
    response = await app.client.get("/ready")
    assert response.status_code == 503
    assert statuses(response.json()) == {
        "status": "unready",
        "detail": f"down: model backend 'big' at {away} ({refused})",
        "database": "ok", "models": {"default": "ok", "big": "down"}}
    assert response.json()["models"]["big"]["detail"] == refused
    assert (await app.client.get("/health")).status_code == 200


async def test_ready_reuses_one_answer_for_a_few_seconds_so_polling_asks_the_model_once(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel
) -> None:
    app = await start_app(database_url, model_url=model.url)
    await app.client.get("/ready")
    asked = model.models_listed
    answers = await asyncio.gather(*(app.client.get("/ready") for _ in range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    assert model.models_listed == asked
    await asyncio.sleep(READY_CACHE_S)
    assert (await app.client.get("/ready")).status_code == 200
    assert model.models_listed == asked + 1
