"""A tool's concurrency cap counts the calls of every replica, per tenant, in Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import msgspec
import pytest

from app.database import connect_pool
from tests.loopback import serving
from tests.test_executors import Reply, Seen, ToolServer, http_tool
from tools.executors import ToolRunner
from tools.slots import SharedSlots


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    made = await connect_pool(database_url)
    yield made
    await made.close()


@pytest.fixture
async def server() -> AsyncIterator[ToolServer]:
    app = ToolServer()
    async with serving(app) as loopback:
        app.url = loopback.url
        yield app
        await app.release()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _replicas(http: httpx.AsyncClient, pool: asyncpg.Pool, count: int) -> list[ToolRunner]:
    """Runners as separate replicas have them: each with its own slots object."""
    return [ToolRunner(http, slots=SharedSlots(pool)) for _ in range(count)]


def _waiting_for_company(server: ToolServer, arrivals: list[float]) -> None:
    async def route(seen: Seen) -> Reply:
        arrivals.append(time.time())
        # Hold each request until a third is in flight, or give up after a moment: without
        # a shared cap the third would arrive.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                while server.in_flight < 3:
                    await asyncio.sleep(0.005)
        return Reply()

    server.routes["/slow"] = route


async def test_a_cap_counts_the_calls_of_every_replica(
    pool: asyncpg.Pool, http: httpx.AsyncClient, server: ToolServer
) -> None:
    _waiting_for_company(server, [])
    tool = http_tool(server, "/slow", max_concurrency=2)
    runners = _replicas(http, pool, 3)

    outcomes = await asyncio.gather(*(r.execute_call(tool, {}) for r in runners for _ in range(3)))

    assert [o.ok for o in outcomes] == [True] * 9
    assert (len(server.seen), server.max_in_flight) == (9, 2)
    assert await pool.fetchval("SELECT count(*) FROM tool_slots") == 0


async def test_tenants_with_a_tool_of_the_same_name_have_caps_of_their_own(
    pool: asyncpg.Pool, http: httpx.AsyncClient, server: ToolServer
) -> None:
    _waiting_for_company(server, [])
    mine = http_tool(server, "/slow", max_concurrency=1)
    theirs = msgspec.structs.replace(mine, tenant="other")
    [a, b] = _replicas(http, pool, 2)

    await asyncio.gather(a.execute_call(mine, {}), b.execute_call(theirs, {}))

    assert server.max_in_flight == 2


async def test_a_slot_held_by_a_replica_that_died_frees_when_its_lease_runs_out(
    pool: asyncpg.Pool, http: httpx.AsyncClient, server: ToolServer
) -> None:
    arrivals: list[float] = []
    _waiting_for_company(server, arrivals)
    tool = http_tool(server, "/slow", max_concurrency=1)
    lapses = await pool.fetchval(
        """INSERT INTO tool_slots (tenant_id, tool, slot, holder, expires_at)
           VALUES ('default', 'default/weather', 0, 'dead', now() + interval '0.4 s')
           RETURNING expires_at""")
    [runner] = _replicas(http, pool, 1)

    outcome = await runner.execute_call(tool, {})

    assert outcome.ok
    assert arrivals[0] >= lapses.timestamp()


async def test_a_cap_that_cannot_be_checked_fails_the_call_and_says_why(
    database_url: str, http: httpx.AsyncClient, server: ToolServer
) -> None:
    _waiting_for_company(server, [])
    pool = await connect_pool(database_url)
    [runner] = _replicas(http, pool, 1)
    await pool.close()

    outcome = await runner.execute_call(http_tool(server, "/slow", max_concurrency=1), {})

    assert outcome.error_type == "tool_error"
    assert outcome.error is not None and outcome.error.startswith(
        "the concurrency cap of tool 'default/weather' could not be checked: ")
    assert server.seen == []
