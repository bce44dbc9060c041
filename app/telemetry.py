"""The OpenTelemetry set-up: one tracer provider per app, spans stored in Postgres and, when the
standard OTEL_* variables ask for it, exported over OTLP/HTTP; the API's requests as spans named
by their routes."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE

from app.span_store import PostgresSpanProcessor
from planner.leaf_spans import LeafSpans
from planner.tracing import TraceOptions, TurnTracer, capture_from_env

log = logging.getLogger(__name__)

_OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
PROJECT_NAME = "openinference.project.name"
"""The resource attribute Arize Phoenix files a service's traces under (its project)."""


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
    provider = TracerProvider(resource=_resource())
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


def _resource() -> Resource:
    """The SDK's resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), its service named
    `switchboard` unless they name it, and its Phoenix project the service's name unless
    OTEL_RESOURCE_ATTRIBUTES names one (Phoenix would file the traces under `default`)."""
    configured = OTELResourceDetector().detect().attributes
    service = str(configured.get(SERVICE_NAME) or "switchboard")
    project = str(configured.get(PROJECT_NAME) or service)
    return Resource.create({SERVICE_NAME: service, PROJECT_NAME: project})


def request_span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """A request's span is started before routing, named by its method alone (the HTTP
    conventions' name when the route is unknown, as for a 404): its path may hold ids, and a
    name per conversation would make every request a name of its own. `name_by_route` names
    it by its route once routed."""
    return str(scope.get("method") or scope.get("type", "")), {}


def name_by_route(app: ASGIApp) -> ASGIApp:
    """Middleware (it runs once a request is routed) naming the request's span by its route
    template, `POST /v1/conversations/{conversation_id}/turns`, with `http.route`."""

    async def named(scope: Scope, receive: Receive, send: Send) -> None:
        span = trace.get_current_span()
        method, template = scope.get("method"), scope.get("path_template")
        if method and template and span.is_recording():
            span.update_name(f"{method} {template}")
            span.set_attribute(HTTP_ROUTE, template)
        await app(scope, receive, send)

    return named
