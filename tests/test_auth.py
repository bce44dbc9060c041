"""API keys, roles and tenants: nobody gets in where they don't belong."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest

from app.auth import ApiKeys
from tests.scripted_model import ScriptedReply, scripted_model
from tests.test_mcp import SERVER_SCRIPT as MCP_SERVER
from tools.builtins import builtin_specs


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_key(admin: httpx.AsyncClient, role: str, tenant: str | None = None) -> str:
    body: dict[str, Any] = {"role": role} | ({"tenant": tenant} if tenant else {})
    response = await admin.post("/v1/keys", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


async def test_requests_without_a_valid_key_are_refused_with_401(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app = await start_app(database_url)
    async with httpx.AsyncClient(base_url=app.url) as anonymous:
        missing = await anonymous.get("/v1/tools")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["detail"].startswith("missing API key: send Authorization: Bearer")
        wrong = await anonymous.get("/v1/tools", headers=bearer("sbk_nope"))
        assert (wrong.status_code, wrong.json()["detail"]) == (401, "unknown or revoked API key")
        assert (await anonymous.get("/health")).status_code == 200
        assert (await anonymous.get("/docs/openapi.json")).status_code == 200


async def test_a_key_is_shown_once_stored_as_a_hash_and_revocable(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app = await start_app(database_url)
    created = (await app.client.post("/v1/keys", json={"role": "developer", "name": "ci"})).json()
    assert created["key"].startswith(f"sbk_{created['id']}_")
    assert (created["tenant"], created["role"]) == ("default", "developer")
    listed = (await app.client.get("/v1/keys")).json()["items"]
    assert created["key"] not in json.dumps(listed)
    assert [k["role"] for k in listed if k["id"] == created["id"]] == ["developer"]
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT key_hash FROM api_keys WHERE id = $1", created["id"])
    finally:
        await conn.close()
    assert len(stored) == 64 and created["key"] not in stored
    key = bearer(created["key"])
    assert (await app.client.get("/v1/tools", headers=key)).status_code == 200
    assert (await app.client.delete(f"/v1/keys/{created['id']}")).status_code == 204
    assert (await app.client.get("/v1/tools", headers=key)).status_code == 401


@pytest.mark.parametrize(
    ("role", "method", "path", "status"),
    [
        ("chat", "POST", "/v1/tools", 403),
        ("chat", "GET", "/v1/traces", 403),
        ("chat", "POST", "/v1/keys", 403),
        ("viewer", "POST", "/v1/conversations", 403),
        ("viewer", "GET", "/v1/traces", 200),
        ("developer", "POST", "/v1/conversations", 403),
        ("developer", "GET", "/v1/conversations/conv_x", 403),
        ("developer", "POST", "/v1/tools/bulk", 200),
        ("chat", "POST", "/v1/conversations", 201),
    ],
)
async def test_roles_grant_what_they_name_and_nothing_else(
    start_app: Callable[..., Any], database_url: str, role: str, method: str, path: str,
    status: int,
) -> None:
    app = await start_app(database_url)
    key = await new_key(app.client, role)
    body = {"tools": []} if path.endswith("bulk") else {"name": "t", "description": "d",
                                                         "role": "chat"}
    if path == "/v1/conversations":
        body = {}
    response = await app.client.request(method, path, headers=bearer(key),
                                        json=body if method == "POST" else None)
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["detail"].startswith(f"a {role} key may not do this")


async def test_another_tenants_ids_are_not_found_on_any_route(
    start_app: Callable[..., Any], database_url: str
) -> None:
    async with scripted_model(ScriptedReply(content="hello A")) as model:
        app = await start_app(database_url, model_url=model.url,
                              mcp_stdio_commands=sys.executable)
        alice = await new_key(app.client, "admin", tenant="alice")
        bob = await new_key(app.client, "admin", tenant="bob")
        async with httpx.AsyncClient(base_url=app.url, headers=bearer(alice)) as a, \
                httpx.AsyncClient(base_url=app.url, headers=bearer(bob)) as b:
            tool = {"name": "secret_tool", "description": "Alice's private calculator"}
            assert (await a.post("/v1/tools", json=tool)).status_code == 201
            conversation = (await a.post("/v1/conversations", json={})).json()["id"]
            turn = (await a.post(f"/v1/conversations/{conversation}/turns",
                                 json={"message": "hi"})).json()
            trace_id = await _trace_of(a, turn["id"])
            alice_key_id = (await a.get("/v1/keys")).json()["items"][0]["id"]
            server = {"name": "calc", "transport": {"kind": "stdio", "command": sys.executable,
                                                    "args": [MCP_SERVER]}}
            assert (await a.post("/v1/mcp/servers", json=server)).status_code == 201

            not_found = [
                ("GET", "/v1/tools/secret_tool"),
                ("GET", "/v1/tools/secret_tool/versions"),
                ("GET", "/v1/tools/secret_tool/versions/1"),
                ("DELETE", "/v1/tools/secret_tool"),
                ("GET", f"/v1/conversations/{conversation}"),
                ("GET", f"/v1/conversations/{conversation}/messages"),
                ("POST", f"/v1/conversations/{conversation}/turns"),
                ("GET", f"/v1/turns/{turn['id']}"),
                ("GET", f"/v1/turns/{turn['id']}/trace"),
                ("GET", f"/v1/traces/{trace_id}"),
                ("DELETE", f"/v1/keys/{alice_key_id}"),
                ("POST", f"/v1/turns/{turn['id']}/approvals"),
                ("POST", f"/v1/turns/{turn['id']}/outputs"),
                ("POST", "/v1/chat/completions"),
                ("GET", "/v1/mcp/servers/calc"),
                ("POST", "/v1/mcp/servers/calc/refresh"),
                ("DELETE", "/v1/mcp/servers/calc"),
            ]
            bodies = {
                "turns": {"message": "x"},
                "approvals": {"call_id": "call_0", "approve": True},
                "outputs": {"call_id": "call_0", "output": 1},
                "completions": {"model": "default", "messages": [{"role": "user", "content": "x"}],
                                "metadata": {"conversation_id": conversation}},
            }
            for method, path in not_found:
                body = bodies.get(path.rsplit("/", 1)[-1])
                response = await b.request(method, path, json=body)
                assert response.status_code == 404, (method, path, response.text)
            assert (await b.get("/v1/tools")).json()["items"] == []
            search = await b.get("/v1/tools/search", params={"q": "private calculator"})
            assert search.json()["results"] == []
            assert (await b.get("/v1/traces")).json()["items"] == []
            assert alice_key_id not in json.dumps((await b.get("/v1/keys")).json())
            assert (await b.get("/v1/mcp/servers")).json()["items"] == []
            # Alice still has everything.
            assert (await a.get("/v1/tools/secret_tool")).status_code == 200
            assert (await a.get("/v1/traces")).json()["items"][0]["trace_id"] == trace_id


async def _trace_of(client: httpx.AsyncClient, turn_id: str) -> str:
    for _ in range(100):
        response = await client.get(f"/v1/turns/{turn_id}/trace")
        if response.status_code == 200 and any(
            s["parent_span_id"] is None for s in response.json()["spans"]
        ):
            return str(response.json()["trace_id"])
        await asyncio.sleep(0.05)
    raise AssertionError("the turn's trace was never stored")


async def test_only_the_default_tenants_admins_create_keys_for_other_tenants(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app = await start_app(database_url)
    alice = await new_key(app.client, "admin", tenant="alice")
    response = await app.client.post("/v1/keys", headers=bearer(alice),
                                     json={"role": "chat", "tenant": "bob"})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"pointer": "/tenant", "message": "an admin of tenant 'alice' can only create keys for "
                                          "'alice'"}
    ]


async def test_the_first_start_without_admin_key_writes_one_readable_only_by_the_user(
    start_app: Callable[..., Any], database_url: str, tmp_path: Path
) -> None:
    app = await start_app(database_url, admin_key=None)
    path = tmp_path / "admin.key"
    key = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    async with httpx.AsyncClient(base_url=app.url, headers=bearer(key)) as client:
        assert (await client.post("/v1/keys", json={"role": "chat"})).status_code == 201


async def test_a_body_over_the_limit_is_refused_with_413(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app = await start_app(database_url, max_body_bytes=10_000)
    response = await app.client.post("/v1/tools", content=b"x" * 20_000,
                                     headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


async def test_the_rate_limit_counts_per_key_across_replicas(
    start_app: Callable[..., Any], database_url: str
) -> None:
    first = await start_app(database_url, rate_limit_per_minute=4)
    second = await start_app(database_url, rate_limit_per_minute=4)
    if (second_of_minute := datetime.now(UTC).second) >= 55:  # count within one minute
        await asyncio.sleep(61 - second_of_minute)
    other = await new_key(first.client, "developer")  # the admin's first request
    answers = [await app.client.get("/v1/tools") for app in (first, second, second, first)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    refused = answers[-1]
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["detail"] == (
        "this key made 4 requests this minute, its limit (RATE_LIMIT_PER_MINUTE, counted "
        f"across replicas); retry in {refused.headers['Retry-After']} s")
    assert (await second.client.get("/v1/tools", headers=bearer(other))).status_code == 200


async def test_the_cli_creates_a_key_that_the_service_accepts(
    start_app: Callable[..., Any], database_url: str
) -> None:
    import os
    import subprocess
    import sys

    app = await start_app(database_url)
    env = {**os.environ, "DATABASE_URL": database_url}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", "keys", "create", "--tenant", "carol", "--role", "chat"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    key, _, described = done.stdout.strip().partition("\t")
    assert described.endswith("tenant carol, role chat)")
    async with httpx.AsyncClient(base_url=app.url, headers=bearer(key)) as client:
        assert (await client.post("/v1/conversations", json={})).status_code == 201
        assert (await client.post("/v1/tools", json={"name": "x", "description": "y"})
                ).status_code == 403


async def test_every_tenant_has_the_builtin_tools(
    start_app: Callable[..., Any], database_url: str
) -> None:
    builtins = sorted(s.name for s in builtin_specs())
    # A tenant made outside the service (as `switchboard keys create` does) while it is down.
    await (await start_app(database_url)).stop()
    pool = await asyncpg.connect(database_url)
    try:
        early = await ApiKeys(pool).create("early", "viewer")
    finally:
        await pool.close()
    app = await start_app(database_url, register_builtins=True)
    late = await new_key(app.client, "viewer", tenant="late")  # made through the API
    for key in (early.key, late):
        async with httpx.AsyncClient(base_url=app.url, headers=bearer(key)) as client:
            listed = (await client.get("/v1/tools", params={"namespace": "builtin"})).json()
            assert sorted(t["name"] for t in listed["items"]) == builtins
            found = (await client.get("/v1/tools/search", params={"q": "convert miles to km"}))
            assert found.json()["results"][0]["name"] == "convert_units"


class CountingDb:
    """A real pool that counts the key lookups sent through it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool, self.lookups = pool, 0

    async def fetchrow(self, *args: Any) -> Any:
        self.lookups += 1
        return await self.pool.fetchrow(*args)

    async def execute(self, *args: Any) -> Any:
        return await self.pool.execute(*args)


