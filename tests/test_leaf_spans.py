"""Leaf spans set the OpenTelemetry SDK's private `ReadableSpan` fields themselves, for speed
(planner/leaf_spans.py says why). These tests pin those fields to the installed SDK: an SDK
release that adds, renames or drops one fails here, naming it, instead of handing span
processors spans that silently lack something."""

from __future__ import annotations

import inspect
import warnings

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from planner.leaf_spans import LeafSpans

OWN_FIELDS = {"_leaves"}
"""What a leaf span keeps for itself, beyond `ReadableSpan`'s fields: where it goes when it
ends."""


def _ended_leaf() -> tuple[ReadableSpan, ReadableSpan, TracerProvider]:
    """A leaf span under an SDK span, with an event, a link and a status, as a processor sees
    it once ended; and the SDK span."""
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    leaves = LeafSpans([processor], provider.resource)
    with provider.get_tracer("test").start_as_current_span("parent") as parent:
        leaf = leaves.start("leaf", SpanKind.CLIENT, {"a": 1},
                            [Link(parent.get_span_context(), {"why": "test"})])
        assert leaf is not None
        leaf.add_event("happened", {"n": 2})
        leaf.set_status(Status(StatusCode.ERROR, "failed"))
        leaf.end()
    seen_leaf, seen_parent = exporter.get_finished_spans()
    return seen_leaf, seen_parent, provider


def test_a_leaf_span_has_exactly_the_fields_of_the_sdks_readable_span() -> None:
    leaf, _, _ = _ended_leaf()
    sdk_fields = set(vars(ReadableSpan(name="any")))
    leaf_fields = set(vars(leaf)) - OWN_FIELDS
    assert leaf_fields == sdk_fields, (
        "opentelemetry-sdk's ReadableSpan fields changed: the leaf span lacks "
        f"{sorted(sdk_fields - leaf_fields)} and sets fields the SDK no longer has "
        f"{sorted(leaf_fields - sdk_fields)}; update _LeafSpan in planner/leaf_spans.py"
    )


def test_every_property_a_processor_reads_answers_from_a_leaf_span() -> None:
    leaf, _, _ = _ended_leaf()
    properties = [n for n, m in inspect.getmembers(ReadableSpan) if isinstance(m, property)]
    failed = {}
    for name in properties:
        try:
            with warnings.catch_warnings():  # instrumentation_info is deprecated, still read
                warnings.simplefilter("ignore", DeprecationWarning)
                getattr(leaf, name)
        except Exception as exc:  # the SDK's property reads a field the leaf does not set
            failed[name] = f"{type(exc).__name__}: {exc}"
    assert failed == {}
    assert '"name": "leaf"' in leaf.to_json()


def test_a_leaf_span_reads_as_the_sdk_would_report_it() -> None:
    leaf, parent, provider = _ended_leaf()
    context, parent_context = leaf.context, parent.context
    assert context is not None and parent_context is not None
    assert (leaf.name, leaf.kind, leaf.parent) == ("leaf", SpanKind.CLIENT, parent_context)
    assert context.trace_id == parent_context.trace_id
    assert context.span_id not in (0, parent_context.span_id)
    assert dict(leaf.attributes or {}) == {"a": 1}
    assert [(e.name, dict(e.attributes or {})) for e in leaf.events] == [("happened", {"n": 2})]
    assert [(link.context, dict(link.attributes or {})) for link in leaf.links] == [
        (parent_context, {"why": "test"})]
    assert (leaf.status.status_code, leaf.status.description) == (StatusCode.ERROR, "failed")
    assert leaf.resource is provider.resource
    assert leaf.instrumentation_scope is not None
    assert leaf.instrumentation_scope.name == "switchboard"
    assert leaf.start_time is not None and leaf.end_time is not None
    assert parent.start_time is not None and parent.end_time is not None
    assert parent.start_time <= leaf.start_time <= leaf.end_time <= parent.end_time
    assert (leaf.dropped_attributes, leaf.dropped_events, leaf.dropped_links) == (0, 0, 0)
