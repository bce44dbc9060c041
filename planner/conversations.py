"""Conversations as the chat routes use them: open and read them, run a turn, answer a paused
turn's waiting calls. Each is one call here; turns run under the supervisor, so a client that
goes away never cuts one short."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec

from planner.engine import TurnEngine
from planner.errors import TurnNotFound
from planner.events import PendingCall, TurnResult
from planner.messages import ChatMessage
from planner.model_client import ModelBackend
from planner.records import Conversation, Decision, StoredMessage, TurnRequest, TurnRow
from planner.routers import NoRouter, Routers
from planner.routing import AUTO_MODEL, Route
from planner.store import PostgresTurnStore
from planner.supervisor import EventStream, TurnSupervisor
from planner.transcripts import transcript_digest
from planner.turn import EventSink, StandIn, ignore

OnStarted = Callable[[str], Awaitable[None]]
"""Told the id of a turn once it is written, before it runs (to tie a request to it)."""
Ran = TurnResult | EventStream
"""A finished turn, or (streamed) its events as they happen."""


async def _nothing(_turn_id: str) -> None:
    return None


class Conversations:
    def __init__(
        self, engine: TurnEngine, supervisor: TurnSupervisor, store: PostgresTurnStore,
        routers: Routers | None = None,
    ) -> None:
        self.engine, self.supervisor, self.store = engine, supervisor, store
        self.routers = routers

    async def create(
        self, tenant: str, metadata: dict[str, Any], *, eval_run: str | None = None
    ) -> Conversation:
        """A new conversation; one an eval run holds is tagged with it."""
        return await self.store.create_conversation(tenant, metadata, eval_run=eval_run)

    async def get(self, tenant: str, conversation_id: str) -> tuple[Conversation, list[TurnRow]]:
        """The conversation and its turns, oldest first."""
        found = await self.store.get_conversation(tenant, conversation_id)
        return found, await self.store.list_turns(tenant, conversation_id)

    async def listed(self, tenant: str, metadata: dict[str, str],
                   before: tuple[datetime, str] | None, limit: int) -> list[Conversation]:
        """The tenant's conversations, newest first, with the metadata given."""
        return await self.store.list_conversations(tenant, metadata, before, limit)

    async def messages(self, tenant: str, conversation_id: str, after: int, limit: int
                       ) -> list[StoredMessage]:
        """`limit` messages of the conversation after message `after`, in order."""
        await self.store.get_conversation(tenant, conversation_id)
        return await self.store.list_messages(tenant, conversation_id, after=after, limit=limit)

    async def turn_messages(self, tenant: str, turn_id: str) -> list[StoredMessage]:
        """The turn's messages, in the order written."""
        found = await self.store.turn_messages(tenant, turn_id)
        if found is None:
            raise TurnNotFound(turn_id)
        return found

    async def turn(self, tenant: str, turn_id: str) -> TurnResult:
        """A turn as it stands (or ended)."""
        result = await self.find_turn(tenant, turn_id)
        if result is None:
            raise TurnNotFound(turn_id)
        return result

    async def find_turn(self, tenant: str, turn_id: str) -> TurnResult | None:
        return await self.store.turn_result(tenant, turn_id)

    async def trace_id(self, tenant: str, turn_id: str) -> str | None:
        """The turn's trace id; None when the turn is unknown or was not traced."""
        return await self.store.turn_trace_id(tenant, turn_id)

    async def paused_turn(self, tenant: str, conversation_id: str) -> str | None:
        return await self.store.paused_turn(tenant, conversation_id)

    async def waiting_on(self, tenant: str, call_ids: list[str]) -> list[str]:
        """The conversations whose paused turn waits on any of these calls: how a client that
        sends the whole history, tool results last, is matched to the turn they answer."""
        return await self.store.waiting_on(tenant, call_ids)

    def check(self, request: TurnRequest) -> None:
        """Refuse a turn whose own tools or tool choice cannot be honoured, before anything
        is written (planner/request_tools.py)."""
        self.engine.check_request(request)

    async def waiting_calls(self, turn_id: str) -> list[PendingCall]:
        return await self.store.waiting_calls(turn_id)

    async def launch(
        self, tenant: str, conversation_id: str, request: TurnRequest,
        on_started: OnStarted = _nothing,
    ) -> Ran:
        """Start a turn and run it: its result, or (`request.stream`) its events."""
        self.supervisor.check_accepting()
        if not request.stream:
            return await self.run(tenant, conversation_id, request, on_started=on_started)
        engine = self.engine
        request, route = await self._routed(tenant, request)
        turn_id = await engine.start_turn(tenant, conversation_id, request, route)
        await on_started(turn_id)
        return self.supervisor.follow(
            tenant, turn_id,
            lambda emit: engine.run_turn(tenant, conversation_id, turn_id, request, emit,
                                         route=route),
            first=True,
        )

    async def run(
        self, tenant: str, conversation_id: str, request: TurnRequest, *,
        on_started: OnStarted = _nothing, emit: EventSink = ignore,
        stand_in: StandIn | None = None,
    ) -> TurnResult:
        """Start a turn and run it to its end under the supervisor, telling `emit` each event;
        `stand_in` answers the calls it takes in place of their tools."""
        self.supervisor.check_accepting()
        engine = self.engine
        request, route = await self._routed(tenant, request)
        turn_id = await engine.start_turn(tenant, conversation_id, request, route)
        await on_started(turn_id)
        result: TurnResult = await self.supervisor.outcome(
            tenant, turn_id,
            lambda sink: engine.run_turn(tenant, conversation_id, turn_id, request, sink,
                                         stand_in, route=route),
            emit)
        return result

    async def _routed(self, tenant: str, request: TurnRequest
                      ) -> tuple[TurnRequest, Route | None]:
        """A turn that asks for `"model": "auto"` goes to the backend the tenant's router
        chooses for its message (planner/routing.py)."""
        if request.model != AUTO_MODEL:
            return request, None
        if self.routers is None:
            raise NoRouter(tenant)
        route = await self.routers.route(tenant, request.message,
                                         self.engine.model_calls.usable_backends())
        return msgspec.structs.replace(request, model=route.chosen), route

    async def answer(
        self, tenant: str, turn_id: str, call_id: str, decision: Decision, stream: bool
    ) -> Ran | None:
        """Record the answer for a waiting call; None while other calls still wait, else the
        rest of the turn, as with `launch`. The answer and taking the turn up are one
        supervisor task, so a client that goes away between them cannot leave the turn owned
        but not running."""
        self.supervisor.check_accepting()
        decided: asyncio.Future[list[PendingCall]] = asyncio.get_running_loop().create_future()

        async def go_on(emit: EventSink) -> TurnResult | None:
            try:
                waiting = await self.engine.decide(tenant, turn_id, call_id, decision)
            except Exception as exc:  # the caller gets it from `decided`
                decided.set_exception(exc)
                return None
            decided.set_result(waiting)
            return None if waiting else await self.engine.resume_turn(tenant, turn_id, emit)

        if not stream:
            task = self.supervisor.run(tenant, turn_id, go_on, streamed=False)
            if await asyncio.shield(decided):
                return None
            result: TurnResult = await asyncio.shield(task)
            return result
        events = self.supervisor.follow(tenant, turn_id, go_on)
        return None if await asyncio.shield(decided) else events

    async def open(
        self, tenant: str, metadata: dict[str, Any], history: list[ChatMessage],
        model: str | None,
    ) -> str:
        """A new conversation that already holds `history` (user and assistant messages a
        client had before), written together: both or neither."""
        return await self.engine.open_conversation(tenant, metadata, history, model)

    async def continued_by(self, tenant: str, history: list[ChatMessage]) -> str | None:
        """The conversation whose transcript `history` repeats (a stateless client's earlier
        messages), if there is one."""
        if not history:
            return None
        digest = transcript_digest((m.role, m.content) for m in history)
        return await self.store.continued_by(tenant, digest)

    def backends(self) -> list[ModelBackend]:
        """The configured model backends, by name."""
        return [model.backend for model in self.engine.models.values()]

    def backend(self, name: str | None) -> ModelBackend:
        """The backend a turn asking for `name` runs on; UnknownModel when none is."""
        return self.engine.model_for(name).backend
