"""Sealing every stored secret under the current key (`switchboard secrets rotate`), and the
start-up check that this process can open what is stored."""

from __future__ import annotations

import json

import asyncpg

from tools.sealed import PREFIX, SecretBox

LOCK = 7_140_001
"""The advisory lock a rotation holds, so two never run at once."""


async def check_opens(conn: asyncpg.Connection | asyncpg.Pool, box: SecretBox) -> None:
    """Raise SecretKeyMismatch when a stored sealed value opens with none of `box`'s keys (one
    of each kind is tried: a replica given the wrong SECRET_KEY stops at start-up)."""
    for sql in ("SELECT secret FROM tool_versions WHERE secret LIKE $1 LIMIT 1",
                """SELECT value FROM tool_versions, jsonb_each_text(secret_headers)
                   WHERE value LIKE $1 LIMIT 1""",
                """SELECT value FROM mcp_servers,
                       jsonb_each_text(coalesce(transport->'env', transport->'headers'))
                   WHERE value LIKE $1 LIMIT 1"""):
        sealed = await conn.fetchval(sql, PREFIX + "%")
        if sealed is not None:
            box.open(sealed)


async def reseal_all(conn: asyncpg.Connection, box: SecretBox) -> int:
    """Every stored secret sealed under the current key (plain ones sealed for the first
    time), in one transaction; returns how many values were written."""
    count = 0
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
        for row in await conn.fetch(
            """SELECT tenant_id, namespace, name, version, secret, secret_headers::text
               FROM tool_versions
               WHERE secret IS NOT NULL OR secret_headers IS NOT NULL FOR UPDATE"""):
            headers = json.loads(row["secret_headers"]) if row["secret_headers"] else None
            await conn.execute(
                """UPDATE tool_versions SET secret = $5, secret_headers = $6::jsonb
                   WHERE tenant_id = $1 AND namespace = $2 AND name = $3 AND version = $4""",
                row["tenant_id"], row["namespace"], row["name"], row["version"],
                None if row["secret"] is None else box.reseal(row["secret"]),
                None if headers is None else json.dumps(
                    {k: box.reseal(v) for k, v in headers.items()}))
            count += (row["secret"] is not None) + len(headers or {})
        for row in await conn.fetch(
                "SELECT tenant_id, name, transport::text FROM mcp_servers FOR UPDATE"):
            transport = json.loads(row["transport"])
            field = "env" if transport.get("kind") == "stdio" else "headers"
            values = transport.get(field) or {}
            transport[field] = {k: box.reseal(v) for k, v in values.items()}
            await conn.execute(
                "UPDATE mcp_servers SET transport = $3::jsonb WHERE tenant_id = $1 AND name = $2",
                row["tenant_id"], row["name"], json.dumps(transport))
            count += len(values)
    return count
