"""Concurrency caps that hold across replicas: a call of a capped tool holds one of its slots in
Postgres while it runs, so `policy.max_concurrency` counts every replica's calls of that
tenant's tool, not one process's.

Each replica first queues its own calls on a local semaphore of the same size, so only calls
that could run ask Postgres for a slot: one statement to take it, one to give it back. A slot
whose holder died frees itself when its lease (the tool's timeout, and a margin) has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg

from tools.errors import SlotUnavailable

log = logging.getLogger(__name__)

LEASE_MARGIN_S = 10.0
"""How long past its timeout a call's slot stays taken if its replica dies mid-call."""
WAIT_S = (0.005, 0.1)
"""The first and the longest pause between tries for a slot held elsewhere."""


class SharedSlots:
    """The slots of capped tools, per tenant and tool, in Postgres."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._local: dict[tuple[str, str, int], asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def hold(self, tenant: str, tool: str, limit: int, lease_s: float
                   ) -> AsyncIterator[None]:
        """Wait for a slot of `tool` (at most `limit` are held at once, across replicas), and
        hold it for the block."""
        key = (tenant, tool, limit)
        local = self._local.setdefault(key, asyncio.Semaphore(limit))
        async with local:
            holder = uuid.uuid4().hex
            slot = await self._take(tenant, tool, limit, lease_s + LEASE_MARGIN_S, holder)
            try:
                yield
            finally:
                await asyncio.shield(self._give_back(tenant, tool, slot, holder))

    async def _take(self, tenant: str, tool: str, limit: int, lease_s: float, holder: str
                    ) -> int:
        pause = WAIT_S[0]
        while True:
            try:
                slot = await self.pool.fetchval(_TAKE, tenant, tool, limit, holder, lease_s)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                raise SlotUnavailable(tool, f"{type(exc).__name__}: {exc}") from exc
            if slot is not None:
                return int(slot)
            await asyncio.sleep(pause)
            pause = min(pause * 2, WAIT_S[1])

    async def _give_back(self, tenant: str, tool: str, slot: int, holder: str) -> None:
        try:
            await self.pool.execute(
                """DELETE FROM tool_slots
                   WHERE tenant_id = $1 AND tool = $2 AND slot = $3 AND holder = $4""",
                tenant, tool, slot, holder)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("could not give back slot %d of tool %r (it frees itself when its lease "
                        "runs out): %s", slot, tool, exc)


# The lowest free slot, taken only while fewer than `limit` are held (a cap lowered by a new
# version leaves the slots above it to run out); a slot whose lease ran out is free. With n
# slots held the lowest free one is at most n, so n + 1 candidates are enough, however large
# the cap.
_TAKE = """
WITH held AS (
    SELECT slot FROM tool_slots
    WHERE tenant_id = $1 AND tool = $2 AND expires_at >= now()
), taken AS (
    SELECT count(*)::int AS n FROM held
)
INSERT INTO tool_slots (tenant_id, tool, slot, holder, expires_at)
SELECT $1, $2, s, $4, now() + make_interval(secs => $5)
FROM taken, generate_series(0, taken.n) AS s
WHERE taken.n < $3 AND s NOT IN (SELECT slot FROM held)
ORDER BY s LIMIT 1
ON CONFLICT (tenant_id, tool, slot) DO UPDATE
    SET holder = excluded.holder, expires_at = excluded.expires_at
    WHERE tool_slots.expires_at < now()
RETURNING slot"""
