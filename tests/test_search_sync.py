"""The in-memory index follows Postgres: across restarts and across app instances."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

CURRENCY = {
    "name": "convert_currency",
    "description": "Convert an amount of money from one currency to another at today's rate.",
}
EMAIL = {"name": "send_email", "description": "Send an email message to a recipient."}


async def top_names(client: httpx.AsyncClient, q: str) -> list[str]:
    response = await client.get("/v1/tools/search", params={"q": q, "k": 3})
    assert response.status_code == 200, response.text
    return [hit["name"] for hit in response.json()["results"]]


async def wait_for(check: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    """Poll until `check` returns something truthy; the value or the last result on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await check()
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.05)


async def test_a_restarted_app_rebuilds_its_index_from_postgres(
    start_app: Callable[..., Any], database_url: str
) -> None:
    first = await start_app(database_url)
    await first.client.post("/v1/tools/bulk", json={"tools": [CURRENCY, EMAIL]})
    await first.stop()
    second = await start_app(database_url)
    assert await top_names(second.client, "change 20 dollars into yen") == [
        "convert_currency",
        "send_email",
    ]
    assert (await second.client.get("/health")).json()["tools_indexed"] == 2


async def test_a_write_on_one_instance_shows_in_another_instances_search(
    start_app: Callable[..., Any], database_url: str
) -> None:
    writer = await start_app(database_url)
    reader = await start_app(database_url)
    assert await top_names(reader.client, "change 20 dollars into yen") == []
    await writer.client.post("/v1/tools", json=CURRENCY)

    async def reader_sees_it() -> bool:
        return await top_names(reader.client, "change 20 dollars into yen") == ["convert_currency"]

    assert await wait_for(reader_sees_it, timeout_s=1.0)


async def test_a_delete_on_one_instance_leaves_another_instances_search(
    start_app: Callable[..., Any], database_url: str
) -> None:
    writer = await start_app(database_url)
    reader = await start_app(database_url)
    await writer.client.post("/v1/tools/bulk", json={"tools": [CURRENCY, EMAIL]})
    await wait_for(lambda: _has(reader.client, "convert_currency"))
    await writer.client.delete("/v1/tools/convert_currency")

    async def gone() -> bool:
        return not await _has(reader.client, "convert_currency")

    assert await wait_for(gone, timeout_s=1.0)
    assert await top_names(reader.client, "email") == ["send_email"]


async def test_a_new_version_on_one_instance_replaces_the_other_instances_entry(
    start_app: Callable[..., Any], database_url: str
) -> None:
    writer = await start_app(database_url)
    reader = await start_app(database_url)
    await writer.client.post("/v1/tools", json=CURRENCY)
    await writer.client.put(
        "/v1/tools/convert_currency",
        json={**CURRENCY, "description": "Translate text between human languages."},
    )

    async def updated() -> list[Any]:
        response = await reader.client.get("/v1/tools/search", params={"q": "translate", "k": 1})
        return [h for h in response.json()["results"] if h["version"] == 2]

    hits = await wait_for(updated, timeout_s=1.0)
    assert [(h["name"], h["version"]) for h in hits] == [("convert_currency", 2)]


async def _has(client: httpx.AsyncClient, name: str) -> bool:
    return name in await top_names(client, name.replace("_", " "))
