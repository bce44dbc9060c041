"""The engine's model calls: one request to the backend the turn is on (or its join backend),
fitted to that backend's context window, its text streamed out as the turn's events, its
tokens counted by backend; a backend that is down has its breaker opened, and a routed turn
goes on with the next backend its router allows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from planner.breakers import Breakers
from planner.context import REPLY_TOKENS, Fitted, TokenCounter, fit
from planner.errors import ModelUnavailable, PlannerError
from planner.events import MessageDelta, ReasoningDelta
from planner.messages import (
    ChatMessage,
    ContentDelta,
    Delta,
    ModelReply,
    ModelRequest,
    ToolChoice,
    Usage,
)
from planner.model_client import ChatModel
from planner.prompt import system_prompt
from planner.text_calls import StreamedText
from planner.tracing import TurnTracer, mark_error
from planner.turn import TurnState
from planner.turn_store import TurnStore


class ModelCalls:
    def __init__(self, models: dict[str, ChatModel], store: TurnStore, tracer: TurnTracer
                 ) -> None:
        self.models, self.store, self.tracer = models, store, tracer
        self.breakers = Breakers()
        self.counters: dict[str, TokenCounter] = {}
        """Each backend's token counter, calibrated by what its server reports."""

    async def call(
        self, turn: TurnState, system: str, tool_choice: ToolChoice, phase: str,
        response_format: dict[str, Any] | None = None,
        on_plan_text: Callable[[str], None] | None = None,
    ) -> ModelReply:
        """One model call; its text streams out as message deltas, or a plan's to
        `on_plan_text`. A backend that is down has its breaker opened (planner/breakers.py);
        a routed turn then goes on with the next backend its router allows, if nothing of
        the reply was shown yet, and is not sent to a backend whose breaker is open."""
        while True:
            joins = phase == "join" and turn.join is not None
            turn.current = turn.join if joins and turn.join is not None else turn.model
            backend = turn.current.backend
            shown: list[bool] = []
            try:
                if turn.route is not None:  # a turn that named its backend tries it anyway
                    self.breakers.check(backend.name, backend.base_url)
                reply = await self._call_once(turn, system, tool_choice, phase,
                                              response_format, on_plan_text, shown)
            except ModelUnavailable as exc:
                self.breakers.trip(backend.name, exc.reason)
                if shown or joins or not await self._fall_back_from(turn, exc):
                    raise
                continue
            self.breakers.reset(backend.name)
            return reply

    async def _fall_back_from(self, turn: TurnState, failure: ModelUnavailable) -> bool:
        """Move a routed turn to the next backend its router allows; whether there was one.
        The move is kept on the turn (its route and model) and is an event on its span."""
        down = turn.model.backend.name
        route = None if turn.route is None else turn.route.without(down, failure.reason)
        if route is None:
            return False
        trace.get_current_span().add_event("switchboard.route.fallback", {
            "from": down, "to": route.chosen, "reason": failure.reason})
        turn.route, turn.model = route, self.models[route.chosen]
        await self.store.set_turn_route(turn.id, route)
        return True

    def usable_backends(self) -> set[str]:
        """The backends whose breakers are closed (all of them, when none is)."""
        usable = {name for name in self.models if self.breakers.closed(name)}
        return usable or set(self.models)

    async def _call_once(
        self, turn: TurnState, system: str, tool_choice: ToolChoice, phase: str,
        response_format: dict[str, Any] | None, on_plan_text: Callable[[str], None] | None,
        shown_any: list[bool],
    ) -> ModelReply:
        prompt = system_prompt(system, turn.request.instructions)
        messages, fitted = self._fit(turn, [ChatMessage(role="system", content=prompt),
                                            *turn.messages])
        request = ModelRequest(
            messages=messages,
            tools=turn.entries, tool_choice=tool_choice,
            response_format=response_format, temperature=turn.request.temperature,
            enable_thinking=turn.request.thinking,
        )

        backend, redact = turn.current.backend, turn.redactor()
        # Calls and thinking a backend writes into its text are not the answer's.
        shown = (StreamedText(tool_calls=backend.text_tool_calls,
                              thinking=backend.inline_thinking)
                 if backend.text_tool_calls or backend.inline_thinking else None)

        async def on_delta(delta: Delta) -> None:
            shown_any[:1] = [True]
            if phase == "plan" and isinstance(delta, ContentDelta):
                if on_plan_text is not None:
                    on_plan_text(delta.text)
                return
            if shown is None or not isinstance(delta, ContentDelta):
                await _show(turn, delta)
                return
            for part in shown.feed(delta.text):
                await _show(turn, part)

        with self.tracer.chat(tenant=turn.tenant, backend=backend, phase=phase, request=request,
                              redact=redact) as span:
            if fitted is not None:
                self.tracer.context(span, fitted, backend.context_window or 0,
                                    self.counter(turn).method)
            try:
                reply = await turn.current.complete(request, stream=turn.request.stream,
                                                  on_delta=on_delta)
            except PlannerError as exc:
                mark_error(span, type(exc).__name__, str(exc), exc)
                raise
            self.tracer.chat_reply(span, reply, redact,
                                   structured=request.response_format is not None)
        for part in shown.flush() if shown is not None and turn.request.stream else []:
            await _show(turn, part)
        if fitted is not None:
            self.counter(turn).learn(fitted.chars, reply.usage.prompt_tokens)
        turn.usage = turn.usage + reply.usage
        turn.spent[backend.name] = turn.spent.get(backend.name, Usage()) + reply.usage
        turn.charge(backend.name, reply.usage)
        return reply

    def counter(self, turn: TurnState) -> TokenCounter:
        return self.counters.setdefault(turn.current.backend.name, TokenCounter())

    def _fit(self, turn: TurnState, messages: list[ChatMessage]
             ) -> tuple[list[ChatMessage], Fitted | None]:
        """The messages cut to the backend's context window (planner/context.py), if it has
        one. A cut result makes `read_result` callable, which adds to the tool block: the fit
        is then made again with it."""
        backend = turn.current.backend
        if backend.context_window is None:
            return messages, None
        reply = backend.max_completion_tokens or REPLY_TOKENS
        for _ in range(2):
            fitted = fit(messages, turn.entries, earlier=turn.earlier,
                         window=backend.context_window, reply_tokens=reply,
                         counter=self.counter(turn))
            if not fitted.cut_results or turn.reads_results:
                break
            turn.reads_results = True
        return fitted.messages, fitted



async def _show(turn: TurnState, delta: Delta) -> None:
    """A piece of the model's text as the turn's event: the answer's, or its reasoning."""
    if isinstance(delta, ContentDelta):
        await turn.emit(MessageDelta(text=delta.text))
    else:
        await turn.emit(ReasoningDelta(text=delta.text))


