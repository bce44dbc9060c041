"""Spans in Postgres: a batching span processor that writes them off the request path, and the
queries the trace routes and the viewer read."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import format_span_id, format_trace_id

from app.errors import TraceNotFound

log = logging.getLogger(__name__)
TENANT_ATTRIBUTE = "switchboard.tenant"
TURN_ATTRIBUTE = "switchboard.turn.id"
RESUMED_ATTRIBUTE = "switchboard.turn.resumed"


class SpanStoreStats(msgspec.Struct, kw_only=True):
    queued: int = 0
    written: int = 0
    dropped: int = 0
    """Spans dropped because the queue was full (the processor never blocks a turn)."""
    failed: int = 0
    """Spans lost because a write to Postgres failed (each failure is logged)."""


class PostgresSpanProcessor(SpanProcessor):
    """Queues ended spans that belong to a tenant and writes them in batches from a task."""

    def __init__(self, *, max_queue: int = 20_000, batch_size: int = 512,
                 interval_s: float = 0.2) -> None:
        self.max_queue, self.batch_size, self.interval_s = max_queue, batch_size, interval_s
        self.stats = SpanStoreStats()
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._lock = threading.Lock()
        self._pool: asyncpg.Pool | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="span-writer")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes
        if not attributes or TENANT_ATTRIBUTE not in attributes:
            return
        with self._lock:
            if len(self._queue) >= self.max_queue:
                self.stats.dropped += 1
                return
            self._queue.append(span)
            self.stats.queued += 1
            full = len(self._queue) >= self.batch_size
        if full:
            self._wake.set()

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    async def flush(self) -> None:
        """Write everything queued so far."""
        while self._queue and self._pool is not None:
            with self._lock:
                count = min(self.batch_size, len(self._queue))
                batch = [self._queue.popleft() for _ in range(count)]
            await self._write(batch)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            await self.flush()

    async def _write(self, batch: Sequence[ReadableSpan]) -> None:
        assert self._pool is not None
        try:
            await self._pool.executemany(_INSERT, [span_row(s) for s in batch])
            self.stats.written += len(batch)
        except (asyncpg.PostgresError, OSError) as exc:
            self.stats.failed += len(batch)
            log.error("could not store %d spans: %s", len(batch), exc)


_INSERT = """
    INSERT INTO spans (tenant_id, trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns,
                       status_code, status_message, attributes, events, links, conversation_id,
                       turn_id, tool_name)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12::jsonb, $13::jsonb, $14,
            $15, $16)
    ON CONFLICT DO NOTHING"""


def span_row(span: ReadableSpan) -> tuple[Any, ...]:
    attributes = dict(span.attributes or {})
    context = span.get_span_context()
    assert context is not None
    parent = _stored_parent(span, attributes)
    events = [{"name": e.name, "time_unix_nano": e.timestamp,
               "attributes": dict(e.attributes or {})} for e in span.events]
    links = [{"trace_id": format_trace_id(link.context.trace_id),
              "span_id": format_span_id(link.context.span_id),
              "attributes": dict(link.attributes or {})} for link in span.links]
    return (
        attributes[TENANT_ATTRIBUTE], format_trace_id(context.trace_id),
        format_span_id(context.span_id), parent, span.name, span.kind.name,
        span.start_time or 0, span.end_time or 0, span.status.status_code.name,
        span.status.description, _json(attributes), _json(events), _json(links),
        attributes.get("gen_ai.conversation.id"), attributes.get("switchboard.turn.id"),
        attributes.get("gen_ai.tool.name"),
    )


def _stored_parent(span: ReadableSpan, attributes: dict[str, Any]) -> str | None:
    """A turn's first span is stored as the root of its trace: its parent, the HTTP request
    that started the turn, belongs to no tenant and is stored nowhere here (it is exported
    over OTLP). A resumed part of the turn is the first span's child."""
    if span.parent is None:
        return None
    if TURN_ATTRIBUTE in attributes and not attributes.get(RESUMED_ATTRIBUTE):
        return None
    return format_span_id(span.parent.span_id)


def _json(value: Any) -> str:
    return msgspec.json.encode(value, enc_hook=_sequence).decode()


def _sequence(value: Any) -> Any:
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise NotImplementedError(f"cannot store {type(value).__name__} in a span")


# -- reading ----------------------------------------------------------------------------------


class SpanStatus(msgspec.Struct, frozen=True):
    code: str
    message: str | None = None


class StoredSpan(msgspec.Struct, frozen=True, kw_only=True):
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status: SpanStatus
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]


class Trace(msgspec.Struct, frozen=True):
    trace_id: str
    spans: list[StoredSpan]


class TraceSummary(msgspec.Struct, frozen=True, kw_only=True):
    trace_id: str
    turn_id: str | None
    conversation_id: str | None
    name: str
    status: str
    start_time_unix_nano: int
    duration_ms: float
    span_count: int
    tools: list[str]
    failed_calls: int = 0
    """Tool calls that ended in an error: a turn can complete though some of its calls failed."""


