"""A tenant's own embedding model: trained in the background, compared on held-out examples,
swapped in on every replica, rolled back with one call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.test_auth import new_key
from tools.embed import resolve_model
from tools.tenant_models import model_name

TOOLS = [
    ("zq_fetch", "Zendesk object fetch by key",
     ["has anyone answered my complaint", "is my support ticket still open",
      "what did the agent reply to my case", "status of help desk request 12",
      "did support get back to me"]),
    ("get_weather", "Current weather in a city",
     ["is it raining in Oslo", "how warm is it in Rome today", "weather in Paris now",
      "do I need an umbrella in London", "temperature in Berlin"]),
    ("find_invoice", "Look up an invoice by its number",
     ["show me invoice 2231", "how much was bill 77", "find the invoice from Acme",
      "what did we pay on invoice 9", "open invoice number 12"]),
    ("convert_currency", "Convert an amount between currencies",
     ["20 dollars in euros", "how many yen is 5 pounds", "convert 100 CHF to USD",
      "what is 7 euros in kroner", "exchange 50 dollars to pesos"]),
    ("get_time", "Current time in a time zone",
     ["what time is it in Tokyo", "clock in New York now", "time in Sydney",
      "current hour in Lisbon", "is it night in Seoul"]),
]


def spec(name: str, description: str, examples: list[str]) -> dict[str, Any]:
    return {"name": name, "description": description, "examples": examples}


@pytest.fixture
async def app(start_app: Callable[..., Any], database_url: str) -> Any:
    running = await start_app(database_url)
    tools = [spec(*t) for t in TOOLS]
    assert (await running.client.post("/v1/tools/bulk", json={"tools": tools})).status_code \
        == 200
    return running


async def until_done(client: httpx.AsyncClient, job_id: str, timeout_s: float = 300
                     ) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        job = (await client.get(f"/v1/retrieval/jobs/{job_id}")).json()
        if job["status"] != "running":
            return dict(job)
        assert asyncio.get_running_loop().time() < deadline, job
        await asyncio.sleep(0.5)


async def search(client: httpx.AsyncClient, query: str) -> list[str]:
    response = await client.get("/v1/tools/search", params={"q": query, "k": 5})
    assert response.status_code == 200, response.text
    return [h["name"] for h in response.json()["results"]]


async def test_a_training_job_reports_progress_and_keeps_its_comparison(app: Any) -> None:
    started = await app.client.post("/v1/retrieval/train",
                                    json={"epochs": 1, "batch_size": 8})
    assert started.status_code == 202, started.text
    job = started.json()
    assert (job["status"], job["stage"], job["options"]) == (
        "running", "collecting", {"epochs": 1, "batch_size": 8, "learning_rate": 5e-5})
    again = await app.client.post("/v1/retrieval/train", json={})
    assert again.status_code == 409
    assert again.json()["detail"] == (
        f"job {job['id']!r} is training this tenant's embedder already; follow it with "
        f"GET /v1/retrieval/jobs/{job['id']}")
    done = await until_done(app.client, job["id"])
    comparison = done["comparison"]
    assert (done["progress"], done["error"]) == (1.0, None)
    assert comparison["held_out"] + comparison["trained_on"] == 25
    assert comparison["current"]["model"] == "all-MiniLM-L6-v2"
    assert comparison["better"] == (comparison["candidate"]["r1"] + comparison["candidate"]["r5"]
                                    > comparison["current"]["r1"] + comparison["current"]["r5"])
    models = (await app.client.get("/v1/retrieval/models")).json()["items"]
    if comparison["better"]:
        assert done["status"] == "swapped"
        assert [(m["id"], m["active"]) for m in models] == [(done["model_id"], True)]
        assert "zq_fetch" in await search(app.client, "did anyone answer my complaint")
    else:
        assert (done["status"], models) == ("kept", [])


async def test_training_needs_enough_examples(start_app: Callable[..., Any],
                                              database_url: str) -> None:
    app = await start_app(database_url)
    await app.client.post("/v1/tools", json=spec("get_time", "Current time", ["time now"]))
    response = await app.client.post("/v1/retrieval/train", json={})
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "the tenant's tools have 1 example requests; training needs at least 20, a fifth of "
        "them held out to judge the result: register examples with the tools, or let "
        "retrieval learn them from use")
    bad = await app.client.post("/v1/retrieval/train", json={"epochs": 0})
    assert bad.status_code == 422
    unknown = await app.client.get("/v1/retrieval/jobs/rjob_nope")
    assert unknown.status_code == 404
    assert (await app.client.post("/v1/retrieval/models/rollback")).status_code == 409


async def install_model(database_url: str, data_dir: Path, tenant: str, model_id: str) -> None:
    """A tenant model as a finished job leaves it: its weights under DATA_DIR (here the general
    model's, saved again) and its record."""
    from sentence_transformers import SentenceTransformer

    folder = Path("models") / model_id
    SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu").save(
        str(data_dir / folder))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO retrieval_jobs (tenant_id, id, status, stage, owner)
               VALUES ($1, $2, 'swapped', 'done', 'test')""", tenant, f"rjob_{model_id}")
        await conn.execute(
            """INSERT INTO retrieval_models (tenant_id, id, path, base_model, job_id, comparison)
               VALUES ($1, $2, $3, 'all-MiniLM-L6-v2', $4, $5)""",
            tenant, model_id, str(folder), f"rjob_{model_id}",
            '{"held_out": 5, "trained_on": 20, "current": {"model": "a", "r1": 0.2, "r5": 0.6},'
            ' "candidate": {"model": "b", "r1": 0.4, "r5": 0.8}, "better": true}')
    finally:
        await conn.close()


async def stored_models(database_url: str, tenant: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT DISTINCT embedding_model FROM tools WHERE tenant_id = $1",
                                tenant)
    finally:
        await conn.close()
    return {r["embedding_model"] for r in rows}


async def test_a_swapped_model_reaches_every_replica_and_one_call_rolls_it_back(
    app: Any, start_app: Callable[..., Any], database_url: str, tmp_path: Path
) -> None:
    second = await start_app(database_url)
    other = httpx.AsyncClient(base_url=app.url, headers={
        "Authorization": f"Bearer {await new_key(app.client, 'admin', tenant='other')}"})
    query = "is it raining in Bergen"
    assert (await search(app.client, query))[0] == "get_weather"
    await install_model(database_url, tmp_path, "default", "m1")
    training = app.state["training"]
    await training.activate("default", "m1")
    assert await stored_models(database_url, "default") == {model_name("m1")}
    assert (await search(app.client, query))[0] == "get_weather"
    registry = second.state["registry"]
    deadline = asyncio.get_running_loop().time() + 30
    while registry.model_of("default") != model_name("m1"):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    assert (await search(second.client, query))[0] == "get_weather"
    async with other:
        listed = (await other.get("/v1/retrieval/models")).json()
        assert listed == {"items": [], "next_cursor": None}
    models = (await app.client.get("/v1/retrieval/models")).json()["items"]
    assert [(m["id"], m["active"]) for m in models] == [("m1", True)]
    rolled = await app.client.post("/v1/retrieval/models/rollback")
    assert rolled.json() == {"model": None}
    assert await stored_models(database_url, "default") == {"all-MiniLM-L6-v2"}
    while registry.model_of("default") != "all-MiniLM-L6-v2":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    assert (await search(second.client, query))[0] == "get_weather"
    restarted = await start_app(database_url)
    assert (await search(restarted.client, query))[0] == "get_weather"
