"""`GET /live` on a port of its own: answered while the event loop is busy, and 503 once the
loop has stopped running."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.errors import SettingsError
from app.settings import load_settings
from tests.conftest import serve
from tests.embedders import SerialSlowEmbedder
from tests.loopback import free_port
from tests.tool_server import http_tool
from tools.embed import SentenceTransformerEmbedder


def ask_live(port: int, path: str = "/live") -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


async def test_live_answers_from_its_own_thread_and_says_when_the_loop_stalls(
    start_app: Callable[..., Any], database_url: str
) -> None:
    port = free_port()
    app = await start_app(database_url, liveness_port=port, liveness_max_lag_s=0.5)
    live = ask_live(port)
    assert live.status_code == 200
    assert live.json()["status"] == "ok"
    assert live.headers["cache-control"] == "no-store"
    assert (await app.client.get("/health")).status_code == 200

    # A handler that holds the loop: here, this test, which shares the service's loop.
    answers: list[httpx.Response] = []
    asker = threading.Thread(target=lambda: (time.sleep(1.2), answers.append(ask_live(port))))
    asker.start()
    time.sleep(2.0)  # holding the loop is the point
    asker.join()
    assert answers[0].status_code == 503
    stalled = answers[0].json()
    assert stalled["status"] == "stalled"
    assert stalled["loop_lag_ms"] >= 500
    assert "the event loop has not run for" in stalled["detail"]

    await app.client.get("/health")  # the loop runs again, and beats
    assert ask_live(port).status_code == 200


async def test_the_liveness_port_serves_live_only_and_closes_with_the_service(
    start_app: Callable[..., Any], database_url: str
) -> None:
    port = free_port()
    app = await start_app(database_url, liveness_port=port)
    other = ask_live(port, "/health")
    assert other.status_code == 404
    assert other.json()["detail"] == "this port answers GET /live only"
    assert ask_live(port, "/live?verbose=1").status_code == 200
    await app.stop()
    with pytest.raises(httpx.ConnectError):
        ask_live(port)


def test_liveness_is_off_unless_its_port_is_set_and_the_port_must_differ() -> None:
    assert load_settings({}).liveness_port is None
    assert load_settings({"LIVENESS_PORT": "9001"}).liveness_port == 9001
    for bad in ("8000", "0", "70000"):
        with pytest.raises(SettingsError, match=rf"^LIVENESS_PORT={bad}: expected"):
            load_settings({"LIVENESS_PORT": bad})
    with pytest.raises(SettingsError, match=r"^LIVENESS_MAX_LAG_S=0.0: expected"):
        load_settings({"LIVENESS_MAX_LAG_S": "0"})


async def test_searches_past_the_queue_bound_get_503_with_retry_after_and_the_rest_answer(
    settings_for: Callable[..., Any], embedder: SentenceTransformerEmbedder, database_url: str
) -> None:
    slow = SerialSlowEmbedder(embedder, delay_s=0.3)
    app = await serve(settings_for(database_url), slow)  # type: ignore[arg-type]
    try:
        client = app.client
        created = await client.post("/v1/tools", json=http_tool(
            "http://127.0.0.1:9/w", "get_weather", "Current weather for a city",
            {"city": {"type": "string"}}, ["city"]))
        assert created.status_code == 201, created.text
        slow.slow = True
        await client.get("/v1/tools/search", params={"q": "warm up"})  # learns the pace

        answers = await asyncio.gather(*(
            client.get("/v1/tools/search", params={"q": f"weather in city {i}"})
            for i in range(12)))
        codes = sorted(a.status_code for a in answers)
        assert set(codes) == {200, 503}, codes
        refused = [a for a in answers if a.status_code == 503]
        for answer in refused:
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.json()["type"].endswith("/problems/search-busy")
        for answer in answers:
            if answer.status_code == 200:
                assert answer.json()["results"][0]["name"] == "get_weather"

        # Once the queue has drained, a search is answered again.
        after = await client.get("/v1/tools/search", params={"q": "weather"})
        assert after.status_code == 200
    finally:
        await app.stop()
