"""Where a turn's run keeps what happens: the `TurnStore` seam, and `PostgresTurnStore`, the
service's, over the SQL of planner/store.py, planner/pauses.py and planner/results.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Protocol

import asyncpg

from planner import pauses, results, store
from planner.events import PendingCall, ToolCallRecord
from planner.messages import ChatMessage, Usage
from planner.results import TurnRow, WaitsFor
from planner.store import FinishedCall, StartedCall, StoredMessage

TurnJson = Literal["candidates", "plans"]
"""The turn's JSON fields the run rewrites as it goes."""


class PauseStore(Protocol):
    """A turn that waits on a person's approval or a client tool's output: the calls it waits
    on, their answers, and what it takes to take the turn back up."""

    async def wait_for(
        self, turn_id: str, call_id: str, waits_for: WaitsFor, deadline: datetime
    ) -> None:
        """Mark a started call as waiting for its answer until `deadline`."""
        ...

    async def pause_turn(self, turn_id: str, status: str, usage: Usage) -> None:
        """A running turn now waits (`awaiting_approval` or `requires_action`)."""
        ...

    async def waiting_call(self, tenant: str, turn_id: str, call_id: str) -> pauses.Waiting:
        """The call a decision is for, if the turn is paused and the call still waits."""
        ...

    async def decide(
        self, tenant: str, turn_id: str, call_id: str, decision: pauses.Decision, owner: str
    ) -> list[PendingCall]:
        """Record a call's answer; when none are left to wait for, `owner` has the turn to
        take up. Returns the calls still waiting."""
        ...

    async def load_paused(self, tenant: str, turn_id: str) -> pauses.SavedTurn:
        """A taken-up turn and the calls of the step it paused in."""
        ...

    async def edit_arguments(self, turn_id: str, call_id: str, arguments: dict[str, Any]) -> None:
        """The arguments a person approved a call with."""
        ...


class TurnStore(PauseStore, Protocol):
    """What a turn's run writes as it happens and reads back: conversations, turns with their
    status, messages in order, and tool calls from their start to their end."""

    async def open_conversation(
        self, tenant: str, metadata: dict[str, Any], history: list[ChatMessage], *,
        model: str, owner: str,
    ) -> str:
        """A new conversation holding `history` as completed turns of mode `imported` (one per
        exchange), written together: all or nothing. Returns its id."""
        ...

    async def begin_turn(
        self, tenant: str, conversation_id: str, *, mode: str, model: str,
        request: dict[str, Any], owner: str, message: str,
    ) -> str:
        """The running turn and its user message; raises ConversationNotFound, or TurnConflict
        when the conversation has a running or paused turn."""
        ...

    async def list_messages(self, tenant: str, conversation_id: str) -> list[StoredMessage]:
        """Every message of the conversation, in the order written."""
        ...

    async def add_messages(
        self, tenant: str, conversation_id: str, turn_id: str, messages: list[ChatMessage],
        reasoning: str | None = None,
    ) -> None:
        """Append messages in order (`reasoning` goes with the first)."""
        ...

    async def start_reply(
        self, tenant: str, conversation_id: str, turn_id: str, message: ChatMessage,
        reasoning: str | None, calls: list[StartedCall],
    ) -> None:
        """The model's reply and the running records of the calls it asks for, together."""
        ...

    async def start_tool_calls(
        self, tenant: str, conversation_id: str, turn_id: str, calls: list[StartedCall]
    ) -> None:
        """Record calls as running, before any of them is made."""
        ...

    async def finish_tool_calls(self, turn_id: str, calls: list[FinishedCall]) -> None:
        """How calls ended."""
        ...

    async def finish_and_observe(
        self, tenant: str, conversation_id: str, turn_id: str, calls: list[FinishedCall],
        messages: list[ChatMessage],
    ) -> None:
        """The ends of a batch's calls not yet written, and the batch's tool messages after
        them, together."""
        ...

    async def set_turn_json(self, turn_id: str, column: TurnJson, value: Any) -> None:
        """The turn's candidate tools or plans so far."""
        ...

    async def set_turn_trace(self, turn_id: str, trace_id: str, traceparent: str) -> None:
        """The turn's trace, so it can be found from the turn and continued when resumed."""
        ...

    async def complete_turn(
        self, tenant: str, conversation_id: str, turn_id: str, *, reply: ChatMessage,
        reasoning: str | None, usage: Usage,
    ) -> None:
        """The model's answer and the turn's end as `completed`, together."""
        ...

    async def finish_turn(
        self, turn_id: str, *, status: str, answer: str | None, error: dict[str, Any] | None,
        usage: Usage,
    ) -> None:
        """The turn's end without an answer message (it failed)."""
        ...

    async def get_turn(self, tenant: str, turn_id: str) -> TurnRow | None:
        """The turn as it stands: status, answer, error, usage."""
        ...

    async def call_records(self, turn_id: str) -> list[ToolCallRecord]:
        """The turn's calls as the API reports them, in step and call order."""
        ...


