"""Deletes what is kept only for a while: idempotency records, trace spans and turns' stored
events older than RETENTION_DAYS, and the counters of rate limits, slots and quotas that have
run out. Every replica runs the job every RETENTION_INTERVAL_S; an advisory lock lets one of
them do the work each time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

import asyncpg
import msgspec

log = logging.getLogger(__name__)

LOCK = 7_140_002
"""The advisory lock the job holds while it deletes."""


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    """How many rows one run deleted, by what they were; None: another replica ran it."""

    idempotency_keys: int = 0
    spans: int = 0
    turn_events: int = 0
    counters: int = 0


_STATEMENTS = {
    "idempotency_keys": "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval "
                        "AND status IS NOT NULL",
    "spans": "DELETE FROM spans WHERE end_ns < "
             "(extract(epoch FROM now() - $1::interval) * 1e9)::bigint",
    "turn_events": "DELETE FROM turn_events WHERE created_at < now() - $1::interval",
}
_COUNTERS = (
    "DELETE FROM rate_windows WHERE window_start < now() - interval '2 minutes'",
    "DELETE FROM tool_slots WHERE expires_at < now()",
    "DELETE FROM token_usage WHERE day < (now() AT TIME ZONE 'UTC')::date - 2",
)


async def delete_old(pool: asyncpg.Pool, days: float) -> Deleted | None:
    """One run: what is older than `days` days, if this replica gets the lock."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK):
            return None
        age = timedelta(days=days)
        counts = {name: _count(await conn.execute(sql, age))
                  for name, sql in _STATEMENTS.items()}
        counters = [_count(await conn.execute(sql)) for sql in _COUNTERS]
    return Deleted(**counts, counters=sum(counters))


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class RetentionJob:
    """Runs `delete_old` every `every_s`, from one replica at a time."""

    def __init__(self, pool: asyncpg.Pool, days: float, every_s: float) -> None:
        self.pool, self.days, self.every_s = pool, days, every_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                deleted = await delete_old(self.pool, self.days)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("the retention job failed (it runs again in %.0f s): %s",
                            self.every_s, exc)
            else:
                # A run that deleted nothing (every run, at first) is not worth a line.
                if deleted is not None and any(msgspec.structs.astuple(deleted)):
                    log.info("retention: deleted %s", msgspec.structs.asdict(deleted))
            await asyncio.sleep(self.every_s)
