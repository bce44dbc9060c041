"""Owns running turns: keeps their leases alive, takes over those of replicas that are gone, hands
its own over when it stops, and takes up paused turns whose waiting calls ran out of time."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import asyncpg

from planner.errors import ReplicaStopping
from planner.event_log import EventId, EventLog, RunLog
from planner.events import Takeover, TurnCompleted, TurnEvent, TurnFailed, TurnPaused
from planner.store import PostgresTurnStore
from planner.takeovers import Abandoned
from planner.turn import EventSink, ignore

Resume = Callable[[str, str, EventSink], Coroutine[Any, Any, Any]]
"""Take up a paused turn (tenant, turn id) that this replica now owns."""
TakeOver = Callable[[str, str, Takeover, EventSink], Coroutine[Any, Any, Any]]
"""Finish a turn (tenant, turn id) this replica took over from one that is gone."""
Run = Callable[[EventSink], Coroutine[Any, Any, Any]]
"""A turn's run, reporting its events to the sink it is given."""

log = logging.getLogger(__name__)

SCANS_PER_LEASE = 12
"""How often in a lease a replica looks for turns to take over; every fourth look it renews
its own leases (a third of a lease)."""


class TurnSupervisor:
    """Turns run as tasks here, so a client that goes away never cuts a turn short.

    A replica renews the lease (heartbeat) of its running turns every third of a lease. A turn
    whose lease ran out belongs to a replica that died: the first replica to see it takes it
    over and finishes it (`take_over`). A replica that stops hands its turns over: it takes no
    new ones, gives those running `grace_s` to finish, then ends their leases.
    """

    def __init__(
        self, store: PostgresTurnStore, owner: str, lease_s: float, *,
        take_over: TakeOver, resume: Resume | None = None,
        running: Mapping[str, asyncio.Task[Any]] | None = None, events: EventLog | None = None,
    ) -> None:
        self.store, self.owner, self.lease_s = store, owner, lease_s
        self.resume, self.take_over = resume, take_over
        self.events = events
        """Where every run's events are stored; None: nowhere (they only stream live)."""
        self.running: Mapping[str, asyncio.Task[Any]] = running if running is not None else {}
        """The turns being run here now, by id (the engine's live set): only their leases
        are renewed."""
        self.stopping = False
        """Whether this replica has begun to stop: it takes no new turns, and takes over none."""
        self._deadline = 0.0
        self._mine: set[str] = set()
        """The turns tasks here run (begun by the engine or not yet)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.take_over_abandoned()
        await self.take_up_overdue()
        self._loop_task = asyncio.create_task(self._renew(), name="turn-leases")

    def check_accepting(self) -> None:
        """Raise ReplicaStopping once this replica has begun to stop."""
        if self.stopping:
            raise ReplicaStopping()

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _own(self, turn_id: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task that runs `turn_id` here: from now until it ends, the turn's lease is renewed
        and the turn is never taken over by this replica, even before the engine has begun
        it."""
        task = self.spawn(work)
        self._mine.add(turn_id)
        task.add_done_callback(lambda _: self._mine.discard(turn_id))
        return task

    def run(self, tenant: str, turn_id: str, run: Run, emit: EventSink = ignore, *,
            first: bool = False, streamed: bool = True) -> asyncio.Task[Any]:
        """Run a turn here. The events of a `streamed` turn are stored in the event log (so a
        client that loses its stream can read them back from any replica), then passed to
        `emit`; a turn whose client waits for one answer has no stream to resume. `first`:
        the turn's first run (it has stored no events yet)."""
        if self.events is None or not streamed:
            return self._own(turn_id, run(emit))
        log_ = self.events.run(tenant, turn_id, first=first)

        async def stored(event: TurnEvent) -> None:
            await log_.add(event)
            await emit(event)

        return self._own(turn_id, _closing(run(stored), log_))

    async def outcome(self, tenant: str, turn_id: str, run: Run, emit: EventSink = ignore
                      ) -> Any:
        """Run a turn here and wait for it, its answer not streamed; a caller that goes away
        stops waiting, not the turn."""
        return await asyncio.shield(self.run(tenant, turn_id, run, emit, streamed=False))

    def follow(self, tenant: str, turn_id: str, run: Run, *, first: bool = False
               ) -> EventStream:
        """Start a turn here at once, and give its events up to its last one; a reader that
        stops early, or never starts, leaves the turn running to its end."""
        stream = EventStream()
        if self.events is None:
            self._own(turn_id, run(stream.put))
            return stream
        log_ = self.events.run(tenant, turn_id, first=first)

        async def stored(event: TurnEvent) -> None:
            await stream.put(event, await log_.add(event))

        self._own(turn_id, _closing(run(stored), log_))
        return stream

    def begin_stop(self, grace_s: float) -> None:
        """From now on take no new turns and take over none; the turns running here have
        `grace_s` to finish (SIGTERM calls this, before the HTTP server drains)."""
        if not self.stopping:
            self.stopping = True
            self._deadline = time.monotonic() + grace_s

    async def stop(self, grace_s: float = 0.0) -> list[str]:
        """Take no new turns, give those running what is left of `grace_s` since the stop
        began to finish, then cancel the rest and hand them over (their leases end now, so
        another replica takes them over at its next look). Returns the ids of the turns
        handed over."""
        self.begin_stop(grace_s)
        grace_s = max(0.0, self._deadline - time.monotonic())
        if self._tasks and grace_s > 0:  # the leases are still renewed meanwhile
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        handed = sorted({*self.running, *self._mine})
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if handed:
            await self.store.release(self.owner, handed)
            log.warning("handed over %d turns still running at the end of the grace period: "
                        "%s", len(handed), handed)
        return handed

    async def _renew(self) -> None:
        """Renew this replica's leases every third of a lease; look for turns to take over
        every SCANS_PER_LEASE-th of one (a cheap indexed query), so a dead replica's turns run
        again at most that long after their lease ran out."""
        beats = SCANS_PER_LEASE // 3
        for tick in itertools.count(1):
            await asyncio.sleep(self.lease_s / SCANS_PER_LEASE)
            try:
                if tick % beats == 0:
                    self._stop_lost(await self.store.heartbeat(
                        self.owner, {*self.running, *self._mine}))
                if not self.stopping:
                    await self.take_over_abandoned()
                    await self.take_up_overdue()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("could not renew turn leases: %s", exc)

    def _stop_lost(self, lost: list[str]) -> None:
        """Turns another replica took over while this one was stalled past their lease: they
        run there now, so they stop here."""
        for turn_id in lost:
            task = self.running.get(turn_id)
            if task is not None:
                log.warning("turn %s was taken over by another replica; it stops here", turn_id)
                task.cancel()

    async def take_over_abandoned(self) -> list[Abandoned]:
        """Turns whose replica is gone (their lease ran out) go on here."""
        taken = await self.store.take_over_abandoned(self.owner, self.lease_s,
                                                     {*self.running, *self._mine})
        for turn in taken:
            log.warning("taking over turn %s from replica %s", turn.turn_id,
                        turn.takeover.previous)
            self.run(turn.tenant, turn.turn_id,
                     functools.partial(self.take_over, turn.tenant, turn.turn_id, turn.takeover),
                     streamed=turn.streamed)
        return taken

    async def take_up_overdue(self) -> list[tuple[str, str]]:
        """Paused turns whose waiting calls are past their deadlines go on without them."""
        if self.resume is None:
            return []
        taken = await self.store.expire_overdue(self.owner)
        for tenant, turn_id in taken:
            log.info("turn %s goes on: its waiting calls ran out of time", turn_id)
            self.run(tenant, turn_id, functools.partial(self.resume, tenant, turn_id))
        return taken


async def _closing(work: Coroutine[Any, Any, Any], log_: RunLog) -> Any:
    """Run `work`; its events are all stored when it ends, however it ends."""
    try:
        return await work
    finally:
        await asyncio.shield(log_.close())


class EventStream:
    """A run's events as they happen, up to the one that ends it; `id` is the event log's id
    of the last one given (None when nothing is logged)."""

    def __init__(self) -> None:
        self._events: asyncio.Queue[tuple[EventId | None, TurnEvent]] = asyncio.Queue()
        self.id: EventId | None = None
        self._done = False

    async def put(self, event: TurnEvent, event_id: EventId | None = None) -> None:
        self._events.put_nowait((event_id, event))

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> TurnEvent:
        if self._done:
            raise StopAsyncIteration
        self.id, event = await self._events.get()
        self._done = isinstance(event, TurnCompleted | TurnFailed | TurnPaused)
        return event
