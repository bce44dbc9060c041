"""Every event of a streamed turn, kept in Postgres, so a client that lost its stream reconnects
to any replica and gets what it missed, then the rest as it happens. (A client that waits for
one answer has no stream to resume; it reads the turn.)

An event's id is `{run}.{seq}`: `run` counts the turn's runs (its start, each resume after a
pause, each takeover), `seq` the events of one run. A run's events go to its live stream at once
and to Postgres within `FLUSH_S` (the events that end a step at once), so storing them never
slows a turn. A replica that dies may take its last unflushed events with it; its client saw
them live, and the run that takes the turn over numbers its events anew, after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec

from planner._db import jsonb_text
from planner.events import TurnEvent

log = logging.getLogger(__name__)

CHANNEL = "turn_events"
FLUSH_S = 0.05
"""How long an event may wait to be stored with the ones after it (one that ends a run is
stored at once, and the run waits for it)."""
POLL_S = 1.0
"""How often a reader looks without a notification (one lost while reconnecting)."""
FINAL = ("turn.completed", "turn.failed", "turn.paused")
"""The events that end a run."""

_encoder = msgspec.json.Encoder()


class EventId(msgspec.Struct, frozen=True, order=True):
    run: int
    seq: int

    def __str__(self) -> str:
        return f"{self.run}.{self.seq}"

    @classmethod
    def parse(cls, text: str | None) -> EventId | None:
        """An id a client sent back (`Last-Event-ID`); None when it is not one of ours."""
        run, _, seq = (text or "").strip().partition(".")
        if not (run.isdigit() and seq.isdigit()) or len(run) > 9 or len(seq) > 9:
            return None
        return cls(int(run), int(seq))


class StoredEvent(msgspec.Struct, frozen=True):
    id: EventId
    type: str
    data: str
    """The event as JSON, as it was streamed."""


class RunLog:
    """The events of one run of a turn: numbered as they happen, stored in batches."""

    def __init__(self, pool: asyncpg.Pool, tenant: str, turn_id: str, *, first: bool) -> None:
        self.pool, self.tenant, self.turn_id = pool, tenant, turn_id
        self.run = 1 if first else 0
        """The run's number: 1 for a turn's first (nothing is stored before it); else asked
        of Postgres with the first event."""
        self._seq = 0
        self._numbering = asyncio.Lock()
        self._writing = asyncio.Lock()
        self._pending: list[tuple[int, str, str]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def add(self, event: TurnEvent) -> EventId:
        """Number the event and queue it to be stored; returns its id."""
        if not self.run:
            async with self._numbering:
                if not self.run:
                    # After a takeover, a run whose events died unstored still counts: its
                    # client saw them live, and must not take this run's ids for them.
                    self.run = await self.pool.fetchval(
                        """SELECT greatest(
                               (SELECT coalesce(max(run), 0) FROM turn_events
                                WHERE turn_id = $1),
                               (SELECT jsonb_array_length(takeovers) FROM turns
                                WHERE id = $1)) + 1""",
                        self.turn_id)
        self._seq += 1
        kind = str(type(event).__struct_config__.tag)
        self._pending.append((self._seq, kind, _encoder.encode(event).decode()))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_after(FLUSH_S))
        if kind in FINAL:
            await self.close()
        return EventId(self.run, self._seq)

    async def close(self) -> None:
        """Store what is queued now, and wait for it."""
        flushing, self._flushing = self._flushing, None
        if flushing is not None and not flushing.done():
            flushing.cancel()  # its sleep; a batch being written is shielded
            with contextlib.suppress(asyncio.CancelledError):
                await flushing
        if self._pending:
            await self._stored()

    async def _flush_after(self, delay_s: float) -> None:
        while self._pending:  # what arrives while a batch is written goes in the next
            await asyncio.sleep(delay_s)
            await asyncio.shield(self._stored())

    async def _stored(self) -> None:
        try:
            await self._flush()
        except (asyncpg.PostgresError, OSError) as exc:
            # The turn goes on; a client that reconnects misses these events, and sees so
            # by the gap in their ids.
            log.warning("could not store the events of turn %s: %s", self.turn_id, exc)

    async def _flush(self) -> None:
        # One batch at a time, in order: a reader takes the events after the last it saw, so
        # a later batch committed first would hide an earlier one from it.
        async with self._writing:
            batch, self._pending = self._pending, []
            if batch:
                await self._insert(batch)

    async def _insert(self, batch: list[tuple[int, str, str]]) -> None:
        await self.pool.execute(
            """WITH stored AS (
                   INSERT INTO turn_events (tenant_id, turn_id, run, seq, type, data)
                   SELECT $1, $2, $3, e.seq, e.type, e.data
                   FROM jsonb_to_recordset($4::jsonb) AS e(seq int, type text, data text)
                   ON CONFLICT DO NOTHING)
               SELECT pg_notify($5, $2)""",
            self.tenant, self.turn_id, self.run,
            jsonb_text([{"seq": s, "type": t, "data": d} for s, t, d in batch]), CHANNEL,
        )


class EventLog:
    """Where runs store their events, and where clients that reconnect read them back."""

    def __init__(self, pool: asyncpg.Pool, dsn: str | None = None) -> None:
        self.pool, self.dsn = pool, dsn
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._conn: asyncpg.Connection | None = None

    def run(self, tenant: str, turn_id: str, *, first: bool = False) -> RunLog:
        """The log of a run of the turn; `first`: its first run (it has stored nothing)."""
        return RunLog(self.pool, tenant, turn_id, first=first)

    async def start(self) -> None:
        """Listen for stored events, so readers wake at once (without it they poll)."""
        if self.dsn is not None:
            self._conn = await asyncpg.connect(self.dsn)
            await self._conn.add_listener(CHANNEL, self._on_notify)

    async def stop(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, turn_id: str) -> None:
        for waiting in self._waiting.get(turn_id, ()):
            waiting.set()

    async def after(self, tenant: str, turn_id: str, last: EventId | None
                    ) -> list[StoredEvent]:
        rows = await self.pool.fetch(
            """SELECT run, seq, type, data FROM turn_events
               WHERE tenant_id = $1 AND turn_id = $2 AND (run, seq) > ($3, $4)
               ORDER BY run, seq""",
            tenant, turn_id, last.run if last else 0, last.seq if last else 0,
        )
        return [StoredEvent(EventId(r["run"], r["seq"]), r["type"], r["data"]) for r in rows]

    async def follow(self, tenant: str, turn_id: str, last: EventId | None
                     ) -> AsyncIterator[StoredEvent]:
        """The turn's events after `last`, then each as it is stored, until the turn is no
        longer running (it ended, or paused) and every event it stored was given."""
        waiting = asyncio.Event()
        self._waiting.setdefault(turn_id, set()).add(waiting)
        try:
            settled = False
            while True:
                waiting.clear()
                events = await self.after(tenant, turn_id, last)
                for event in events:
                    yield event
                    last = event.id
                if not events and not await self._running(turn_id):
                    if settled:
                        return
                    # The turn's status is written before its last event is stored: look
                    # once more before taking its end as read.
                    settled = True
                    await asyncio.sleep(FLUSH_S * 4)
                    continue
                settled = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiting.wait(), POLL_S)
        finally:
            readers = self._waiting.get(turn_id, set())
            readers.discard(waiting)
            if not readers:
                self._waiting.pop(turn_id, None)

    async def _running(self, turn_id: str) -> bool:
        status = await self.pool.fetchval("SELECT status FROM turns WHERE id = $1", turn_id)
        return bool(status == "running")
