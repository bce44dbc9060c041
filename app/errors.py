"""Errors of the HTTP layer that are not errors of `tools` or `planner`.

    LookupError
    └── KeyNotFound     no live API key by that id in the caller's tenant (404)
    ValueError
    └── RequestFieldInvalid   a request field asks for what the route cannot do (422)
"""

from __future__ import annotations


class KeyNotFound(LookupError):
    """No live key by that id in this tenant."""


class RequestFieldInvalid(ValueError):
    """A well-formed request field whose meaning the route would lose, or cannot honour."""

    def __init__(self, pointer: str, message: str) -> None:
        self.pointer, self.message = pointer, message
        super().__init__(f"{pointer}: {message}")
