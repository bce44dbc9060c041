"""A second `TurnStore`, in this process's memory: the seam's contract checked against another
implementation (tests/test_turn_store.py), and turns without persistence (bench/overhead.py)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import msgspec

from planner._db import jsonb_text, new_id
from planner.errors import ConversationNotFound, StoreUnsupported, TurnConflict
from planner.events import PendingCall, Problem, ToolCallRecord
from planner.messages import AssistantToolCall, ChatMessage, Usage
from planner.records import (
    Candidate,
    Conversation,
    Decision,
    FinishedCall,
    SavedTurn,
    StartedCall,
    StoredMessage,
    TurnJson,
    TurnRequest,
    TurnRow,
    Waiting,
)
from planner.routing import Route
from planner.statuses import ACTIVE_STATUSES, PausedStatus, TurnStatus, WaitsFor
from planner.store import exchanges
from planner.turn_store import TurnStore
from tools.outcome import CallOutcome
from tools.storable import clean_text

_NO_PAUSES = ("keeps no paused turns (a pause must outlive the process, so any replica can "
              "take the turn up)")
_tool_calls = msgspec.json.Decoder(list[AssistantToolCall])


def _json(value: Any) -> Any:
    """The value as it reads back from a jsonb column."""
    return msgspec.json.decode(jsonb_text(value))


def _now() -> datetime:
    return datetime.now(UTC)


class _Call(msgspec.Struct, kw_only=True):
    started: StartedCall
    arguments: Any
    status: str = "running"
    outcome: CallOutcome

    def record(self) -> ToolCallRecord:
        c = self.started
        return ToolCallRecord(
            id=c.id, name=c.name, arguments=self.arguments, step=c.step, position=c.position,
            depends_on=list(c.depends_on), **msgspec.structs.asdict(self.outcome),
        )


class _Turn(msgspec.Struct, kw_only=True):
    tenant: str
    id: str
    conversation_id: str
    status: TurnStatus
    mode: str
    model: str
    request: Any
    owner: str
    candidates: Any = []
    plans: Any = []
    answer: str | None = None
    error: Any = None
    usage: Any = {}
    trace_id: str | None = None
    traceparent: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    calls: dict[str, _Call] = {}

    def row(self) -> TurnRow:
        return TurnRow(
            id=self.id, conversation_id=self.conversation_id, status=self.status,
            mode=self.mode, model=self.model, answer=self.answer, error=self.error,
            usage=self.usage, started_at=self.started_at, finished_at=self.finished_at,
        )


class _Conversation(msgspec.Struct, kw_only=True):
    tenant: str
    record: Conversation
    messages: list[StoredMessage] = []
    turns: list[_Turn] = []


class MemoryTurnStore(TurnStore):
    """A `TurnStore` in this process's memory, for running turns in-process without a
    database: what a turn that does not pause writes reads back as it does from
    `PostgresTurnStore` (conversations, messages in order, turns with their status, call
    records, history for the next turn, one active turn per conversation). Text and JSON are
    kept as Postgres would return them (NUL characters replaced, JSON values as decoded JSON).

    It refuses, with `StoreUnsupported`, every operation of a turn that pauses (a call that
    needs a person's approval, a client tool's call, decisions, taking a turn back up): a
    pause must outlive the process. A turn that meets such a call ends `failed` with that
    error. Nothing here has a lease either: everything lives and dies with the process, so
    `TurnSupervisor` (which renews and expires leases in Postgres) has nothing to do with it,
    and a turn begun but never run stays `running`. Tenants are not checked against a
    tenants table.
    """

    name = "MemoryTurnStore"

    def __init__(self) -> None:
        self._conversations: dict[str, _Conversation] = {}
        self._turns: dict[str, _Turn] = {}
        self._message_ids = itertools.count(1)

    async def open_conversation(
        self, tenant: str, metadata: dict[str, Any], history: list[ChatMessage], *,
        model: str, owner: str,
    ) -> str:
        record = Conversation(id=new_id("conv"), metadata=_json(metadata), created_at=_now())
        self._conversations[record.id] = conversation = _Conversation(tenant=tenant, record=record)
        for exchange in exchanges(history):
            answers = [m.content for m in exchange if m.role == "assistant" and m.content]
            turn = self._new_turn(conversation, status="completed", mode="imported", model=model,
                                  request={"imported": True}, owner=owner)
            turn.answer, turn.finished_at = clean_text(answers[-1] if answers else None), _now()
            self._append(conversation, turn.id, exchange, None)
        return record.id

    async def begin_turn(
        self, tenant: str, conversation_id: str, request: TurnRequest, *, model: str, owner: str,
        route: Route | None = None,
    ) -> str:
        conversation = self._conversation(tenant, conversation_id)
        active = next((t for t in conversation.turns if t.status in ACTIVE_STATUSES), None)
        if active is not None:
            raise TurnConflict(conversation_id, active.id, active.status)
        turn = self._new_turn(conversation, status="running", mode=request.mode, model=model,
                              request=request, owner=owner)
        user = ChatMessage(role="user", content=request.message)
        self._append(conversation, turn.id, [user], None)
        return turn.id

    async def list_messages(self, tenant: str, conversation_id: str) -> list[StoredMessage]:
        conversation = self._conversations.get(conversation_id)
        if conversation is None or conversation.tenant != tenant:
            return []
        return list(conversation.messages)

    async def turn_messages(self, tenant: str, turn_id: str) -> list[StoredMessage] | None:
        turn = await self.get_turn(tenant, turn_id)
        if turn is None:
            return None
        messages = await self.list_messages(tenant, turn.conversation_id)
        return [m for m in messages if m.turn_id == turn_id]

    async def add_messages(
        self, tenant: str, conversation_id: str, turn_id: str, messages: list[ChatMessage],
        reasoning: str | None = None,
    ) -> None:
        self._append(self._conversation(tenant, conversation_id), turn_id, messages, reasoning)

    async def start_reply(
        self, tenant: str, conversation_id: str, turn_id: str, message: ChatMessage,
        reasoning: str | None, calls: list[StartedCall],
    ) -> None:
        await self.add_messages(tenant, conversation_id, turn_id, [message], reasoning)
        await self.start_tool_calls(tenant, conversation_id, turn_id, calls)

    async def start_tool_calls(
        self, tenant: str, conversation_id: str, turn_id: str, calls: list[StartedCall]
    ) -> None:
        turn, now = self._turns[turn_id], _now()
        for c in calls:
            arguments = None if c.arguments is None else _json(c.arguments)
            started = msgspec.structs.replace(c, raw_arguments=clean_text(c.raw_arguments) or "")
            turn.calls[c.id] = _Call(started=started, arguments=arguments,
                                     outcome=CallOutcome(started_at=now))

    async def finish_tool_calls(self, turn_id: str, calls: list[FinishedCall]) -> None:
        for call in calls:
            found = self._turns[turn_id].calls.get(call.id)
            if found is None:
                continue
            found.status = "succeeded" if call.ok else "failed"
            ended = msgspec.structs.asdict(call)
            del ended["id"]
            ended["error"] = clean_text(call.error)
            ended["result"] = None if call.result is None else _json(call.result)
            found.outcome = CallOutcome(**ended)

    async def finish_and_observe(
        self, tenant: str, conversation_id: str, turn_id: str, calls: list[FinishedCall],
        messages: list[ChatMessage],
    ) -> None:
        await self.finish_tool_calls(turn_id, calls)
        observed = [ChatMessage(role=m.role, content=m.content, tool_call_id=m.tool_call_id)
                    for m in messages]
        await self.add_messages(tenant, conversation_id, turn_id, observed)

    async def last_candidates(self, tenant: str, conversation_id: str, turn_id: str
                              ) -> list[Candidate]:
        conversation = self._conversations.get(conversation_id)
        if conversation is None or conversation.tenant != tenant:
            return []
        earlier = [t for t in conversation.turns if t.id != turn_id]
        return msgspec.convert(earlier[-1].candidates, list[Candidate]) if earlier else []

    async def set_turn_json(self, turn_id: str, column: TurnJson, value: Any) -> None:
        setattr(self._turns[turn_id], column, _json(value))

    async def set_turn_route(self, turn_id: str, route: Route) -> None:
        self._turns[turn_id].model = route.chosen

    async def set_turn_trace(self, turn_id: str, trace_id: str, traceparent: str) -> None:
        turn = self._turns[turn_id]
        turn.trace_id, turn.traceparent = trace_id, traceparent

    async def complete_turn(
        self, tenant: str, conversation_id: str, turn_id: str, *, reply: ChatMessage,
        reasoning: str | None, usage: Usage,
    ) -> None:
        answer = ChatMessage(role="assistant", content=reply.content)
        await self.add_messages(tenant, conversation_id, turn_id, [answer], reasoning)
        self._end(turn_id, "completed", reply.content, None, usage)

    async def fail_turn(self, turn_id: str, *, error: Problem, usage: Usage) -> None:
        self._end(turn_id, "failed", None, error, usage)

    def _end(self, turn_id: str, status: TurnStatus, answer: str | None, error: Problem | None,
             usage: Usage) -> None:
        turn = self._turns[turn_id]
        turn.status, turn.answer, turn.finished_at = status, clean_text(answer), _now()
        turn.error, turn.usage = (_json(error) if error else None), _json(usage)

    async def get_turn(self, tenant: str, turn_id: str) -> TurnRow | None:
        turn = self._turns.get(turn_id)
        return None if turn is None or turn.tenant != tenant else turn.row()

    async def call_records(self, turn_id: str) -> list[ToolCallRecord]:
        turn = self._turns.get(turn_id)
        calls = [] if turn is None else list(turn.calls.values())
        return [c.record() for c in sorted(calls, key=lambda c: (c.started.step,
                                                                 c.started.position))]

    async def wait_for(
        self, turn_id: str, call_id: str, waits_for: WaitsFor, deadline: datetime
    ) -> None:
        what = "approval" if waits_for == "approval" else "its client's output"
        raise StoreUnsupported(self.name, f"wait for {what} of call {call_id!r}", turn_id,
                               _NO_PAUSES)

    async def pause_turn(self, turn_id: str, status: PausedStatus, usage: Usage) -> None:
        raise StoreUnsupported(self.name, f"pause as {status}", turn_id, _NO_PAUSES)

    async def waiting_call(self, tenant: str, turn_id: str, call_id: str) -> Waiting:
        raise StoreUnsupported(self.name, f"take an answer for call {call_id!r}", turn_id,
                               _NO_PAUSES)

    async def decide(
        self, tenant: str, turn_id: str, call_id: str, decision: Decision, owner: str
    ) -> list[PendingCall]:
        raise StoreUnsupported(self.name, f"take an answer for call {call_id!r}", turn_id,
                               _NO_PAUSES)

    async def load_paused(self, tenant: str, turn_id: str) -> SavedTurn:
        raise StoreUnsupported(self.name, "be taken back up", turn_id, _NO_PAUSES)

    async def load_taken(self, tenant: str, turn_id: str) -> SavedTurn:
        raise StoreUnsupported(self.name, "be taken over", turn_id,
                               "a turn lives and dies with this process here")

    async def edit_arguments(self, turn_id: str, call_id: str, arguments: dict[str, Any]) -> None:
        raise StoreUnsupported(self.name, f"edit the arguments of call {call_id!r}", turn_id,
                               _NO_PAUSES)

    def _conversation(self, tenant: str, conversation_id: str) -> _Conversation:
        conversation = self._conversations.get(conversation_id)
        if conversation is None or conversation.tenant != tenant:
            raise ConversationNotFound(conversation_id)
        return conversation

    def _new_turn(self, conversation: _Conversation, *, status: TurnStatus, mode: str,
                  model: str, request: TurnRequest | dict[str, Any], owner: str) -> _Turn:
        turn = _Turn(tenant=conversation.tenant, id=new_id("turn"),
                     conversation_id=conversation.record.id, status=status, mode=mode,
                     model=model, request=_json(request), owner=owner, started_at=_now())
        conversation.turns.append(turn)
        self._turns[turn.id] = turn
        return turn

    def _append(self, conversation: _Conversation, turn_id: str, messages: list[ChatMessage],
                reasoning: str | None) -> None:
        """Messages in order, as Postgres stores them (`reasoning` goes with the first)."""
        now = _now()
        conversation.messages.extend(
            StoredMessage(
                id=next(self._message_ids), turn_id=turn_id, role=m.role,
                content=clean_text(m.content),
                reasoning=clean_text(reasoning or None) if i == 0 else None,
                tool_calls=_tool_calls.decode(jsonb_text(m.tool_calls)) if m.tool_calls else None,
                tool_call_id=m.tool_call_id, created_at=now,
            )
            for i, m in enumerate(messages)
        )
