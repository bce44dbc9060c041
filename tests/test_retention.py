"""The retention job deletes what is older than RETENTION_DAYS, on one replica at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.database import connect_pool
from app.retention import LOCK, Deleted, delete_old

DAY_NS = 86_400 * 10**9


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    made = await connect_pool(database_url)
    yield made
    await made.close()


async def _rows(pool: asyncpg.Pool) -> None:
    """Of each kind, one 40 days old and one from now (and an old request still running)."""
    await pool.execute(
        """INSERT INTO idempotency_keys (tenant_id, key, route, request_hash, status, created_at)
           VALUES ('default', 'old', 'r', 'h', 200, now() - interval '40 days'),
                  ('default', 'running', 'r', 'h', NULL, now() - interval '40 days'),
                  ('default', 'new', 'r', 'h', 200, now())""")
    await pool.execute(
        """INSERT INTO spans (tenant_id, trace_id, span_id, name, kind, start_ns, end_ns,
                              status_code)
           SELECT 'default', 't', s.id, 'x', 'internal', s.ns, s.ns, 'OK'
           FROM (VALUES ('old', (extract(epoch FROM now()) * 1e9)::bigint - 40 * $1::bigint),
                        ('new', (extract(epoch FROM now()) * 1e9)::bigint)) AS s(id, ns)""",
        DAY_NS)
    await pool.execute(
        """INSERT INTO rate_windows (key, window_start, count)
           VALUES ('key:a', now() - interval '1 hour', 5), ('key:a', now(), 1)""")


async def test_what_is_older_than_the_setting_is_deleted_and_the_rest_kept(
    pool: asyncpg.Pool
) -> None:
    await _rows(pool)

    deleted = await delete_old(pool, days=30)

    assert deleted == Deleted(idempotency_keys=1, spans=1, turn_events=0, counters=1)
    assert {r["key"] for r in await pool.fetch("SELECT key FROM idempotency_keys")} == {
        "running", "new"}
    assert [r["span_id"] for r in await pool.fetch("SELECT span_id FROM spans")] == ["new"]
    assert await pool.fetchval("SELECT count(*) FROM rate_windows") == 1


async def test_only_the_replica_holding_the_lock_runs_the_job(pool: asyncpg.Pool) -> None:
    await _rows(pool)
    async with pool.acquire() as other:  # another replica's run, under way
        await other.execute("SELECT pg_advisory_lock($1)", LOCK)
        assert await delete_old(pool, days=30) is None
        await other.execute("SELECT pg_advisory_unlock($1)", LOCK)
    assert await pool.fetchval("SELECT count(*) FROM spans") == 2
    assert await delete_old(pool, days=30) is not None
    assert await pool.fetchval("SELECT count(*) FROM spans") == 1
