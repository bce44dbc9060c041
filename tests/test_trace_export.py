"""Traces as Arize Phoenix, Langfuse and Jaeger read them: exported over OTLP/HTTP to a real
receiver on loopback and decoded there."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, post
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from planner.evals.bfcl import bfcl_cases
from planner.tracing import CAPTURE_ENV
from tests.eval_models import ANSWERS, QUESTIONS, case_model
from tests.loopback import serving
from tests.scripted_model import ScriptedFailure, ScriptedModel, ScriptedReply, scripted_model
from tests.test_evals import finished, register, slice_set
from tests.test_tracing import SECRET, run_plan_turn, start_traced_app
from tests.tool_server import ToolServer, http_tool

TURN_ROUTE = "POST /v1/conversations/{conversation_id}/turns"
CONTENT_KEYS = ("input.value", "output.value", "gen_ai.input.messages", "gen_ai.output.messages",
                "gen_ai.tool.call.arguments", "gen_ai.tool.call.result",
                "gen_ai.retrieval.query.text")


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


async def failed_turn(client: httpx.AsyncClient, model: ScriptedModel) -> dict[str, Any]:
    """An auto turn whose model server answers 503 to every attempt."""
    model.push(*[ScriptedFailure(status=503)] * 4)
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    response = await client.post(f"/v1/conversations/{conversation}/turns",
                                 json={"message": "hello"})
    assert response.status_code == 503, response.text
    problem: dict[str, Any] = response.json()
    return problem


async def test_spans_are_exported_over_otlp_http_to_a_real_receiver(
    otlp: OtlpReceiver, start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
    tools: ToolServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "switchboard-test")
    client = await start_traced_app(start_app, database_url, model, tools)
    turn = await run_plan_turn(client, model)
    spans = await otlp.turn_trace(turn["id"])
    names = [s["name"] for s in spans]
    assert not any(s["name"].endswith(("http send", "http receive")) for s in otlp.spans)
    assert otlp.resources[0]["service.name"] == "switchboard-test"
    root = by_name(spans, "invoke_agent switchboard")
    assert root["attributes"]["gen_ai.conversation.id"] == turn["conversation_id"]
    assert root["attributes"]["session.id"] == turn["conversation_id"]
    # Retrieval, model and tool spans are the root's children, in its trace.
    leaves = [s for s in spans if s["parent_span_id"] == root["span_id"]]
    assert sorted(s["name"] for s in leaves) == [
        "execute_tool task_a", "execute_tool task_b", "execute_tool task_c",
        "execute_tool task_d", "join default", "plan default", "retrieval"], names
    assert len({s["span_id"] for s in spans}) == len(spans) == 9


async def test_a_turn_and_the_request_that_started_it_are_one_trace(
    otlp: OtlpReceiver, start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
    tools: ToolServer,
) -> None:
    client = await start_traced_app(start_app, database_url, model, tools)
    turn = await run_plan_turn(client, model)
    spans = await otlp.turn_trace(turn["id"])
    request = by_name(spans, TURN_ROUTE)
    root = by_name(spans, "invoke_agent switchboard")
    assert (request["parent_span_id"], request["kind"]) == (None, "SPAN_KIND_SERVER")
    assert root["parent_span_id"] == request["span_id"]
    assert root["links"] == []
    assert len(spans) == 9  # the request, the turn, retrieval, plan, four calls, join


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


async def test_with_content_capture_each_span_carries_its_input_and_output(
    otlp: OtlpReceiver, start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
    tools: ToolServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    client = await start_traced_app(start_app, database_url, model, tools)
    turn = await run_plan_turn(client, model)
    spans = await otlp.turn_trace(turn["id"])

    def shown(name: str) -> tuple[Any, ...]:
        a = by_name(spans, name)["attributes"]
        return (a.get("input.value"), a.get("input.mime_type"),
                a.get("output.value"), a.get("output.mime_type"))

    assert shown("invoke_agent switchboard") == (
        "run the tasks", "text/plain", "All done.", "text/plain")
    assert shown("execute_tool task_b") == (
        '{"label": "b", "ms": 200}', "application/json",
        '{"label": "b", "slept_ms": 200.0}', "application/json")
    plan = by_name(spans, "plan default")["attributes"]
    assert plan["input.value"] == plan["gen_ai.input.messages"]
    assert plan["input.mime_type"] == "application/json"
    assert json.loads(plan["output.value"])["steps"][3] == {
        "id": "s4", "tool": "task_d", "arguments": {"ms": 50, "label": "$s1.label"}}
    assert plan["output.mime_type"] == "application/json"
    assert shown("join default")[2:] == ("All done.", "text/plain")
    assert SECRET not in json.dumps(spans)


async def test_without_content_capture_no_span_carries_content(
    otlp: OtlpReceiver, start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
    tools: ToolServer,
) -> None:
    client = await start_traced_app(start_app, database_url, model, tools)
    turn = await run_plan_turn(client, model)
    spans = await otlp.turn_trace(turn["id"])
    assert [(s["name"], k) for s in spans for k in CONTENT_KEYS if k in s["attributes"]] == []
    retrieval = by_name(spans, "retrieval")["attributes"]
    # Four tools, fewer than a turn offers: all of them, unranked, named but not described.
    assert json.loads(retrieval["gen_ai.retrieval.documents"]) == [
        {"id": f"default/task_{c}"} for c in "abcd"]
    assert [k for k in retrieval if k.startswith("retrieval.documents.")] == [
        f"retrieval.documents.{i}.document.id" for i in range(4)]
    plan = by_name(spans, "plan default")["attributes"]
    assert json.loads(plan["gen_ai.tool.definitions"])[0] == {"type": "function",
                                                              "name": "search_tools"}


async def test_retrieval_spans_list_the_ranked_tools_as_documents(
    otlp: OtlpReceiver, start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
    tools: ToolServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    app = await start_app(database_url, model_url=model.url, candidate_k=2)
    specs = [
        http_tool(f"{tools.url}/weather", "get_weather", "Current weather in a city",
                  {"city": {"type": "string"}}, ["city"]),
        http_tool(f"{tools.url}/city", "get_user_city", "The city a user lives in",
                  {"user": {"type": "string"}}, ["user"]),
        http_tool(f"{tools.url}/sleep", "sleep_a", "Wait a while", {}, []),
    ]
    assert (await app.client.post("/v1/tools/bulk", json={"tools": specs})).status_code == 200
    model.push(ScriptedReply(content="Sunny."))
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    turn = (await app.client.post(f"/v1/conversations/{conversation}/turns",
                                  json={"message": "weather in Oslo?"})).json()
    retrieval = by_name(await otlp.turn_trace(turn["id"]), "retrieval")["attributes"]
    assert retrieval["gen_ai.retrieval.query.text"] == "weather in Oslo?"
    assert retrieval["openinference.span.kind"] == "RETRIEVER"
    documents = json.loads(retrieval["gen_ai.retrieval.documents"])
    assert (documents[0]["id"], documents[0]["content"]) == (
        "default/get_weather", "Current weather in a city")
    assert len(documents) == 2 and documents[0]["score"] >= documents[1]["score"]
    for i, document in enumerate(documents):
        prefix = f"retrieval.documents.{i}.document"
        assert (retrieval[f"{prefix}.id"], retrieval[f"{prefix}.score"],
                retrieval[f"{prefix}.content"]) == (
            document["id"], document["score"], document["content"])


async def test_model_calls_carry_the_offered_tools_sampling_and_response_id(
    otlp: OtlpReceiver, start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
    tools: ToolServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    tuned = {"name": "tuned", "base_url": model.url, "model": "tuned-model",
             "temperature": 0.7, "seed": 7, "max_completion_tokens": 256}
    client = await start_traced_app(start_app, database_url, model, tools,
                                    model_backends=json.dumps([tuned]))
    model.push(ScriptedReply(content="Hi."))
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    turn = (await client.post(f"/v1/conversations/{conversation}/turns",
                              json={"message": "hi", "model": "tuned", "temperature": 0.3})).json()
    chat = by_name(await otlp.turn_trace(turn["id"]), "chat tuned-model")["attributes"]
    # The request's temperature; the backend's seed and token limit.
    assert (chat["gen_ai.request.temperature"], chat["gen_ai.request.seed"],
            chat["gen_ai.request.max_tokens"]) == (0.3, 7, 256)
    assert json.loads(chat["llm.invocation_parameters"]) == {
        "temperature": 0.3, "seed": 7, "max_tokens": 256}
    assert chat["gen_ai.response.id"] == "chatcmpl-1"
    assert chat["llm.model_name"] == "tuned-model"
    assert chat["llm.token_count.total"] == (
        chat["llm.token_count.prompt"] + chat["llm.token_count.completion"])
    offered = json.loads(chat["gen_ai.tool.definitions"])
    task_a = next(t for t in offered if t["name"] == "task_a")
    assert task_a == {"type": "function", "name": "task_a", "description": "Background task a",
                      "parameters": model.requests[0]["tools"][1]["function"]["parameters"]}
    assert [t["name"] for t in offered] == [
        t["function"]["name"] for t in model.requests[0]["tools"]]


async def test_plan_step_and_join_calls_are_told_apart_by_name(
    otlp: OtlpReceiver, start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
    tools: ToolServer,
) -> None:
    client = await start_traced_app(start_app, database_url, model, tools)
    planned = await otlp.turn_trace((await run_plan_turn(client, model))["id"])
    model.push(ScriptedReply(content="Hi."))
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    stepped = (await client.post(f"/v1/conversations/{conversation}/turns",
                                 json={"message": "hi"})).json()
    calls = [s for s in [*planned, *await otlp.turn_trace(stepped["id"])]
             if s["attributes"].get("gen_ai.operation.name") == "chat"]
    assert [(s["name"], s["attributes"]["switchboard.phase"]) for s in calls] == [
        ("plan default", "plan"), ("join default", "join"), ("chat default", "step")]
    assert {s["attributes"]["openinference.span.kind"] for s in calls} == {"LLM"}


async def test_a_failed_model_call_is_an_exception_event_on_its_span_and_the_turns(
    otlp: OtlpReceiver, start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
    tools: ToolServer,
) -> None:
    client = await start_traced_app(start_app, database_url, model, tools)
    problem = await failed_turn(client, model)
    spans = await otlp.turn_trace(problem["turn"]["id"])
    [chat_event] = by_name(spans, "chat default")["events"]
    assert chat_event["name"] == "exception"
    assert chat_event["attributes"]["exception.type"] == "ModelUnavailable"
    assert chat_event["attributes"]["exception.message"] == problem["detail"]
    assert "Traceback" in chat_event["attributes"]["exception.stacktrace"]
    root = by_name(spans, "invoke_agent switchboard")
    assert root["status"] == "STATUS_CODE_ERROR"
    assert root["events"] == [{"name": "exception", "attributes": {
        "exception.type": "model-unavailable", "exception.message": problem["detail"]}}]


async def test_a_failed_tool_call_is_an_exception_event_on_its_span(
    otlp: OtlpReceiver, start_app: Callable[..., Any], database_url: str, model: ScriptedModel,
    tools: ToolServer,
) -> None:
    client = await start_traced_app(start_app, database_url, model, tools)
    model.push(ScriptedReply(tool_calls=[("task_a", {"ms": "soon"})]),
               ScriptedReply(content="It failed."))
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    turn = (await client.post(f"/v1/conversations/{conversation}/turns",
                              json={"message": "run task a"})).json()
    assert turn["tool_calls"][0]["error_type"] == "invalid_arguments"
    tool = by_name(await otlp.turn_trace(turn["id"]), "execute_tool task_a")
    assert tool["status"] == "STATUS_CODE_ERROR"
    assert tool["events"] == [{"name": "exception", "attributes": {
        "exception.type": "invalid_arguments",
        "exception.message": "arguments invalid: /ms: 'soon' is not of type 'number'"}}]


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


async def test_an_eval_runs_turns_are_traces_of_their_own_not_the_launching_requests(
    otlp: OtlpReceiver, start_app: Callable[..., Any], database_url: str,
) -> None:
    specs, cases = slice_set()
    parsed = bfcl_cases(QUESTIONS, ANSWERS)[1]
    async with scripted_model(responder=case_model(parsed, one_at_a_time=False)) as model:
        client = (await start_app(database_url, model_url=model.url)).client
        await register(client, specs, "http://127.0.0.1:9/unused", idempotent=True)
        set_id = (await client.post("/v1/evals/sets", json={"name": "s", "cases": cases})).json()
        run = (await client.post("/v1/evals/runs", json={"set": set_id["id"],
                                                         "configs": [{"name": "auto"}]})).json()
        await finished(client, run["id"])
    launched = await otlp.span_named("POST /v1/evals/runs")
    turns = [s for s in otlp.spans if s["name"] == "invoke_agent switchboard"]
    assert len(turns) == len(cases)
    assert [s["parent_span_id"] for s in turns] == [None] * len(cases)
    assert launched["trace_id"] not in {s["trace_id"] for s in turns}