class TraceFilter(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: str | None = None
    tool: str | None = None
    status: str | None = None
    min_duration_ms: float | None = None
    max_duration_ms: float | None = None
    since: datetime | None = None
    until: datetime | None = None


class TraceReads:
    """The stored spans as the trace routes and the viewer read them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def get(self, tenant: str, trace_id: str) -> Trace:
        found = await _get_trace(self.pool, tenant, trace_id)
        if found is None:
            raise TraceNotFound(f"trace {trace_id!r} not found (spans are stored a moment after "
                                "a turn ends; list traces with GET /v1/traces)")
        return found

    async def find(self, tenant: str, where: TraceFilter, *, limit: int,
                   after: tuple[int, str] | None) -> list[TraceSummary]:
        """Finished turns' traces, newest first, keyset-paged by (start, trace id)."""
        return await _list_traces(self.pool, tenant, where, limit=limit, after=after)


async def _get_trace(db: asyncpg.Pool, tenant: str, trace_id: str) -> Trace | None:
    rows = await db.fetch(
        """SELECT span_id, parent_span_id, name, kind, start_ns, end_ns, status_code,
                  status_message, attributes::text, events::text, links::text
           FROM spans WHERE tenant_id = $1 AND trace_id = $2 ORDER BY start_ns, span_id""",
        tenant, trace_id,
    )
    if not rows:
        return None
    return Trace(trace_id, [
        StoredSpan(
            span_id=r["span_id"], parent_span_id=r["parent_span_id"], name=r["name"],
            kind=r["kind"], start_time_unix_nano=r["start_ns"], end_time_unix_nano=r["end_ns"],
            status=SpanStatus(r["status_code"], r["status_message"]),
            attributes=msgspec.json.decode(r["attributes"]),
            events=msgspec.json.decode(r["events"]), links=msgspec.json.decode(r["links"]),
        )
        for r in rows
    ])


async def _list_traces(
    db: asyncpg.Pool, tenant: str, where: TraceFilter, *, limit: int,
    after: tuple[int, str] | None,
) -> list[TraceSummary]:
    rows = await db.fetch(
        """SELECT r.trace_id, r.turn_id, r.conversation_id, r.name, r.status_code, r.start_ns,
                  (r.end_ns - r.start_ns) / 1e6 AS duration_ms,
                  (SELECT count(*) FROM spans c WHERE c.trace_id = r.trace_id) AS span_count,
                  ARRAY(SELECT DISTINCT c.tool_name FROM spans c
                        WHERE c.trace_id = r.trace_id AND c.tool_name IS NOT NULL
                        ORDER BY c.tool_name) AS tools,
                  (SELECT count(*) FROM spans c WHERE c.trace_id = r.trace_id
                     AND c.tool_name IS NOT NULL AND c.status_code = 'ERROR') AS failed_calls
           FROM spans r
           WHERE r.tenant_id = $1 AND r.parent_span_id IS NULL AND r.turn_id IS NOT NULL
             AND ($2::text IS NULL OR r.conversation_id = $2)
             -- An eval run's turns are listed only when their conversation is asked for.
             AND ($2::text IS NOT NULL OR NOT EXISTS (SELECT 1 FROM conversations v
                  WHERE v.id = r.conversation_id AND v.eval_run IS NOT NULL))
             AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM spans c
                  WHERE c.trace_id = r.trace_id AND c.tool_name = $3))
             AND ($4::text IS NULL OR (r.status_code = 'ERROR') = ($4 = 'error'))
             AND ($5::float8 IS NULL OR (r.end_ns - r.start_ns) / 1e6 >= $5)
             AND ($6::float8 IS NULL OR (r.end_ns - r.start_ns) / 1e6 <= $6)
             AND ($7::bigint IS NULL OR r.start_ns >= $7)
             AND ($8::bigint IS NULL OR r.start_ns < $8)
             AND ($9::bigint IS NULL OR (r.start_ns, r.trace_id) < ($9, $10))
           ORDER BY r.start_ns DESC, r.trace_id DESC
           LIMIT $11""",
        tenant, where.conversation_id, where.tool, where.status, where.min_duration_ms,
        where.max_duration_ms, _ns(where.since), _ns(where.until),
        after[0] if after else None, after[1] if after else None, limit,
    )
    return [
        TraceSummary(
            trace_id=r["trace_id"], turn_id=r["turn_id"], conversation_id=r["conversation_id"],
            name=r["name"], status="error" if r["status_code"] == "ERROR" else "ok",
            start_time_unix_nano=r["start_ns"], duration_ms=float(r["duration_ms"]),
            span_count=r["span_count"], tools=list(r["tools"]), failed_calls=r["failed_calls"],
        )
        for r in rows
    ]


def _ns(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1e9)
