"""Errors of the service itself, not of `tools` or `planner`; app/problems.py says how each reads
to a client.

    AppError
    ├── SettingsError            an environment variable holds a value that cannot be used
    ├── DatabaseError            the database could not be started or reached (503)
    ├── MigrationError           a migration file is malformed, was changed, or failed
    ├── NotFound                 (404)
    │   ├── KeyNotFound          no live API key by that id in the caller's tenant
    │   ├── TraceNotFound        no trace by that id (or for that turn) for this tenant
    │   └── ModelNotFound        no configured model backend by that id
    ├── RequestFieldInvalid      a request field asks for what the route cannot do (422)
    ├── BodyNotJson              the body does not parse as JSON (400)
    └── IdempotencyConflict      an Idempotency-Key reused with another request (422), or
                                 whose first request still runs (409)
"""

from __future__ import annotations

from typing import Literal


class AppError(Exception):
    """Base of every error raised by `app`."""


class SettingsError(AppError, ValueError):
    """An environment variable holds a value that cannot be used; start-up stops."""


class DatabaseError(AppError, RuntimeError):
    """The database could not be started or reached; the message names which one."""


class MigrationError(AppError, RuntimeError):
    """A migration file is malformed, was changed after it was applied, or failed."""


class NotFound(AppError, LookupError):
    """What the request names does not exist for the caller's tenant."""


class KeyNotFound(NotFound):
    """No live key by that id in this tenant."""


class TraceNotFound(NotFound):
    """No trace by that id (or for that turn) for this tenant."""


class ModelNotFound(NotFound):
    """No configured model backend by that id; the message lists those there are."""


class RequestFieldInvalid(AppError, ValueError):
    """A well-formed request field whose meaning the route would lose, or cannot honour."""

    def __init__(self, pointer: str, message: str, *, parameter: str | None = None) -> None:
        self.pointer, self.message, self.parameter = pointer, message, parameter
        """`parameter`: the header or query parameter it came in, for a field not in the
        body."""
        super().__init__(f"{parameter or pointer or '/'}: {message}")


class BodyNotJson(AppError, ValueError):
    """The body is not JSON; the message says where the parser stopped."""

    def __init__(self, parser_said: str) -> None:
        self.parser_said = parser_said
        reason = parser_said.removeprefix("JSON is malformed: ")
        if parser_said == "Input data was truncated":
            reason = "it ends before the JSON does (a closing quote, bracket or brace is missing)"
        super().__init__(f"the body is not valid JSON: {reason}")


class IdempotencyConflict(AppError):
    """The key was used before with another request, or its first request is still running."""

    def __init__(self, status: Literal[409, 422], message: str) -> None:
        self.status, self.message = status, message
        super().__init__(message)
