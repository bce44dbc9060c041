"""Owns running turns: keeps their leases alive, marks abandoned ones interrupted, and takes up
paused turns whose waiting calls ran out of time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from typing import Any, TypeVar

import asyncpg

from planner.events import TurnCompleted, TurnEvent, TurnFailed, TurnPaused
from planner.store import PostgresTurnStore
from planner.turn import EventSink

Resume = Callable[[str, str], Coroutine[Any, Any, Any]]
"""Take up a paused turn (tenant, turn id) that this replica now owns."""

log = logging.getLogger(__name__)
T = TypeVar("T")


class TurnSupervisor:
    """Turns run as tasks here, so a client that goes away never cuts a turn short.

    A replica renews the lease (heartbeat) of its running turns; a turn whose lease ran out
    belongs to a replica that died, and any replica marks it `interrupted`.
    """

    def __init__(
        self, store: PostgresTurnStore, owner: str, lease_s: float,
        resume: Resume | None = None, running: Collection[str] = frozenset(),
    ) -> None:
        self.store, self.owner, self.lease_s = store, owner, lease_s
        self.resume = resume
        self.running = running
        """The ids of the turns being run here now (the engine's live set): only their leases
        are renewed."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> list[str]:
        interrupted = await self.store.interrupt_abandoned(self.lease_s)
        if interrupted:
            log.warning("marked %d abandoned turns interrupted: %s", len(interrupted), interrupted)
        await self.take_up_overdue()
        self._loop_task = asyncio.create_task(self._renew(), name="turn-leases")
        return interrupted

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def outcome(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` here and wait for it; a caller that goes away stops waiting, not the work."""
        return await asyncio.shield(self.spawn(work))

    def follow(
        self, run: Callable[[EventSink], Coroutine[Any, Any, Any]]
    ) -> AsyncIterator[TurnEvent]:
        """Start a turn here at once, and give its events up to its last one; a reader that
        stops early, or never starts, leaves the turn running to its end."""
        events: asyncio.Queue[TurnEvent] = asyncio.Queue()

        async def emit(event: TurnEvent) -> None:
            events.put_nowait(event)

        self.spawn(run(emit))
        return _until_done(events)

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
        await self.store.interrupt_abandoned(self.lease_s, owner=self.owner)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.store.heartbeat(self.owner, set(self.running))
                await self.store.interrupt_abandoned(self.lease_s)
                await self.take_up_overdue()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("could not renew turn leases: %s", exc)

    async def take_up_overdue(self) -> list[tuple[str, str]]:
        """Paused turns whose waiting calls are past their deadlines go on without them."""
        if self.resume is None:
            return []
        taken = await self.store.expire_overdue(self.owner)
        for tenant, turn_id in taken:
            log.info("turn %s goes on: its waiting calls ran out of time", turn_id)
            self.spawn(self.resume(tenant, turn_id))
        return taken


async def _until_done(events: asyncio.Queue[TurnEvent]) -> AsyncIterator[TurnEvent]:
    while True:
        event = await events.get()
        yield event
        if isinstance(event, TurnCompleted | TurnFailed | TurnPaused):
            return
