"""Keeps a replica's indexes in step with writes made by others, through LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from tools.registry import ToolRegistry
from tools.store import CHANNEL

log = logging.getLogger(__name__)


class ChangeListener:
    """Applies notified changes in arrival order; after a lost connection, reloads everything."""

    def __init__(self, registry: ToolRegistry, dsn: str, *, retry_s: float = 1.0) -> None:
        self.registry = registry
        self.dsn = dsn
        self.retry_s = retry_s
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self.reloads = 0

    async def start(self) -> None:
        """Listen before the first load, so no change falls between the two."""
        await self._connect()
        await self.registry.load()
        self._task = asyncio.create_task(self._run(), name="tool-change-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    async def _connect(self) -> None:
        self._conn = await asyncpg.connect(self.dsn)
        await self._conn.add_listener(CHANNEL, self._on_notify)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._queue.put_nowait(payload)

    async def _run(self) -> None:
        while True:
            try:
                payload = await asyncio.wait_for(self._queue.get(), timeout=self.retry_s)
            except TimeoutError:
                if self._conn is None or self._conn.is_closed():
                    await self._reconnect()
                continue
            try:
                await self.registry.apply_change(payload)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("could not apply tool change %s (%s); reloading", payload, exc)
                await self._reconnect()

    async def _reconnect(self) -> None:
        """Notifications sent while disconnected are lost, so reload from Postgres."""
        while True:
            try:
                await self._connect()
                await self.registry.load()
                self.reloads += 1
                return
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("tool change listener cannot reach Postgres (%s); retrying", exc)
                await asyncio.sleep(self.retry_s)
