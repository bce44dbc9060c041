"""Errors of the turn engine, each with typed fields and a message that says what went wrong.
How each reads to an HTTP client (status, problem type, the route to use instead) is the
service's to say: app/problems.py.

    PlannerError
    ├── ModelUnavailable        the model server cannot be reached or keeps failing
    ├── ModelResponseError      the model server answered with something unusable
    ├── ConversationNotFound    no such conversation for this tenant
    ├── TurnNotFound            no such turn for this tenant
    ├── UnknownModel            a turn asked for a model backend that is not configured
    ├── TurnConflict            the conversation already has a running or paused turn
    ├── TurnNotPaused           a decision for a turn that waits on nothing
    ├── CallNotWaiting          a decision for a call the turn does not wait on (or not for it)
    ├── DecisionInvalid         a decision that does not fit its call, or feedback that names
    │                           calls the turn did not make (names the field)
    ├── TurnRequestInvalid      a turn's own tools or tool choice that cannot be honoured
    │                           (names the field)
    ├── StoreUnsupported        the turn store in use cannot do this, such as pausing a turn
    ├── ContextOverflow         what a turn must send does not fit the model's context window
    ├── ReplicaStopping         this replica is shutting down and takes no new turns
    └── QuotaExceeded           the tenant spent its tokens of the day on a model backend

Errors the model should see (bad arguments, failed tools, invalid plans) are not exceptions of
the run: they become observations and go back to the model.
"""

from __future__ import annotations

from datetime import UTC, datetime

from planner.events import PendingCall
from planner.statuses import WaitsFor
from tools.errors import FieldError


class PlannerError(Exception):
    """Base of every error raised by `planner`."""


class ModelUnavailable(PlannerError):
    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(
            f"model server at {url} is unavailable: {reason}; "
            "check that SGLang is running there (MODEL_URL) and retry"
        )


class ModelResponseError(PlannerError):
    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        self.url, self.reason, self.status = url, reason, status
        """`status`: the HTTP status the server answered with, when it refused the request."""
        super().__init__(f"model server at {url} sent an unusable response: {reason}")


class ConversationNotFound(PlannerError):
    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"conversation {conversation_id!r} not found")


class TurnNotFound(PlannerError):
    def __init__(self, turn_id: str) -> None:
        self.turn_id = turn_id
        super().__init__(f"turn {turn_id!r} not found")


class TurnConflict(PlannerError):
    """`waiting` are the calls a paused turn waits on (none for a running one)."""

    def __init__(
        self, conversation_id: str, turn_id: str, turn_status: str = "running",
        waiting: list[PendingCall] | None = None,
    ) -> None:
        self.conversation_id, self.turn_id = conversation_id, turn_id
        self.turn_status, self.waiting = turn_status, waiting or []
        if turn_status == "running" or not self.waiting:
            super().__init__(
                f"conversation {conversation_id!r} already has a {turn_status} turn "
                f"{turn_id!r}; wait for it to finish before sending another message"
            )
            return
        described = "; ".join(
            f"{'approval of' if w.waits_for == 'approval' else 'the output of'} "
            f"call {w.id!r} ({w.name})"
            for w in self.waiting
        )
        super().__init__(
            f"conversation {conversation_id!r} has turn {turn_id!r} "
            f"{turn_status.replace('_', ' ')}: it waits on {described}"
        )


class TurnNotPaused(PlannerError):
    def __init__(self, turn_id: str, turn_status: str) -> None:
        self.turn_id, self.turn_status = turn_id, turn_status
        super().__init__(
            f"turn {turn_id!r} is {turn_status}, so it waits on no approval or client output"
        )


class CallNotWaiting(PlannerError):
    """`exists` is False for a call the turn does not have; `waits_for` is set when the call
    does wait, but for the other kind of answer."""

    def __init__(
        self, turn_id: str, call_id: str, reason: str, *, exists: bool = True,
        waits_for: WaitsFor | None = None,
    ) -> None:
        self.turn_id, self.call_id = turn_id, call_id
        self.exists, self.waits_for = exists, waits_for
        super().__init__(f"call {call_id!r} of turn {turn_id!r} {reason}")


class DecisionInvalid(PlannerError):
    def __init__(self, message: str, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__(message)


class TurnRequestInvalid(PlannerError):
    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{first.pointer}: {first.message}{more}")


class UnknownModel(PlannerError):
    def __init__(self, name: str, configured: list[str]) -> None:
        self.name, self.configured = name, configured
        super().__init__(
            f"unknown model backend {name!r}; configured: {', '.join(configured)}"
        )


class StoreUnsupported(PlannerError):
    def __init__(self, store: str, operation: str, turn_id: str, reason: str) -> None:
        self.store, self.operation, self.turn_id = store, operation, turn_id
        super().__init__(
            f"turn {turn_id!r} cannot {operation}: {store} {reason}; run the engine on "
            "PostgresTurnStore for approvals and client tools"
        )


class ContextOverflow(PlannerError):
    def __init__(self, needed: int, window: int) -> None:
        self.needed, self.window = needed, window
        super().__init__(
            f"the request needs about {needed} tokens with every earlier turn dropped and every "
            f"tool result cut, and the model's context window is {window}: offer fewer tools "
            "(candidate_k) or use a backend with a larger context_window"
        )


class ReplicaStopping(PlannerError):
    def __init__(self) -> None:
        super().__init__("this replica is shutting down and takes no new turns; send the "
                         "request again (the load balancer sends it to another replica)")


class QuotaExceeded(PlannerError):
    def __init__(self, tenant: str, backend: str, limit: int, spent: int,
                 resets_at: datetime) -> None:
        self.tenant, self.backend, self.limit, self.spent = tenant, backend, limit, spent
        self.resets_at = resets_at
        super().__init__(
            f"tenant {tenant!r} has spent {spent} of its {limit} tokens of today on model "
            f"backend {backend!r} (TOKEN_QUOTAS); the quota resets at "
            f"{resets_at.isoformat(timespec='seconds')}, or use another backend")

    def retry_after_s(self) -> int:
        return max(1, int((self.resets_at - datetime.now(UTC)).total_seconds()) + 1)
