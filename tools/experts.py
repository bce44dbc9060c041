"""The seam to the service's model backends for `model` tools (expert models as tools): the
tool domain asks, the planner answers with its model clients (planner/experts.py)."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from tools.outcome import ModelUsage
from tools.spec import ModelExecutor


class ExpertReply(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    usage: ModelUsage


class ExpertFailure(Exception):
    """The backend did not answer: `retryable` when it was down or busy (worth another try for
    a tool whose policy allows retries), not when it refused the request."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Experts(Protocol):
    def backends(self) -> list[str]:
        """The names of the backends a `model` tool may ask."""
        ...

    async def ask(self, tenant: str, executor: ModelExecutor, arguments: dict[str, Any]
                  ) -> ExpertReply:
        """One chat request to the executor's backend; raises ExpertFailure."""
        ...
