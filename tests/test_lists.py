"""Every list the API returns has one shape, `{"items", "next_cursor"}`, and every one pages
with `cursor` and `limit`; conversations can be listed, newest first, filtered by metadata."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import RunningApp
from tests.scripted_model import ScriptedReply, scripted_model

LISTS = ["/v1/tools", "/v1/tools/t/versions", "/v1/conversations", "/v1/keys", "/v1/traces",
         "/v1/evals/sets", "/v1/evals/runs", "/v1/routers", "/v1/mcp/servers",
         "/v1/retrieval/misses", "/v1/retrieval/models"]


async def walk(api: httpx.AsyncClient, path: str, limit: int, **params: Any) -> list[list[Any]]:
    """Every page of a list, following next_cursor."""
    pages: list[list[Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await api.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_every_list_has_items_and_a_cursor(api: httpx.AsyncClient) -> None:
    await api.post("/v1/tools", json={"name": "t", "description": "x"})
    for path in LISTS:
        response = await api.get(path)
        assert response.status_code == 200, (path, response.text)
        assert set(response.json()) == {"items", "next_cursor"}, path


async def test_the_document_gives_every_list_the_same_shape(api: httpx.AsyncClient) -> None:
    document = (await api.get("/docs/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for path in LISTS:
        operation = document["paths"][path.replace("/t/", "/{name}/")]["get"]
        ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        schema = schemas[ref.rsplit("/", 1)[1]]
        assert set(schema["properties"]) == {"items", "next_cursor"}, path
        assert {"cursor", "limit"} <= {p["name"] for p in operation["parameters"]}, path


async def test_a_small_list_pages_through_every_item_once(api: httpx.AsyncClient) -> None:
    made = [(await api.post("/v1/keys", json={"role": "viewer", "name": f"k{i}"})).json()["id"]
            for i in range(5)]
    pages = await walk(api, "/v1/keys", 2)
    assert [len(p) for p in pages] == [2, 2, 2]  # the admin key and five more
    listed = [k["id"] for page in pages for k in page]
    assert len(set(listed)) == 6 and set(made) <= set(listed)


async def test_a_tools_versions_page_oldest_first(api: httpx.AsyncClient) -> None:
    for description in ("one", "two", "three"):
        await api.put("/v1/tools/t", json={"name": "t", "description": description})
    pages = await walk(api, "/v1/tools/t/versions", 2)
    assert [[v["version"] for v in page] for page in pages] == [[1, 2], [3]]


async def test_conversations_are_listed_newest_first_across_pages(
    api: httpx.AsyncClient,
) -> None:
    made = [(await api.post("/v1/conversations", json={"metadata": {"n": i}})).json()["id"]
            for i in range(5)]
    pages = await walk(api, "/v1/conversations", 2)
    assert [[c["id"] for c in page] for page in pages] == [
        made[::-1][0:2], made[::-1][2:4], made[::-1][4:]]
    assert pages[0][0] == {"id": made[4], "metadata": {"n": 4}, "turns": [],
                           "created_at": pages[0][0]["created_at"]}


async def test_conversations_are_filtered_by_metadata(api: httpx.AsyncClient) -> None:
    async def make(metadata: dict[str, Any]) -> str:
        response = await api.post("/v1/conversations", json={"metadata": metadata})
        return str(response.json()["id"])

    alice_web = await make({"user": "alice", "channel": "web", "tier": 3})
    alice_app = await make({"user": "alice", "channel": "app"})
    await make({"user": "bob", "channel": "web"})
    await make({})

    async def ids(*filters: str) -> list[str]:
        response = await api.get("/v1/conversations", params=[("metadata", f) for f in filters])
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["items"]]

    assert await ids("user:alice") == [alice_app, alice_web]
    assert await ids("user:alice", "channel:web") == [alice_web]
    assert await ids("tier:3") == [alice_web]  # a number compares as its text
    assert await ids("user:carol") == []


async def test_a_metadata_filter_without_a_colon_is_a_422(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/conversations", params={"metadata": "alice"})
    assert response.status_code == 422
    assert response.json()["errors"] == [{
        "pointer": "", "parameter": "query parameter 'metadata'",
        "message": "'alice' is not key:value (e.g. metadata=user:alice)"}]


async def test_another_tenants_conversations_are_not_listed(
    start_app: Any, database_url: str
) -> None:
    app: RunningApp = await start_app(database_url)
    other = (await app.client.post("/v1/keys", json={"role": "chat",
                                                     "tenant": "acme"})).json()["key"]
    await app.client.post("/v1/conversations", json={"metadata": {"user": "alice"}})
    response = await app.client.get("/v1/conversations",
                                    headers={"Authorization": f"Bearer {other}"})
    assert response.json() == {"items": [], "next_cursor": None}


async def test_messages_page_in_order(start_app: Any, database_url: str) -> None:
    async with scripted_model() as model:
        app = await start_app(database_url, model_url=model.url)
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        for i in range(3):
            model.push(ScriptedReply(content=f"answer {i}"))
            await app.client.post(f"/v1/conversations/{conversation}/turns",
                                  json={"message": f"question {i}"})
        pages = await walk(app.client, f"/v1/conversations/{conversation}/messages", 4)
    said = [(m["role"], m["content"]) for page in pages for m in page]
    assert [len(p) for p in pages] == [4, 2]
    assert said == [("user", "question 0"), ("assistant", "answer 0"),
                    ("user", "question 1"), ("assistant", "answer 1"),
                    ("user", "question 2"), ("assistant", "answer 2")]
