"""Errors of the turn engine.

    PlannerError
    ├── ModelUnavailable        the model server cannot be reached or keeps failing (503)
    ├── ModelResponseError      the model server answered with something unusable (502)
    ├── ConversationNotFound    no such conversation for this tenant (404)
    ├── TurnNotFound            no such turn for this tenant (404)
    ├── UnknownModel            a turn asked for a model backend that is not configured (422)
    ├── TurnConflict            the conversation already has a running or paused turn (409)
    ├── TurnNotPaused           a decision for a turn that waits on nothing (409)
    ├── CallNotWaiting          a decision for a call the turn does not wait on (404/409)
    ├── DecisionInvalid         a decision that does not fit its call (422, names the field)
    └── StoreUnsupported        the turn store in use cannot do this, such as pausing a turn (501)

Errors the model should see (bad arguments, failed tools, invalid plans) are not exceptions of
the run: they become observations and go back to the model.
"""

from __future__ import annotations

from tools.errors import FieldError


class PlannerError(Exception):
    """Base of every error raised by `planner`; each kind says how it reads as a problem."""

    status = 500
    slug = "turn-failed"
    title = "Turn failed"
    errors: list[FieldError] = []


class ModelUnavailable(PlannerError):
    status, slug, title = 503, "model-unavailable", "Model unavailable"

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(
            f"model server at {url} is unavailable: {reason}; "
            "check that SGLang is running there (MODEL_URL) and retry"
        )


class ModelResponseError(PlannerError):
    status, slug, title = 502, "model-error", "Bad response from the model"

    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"model server at {url} sent an unusable response: {reason}")


class ConversationNotFound(PlannerError):
    status, slug, title = 404, "not-found", "Not found"

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(
            f"conversation {conversation_id!r} not found; create one with POST /v1/conversations"
        )


class TurnNotFound(PlannerError):
    status, slug, title = 404, "not-found", "Not found"

    def __init__(self, turn_id: str) -> None:
        self.turn_id = turn_id
        super().__init__(f"turn {turn_id!r} not found")


class TurnConflict(PlannerError):
    status, slug, title = 409, "turn-in-progress", "A turn is already running"

    def __init__(
        self, conversation_id: str, turn_id: str, turn_status: str = "running",
        waiting: list[str] | None = None,
    ) -> None:
        self.conversation_id, self.turn_id = conversation_id, turn_id
        self.turn_status = turn_status
        if turn_status == "running" or not waiting:
            super().__init__(
                f"conversation {conversation_id!r} already has a {turn_status} turn "
                f"{turn_id!r}; wait for it to finish before sending another message"
            )
            return
        super().__init__(
            f"conversation {conversation_id!r} has turn {turn_id!r} {turn_status.replace('_', ' ')}"
            f": it waits on {'; '.join(waiting)}; answer those (POST /v1/turns/{turn_id}/approvals"
            f" or /v1/turns/{turn_id}/outputs) and the turn goes on"
        )


class TurnNotPaused(PlannerError):
    status, slug, title = 409, "turn-not-paused", "The turn waits on nothing"

    def __init__(self, turn_id: str, turn_status: str) -> None:
        self.turn_id, self.turn_status = turn_id, turn_status
        super().__init__(
            f"turn {turn_id!r} is {turn_status}, so it waits on no approval or client output"
        )


class CallNotWaiting(PlannerError):
    slug, title = "call-not-waiting", "The call waits on nothing"

    def __init__(self, turn_id: str, call_id: str, reason: str, status: int = 409) -> None:
        self.turn_id, self.call_id, self.status = turn_id, call_id, status
        super().__init__(f"call {call_id!r} of turn {turn_id!r} {reason}")


class DecisionInvalid(PlannerError):
    status, slug, title = 422, "invalid-request", "Request body is invalid"

    def __init__(self, message: str, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__(message)


class UnknownModel(PlannerError):
    status, slug, title = 422, "invalid-request", "Unknown model backend"

    def __init__(self, name: str, configured: list[str]) -> None:
        self.name, self.configured = name, configured
        super().__init__(
            f"unknown model backend {name!r}; configured: {', '.join(configured)} "
            "(GET /v1/models lists them)"
        )


class StoreUnsupported(PlannerError):
    status, slug, title = 501, "store-unsupported", "Not supported by this turn store"

    def __init__(self, store: str, operation: str, turn_id: str, reason: str) -> None:
        self.store, self.operation, self.turn_id = store, operation, turn_id
        super().__init__(
            f"turn {turn_id!r} cannot {operation}: {store} {reason}; run the engine on "
            "PostgresTurnStore for approvals and client tools"
        )