class PostgresTurnStore(TurnStore):
    """A `TurnStore` on the service's tables: every write is one statement (or one
    transaction), so the turn outlives the process and any replica can read it.

    A turn's start, its pauses and answers, and its end are committed on `pool` and wait for
    the WAL flush. So is the running row of a call that may have side effects, before the call
    is made. The rest of a turn's progress (replies, results, candidates, plans) goes through
    `progress`, when given: a pool whose commits do not wait for the flush. Those rows are
    visible at once, and the turn's next durable commit flushes them too; only a crash of
    Postgres itself in between can lose them, and then the turn is marked interrupted.
    """

    def __init__(self, pool: asyncpg.Pool, progress: asyncpg.Pool | None = None) -> None:
        self.pool = pool
        self.progress = progress if progress is not None else pool

    def _starts(self, calls: list[StartedCall]) -> asyncpg.Pool:
        return self.pool if any(c.side_effects for c in calls) else self.progress

    async def open_conversation(
        self, tenant: str, metadata: dict[str, Any], history: list[ChatMessage], *,
        model: str, owner: str,
    ) -> str:
        async with self.pool.acquire() as conn, conn.transaction():
            made = await store.create_conversation(conn, tenant, metadata)
            await store.import_history(conn, tenant, made.id, history, model=model, owner=owner)
        return made.id

    async def begin_turn(
        self, tenant: str, conversation_id: str, *, mode: str, model: str,
        request: dict[str, Any], owner: str, message: str,
    ) -> str:
        return await store.begin_turn(self.pool, tenant, conversation_id, mode=mode, model=model,
                                      request=request, owner=owner, message=message)

    async def list_messages(self, tenant: str, conversation_id: str) -> list[StoredMessage]:
        return await store.list_messages(self.pool, tenant, conversation_id)

    async def add_messages(
        self, tenant: str, conversation_id: str, turn_id: str, messages: list[ChatMessage],
        reasoning: str | None = None,
    ) -> None:
        await store.add_messages(self.progress, tenant, conversation_id, turn_id, messages,
                                 reasoning)

    async def start_reply(
        self, tenant: str, conversation_id: str, turn_id: str, message: ChatMessage,
        reasoning: str | None, calls: list[StartedCall],
    ) -> None:
        await store.start_reply(self._starts(calls), tenant, conversation_id, turn_id, message,
                                reasoning, calls)

    async def start_tool_calls(
        self, tenant: str, conversation_id: str, turn_id: str, calls: list[StartedCall]
    ) -> None:
        await store.start_tool_calls(self._starts(calls), tenant, conversation_id, turn_id,
                                     calls)

    async def finish_tool_calls(self, turn_id: str, calls: list[FinishedCall]) -> None:
        await store.finish_tool_calls(self.progress, turn_id, calls)

    async def finish_and_observe(
        self, tenant: str, conversation_id: str, turn_id: str, calls: list[FinishedCall],
        messages: list[ChatMessage],
    ) -> None:
        await store.finish_and_observe(self.progress, tenant, conversation_id, turn_id, calls,
                                       messages)

    async def set_turn_json(self, turn_id: str, column: TurnJson, value: Any) -> None:
        await store.set_turn_json(self.progress, turn_id, column, value)

    async def set_turn_trace(self, turn_id: str, trace_id: str, traceparent: str) -> None:
        await store.set_turn_trace(self.progress, turn_id, trace_id, traceparent)

    async def complete_turn(
        self, tenant: str, conversation_id: str, turn_id: str, *, reply: ChatMessage,
        reasoning: str | None, usage: Usage,
    ) -> None:
        await store.complete_turn(self.pool, tenant, conversation_id, turn_id, reply=reply,
                                  reasoning=reasoning, usage=usage)

    async def finish_turn(
        self, turn_id: str, *, status: str, answer: str | None, error: dict[str, Any] | None,
        usage: Usage,
    ) -> None:
        await store.finish_turn(self.pool, turn_id, status=status, answer=answer, error=error,
                                usage=usage)

    async def get_turn(self, tenant: str, turn_id: str) -> TurnRow | None:
        return await results.get_turn(self.pool, tenant, turn_id)

    async def call_records(self, turn_id: str) -> list[ToolCallRecord]:
        return await results.call_records(self.pool, turn_id)

    async def wait_for(
        self, turn_id: str, call_id: str, waits_for: WaitsFor, deadline: datetime
    ) -> None:
        await pauses.wait_for(self.pool, turn_id, call_id, waits_for, deadline)

    async def pause_turn(self, turn_id: str, status: str, usage: Usage) -> None:
        await pauses.pause_turn(self.pool, turn_id, status, usage)

    async def waiting_call(self, tenant: str, turn_id: str, call_id: str) -> pauses.Waiting:
        return await pauses.waiting_call(self.pool, tenant, turn_id, call_id)

    async def decide(
        self, tenant: str, turn_id: str, call_id: str, decision: pauses.Decision, owner: str
    ) -> list[PendingCall]:
        return await pauses.decide(self.pool, tenant, turn_id, call_id, decision, owner)

    async def load_paused(self, tenant: str, turn_id: str) -> pauses.SavedTurn:
        return await pauses.load(self.pool, tenant, turn_id)

    async def edit_arguments(self, turn_id: str, call_id: str, arguments: dict[str, Any]) -> None:
        await pauses.edit_arguments(self.pool, turn_id, call_id, arguments)
