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
    """Base of every error raised by `planner`."""


class ModelUnavailable(PlannerError):
    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(
            f"model server at {url} is unavailable: {reason}; "
            "check that SGLang is running there (MODEL_URL) and retry"
        )


class ModelResponseError(PlannerError):
    def __init__(self, url: str, reason: str) -> None:
        self.url, self.reason = url, reason
        super().__init__(f"model server at {url} sent an unusable response: {reason}")


class ConversationNotFound(PlannerError):
    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(
            f"conversation {conversation_id!r} not found; create one with POST /v1/conversations"
        )


class TurnConflict(PlannerError):
    def __init__(self, conversation_id: str, turn_id: str, status: str = "running") -> None:
        self.conversation_id, self.turn_id, self.status = conversation_id, turn_id, status
        super().__init__(
            f"conversation {conversation_id!r} already has a {status} turn {turn_id!r}; "
            "wait for it to finish before sending another message"
        )


class UnknownModel(PlannerError):
    def __init__(self, name: str, configured: list[str]) -> None:
        self.name, self.configured = name, configured
        super().__init__(
            f"unknown model backend {name!r}; configured: {', '.join(configured)} "
            "(GET /v1/models lists them)"
        )
