"""What a turn's store writes and reads back: conversations, messages, turns, tool calls, and
the pauses of turns that wait on a person or a client (the decisions they wait for)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from planner.events import PendingCall, Takeover
from planner.messages import AssistantToolCall, ChatMessage, Role, Usage
from planner.plan import Plan
from planner.statuses import CallStatus, TurnStatus
from tools.outcome import CallOutcome
from tools.spec import Name, empty_object_schema

TurnJson = Literal["candidates", "plans"]
"""The turn's JSON fields the run rewrites as it goes."""
Mode = Literal["auto", "plan"]


class ClientFunction(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=empty_object_schema)
    """A JSON Schema whose root is an object, checked as a registered tool's is."""
    strict: bool | None = None
    """Accepted; the arguments are checked against `parameters` whatever it says."""


class ClientTool(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A function the caller runs itself, offered to the model for one turn, in the OpenAI
    `tools` shape; its calls pause the turn as a client tool's do."""

    type: Literal["function"]
    function: ClientFunction


class FunctionName(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str


class NamedToolChoice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`{"type": "function", "function": {"name": ...}}`: the turn's first reply calls it."""

    type: Literal["function"]
    function: FunctionName


MAX_CLIENT_TOOLS = 128
"""A caller's own functions per turn, as OpenAI's API takes them."""
TurnToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class TurnRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a turn is asked to do, as a client sends it and as the turn keeps it."""

    message: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    mode: Mode = "auto"
    stream: bool = False
    model: str | None = None
    join_model: str | None = None
    """In plan mode, the backend of the joins and the answer (a small model can join what a
    strong one planned); unset: JOIN_MODEL, else `model`."""
    max_steps: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    candidate_k: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    """How many tools retrieval offers; unset: CANDIDATE_K."""
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    """Sampling temperature; unset: the backend's."""
    thinking: bool | None = None
    """Whether a reasoning model thinks before answering; unset: the backend's default."""
    tool_choice: TurnToolChoice = "auto"
    """`none`: the model answers without tools, and none runs. `required`, or a function
    named: the turn's first reply must call a tool (that one); later replies choose freely, so
    the turn can answer from the results."""
    tools: Annotated[list[ClientTool], msgspec.Meta(max_length=MAX_CLIENT_TOOLS)] = []
    """The caller's own functions for this turn, offered beside the registered tools it finds
    (planner/request_tools.py)."""
    instructions: str | None = None
    """The application's own instructions for this turn (a chat frontend's system prompt);
    they follow Switchboard's system prompt, whose rules they cannot lift."""


class Conversation(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    metadata: dict[str, Any]
    created_at: datetime


class StoredMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: int
    turn_id: str
    role: Role
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[AssistantToolCall] | None = None
    tool_call_id: str | None = None
    created_at: datetime

    def chat(self) -> ChatMessage:
        return ChatMessage(role=self.role, content=self.content, tool_calls=self.tool_calls,
                           tool_call_id=self.tool_call_id)


class TurnRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    conversation_id: str
    status: TurnStatus
    mode: str
    model: str
    answer: str | None
    error: dict[str, Any] | None
    usage: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A tool a turn offers the model: the function name the model calls it by (qualified by
    its namespace only when two candidates share a name) and the version it runs."""

    function: str
    namespace: str
    name: str
    version: int


class StartedCall(msgspec.Struct, frozen=True, kw_only=True):
    """A tool call's row as it starts: written before the call is made."""

    id: str
    step: int
    position: int
    name: str
    namespace: str | None
    version: int | None
    raw_arguments: str
    arguments: Any
    """The parsed arguments, or None when they are not (yet) a JSON value."""
    depends_on: list[str] = []
    side_effects: bool = True
    """Whether making the call may change something outside (its tool is not marked
    idempotent); a call that will not be made (unknown tool, built-in search) has none."""


class FinishedCall(CallOutcome, frozen=True, kw_only=True):
    """How a tool call ended, to be written to its row."""

    id: str


class Approved(msgspec.Struct, frozen=True, kw_only=True, tag="approved", tag_field="decision"):
    arguments: dict[str, Any] | None = None
    """Arguments a person edited; None runs the call as the model wrote it."""


class Rejected(msgspec.Struct, frozen=True, kw_only=True, tag="rejected", tag_field="decision"):
    reason: str | None = None


class ClientOutput(msgspec.Struct, frozen=True, kw_only=True, tag="output", tag_field="decision"):
    output: Any = None
    error: str | None = None
    """Set when the client tool failed; the model reads it as the call's error."""


class Expired(msgspec.Struct, frozen=True, kw_only=True, tag="expired", tag_field="decision"):
    waited_s: float


Decision = Approved | Rejected | ClientOutput | Expired
"""The answer a waiting call gets."""


class Waiting(msgspec.Struct, frozen=True, kw_only=True):
    """A call a decision is for, as it waits: which tool version it would run."""

    call: PendingCall
    namespace: str | None
    version: int | None


class SavedCall(CallOutcome, frozen=True, kw_only=True):
    """One call of the step a turn paused in (or of a turn taken over), as stored: how it
    ended, if it has."""

    id: str
    name: str
    namespace: str | None
    version: int | None
    step: int
    position: int
    arguments: Any
    raw_arguments: str
    """The arguments as the model wrote them (a plan step's, with its inputs filled in)."""
    status: CallStatus
    decision: Decision | None


class SavedTurn(msgspec.Struct, frozen=True, kw_only=True):
    """What it takes to take a paused turn back up."""

    tenant: str
    id: str
    conversation_id: str
    request: TurnRequest
    candidates: list[Candidate]
    """In tool-block order."""
    plans: list[Plan]
    usage: Usage
    traceparent: str | None
    started_at: datetime
    root_ended: bool
    """Whether the turn's first span has ended (it paused, or a takeover wrote it)."""
    takeovers: list[Takeover] = []
    step: int
    calls: list[SavedCall]
    """The calls of the step it paused in, in the order the model wrote them."""
