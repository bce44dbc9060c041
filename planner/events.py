"""What a turn reports as it runs: typed events, streamed as SSE and mirrored in the result."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from planner.messages import Usage
from planner.plan import PlanStep
from planner.routing import Route
from planner.statuses import TurnStatus, WaitsFor
from tools.errors import FieldError
from tools.outcome import CallOutcome


class RetrievedTool(msgspec.Struct, frozen=True):
    name: str
    namespace: str
    score: float | None
    """Fused relevance; None when the tenant's every tool was offered unranked (it has no more
    tools than a turn offers)."""


class ToolCallRecord(CallOutcome, frozen=True, kw_only=True):
    """One tool call of a turn, as the API reports it: which call, and how it ended (nothing
    yet while it runs or waits)."""

    id: str
    name: str
    arguments: Any
    step: int = 0
    position: int = 0
    depends_on: list[str] = []


class AssistantMessage(msgspec.Struct, frozen=True):
    content: str
    role: str = "assistant"
    reasoning: str | msgspec.UnsetType = msgspec.UNSET
    """The model's reasoning behind this answer, when the server returned it apart."""


def answer_message(content: str, reasoning: str | None) -> AssistantMessage:
    return AssistantMessage(content, reasoning=reasoning or msgspec.UNSET)


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem detail: how an error reads to a client, and what a failed turn keeps
    of the error that ended it. `errors` names each bad field of a request."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] = []


class TurnStarted(msgspec.Struct, frozen=True, kw_only=True, tag="turn.started", tag_field="type"):
    turn_id: str
    conversation_id: str
    mode: str
    model: str


class TurnResumed(msgspec.Struct, frozen=True, kw_only=True, tag="turn.resumed", tag_field="type"):
    """A paused turn is taken up again: every call it waited on has its answer."""

    turn_id: str
    conversation_id: str


class Takeover(msgspec.Struct, frozen=True, kw_only=True, rename={"previous": "from"}):
    """A replica took the turn over from one whose lease on it ran out (it died) or that
    handed it over as it stopped."""

    previous: str
    """The replica that ran the turn before."""
    by: str
    at: datetime


class TurnTakenOver(
    msgspec.Struct, frozen=True, kw_only=True, tag="turn.taken_over", tag_field="type"
):
    """The replica running the turn is gone; another goes on from what was stored. Events the
    old one sent after its last stored step are not sent again: the turn goes on from that
    step, and its calls that may have been made are reported as such."""

    turn_id: str
    conversation_id: str
    takeover: Takeover


class ToolsRetrieved(
    msgspec.Struct, frozen=True, kw_only=True, tag="tools.retrieved", tag_field="type"
):
    tools: list[RetrievedTool]


class PlanCreated(msgspec.Struct, frozen=True, kw_only=True, tag="plan.created", tag_field="type"):
    plan: int
    steps: list[PlanStep]


class ToolCallStarted(
    msgspec.Struct, frozen=True, kw_only=True, tag="tool_call.started", tag_field="type"
):
    id: str
    name: str
    arguments: Any
    step: int
    depends_on: list[str] = []


class ToolCallFinished(
    msgspec.Struct, frozen=True, kw_only=True, tag="tool_call.finished", tag_field="type"
):
    call: ToolCallRecord
    duration_ms: float


class MessageDelta(
    msgspec.Struct, frozen=True, kw_only=True, tag="message.delta", tag_field="type"
):
    text: str


class ReasoningDelta(
    msgspec.Struct, frozen=True, kw_only=True, tag="reasoning.delta", tag_field="type"
):
    text: str


class PendingCall(msgspec.Struct, frozen=True, kw_only=True):
    """A call the turn waits on: a person's approval, or a client tool's output."""

    id: str
    name: str
    arguments: Any
    waits_for: WaitsFor
    deadline: datetime


class ApprovalRequired(
    msgspec.Struct, frozen=True, kw_only=True, tag="approval.required", tag_field="type"
):
    turn_id: str
    call: PendingCall


class ActionRequired(
    msgspec.Struct, frozen=True, kw_only=True, tag="requires_action", tag_field="type"
):
    """A client tool's call, for the frontend to run and post the output of."""

    turn_id: str
    call: PendingCall


class TurnResult(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    conversation_id: str
    status: TurnStatus
    message: AssistantMessage | None
    tool_calls: list[ToolCallRecord]
    usage: Usage
    """Every token of the turn: its own model calls' and its expert tools' (`model` tools)."""
    error: Problem | None = None
    pending: list[PendingCall] = []
    """What a paused turn (`awaiting_approval`, `requires_action`) waits on."""
    usage_by_backend: dict[str, Usage] = {}
    """`usage` by the backend that spent it: the turn's own, and each expert tool's."""
    route: Route | None = None
    """How a router chose the turn's backend, for a turn that asked for `"model": "auto"`."""
    takeovers: list[Takeover] = []
    """Each time a replica took the turn over from one that was gone."""


def usage_by_backend(backend: str, total: Usage, calls: list[ToolCallRecord],
                     spent: dict[str, Usage] | None = None) -> dict[str, Usage]:
    """The turn's usage split by backend: what its calls of expert tools spent went to their
    backends; what its own model calls spent to the backends in `spent` (a routed turn that
    fell back used two), the rest to the turn's backend."""
    experts = [(c.usage.backend, Usage.spent_by(c.usage)) for c in calls if c.usage is not None]
    rest = total
    for _, usage in [*experts, *(spent or {}).items()]:
        rest = rest - usage
    split = dict(spent or {})
    split[backend] = split.get(backend, Usage()) + rest
    for name, usage in experts:
        split[name] = split.get(name, Usage()) + usage
    return split


class TurnCompleted(
    msgspec.Struct, frozen=True, kw_only=True, tag="turn.completed", tag_field="type"
):
    turn: TurnResult


class TurnFailed(msgspec.Struct, frozen=True, kw_only=True, tag="turn.failed", tag_field="type"):
    turn: TurnResult


class TurnPaused(msgspec.Struct, frozen=True, kw_only=True, tag="turn.paused", tag_field="type"):
    """The turn waits on the calls in `turn.pending`; it goes on once each has an answer."""

    turn: TurnResult


TurnEvent = (
    TurnStarted
    | TurnResumed
    | TurnTakenOver
    | ToolsRetrieved
    | PlanCreated
    | ToolCallStarted
    | ToolCallFinished
    | MessageDelta
    | ReasoningDelta
    | ApprovalRequired
    | ActionRequired
    | TurnCompleted
    | TurnFailed
    | TurnPaused
)
