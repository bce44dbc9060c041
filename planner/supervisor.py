"""Owns running turns: keeps their leases alive, and marks abandoned ones interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import asyncpg

from planner import store

log = logging.getLogger(__name__)


class TurnSupervisor:
    """Turns run as tasks here, so a client that goes away never cuts a turn short.

    A replica renews the lease (heartbeat) of its running turns; a turn whose lease ran out
    belongs to a replica that died, and any replica marks it `interrupted`.
    """

    def __init__(self, pool: asyncpg.Pool, owner: str, lease_s: float) -> None:
        self.pool, self.owner, self.lease_s = pool, owner, lease_s
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> list[str]:
        interrupted = await store.interrupt_abandoned(self.pool, self.lease_s)
        if interrupted:
            log.warning("marked %d abandoned turns interrupted: %s", len(interrupted), interrupted)
        self._loop_task = asyncio.create_task(self._renew(), name="turn-leases")
        return interrupted

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        """Cancel what still runs and mark this replica's running turns interrupted."""
        for task in [*self._tasks, *([self._loop_task] if self._loop_task else [])]:
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._loop_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await store.interrupt_abandoned(self.pool, self.lease_s, owner=self.owner)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await store.heartbeat(self.pool, self.owner)
                await store.interrupt_abandoned(self.pool, self.lease_s)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("could not renew turn leases: %s", exc)
