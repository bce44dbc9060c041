"""The OpenTelemetry set-up: one tracer provider per app, spans stored in Postgres and, when the
standard OTEL_* variables ask for it, exported over OTLP/HTTP."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import msgspec
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from app.span_store import PostgresSpanProcessor
from planner.leaf_spans import LeafSpans
from planner.tracing import TraceOptions, TurnTracer, capture_from_env

log = logging.getLogger(__name__)

_OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class Telemetry(msgspec.Struct, frozen=True, kw_only=True):
    provider: TracerProvider | None
    store: PostgresSpanProcessor
    tracer: TurnTracer
    exporting: bool

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def build_telemetry(*, enabled: bool, environ: Mapping[str, str] | None = None) -> Telemetry:
    """Tracing as the environment configures it: OTEL_SDK_DISABLED, OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_EXPORTER_OTLP_* ..."""
    env = os.environ if environ is None else environ
    store = PostgresSpanProcessor()
    if not enabled or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return Telemetry(provider=None, store=store, tracer=TurnTracer(), exporting=False)
    defaults = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "switchboard"}
    provider = TracerProvider(resource=Resource.create(defaults))
    processors: list[SpanProcessor] = [store]
    exporting = any(env.get(name) for name in _OTLP_ENDPOINTS)
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processors.append(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("exporting spans over OTLP/HTTP")
    for processor in processors:
        provider.add_span_processor(processor)
    options = TraceOptions(capture_content=capture_from_env(env))
    leaves = LeafSpans(processors, provider.resource)
    tracer = TurnTracer(provider.get_tracer("switchboard"), options, leaves)
    return Telemetry(provider=provider, store=store, tracer=tracer, exporting=exporting)
