"""Spans without children, made without the OpenTelemetry SDK's per-span machinery.

Why this exists: a step of a turn makes two or more spans (`retrieval`, `chat`,
`execute_tool`), and an SDK span costs about 18 µs to start and end here, more than 5% of a
whole tool-calling step (bench/overhead.py holds tracing to 5% of a step). A leaf span made
here costs about 3 µs. It is a real `ReadableSpan`, handed ended to the same span processors
(Postgres, OTLP) as the SDK's own spans, so nothing downstream can tell the difference.

The price is that `_LeafSpan` sets the SDK's private `ReadableSpan` fields itself instead of
calling `ReadableSpan.__init__`. tests/test_leaf_spans.py pins those fields: it fails, naming
the field, when an SDK release adds, renames or drops one, so an upgrade cannot silently hand
processors spans that are missing something.
"""

from __future__ import annotations

import random
import time
import traceback
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util import types

AGENT_NAME = "switchboard"


class LeafSpans:
    """Makes the spans that have no children (`retrieval`, `chat`, `execute_tool`: two or more
    per step) without the SDK's per-span machinery, and hands them, ended, to the same span
    processors as the SDK's own spans.

    An SDK span costs about 18 µs to start and end here, more than 5% of a whole tool-calling
    step; a leaf span made here costs about 3 µs, and is itself the ReadableSpan the processors
    get. The factories return the span, used as a context manager, rather than wrapping it in
    a generator: a step's two spans with their results cost 8-9 µs that way against 12-15 µs
    (tracing off: 0.7 µs against 2.5 µs). A leaf belongs to the trace of the current
    span and follows its sampling decision (the SDK's default, parent-based sampling); with no
    current span, the SDK makes it. The SDK's attribute limits do not apply to leaves: their
    attributes are the fixed sets below, and content is cut to `max_content_chars`.
    """

    def __init__(
        self, processors: Sequence[SpanProcessor], resource: Resource, scope: str = AGENT_NAME
    ) -> None:
        self.processors = tuple(processors)
        self.resource = resource
        self.scope = InstrumentationScope(scope)

    def start(
        self, name: str, kind: SpanKind, attributes: dict[str, Any], links: Sequence[Link]
    ) -> Span | None:
        """The new leaf under the current span; None when there is no current span."""
        parent = trace.get_current_span().get_span_context()
        if not parent.is_valid:
            return None
        if not parent.trace_flags.sampled:
            return INVALID_SPAN
        return _LeafSpan(self, name, kind, attributes, links, parent)

    def finish(self, span: ReadableSpan) -> None:
        for processor in self.processors:
            processor.on_end(span)


_UNSET = Status(StatusCode.UNSET)


class _LeafSpan(Span, ReadableSpan):
    """A recording span that is its own ReadableSpan once it ends: the processors get this very
    object, so ending it builds nothing. As a context manager it records an exception that
    escapes it (type, message, stack; status ERROR) unless an error is marked already, and
    ends."""

    # ReadableSpan's fields, with the types this span keeps them in (mutable until it ends).
    _context: SpanContext
    _attributes: dict[str, Any]
    _links: list[Link]
    _events: list[Event]

    def __init__(
        self,
        leaves: LeafSpans,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[Link],
        parent: SpanContext,
    ) -> None:
        # ReadableSpan.__init__ is not called: these are the fields its properties read.
        span_id = random.getrandbits(64) or 1  # as the SDK's RandomIdGenerator, never 0
        self._context = SpanContext(
            parent.trace_id, span_id, False, parent.trace_flags, parent.trace_state
        )
        self._leaves, self._name, self._kind, self._parent = leaves, name, kind, parent
        self._attributes, self._links, self._events = attributes, list(links), []
        self._status = _UNSET
        self._resource = leaves.resource
        self._instrumentation_scope = leaves.scope
        self._instrumentation_info = None
        self._start_time = time.time_ns()
        self._end_time: int | None = None

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        if self._end_time is None:
            self._attributes.update(attributes)

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self._end_time is None:
            self._attributes[key] = value

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is None:
            self._events.append(Event(name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._end_time is None:
            self._links.append(Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return  # as the SDK: an OK status is final
        self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        details: dict[str, Any] = {
            "exception.type": type(exception).__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
            **(attributes or {}),
        }
        self.add_event("exception", details, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time or time.time_ns()
        self._leaves.finish(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        # An error the code inside marked already (planner.tracing.mark_error, which knows its
        # type better) is not recorded twice as it escapes.
        marked = self._status.status_code is StatusCode.ERROR
        if isinstance(exc_val, Exception) and not marked:
            self.record_exception(exc_val)
            self.set_status(Status(StatusCode.ERROR, str(exc_val)))
        self.end()