async def test_a_burst_presenting_one_key_looks_it_up_once_and_a_revoke_is_seen_at_once(
    start_app: Callable[..., Any], database_url: str
) -> None:
    await (await start_app(database_url)).stop()  # the tables
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    db = CountingDb(pool)
    keys = ApiKeys(cast(asyncpg.Pool, db))
    try:
        made = await keys.create("acme", "viewer")
        found = await asyncio.gather(*(keys.find(made.key) for _ in range(200)))
        assert {(k.id, k.tenant) for k in found if k is not None} == {(made.id, "acme")}
        assert None not in found
        assert db.lookups == 1
        await keys.find(made.key)
        assert db.lookups == 1  # cached
        await keys.revoke("acme", made.id)
        gone = await asyncio.gather(*(keys.find(made.key) for _ in range(50)))
        assert gone == [None] * 50
        assert db.lookups == 2
        unknown = await asyncio.gather(*(keys.find("sb_no-such-key") for _ in range(50)))
        assert unknown == [None] * 50
        assert db.lookups == 3
    finally:
        await pool.close()
    # The database gone: every request waiting on the lookup gets its error, none a None.
    failed = await asyncio.gather(*(keys.find("sb_another-key") for _ in range(5)),
                                  return_exceptions=True)
    assert all(isinstance(f, asyncpg.InterfaceError) for f in failed), failed
