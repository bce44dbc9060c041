"""How a tool call ended: the one shape that every record of a call builds on."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class ModelUsage(msgspec.Struct, frozen=True, kw_only=True):
    """The tokens a call of an expert model (a `model` tool) used, and on which backend."""

    backend: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None


class CallOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one call produced: its result, or its error (written for the model to read) and the
    error's type. `attempts` counts the times the tool was actually invoked (0 when the call was
    refused before running). A call read back before it has ended has no `finished_at` yet.

    The records of a call extend this: the running call's end (`FinishedCall`), the call as the
    API reports it (`ToolCallRecord`), and the call of a paused step (`SavedCall`).
    """

    result: Any = None
    error: str | None = None
    error_type: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    truncated: bool = False
    """The result was cut to the output limit."""
    usage: ModelUsage | None = None
    """The tokens an expert model's call used (a `model` tool); None for other tools."""

    @property
    def ok(self) -> bool:
        """Whether the call succeeded: every failure has an error and its type."""
        return self.error is None and self.error_type is None

    @property
    def duration_ms(self) -> float:
        """Milliseconds from its start to its end (0 while it has not ended)."""
        if self.started_at is None or self.finished_at is None:
            return 0.0
        return round((self.finished_at - self.started_at).total_seconds() * 1000, 3)
