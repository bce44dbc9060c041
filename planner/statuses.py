"""The statuses of turns and tool calls, the groups of them that rules name (a turn that is
paused, a call that waits), and those groups as SQL lists for queries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

PausedStatus = Literal["awaiting_approval", "requires_action"]
"""A turn in one of these waits on a person's approval or a client tool's output."""
TurnStatus = Literal["running", "completed", "failed", "interrupted", PausedStatus]
PAUSED_STATUSES: tuple[PausedStatus, ...] = get_args(PausedStatus)
ACTIVE_STATUSES: tuple[TurnStatus, ...] = ("running", *PAUSED_STATUSES)
"""A conversation has at most one turn in one of these."""

WaitsFor = Literal["approval", "output"]
"""What a paused call waits on: a person's approval, or its client tool's output."""
CallStatus = Literal["running", "succeeded", "failed", "unknown", "awaiting_approval",
                     "awaiting_output"]
"""`unknown`: the call was running when its replica died, and was not repeated (its tool is not
idempotent), so whether it was made is not known."""
OUTCOME_UNKNOWN = "outcome_unknown"
"""The error type of a call whose status is `unknown`."""


def call_status(error_type: str | None, ok: bool) -> CallStatus:
    """The status a call's row ends with."""
    if error_type == OUTCOME_UNKNOWN:
        return "unknown"
    return "succeeded" if ok else "failed"

WAITING_STATUS: dict[WaitsFor, CallStatus] = {
    "approval": "awaiting_approval", "output": "awaiting_output",
}


def waits_for(status: str) -> WaitsFor:
    """What a waiting call's status says it waits on."""
    return "approval" if status == WAITING_STATUS["approval"] else "output"


def sql_list(values: Iterable[str]) -> str:
    """Constant statuses as an SQL list for `IN`: ('a', 'b')."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


PAUSED_SQL = sql_list(PAUSED_STATUSES)
ACTIVE_SQL = sql_list(ACTIVE_STATUSES)
WAITING_SQL = sql_list(WAITING_STATUS.values())
