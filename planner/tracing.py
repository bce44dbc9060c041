"""Spans for every step of a turn, named and attributed by the OpenTelemetry GenAI conventions,
with OpenInference's attributes beside them (for Arize Phoenix; Langfuse reads both).

One trace per turn: `invoke_agent switchboard` is its root, itself a child of the HTTP request
that started the turn; `retrieval`, `chat {model}` (`plan {model}`, `join {model}`) and
`execute_tool {tool}` are its children. Message content, reasoning, arguments, results, the
query and the answer are recorded only when content capture is on, cut to a length limit, with
secrets redacted.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NoOpTracer,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from planner.context import Fitted
from planner.events import TurnResult
from planner.leaf_spans import AGENT_NAME, LeafSpans
from planner.messages import ModelReply, ModelRequest
from planner.model_client import ModelBackend, sampling
from planner.routing import Route
from planner.span_content import (
    JSON,
    TEXT,
    Document,
    as_json,
    documents_json,
    invocation_parameters,
    messages_json,
    reply_json,
    tool_definitions,
)
from tools.outcome import CallOutcome
from tools.redaction import Redactor

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_ON = {"true", "1", "yes", "span_only", "span_and_event"}

CALL_NAMES = {"plan": "plan", "join": "join"}
"""A model call's span is named `{operation} {model}` by the GenAI conventions, and every call
of a turn is a `chat`; but a plan turn makes three kinds of call, and Phoenix's and Jaeger's
trees show names, not attributes. So a plan and a join call are named for what they do (`plan
default`, `join default`) while `gen_ai.operation.name` stays `chat`, which is what GenAI-aware
backends group by; steps and expert calls keep `chat {model}`. `switchboard.phase` says the
same as an attribute, for filters."""


def _turn_attributes(tenant: str, conversation_id: str, turn_id: str, mode: str, model: str
                     ) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": AGENT_NAME,
        "gen_ai.conversation.id": conversation_id,
        "gen_ai.request.model": model,
        "session.id": conversation_id,
        "openinference.span.kind": "AGENT",
        "switchboard.tenant": tenant,
        "switchboard.turn.id": turn_id,
        "switchboard.turn.mode": mode,
    }


def capture_from_env(environ: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get(CAPTURE_ENV, "")
    return value.strip().lower() in _CAPTURE_ON


class TraceOptions(msgspec.Struct, frozen=True, kw_only=True):
    capture_content: bool = False
    max_content_chars: int = 8192
    provider_name: str = "sglang"


class TurnTracer:
    """Named span factories; with tracing off (a NoOpTracer) they cost next to nothing."""

    def __init__(
        self,
        tracer: Tracer | None = None,
        options: TraceOptions | None = None,
        leaves: LeafSpans | None = None,
    ) -> None:
        self.tracer = tracer or NoOpTracer()
        self.options = options or TraceOptions()
        self.enabled = not isinstance(self.tracer, NoOpTracer)
        self.leaves = leaves if self.enabled else None

    @contextlib.contextmanager
    def turn(
        self, *, tenant: str, conversation_id: str, turn_id: str, mode: str, model: str,
        message: str, redact: Redactor, traceparent: str | None = None,
        taken_from: str | None = None,
    ) -> Iterator[Span]:
        """The turn's span. A new turn's is a child of the current span, the HTTP request
        that started it, so the request and its turn are one trace. A resumed turn's is a
        child of its first span (`traceparent`), so the whole turn stays one trace, and links
        to the request that resumed it; a turn taken over from a replica that died
        (`taken_from`) links to that first span too."""
        parent, links = None, []
        if traceparent is not None:
            parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
            caller = trace.get_current_span().get_span_context()
            links = [Link(caller)] if caller.is_valid else []
        attributes = _turn_attributes(tenant, conversation_id, turn_id, mode, model)
        if traceparent is not None:
            attributes["switchboard.turn.resumed"] = True
        if taken_from is not None:
            attributes["switchboard.turn.taken_over_from"] = taken_from
            first = trace.get_current_span(parent).get_span_context()
            if first.is_valid:
                links.append(Link(first, {"switchboard.link": "takeover"}))
        if self.options.capture_content:
            attributes.update(_input(self._cut(redact(message)), TEXT))
        with self.tracer.start_as_current_span(
            f"invoke_agent {AGENT_NAME}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    def turn_result(self, span: Span, result: TurnResult, redact: Redactor) -> None:
        """How the turn's part ended: its answer (with content capture on), or its error."""
        if not span.is_recording():
            return
        span.set_attribute("switchboard.turn.status", result.status)
        if result.error is not None:
            mark_error(span, result.error.type.rsplit("/", 1)[-1], result.error.detail)
        if self.options.capture_content and result.message is not None:
            span.set_attributes(_output(self._cut(redact(result.message.content)), TEXT))

    def lost_root(
        self, *, traceparent: str, started_at: datetime, tenant: str, conversation_id: str,
        turn_id: str, mode: str, model: str, replica: str,
    ) -> None:
        """The first span of a turn whose replica died before ending it, written by the replica
        that took the turn over, with the ids it had: the trace keeps its turn's root, and the
        spans the dead replica exported keep their parent. It has no parent itself: the HTTP
        request that started the turn died with its replica, unended and unexported, and its
        id was not kept."""
        if self.leaves is None:
            return
        first = trace.get_current_span(
            TraceContextTextMapPropagator().extract({"traceparent": traceparent})
        ).get_span_context()
        if not first.is_valid or not first.trace_flags.sampled:
            return
        attributes = _turn_attributes(tenant, conversation_id, turn_id, mode, model)
        attributes["switchboard.turn.lost_with"] = replica
        message = "the replica running this turn stopped; another took it over"
        self.leaves.finish(ReadableSpan(
            name=f"invoke_agent {AGENT_NAME}",
            context=SpanContext(first.trace_id, first.span_id, is_remote=False,
                                trace_flags=first.trace_flags),
            resource=self.leaves.resource, attributes=attributes, kind=SpanKind.INTERNAL,
            start_time=int(started_at.timestamp() * 1e9), end_time=time.time_ns(),
            status=Status(StatusCode.ERROR, message),
            instrumentation_scope=self.leaves.scope,
        ))

    def retrieval(self, *, tenant: str, query: str, k: int, redact: Redactor) -> Span:
        if not self.enabled:  # tracing off: nothing to build, nothing to record
            return INVALID_SPAN
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "retrieval",
            "gen_ai.request.top_k": k,
            "openinference.span.kind": "RETRIEVER",
            "switchboard.tenant": tenant,
            "switchboard.retrieval.k": k,
        }
        if self.options.capture_content:
            text = self._cut(redact(query))
            attributes["gen_ai.retrieval.query.text"] = text
            attributes.update(_input(text, TEXT))
        return self._leaf("retrieval", attributes=attributes)

    def retrieved(self, span: Span, documents: Sequence[Document]) -> None:
        """What retrieval found, best first: as the GenAI conventions' documents and as
        OpenInference's (`retrieval.documents.{i}.document.*`, Phoenix's retriever panel).
        Ids and scores always; what was matched only with content capture on."""
        if not span.is_recording():
            return
        content = self.options.capture_content
        attributes: dict[str, Any] = {
            "gen_ai.retrieval.documents": documents_json(documents, content=content)}
        for i, document in enumerate(documents):
            prefix = f"retrieval.documents.{i}.document"
            attributes[f"{prefix}.id"] = document.id
            if document.score is not None:
                attributes[f"{prefix}.score"] = document.score
            if content and document.content is not None:
                attributes[f"{prefix}.content"] = self._cut(document.content)
        span.set_attributes(attributes)

    def chat(
        self,
        *,
        tenant: str,
        backend: ModelBackend,
        phase: str,
        request: ModelRequest,
        redact: Redactor,
    ) -> Span:
        if not self.enabled:  # tracing off: nothing to build, nothing to record
            return INVALID_SPAN
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.options.provider_name,
            "gen_ai.request.model": backend.model,
            "llm.model_name": backend.model,
            "openinference.span.kind": "LLM",
            "server.address": backend.base_url,
            "switchboard.tenant": tenant,
            "switchboard.phase": phase,
            "switchboard.tools.offered": len(request.tools),
            **_sampling(backend, request),
        }
        if request.tools:
            attributes["gen_ai.tool.definitions"] = tool_definitions(
                request.tools, whole=self.options.capture_content)
        if self.options.capture_content:
            messages = self._cut(redact(messages_json(request.messages)))
            attributes["gen_ai.input.messages"] = messages
            attributes.update(_input(messages, JSON))
        name = f"{CALL_NAMES.get(phase, 'chat')} {backend.model}"
        return self._leaf(name, kind=SpanKind.CLIENT, attributes=attributes)

    def route(self, span: Span, route: Route) -> None:
        """A router's decision on the turn's span: the backend, why, and each candidate's
        predicted success and cost."""
        if not span.is_recording():
            return
        span.set_attributes({
            "switchboard.route.router": route.router,
            "switchboard.route.chosen": route.chosen,
            "switchboard.route.why": route.why,
            "switchboard.route.candidates": as_json(msgspec.to_builtins(route.candidates)),
        })

    def context(self, span: Span, fitted: Fitted, window: int, counted_by: str) -> None:
        """How the request was fitted to the context window, and how its tokens were
        counted."""
        if not span.is_recording():
            return
        span.set_attributes({
            "switchboard.context.window": window,
            "switchboard.context.tokens": fitted.tokens,
            "switchboard.context.counted_by": counted_by,
            "switchboard.context.dropped_messages": fitted.dropped_messages,
            "switchboard.context.cut_results": fitted.cut_results,
        })

    def chat_reply(self, span: Span, reply: ModelReply, redact: Redactor, *,
                   structured: bool = False) -> None:
        if not span.is_recording():
            return
        usage = reply.usage
        span.set_attributes(
            {
                "gen_ai.response.model": reply.model,
                "gen_ai.response.finish_reasons": [reply.finish_reason or "unknown"],
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
                "llm.token_count.prompt": usage.prompt_tokens,
                "llm.token_count.completion": usage.completion_tokens,
                "llm.token_count.total": usage.prompt_tokens + usage.completion_tokens,
            }
        )
        if reply.id is not None:
            span.set_attribute("gen_ai.response.id", reply.id)
        if usage.cached_tokens is not None:
            span.set_attributes({
                "gen_ai.usage.cache_read.input_tokens": usage.cached_tokens,
                "llm.token_count.prompt_details.cache_read": usage.cached_tokens,
            })
        if self.options.capture_content:
            whole = self._cut(redact(reply_json(reply)))
            span.set_attribute("gen_ai.output.messages", whole)
            # A list view shows the output: a reply's text when it is only text, else the
            # whole reply with its tool calls.
            # A reply the request asked to write as JSON (a plan; an expert's output_schema)
            # is JSON text.
            text_only = reply.content and not reply.tool_calls
            span.set_attributes(
                _output(self._cut(redact(reply.content)), JSON if structured else TEXT)
                if text_only else _output(whole, JSON))
            if reply.reasoning:
                span.set_attribute("switchboard.reasoning", self._cut(redact(reply.reasoning)))

    def tool(
        self,
        *,
        tenant: str,
        name: str,
        call_id: str,
        kind: str,
        step: int,
        depends_on: Sequence[str],
        links: Sequence[trace.SpanContext],
        arguments: Any,
        redact: Redactor,
    ) -> Span:
        if not self.enabled:  # tracing off: nothing to build, nothing to record
            return INVALID_SPAN
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": kind,
            "openinference.span.kind": "TOOL",
            "tool.name": name,
            "tool_call.id": call_id,
            "switchboard.tenant": tenant,
            "switchboard.step": step,
            "switchboard.depends_on": list(depends_on),
        }
        if self.options.capture_content:
            given = self._cut(redact(as_json(arguments)))
            attributes["gen_ai.tool.call.arguments"] = given
            attributes.update(_input(given, JSON))
        links_ = [Link(c) for c in links]
        return self._leaf(f"execute_tool {name}", attributes=attributes, links=links_)

    def tool_result(self, span: Span, outcome: CallOutcome, redact: Redactor) -> None:
        if not span.is_recording():
            return
        span.set_attribute("switchboard.tool.attempts", outcome.attempts)
        if not outcome.ok:
            mark_error(span, outcome.error_type or "tool_error", redact(outcome.error or ""))
        if self.options.capture_content:
            body = (outcome.result if outcome.ok
                    else {"error": outcome.error, "error_type": outcome.error_type})
            result = self._cut(redact(as_json(body)))
            span.set_attribute("gen_ai.tool.call.result", result)
            span.set_attributes(_output(result, JSON))

    def _leaf(self, name: str, *, kind: SpanKind = SpanKind.INTERNAL,
              attributes: dict[str, Any], links: Sequence[Link] = ()) -> Span:
        """A span without children, to be used as a context manager: started under the current
        span, never made current itself (setting the current context costs more than the rest
        of a span). An exception that escapes it is recorded and sets its status."""
        span = None if self.leaves is None else self.leaves.start(name, kind, attributes, links)
        if span is None:  # no turn around it: an SDK span, which records an escaping error too
            span = self.tracer.start_span(name, kind=kind, attributes=attributes, links=links)
        return span

    def _cut(self, text: str) -> str:
        limit = self.options.max_content_chars
        return text if len(text) <= limit else f"{text[:limit]}…[cut: {len(text)} chars]"


