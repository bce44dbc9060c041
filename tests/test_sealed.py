"""Tools' secrets and MCP servers' write-only values are sealed in Postgres with SECRET_KEY; a
rotation re-seals them under a new key; a replica with the wrong key stops at start-up."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from app.database import connect_pool
from tools import store
from tools.errors import SecretKeyMismatch
from tools.mcp import store as mcp_store
from tools.mcp.transport import HttpTransport
from tools.reseal import check_opens, reseal_all
from tools.sealed import PREFIX, SecretBox

TOOL = {
    "name": "pay", "description": "Pay a bill",
    "parameters": {"type": "object", "properties": {}},
    "executor": {"kind": "http", "url": "https://pay.example.com/bills", "secret": "s3cret-sig",
                 "secret_headers": {"X-Api-Key": "key-123"}},
}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    made = await connect_pool(database_url)
    yield made
    await made.close()


async def _stored(pool: asyncpg.Pool) -> tuple[str, str]:
    row = await pool.fetchrow("SELECT secret, secret_headers::text FROM tool_versions")
    return row["secret"], row["secret_headers"]


async def _opened(pool: asyncpg.Pool, box: SecretBox) -> tuple[str | None, dict[str, str]]:
    found = await store.live_specs(pool, "default", [("default", "pay")], box)
    _, secret, headers = found[("default", "pay")]
    return secret, headers


async def test_a_tools_secrets_are_stored_sealed_and_open_with_the_key(
    database_url: str, start_app: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    app = await start_app(database_url, secret_key="first key")
    assert (await app.client.post("/v1/tools", json=TOOL)).status_code == 201
    secret, headers = await _stored(pool)
    assert secret.startswith(PREFIX) and headers.count(PREFIX) == 1
    assert "s3cret-sig" not in secret + headers and "key-123" not in headers
    assert await _opened(pool, SecretBox(["first key"])) == (
        "s3cret-sig", {"X-Api-Key": "key-123"})


async def test_rotation_reseals_under_the_new_key_and_the_old_one_no_longer_opens(
    database_url: str, start_app: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    app = await start_app(database_url, secret_key="first key")
    await app.client.post("/v1/tools", json=TOOL)
    await mcp_store.insert(pool, "default", "docs", HttpTransport(
        url="https://mcp.example.com", headers={"Authorization": "Bearer mcp-tok"}),
        SecretBox(["first key"]))
    await app.stop()

    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": "second key",
           "SECRET_KEY_PREVIOUS": "first key"}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "app", "secrets", "rotate"], env=env,
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3 secret values sealed under the current SECRET_KEY"

    assert await _opened(pool, SecretBox(["second key"])) == (
        "s3cret-sig", {"X-Api-Key": "key-123"})
    server = await mcp_store.get(pool, "default", "docs", SecretBox(["second key"]))
    assert server is not None and server.transport == HttpTransport(
        url="https://mcp.example.com", headers={"Authorization": "Bearer mcp-tok"})
    with pytest.raises(SecretKeyMismatch):
        await _opened(pool, SecretBox(["first key"]))


async def test_a_replica_with_the_wrong_key_stops_at_start_up_saying_why(
    database_url: str, start_app: Callable[..., Any], pool: asyncpg.Pool
) -> None:
    app = await start_app(database_url, secret_key="the key")
    await app.client.post("/v1/tools", json=TOOL)
    with pytest.raises(SecretKeyMismatch) as caught:
        await check_opens(pool, SecretBox(["another key"]))
    assert str(caught.value) == (
        "a stored secret was sealed with a key this process does not have: give every replica "
        "the same SECRET_KEY, and keep the old one in SECRET_KEY_PREVIOUS until `switchboard "
        "secrets rotate` has run")
    await check_opens(pool, SecretBox(["the key"]))


async def test_secrets_stored_before_sealing_still_open_and_rotation_seals_them(
    pool: asyncpg.Pool
) -> None:
    box = SecretBox(["k"])
    await pool.execute(
        """INSERT INTO tool_versions (tenant_id, namespace, name, version, spec, secret,
                                     secret_headers)
           VALUES ('default', 'default', 'legacy', 1, '{}', 'plain-secret', NULL)""")
    assert box.open("plain-secret") == "plain-secret"
    async with pool.acquire() as conn:
        assert await reseal_all(conn, box) == 1
    sealed = await pool.fetchval("SELECT secret FROM tool_versions")
    assert sealed.startswith(PREFIX) and box.open(sealed) == "plain-secret"
