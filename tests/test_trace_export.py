"""Traces as Arize Phoenix, Langfuse and Jaeger read them: exported over OTLP/HTTP to a real
receiver on loopback and decoded there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from litestar import Litestar, Request, post
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.loopback import serving
from tests.scripted_model import ScriptedModel, ScriptedReply
from tests.test_tracing import start_traced_app
from tests.tool_server import ToolServer

TURN_ROUTE = "POST /v1/conversations/{conversation_id}/turns"


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return None if kind is None else getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _decoded(span: Span) -> dict[str, Any]:
    """A span as the receiver got it, with hex ids and plain attribute values."""
    return {
        "name": span.name,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex() or None,
        "kind": Span.SpanKind.Name(span.kind),
        "status": Status.StatusCode.Name(span.status.code),
        "attributes": _attributes(span.attributes),
        "events": [{"name": e.name, "attributes": _attributes(e.attributes)}
                   for e in span.events],
        "links": [{"span_id": link.span_id.hex(), "attributes": _attributes(link.attributes)}
                  for link in span.links],
    }


class OtlpReceiver:
    """A real OTLP/HTTP trace receiver: decodes each protobuf export request."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []

    def app(self) -> Litestar:
        receiver = self

        @post("/v1/traces", status_code=200)
        async def export(request: Request[Any, Any, Any]) -> bytes:
            assert request.headers["content-type"] == "application/x-protobuf"
            message = ExportTraceServiceRequest()
            message.ParseFromString(await request.body())
            for resource_spans in message.resource_spans:
                receiver.resources.append(_attributes(resource_spans.resource.attributes))
                for scope in resource_spans.scope_spans:
                    receiver.spans.extend(_decoded(s) for s in scope.spans)
            return b""

        return Litestar([export])

    async def turn_trace(self, turn_id: str) -> list[dict[str, Any]]:
        """Every span of the trace the turn's first span is in, once that span and its parent
        are here (or after 5 s, what is here)."""
        for _ in range(100):
            root = self._turn_root(turn_id)
            if root is not None and self.named_id(root["parent_span_id"]) is not None:
                break
            await asyncio.sleep(0.05)
        root = self._turn_root(turn_id)
        assert root is not None, f"turn {turn_id} was not exported: {self.spans}"
        return [s for s in self.spans if s["trace_id"] == root["trace_id"]]

    async def span_named(self, name: str) -> dict[str, Any]:
        for _ in range(100):
            found = [s for s in self.spans if s["name"] == name]
            if found:
                return found[-1]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no span {name!r} in {[s['name'] for s in self.spans]}")

    def named_id(self, span_id: str | None) -> dict[str, Any] | None:
        return next((s for s in self.spans if s["span_id"] == span_id), None)

    def _turn_root(self, turn_id: str) -> dict[str, Any] | None:
        return next((s for s in self.spans
                     if s["attributes"].get("switchboard.turn.id") == turn_id
                     and "switchboard.turn.resumed" not in s["attributes"]), None)


@pytest.fixture
async def otlp(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OtlpReceiver]:
    """The receiver, and the app's exporter pointed at it. Asked for before `start_app`, it
    outlives the apps, which export their last spans as they stop."""
    receiver = OtlpReceiver()
    async with serving(receiver.app()) as server:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", server.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        yield receiver


def by_name(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    [span] = [s for s in spans if s["name"] == name]
    return span


async def test_request_spans_are_named_by_their_route_templates(
    otlp: OtlpReceiver, start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
    tools: ToolServer,
) -> None:
    client = await start_traced_app(start_app, database_url, model, tools)
    model.push(ScriptedReply(content="Hi."))
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    turn = (await client.post(f"/v1/conversations/{conversation}/turns",
                              json={"message": "hi"})).json()
    assert (await client.get(f"/v1/turns/{turn['id']}")).status_code == 200
    assert (await client.get("/v1/nowhere")).status_code == 404
    read = await otlp.span_named("GET /v1/turns/{turn_id}")
    assert read["attributes"]["http.route"] == "/v1/turns/{turn_id}"
    started = await otlp.span_named(TURN_ROUTE)
    assert started["attributes"]["http.route"] == "/v1/conversations/{conversation_id}/turns"
    unrouted = await otlp.span_named("GET")  # no route: the method alone, by the conventions
    assert "http.route" not in unrouted["attributes"]
    servers = sorted({s["name"] for s in otlp.spans if s["kind"] == "SPAN_KIND_SERVER"})
    assert servers == ["GET", "GET /v1/turns/{turn_id}", "POST /v1/conversations", TURN_ROUTE,
                       "POST /v1/tools/bulk"]


async def test_phoenix_files_the_traces_under_the_service_name_unless_told_a_project(
    otlp: OtlpReceiver, start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
    tools: ToolServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "switchboard-eu")
    first = await start_traced_app(start_app, database_url, model, tools)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "openinference.project.name=support-bot")
    second = await start_app(database_url, model_url=model.url)
    for client in (first, second.client):
        assert (await client.get("/v1/tools")).status_code == 200
    for _ in range(100):
        if len({r["openinference.project.name"] for r in otlp.resources}) == 2:
            break
        await asyncio.sleep(0.05)
    assert sorted({(r["service.name"], r["openinference.project.name"])
                   for r in otlp.resources}) == [("switchboard-eu", "support-bot"),
                                                 ("switchboard-eu", "switchboard-eu")]
