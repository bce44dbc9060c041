"""Errors of the turn engine.

    PlannerError
    ├── ModelUnavailable        the model server cannot be reached or keeps failing (503)
    ├── ModelResponseError      the model server answered with something unusable (502)
    ├── ConversationNotFound    no such conversation for this tenant (404)
    ├── UnknownModel            a turn asked for a model backend that is not configured (422)
    └── TurnConflict            the conversation already has a running turn (409)

Errors the model should see (bad arguments, failed tools, invalid plans) are not exceptions of
the run: they become observations and go back to the model.
"""

from __future__ import annotations


class PlannerError(Exception):
    """Base of every error raised by `planner`; each kind says how it reads as a problem."""

    status = 500
    slug = "turn-failed"
    title = "Turn failed"


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


class TurnConflict(PlannerError):
    status, slug, title = 409, "turn-in-progress", "A turn is already running"

    def __init__(self, conversation_id: str, turn_id: str, turn_status: str = "running") -> None:
        self.conversation_id, self.turn_id = conversation_id, turn_id
        self.turn_status = turn_status
        super().__init__(
            f"conversation {conversation_id!r} already has a {turn_status} turn {turn_id!r}; "
            "wait for it to finish before sending another message"
        )


class UnknownModel(PlannerError):
    status, slug, title = 422, "invalid-request", "Unknown model backend"

    def __init__(self, name: str, configured: list[str]) -> None:
        self.name, self.configured = name, configured
        super().__init__(
            f"unknown model backend {name!r}; configured: {', '.join(configured)} "
            "(GET /v1/models lists them)"
        )
