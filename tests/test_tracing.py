"""Every step of a turn is a span: stored in Postgres, served by the trace routes, exported
over OTLP/HTTP to a real receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, StatusCode, TraceFlags

from app.span_store import PostgresSpanProcessor
from planner.leaf_spans import LeafSpans
from planner.tracing import TurnTracer
from tests.scripted_model import ScriptedFailure, ScriptedModel, ScriptedReply
from tests.tool_server import ToolServer, http_tool
from tools.outcome import CallOutcome
from tools.redaction import Redactor

SECRET = "s3cr3t-signing-key"
API_KEY = "k3y-for-task-b-only"
TOKEN = "t0ken-for-task-c-only"
HEADERS = {"b": {"X-Api-Key": API_KEY}, "c": {"Authorization": f"Bearer {TOKEN}"}}
SLEEP = {"ms": {"type": "number"}, "label": {"type": "string"}}


async def start_traced_app(start_app: Callable[..., Any], database_url: str,
                           model: ScriptedModel, tools: ToolServer, **settings: Any
                           ) -> httpx.AsyncClient:
    """An app whose tenant has four HTTP tools, `task_a` to `task_d`, with secrets."""
    app = await start_app(database_url, model_url=model.url, **settings)
    specs = [
        {**http_tool(f"{tools.url}/sleep", f"task_{c}", f"Background task {c}", SLEEP, ["ms"]),
         "executor": {"kind": "http", "url": f"{tools.url}/sleep", "secret": SECRET,
                      "headers": {"Accept": "application/json", **HEADERS.get(c, {})}}}
        for c in "abcd"
    ]
    await app.client.post("/v1/tools/bulk", json={"tools": specs})
    return app.client


async def run_plan_turn(
    client: httpx.AsyncClient, model: ScriptedModel, labels: tuple[str, str] = ("b", "c")
) -> dict[str, Any]:
    """Three independent steps and a fourth that takes the first one's output."""
    plan = {"steps": [
        {"id": "s1", "tool": "task_a", "arguments": {"ms": 200, "label": SECRET}},
        {"id": "s2", "tool": "task_b", "arguments": {"ms": 200, "label": labels[0]}},
        {"id": "s3", "tool": "task_c", "arguments": {"ms": 200, "label": labels[1]}},
        {"id": "s4", "tool": "task_d", "arguments": {"ms": 50, "label": "$s1.label"}},
    ]}
    model.push(ScriptedReply(content=json.dumps(plan)), ScriptedReply(content="All done."))
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    response = await client.post(f"/v1/conversations/{conversation}/turns",
                                 json={"message": "run the tasks", "mode": "plan"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def stored_trace(client: httpx.AsyncClient, turn_id: str) -> dict[str, Any]:
    """The turn's trace once its root span is stored (spans are written a moment later)."""
    for _ in range(100):
        response = await client.get(f"/v1/turns/{turn_id}/trace")
        if response.status_code == 200:
            spans = response.json()["spans"]
            if any(s["parent_span_id"] is None for s in spans):
                trace: dict[str, Any] = response.json()
                return trace
        await asyncio.sleep(0.05)
    raise AssertionError(f"no stored trace for {turn_id}: {response.text}")


async def test_a_plan_turn_is_one_trace_with_parallel_sibling_tool_spans(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer
) -> None:
    client = await start_traced_app(start_app, database_url, model, tools)
    turn = await run_plan_turn(client, model)
    trace = await stored_trace(client, turn["id"])
    spans = trace["spans"]
    root = next(s for s in spans if s["parent_span_id"] is None)
    children = [s for s in spans if s["parent_span_id"] == root["span_id"]]
    assert root["name"] == "invoke_agent switchboard"
    # In start order; the three parallel calls may start in any order among themselves.
    names = [s["name"] for s in children]
    assert names[:2] == ["retrieval", "plan default"]
    assert sorted(names[2:5]) == ["execute_tool task_a", "execute_tool task_b",
                                  "execute_tool task_c"]
    assert names[5:] == ["execute_tool task_d", "join default"]
    assert len(spans) == 1 + len(children)
    assert root["attributes"]["gen_ai.operation.name"] == "invoke_agent"
    assert root["attributes"]["gen_ai.conversation.id"] == turn["conversation_id"]
    assert root["attributes"]["session.id"] == turn["conversation_id"]
    assert root["attributes"]["openinference.span.kind"] == "AGENT"
    assert root["status"]["code"] == "UNSET"

    chats = [s for s in children if s["attributes"]["gen_ai.operation.name"] == "chat"]
    assert [c["attributes"]["switchboard.phase"] for c in chats] == ["plan", "join"]
    assert chats[0]["attributes"]["gen_ai.operation.name"] == "chat"
    assert chats[0]["attributes"]["gen_ai.provider.name"] == "sglang"
    assert chats[0]["attributes"]["openinference.span.kind"] == "LLM"
    assert chats[0]["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
    assert chats[0]["attributes"]["gen_ai.usage.input_tokens"] > 0
    assert chats[0]["kind"] == "CLIENT"

    tool_spans = {s["attributes"]["gen_ai.tool.call.id"]: s for s in children
                  if s["name"].startswith("execute_tool")}
    a, b, c, d = (tool_spans[f"p0_s{i}"] for i in range(1, 5))
    for x, y in ((a, b), (a, c), (b, c)):
        assert x["start_time_unix_nano"] < y["end_time_unix_nano"]
        assert y["start_time_unix_nano"] < x["end_time_unix_nano"]
    assert d["start_time_unix_nano"] >= a["end_time_unix_nano"]
    assert d["attributes"]["switchboard.depends_on"] == ["p0_s1"]
    assert d["links"] == [{"trace_id": trace["trace_id"], "span_id": a["span_id"],
                           "attributes": {}}]
    assert a["attributes"]["gen_ai.tool.type"] == "extension"
    assert a["attributes"]["openinference.span.kind"] == "TOOL"
    # Content capture is off: no messages, arguments or results, and the secret nowhere.
    assert all("gen_ai.input.messages" not in s["attributes"] for s in spans)
    assert all("gen_ai.tool.call.arguments" not in s["attributes"] for s in spans)
    assert SECRET not in json.dumps(trace)


async def test_with_content_capture_messages_and_results_are_recorded_and_secrets_redacted(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    client = await start_traced_app(start_app, database_url, model, tools)
    # The tools echo these labels: each is a credential one of the turn's tools sends.
    turn = await run_plan_turn(client, model, labels=(API_KEY, TOKEN))
    spans = (await stored_trace(client, turn["id"]))["spans"]
    tool_a = next(s for s in spans if s["attributes"].get("gen_ai.tool.call.id") == "p0_s1")
    assert json.loads(tool_a["attributes"]["gen_ai.tool.call.arguments"]) == {
        "label": "[redacted]", "ms": 200}
    assert json.loads(tool_a["attributes"]["gen_ai.tool.call.result"]) == {
        "label": "[redacted]", "slept_ms": 200}
    join = next(s for s in spans if s["name"] == "join default")
    output = json.loads(join["attributes"]["gen_ai.output.messages"])
    assert output == [{"role": "assistant", "finish_reason": "stop",
                       "parts": [{"type": "text", "content": "All done."}]}]
    inputs = json.loads(join["attributes"]["gen_ai.input.messages"])
    assert inputs[0]["role"] == "system"
    assert {"role": "user", "parts": [{"type": "text", "content": "run the tasks"}]} in inputs
    everything = json.dumps(spans)
    assert SECRET not in everything and API_KEY not in everything and TOKEN not in everything
    tool_b = next(s for s in spans if s["attributes"].get("gen_ai.tool.call.id") == "p0_s2")
    assert json.loads(tool_b["attributes"]["gen_ai.tool.call.result"])["label"] == "[redacted]"


async def test_a_failed_turn_marks_its_spans_as_errors(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer
) -> None:
    client = await start_traced_app(start_app, database_url, model, tools)
    model.push(*[ScriptedFailure(status=503)] * 4)
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    response = await client.post(f"/v1/conversations/{conversation}/turns",
                                 json={"message": "hello"})
    assert response.status_code == 503
    spans = (await stored_trace(client, response.json()["turn"]["id"]))["spans"]
    root = next(s for s in spans if s["parent_span_id"] is None)
    chat = next(s for s in spans if s["name"].startswith("chat "))
    assert root["status"]["code"] == "ERROR"
    assert root["attributes"]["error.type"] == "model-unavailable"
    assert chat["status"]["code"] == "ERROR"
    assert chat["attributes"]["error.type"] == "ModelUnavailable"


async def test_trace_listing_filters_by_conversation_tool_status_and_duration(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer
) -> None:
    client = await start_traced_app(start_app, database_url, model, tools)
    ok = await run_plan_turn(client, model)
    model.push(ScriptedReply(content="Hi."))
    other = (await client.post("/v1/conversations", json={})).json()["id"]
    quick = (await client.post(f"/v1/conversations/{other}/turns",
                               json={"message": "hi"})).json()
    await stored_trace(client, ok["id"])
    await stored_trace(client, quick["id"])

    async def listed(**params: Any) -> list[str | None]:
        response = await client.get("/v1/traces", params=params)
        assert response.status_code == 200, response.text
        return [t["turn_id"] for t in response.json()["items"]]

    assert await listed() == [quick["id"], ok["id"]]
    assert await listed(conversation_id=other) == [quick["id"]]
    assert await listed(tool="task_d") == [ok["id"]]
    assert await listed(status="error") == []
    durations = {t["turn_id"]: t["duration_ms"]
                 for t in (await client.get("/v1/traces")).json()["items"]}
    longest = max(durations, key=durations.__getitem__)
    shortest = min(durations, key=durations.__getitem__)
    assert await listed(min_duration_ms=durations[longest]) == [longest]
    assert await listed(max_duration_ms=durations[shortest]) == [shortest]
    page = (await client.get("/v1/traces", params={"limit": 1})).json()
    assert [t["turn_id"] for t in page["items"]] == [quick["id"]]
    rest = (await client.get("/v1/traces", params={"cursor": page["next_cursor"]})).json()
    assert [t["turn_id"] for t in rest["items"]] == [ok["id"]]
    summary = page["items"][0]
    assert (summary["status"], summary["span_count"], summary["tools"]) == ("ok", 3, [])


async def retrieval_of_a_turn(
    client: httpx.AsyncClient, model: ScriptedModel, message: str
) -> tuple[dict[str, Any], list[str]]:
    """The retrieval span's attributes and the tool names the model was offered."""
    model.push(ScriptedReply(content="Done."))
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    response = await client.post(f"/v1/conversations/{conversation}/turns",
                                 json={"message": message})
    assert response.status_code == 200, response.text
    spans = (await stored_trace(client, response.json()["id"]))["spans"]
    retrieval: dict[str, Any] = next(s for s in spans if s["name"] == "retrieval")["attributes"]
    offered = [t["function"]["name"] for t in model.requests[-1]["tools"]]
    return retrieval, offered


async def test_a_tenant_with_no_more_tools_than_a_turn_offers_gets_them_all_unranked(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer
) -> None:
    app = await start_app(database_url, model_url=model.url, register_builtins=False,
                          candidate_k=3)
    specs = [http_tool(f"{tools.url}/sleep", f"task_{c}", f"Background task {c}", SLEEP, ["ms"])
             for c in "abc"]
    assert (await app.client.post("/v1/tools/bulk", json={"tools": specs})).status_code == 200
    retrieval, offered = await retrieval_of_a_turn(app.client, model, "run task b")
    assert retrieval["switchboard.retrieval.ranked"] is False
    assert retrieval["switchboard.retrieval.tools"] == ["task_a", "task_b", "task_c"]
    assert "switchboard.retrieval.scores" not in retrieval
    assert offered == ["search_tools", "task_a", "task_b", "task_c"]


async def test_a_tenant_with_more_tools_than_a_turn_offers_gets_the_best_ranked(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer
) -> None:
    app = await start_app(database_url, model_url=model.url, register_builtins=False,
                          candidate_k=2)
    specs = [
        http_tool(f"{tools.url}/weather", "get_weather", "Current weather in a city",
                  {"city": {"type": "string"}}, ["city"]),
        http_tool(f"{tools.url}/city", "get_user_city", "The city a user lives in",
                  {"user": {"type": "string"}}, ["user"]),
        http_tool(f"{tools.url}/sleep", "sleep_a", "Wait a while", SLEEP, ["ms"]),
    ]
    assert (await app.client.post("/v1/tools/bulk", json={"tools": specs})).status_code == 200
    retrieval, offered = await retrieval_of_a_turn(app.client, model, "weather in Oslo?")
    assert "switchboard.retrieval.ranked" not in retrieval
    assert retrieval["switchboard.retrieval.tools"][0] == "get_weather"
    assert len(retrieval["switchboard.retrieval.tools"]) == 2
    scores = retrieval["switchboard.retrieval.scores"]
    assert len(scores) == 2 and scores[0] >= scores[1]
    assert "get_weather" in offered and len(offered) == 3


async def test_an_unknown_trace_is_a_404_problem(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app = await start_app(database_url)
    response = await app.client.get("/v1/traces/0123456789abcdef0123456789abcdef")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_a_full_span_queue_drops_and_counts_instead_of_blocking() -> None:
    processor = PostgresSpanProcessor(max_queue=2)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(5):
        tracer.start_span("x", attributes={"switchboard.tenant": "default"}).end()
    tracer.start_span("no tenant").end()
    assert (processor.stats.queued, processor.stats.dropped) == (2, 3)


def leaf_tracer() -> tuple[TurnTracer, InMemorySpanExporter, TracerProvider]:
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
    provider.add_span_processor(processor)
    tracer = TurnTracer(provider.get_tracer("t"), leaves=LeafSpans([processor], provider.resource))
    return tracer, exporter, provider


def test_leaf_spans_are_children_of_the_turn_and_record_errors() -> None:
    tracer, exporter, provider = leaf_tracer()
    redact = Redactor()
    with tracer.turn(tenant="t1", conversation_id="c", turn_id="u", mode="auto", model="m",
                     message="hi", redact=redact) as root:
        with tracer.tool(tenant="t1", name="f", call_id="1", kind="function", step=1,
                         depends_on=[], links=[], arguments={}, redact=redact) as span:
            failed = CallOutcome(error="boom", error_type="tool_error", attempts=2)
            tracer.tool_result(span, failed, redact)
        with pytest.raises(RuntimeError), tracer.retrieval(tenant="t1", query="q", k=3,
                                                           redact=redact):
            raise RuntimeError("index gone")
    tool, retrieval, turn = exporter.get_finished_spans()
    assert (tool.name, retrieval.name, turn.name) == (
        "execute_tool f", "retrieval", "invoke_agent switchboard")
    for leaf in (tool, retrieval):
        assert leaf.parent is not None and leaf.parent.span_id == root.get_span_context().span_id
        assert leaf.context.trace_id == root.get_span_context().trace_id
        assert leaf.resource is provider.resource
        assert leaf.status.status_code is StatusCode.ERROR
    assert tool.attributes["switchboard.tool.attempts"] == 2
    assert (tool.attributes["error.type"], tool.status.description) == ("tool_error", "boom")
    assert [e.name for e in retrieval.events] == ["exception"]
    assert retrieval.events[0].attributes["exception.message"] == "index gone"
    assert not span.is_recording()


def test_a_leaf_follows_its_parents_sampling_and_needs_a_parent() -> None:
    tracer, exporter, _ = leaf_tracer()
    unsampled = SpanContext(1, 2, False, TraceFlags(0))
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(unsampled)))
    try:
        with tracer.retrieval(tenant="t1", query="q", k=3, redact=Redactor()) as span:
            assert not span.is_recording()
    finally:
        otel_context.detach(token)
    assert exporter.get_finished_spans() == ()
    # No current span at all: the SDK makes it, as a root of its own.
    with tracer.retrieval(tenant="t1", query="q", k=3, redact=Redactor()):
        pass
    (alone,) = exporter.get_finished_spans()
    assert alone.parent is None and alone.name == "retrieval"
