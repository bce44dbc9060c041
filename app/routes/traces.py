"""Trace routes: one turn's span tree, and a filtered listing of turns' traces."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from app.auth import require
from app.errors import TraceNotFound
from app.pages import Cursor, Limit, cut
from app.span_store import Trace, TraceFilter, TraceReads, TraceSummary
from app.tenancy import tenant_of
from planner.conversations import Conversations
from tools.cursors import decode_cursor
from tools.errors import FieldError, SpecInvalid

Traces = NamedDependency[TraceReads]


class TraceList(msgspec.Struct, frozen=True):
    items: list[TraceSummary]
    next_cursor: str | None = None


# Span times are nanoseconds in a signed 64-bit integer: that reaches into the year 2262.
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2262, 1, 1, tzinfo=UTC)


def _check_moments(**moments: datetime | None) -> None:
    for name, moment in moments.items():
        if moment is None:
            continue
        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        if not _EARLIEST <= aware < _LATEST:
            raise SpecInvalid([FieldError(
                "", f"must fall between {_EARLIEST:%Y-%m-%d} and {_LATEST:%Y-%m-%d}",
                parameter=f"query parameter {name!r}",
            )])


class TraceController(Controller):
    path = "/v1"
    tags = ["traces"]
    guards = [require("traces:read")]

    @get("/traces", summary="Turns' traces, newest first, filtered")
    async def list_traces(
        self,
        request: Request[Any, Any, Any],
        traces: Traces,
        conversation_id: Annotated[str | None, QueryParameter()] = None,
        tool: Annotated[str | None, QueryParameter(description="A tool the turn called.")] = None,
        status: Annotated[Literal["ok", "error"] | None, QueryParameter()] = None,
        min_duration_ms: Annotated[float | None, QueryParameter(ge=0)] = None,
        max_duration_ms: Annotated[float | None, QueryParameter(ge=0)] = None,
        since: Annotated[datetime | None, QueryParameter()] = None,
        until: Annotated[datetime | None, QueryParameter()] = None,
        cursor: Cursor = None,
        limit: Limit = 50,
    ) -> TraceList:
        _check_moments(since=since, until=until)
        where = TraceFilter(conversation_id=conversation_id, tool=tool, status=status,
                            min_duration_ms=min_duration_ms, max_duration_ms=max_duration_ms,
                            since=since, until=until)
        found = await traces.find(tenant_of(request), where, limit=limit + 1,
                                  after=decode_cursor(cursor, tuple[int, str]) if cursor else None)
        return TraceList(*cut(found, limit, lambda t: (t.start_time_unix_nano, t.trace_id)))

    @get("/traces/{trace_id:str}", summary="A trace's spans with their timing")
    async def get_trace(
        self, request: Request[Any, Any, Any], traces: Traces, trace_id: FromPath[str]
    ) -> Trace:
        return await traces.get(tenant_of(request), trace_id)

    @get("/turns/{turn_id:str}/trace", summary="The trace of one turn")
    async def turn_trace(
        self, request: Request[Any, Any, Any], traces: Traces,
        conversations: NamedDependency[Conversations], turn_id: FromPath[str],
    ) -> Trace:
        trace_id = await conversations.trace_id(tenant_of(request), turn_id)
        if trace_id is None:
            raise TraceNotFound(f"turn {turn_id!r} not found, or it was not traced")
        return await traces.get(tenant_of(request), trace_id)
