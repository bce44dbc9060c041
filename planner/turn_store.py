"""Where a turn's run keeps what happens: the `TurnStore` seam. The service's implementation is
`PostgresTurnStore` (planner/store.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from planner.events import PendingCall, Problem, ToolCallRecord
from planner.messages import ChatMessage, Usage
from planner.records import (
    Candidate,
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
from planner.statuses import PausedStatus, WaitsFor


class PauseStore(Protocol):
    """A turn that waits on a person's approval or a client tool's output: the calls it waits
    on, their answers, and what it takes to take the turn back up."""

    async def wait_for(
        self, turn_id: str, call_id: str, waits_for: WaitsFor, deadline: datetime
    ) -> None:
        """Mark a started call as waiting for its answer until `deadline`."""
        ...

    async def pause_turn(self, turn_id: str, status: PausedStatus, usage: Usage) -> None:
        """A running turn now waits."""
        ...

    async def waiting_call(self, tenant: str, turn_id: str, call_id: str) -> Waiting:
        """The call a decision is for, if the turn is paused and the call still waits."""
        ...

    async def decide(
        self, tenant: str, turn_id: str, call_id: str, decision: Decision, owner: str
    ) -> list[PendingCall]:
        """Record a call's answer; when none are left to wait for, `owner` has the turn to
        take up. Returns the calls still waiting."""
        ...

    async def load_paused(self, tenant: str, turn_id: str) -> SavedTurn:
        """A taken-up turn and the calls of the step it paused in."""
        ...

    async def load_taken(self, tenant: str, turn_id: str) -> SavedTurn:
        """A turn taken over from a replica that is gone, with every call that had not ended."""
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
        self, tenant: str, conversation_id: str, request: TurnRequest, *, model: str, owner: str,
        route: Route | None = None,
    ) -> str:
        """The running turn and its user message; raises ConversationNotFound, or TurnConflict
        when the conversation has a running or paused turn."""
        ...

    async def list_messages(self, tenant: str, conversation_id: str) -> list[StoredMessage]:
        """Every message of the conversation, in the order written."""
        ...

    async def turn_messages(self, tenant: str, turn_id: str) -> list[StoredMessage] | None:
        """The turn's messages, in the order written; None when the tenant has no such turn."""
        ...

    async def set_turn_route(self, turn_id: str, route: Route) -> None:
        """A routed turn moved to another backend: its route and its model."""
        ...

    async def last_candidates(self, tenant: str, conversation_id: str, turn_id: str
                              ) -> list[Candidate]:
        """The tool block of the conversation's latest turn before `turn_id`, in order."""
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

    async def fail_turn(self, turn_id: str, *, error: Problem, usage: Usage) -> None:
        """The turn's end as `failed`, with the problem that ended it."""
        ...

    async def get_turn(self, tenant: str, turn_id: str) -> TurnRow | None:
        """The turn as it stands: status, answer, error, usage."""
        ...

    async def call_records(self, turn_id: str) -> list[ToolCallRecord]:
        """The turn's calls as the API reports them, in step and call order."""
        ...