def detached() -> contextlib.AbstractContextManager[object]:
    """Work started in here (a task) belongs to no trace of the caller's: a background job
    that outlives the request that launched it, whose turns are traces of their own."""
    return _attached(otel_context.Context())


@contextlib.contextmanager
def _attached(context: otel_context.Context) -> Iterator[object]:
    token = otel_context.attach(context)
    try:
        yield context
    finally:
        otel_context.detach(token)


def mark_error(span: Span, error_type: str, message: str,
               exception: BaseException | None = None) -> None:
    """An error on a span as every viewer reads one: `error.type` (GenAI conventions), an
    ERROR status, and an `exception` event (the exception itself, with its stack, when there
    is one)."""
    if not span.is_recording():
        return
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, message))
    if exception is not None:
        span.record_exception(exception)
    else:
        span.add_event("exception", {"exception.type": error_type, "exception.message": message})


def _input(value: str, mime_type: str) -> dict[str, str]:
    return {"input.value": value, "input.mime_type": mime_type}


def _output(value: str, mime_type: str) -> dict[str, str]:
    return {"output.value": value, "output.mime_type": mime_type}


def _sampling(backend: ModelBackend, request: ModelRequest) -> dict[str, Any]:
    """The request's sampling settings as the GenAI conventions name them, those it has (its
    own, else its backend's defaults), and as OpenInference's invocation parameters."""
    used = sampling(backend, request)
    settings = {
        "temperature": used.temperature,
        "max_tokens": used.max_completion_tokens,
        "seed": used.seed,
    }
    given = {name: value for name, value in settings.items() if value is not None}
    attributes: dict[str, Any] = {f"gen_ai.request.{name}": v for name, v in given.items()}
    attributes["llm.invocation_parameters"] = invocation_parameters(given)
    return attributes
