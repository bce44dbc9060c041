"""Spans for every step of a turn, named and attributed by the OpenTelemetry GenAI conventions
(plus OpenInference's span kinds for Phoenix and `session.id` for Langfuse).

One trace per turn: `invoke_agent switchboard` is its root; `retrieval`, `chat {model}` and
`execute_tool {tool}` are its children. Message content, reasoning, arguments and results are
recorded only when content capture is on, cut to a length limit, with secrets redacted.
"""

from __future__ import annotations

import contextlib
import json
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
from planner.leaf_spans import AGENT_NAME, LeafSpans
from planner.messages import ChatMessage, ModelReply, ModelRequest
from planner.routing import Route
from tools.outcome import CallOutcome
from tools.redaction import Redactor

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CAPTURE_ON = {"true", "1", "yes", "span_only", "span_and_event"}


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
        traceparent: str | None = None, taken_from: str | None = None,
    ) -> Iterator[Span]:
        """The root of a new trace, linked to the HTTP request that started it; a resumed turn
        is a child of its first span (`traceparent`), so the whole turn is one trace. A turn
        taken over from a replica that died (`taken_from`) links to that first span too."""
        parent = otel_context.Context()
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

    def lost_root(
        self, *, traceparent: str, started_at: datetime, tenant: str, conversation_id: str,
        turn_id: str, mode: str, model: str, replica: str,
    ) -> None:
        """The first span of a turn whose replica died before ending it, written by the replica
        that took the turn over, with the ids it had: the trace keeps its root, and the spans
        the dead replica exported keep their parent."""
        if self.leaves is None:
            return
        first = trace.get_current_span(
            TraceContextTextMapPropagator().extract({"traceparent": traceparent})
        ).get_span_context()
        if not first.is_valid or not first.trace_flags.sampled:
            return
        attributes = _turn_attributes(tenant, conversation_id, turn_id, mode, model)
        attributes["switchboard.turn.lost_with"] = replica
        self.leaves.finish(ReadableSpan(
            name=f"invoke_agent {AGENT_NAME}",
            context=SpanContext(first.trace_id, first.span_id, is_remote=False,
                                trace_flags=first.trace_flags),
            resource=self.leaves.resource, attributes=attributes, kind=SpanKind.INTERNAL,
            start_time=int(started_at.timestamp() * 1e9), end_time=time.time_ns(),
            status=Status(StatusCode.ERROR, "the replica running this turn stopped; another "
                                            "took it over"),
            instrumentation_scope=self.leaves.scope,
        ))

    def retrieval(self, *, tenant: str, query: str, k: int) -> Span:
        if not self.enabled:  # tracing off: nothing to build, nothing to record
            return INVALID_SPAN
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "retrieval",
            "openinference.span.kind": "RETRIEVER",
            "switchboard.tenant": tenant,
            "switchboard.retrieval.k": k,
        }
        if self.options.capture_content:
            attributes["switchboard.retrieval.query"] = self._cut(query)
        return self._leaf("retrieval", attributes=attributes)

    def chat(
        self,
        *,
        tenant: str,
        model: str,
        server: str,
        phase: str,
        request: ModelRequest,
        redact: Redactor,
    ) -> Span:
        if not self.enabled:  # tracing off: nothing to build, nothing to record
            return INVALID_SPAN
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": self.options.provider_name,
            "gen_ai.request.model": model,
            "openinference.span.kind": "LLM",
            "server.address": server,
            "switchboard.tenant": tenant,
            "switchboard.phase": phase,
            "switchboard.tools.offered": len(request.tools),
        }
        if self.options.capture_content and self.enabled:
            attributes["gen_ai.input.messages"] = self._cut(
                redact(_messages_json(request.messages))
            )
        return self._leaf(f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes)

    def route(self, span: Span, route: Route) -> None:
        """A router's decision on the turn's span: the backend, why, and each candidate's
        predicted success and cost."""
        if not span.is_recording():
            return
        span.set_attributes({
            "switchboard.route.router": route.router,
            "switchboard.route.chosen": route.chosen,
            "switchboard.route.why": route.why,
            "switchboard.route.candidates": _json(msgspec.to_builtins(route.candidates)),
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

    def chat_reply(self, span: Span, reply: ModelReply, redact: Redactor) -> None:
        if not span.is_recording():
            return
        usage = reply.usage
        span.set_attributes(
            {
                "gen_ai.response.model": reply.model,
                "gen_ai.response.finish_reasons": [reply.finish_reason or "unknown"],
                "gen_ai.usage.input_tokens": usage.prompt_tokens,
                "gen_ai.usage.output_tokens": usage.completion_tokens,
            }
        )
        if usage.cached_tokens is not None:
            span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cached_tokens)
        if self.options.capture_content:
            span.set_attribute("gen_ai.output.messages", self._cut(redact(_reply_json(reply))))
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
            "switchboard.tenant": tenant,
            "switchboard.step": step,
            "switchboard.depends_on": list(depends_on),
        }
        if self.options.capture_content and self.enabled:
            attributes["gen_ai.tool.call.arguments"] = self._cut(redact(_json(arguments)))
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
            span.set_attribute("gen_ai.tool.call.result", self._cut(redact(_json(body))))

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


def mark_error(span: Span, error_type: str, message: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, message))


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


def _messages_json(messages: Sequence[ChatMessage]) -> str:
    return _json([_message_parts(m) for m in messages])


def _message_parts(message: ChatMessage) -> dict[str, Any]:
    """A chat message in the GenAI conventions' shape: a role and typed parts."""
    parts: list[dict[str, Any]] = []
    if message.role == "tool":
        parts.append(
            {"type": "tool_call_response", "id": message.tool_call_id, "response": message.content}
        )
    elif message.content:
        parts.append({"type": "text", "content": message.content})
    for call in message.tool_calls or []:
        parts.append(
            {
                "type": "tool_call",
                "id": call.id,
                "name": call.function.name,
                "arguments": call.function.arguments,
            }
        )
    return {"role": message.role, "parts": parts}


def _reply_json(reply: ModelReply) -> str:
    parts: list[dict[str, Any]] = (
        [{"type": "text", "content": reply.content}] if reply.content else []
    )
    parts += [
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
        for c in reply.tool_calls
    ]
    return _json([{"role": "assistant", "parts": parts, "finish_reason": reply.finish_reason}])
