"""How turns read back: a turn's row, its result with its calls, and the calls a paused turn
waits on; rebuilt from what was written while the turn ran."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from planner._db import Db
from planner.events import PendingCall, Problem, ToolCallRecord, TurnResult, answer_message
from planner.messages import Usage

WaitsFor = Literal["approval", "output"]
PAUSED_STATUSES = ("awaiting_approval", "requires_action")
"""A turn in one of these waits on a person's approval or a client tool's output."""


class TurnRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    conversation_id: str
    status: str
    mode: str
    model: str
    answer: str | None
    error: dict[str, Any] | None
    usage: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None


_TURN_SQL = """SELECT id, conversation_id, status, mode, model, answer, error::text,
                     usage::text, started_at, finished_at FROM turns"""


async def get_turn(db: Db, tenant: str, turn_id: str) -> TurnRow | None:
    row = await db.fetchrow(_TURN_SQL + " WHERE tenant_id = $1 AND id = $2", tenant, turn_id)
    return None if row is None else _turn(row)


async def list_turns(db: Db, tenant: str, conversation_id: str) -> list[TurnRow]:
    rows = await db.fetch(
        _TURN_SQL + " WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY started_at, id",
        tenant,
        conversation_id,
    )
    return [_turn(r) for r in rows]


def _turn(row: asyncpg.Record) -> TurnRow:
    return TurnRow(
        id=row["id"],
        conversation_id=row["conversation_id"],
        status=row["status"],
        mode=row["mode"],
        model=row["model"],
        answer=row["answer"],
        error=msgspec.json.decode(row["error"]) if row["error"] else None,
        usage=msgspec.json.decode(row["usage"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


_WAITING = """SELECT id, name, arguments::text, raw_arguments, status, deadline FROM tool_calls
              WHERE turn_id = $1 AND status IN ('awaiting_approval', 'awaiting_output')
                AND decision IS NULL ORDER BY step, position"""


async def waiting_calls(db: Db, turn_id: str) -> list[PendingCall]:
    """The calls of a turn still without an answer, in the order they were asked for."""
    return [pending_call(r) for r in await db.fetch(_WAITING, turn_id)]


def pending_call(row: asyncpg.Record) -> PendingCall:
    waits: WaitsFor = "approval" if row["status"] == "awaiting_approval" else "output"
    arguments = msgspec.json.decode(row["arguments"]) if row["arguments"] else row["raw_arguments"]
    return PendingCall(id=row["id"], name=row["name"], arguments=arguments, waits_for=waits,
                       deadline=row["deadline"])


async def turn_result(db: Db, tenant: str, turn_id: str) -> TurnResult | None:
    """A turn as the API reports it, rebuilt from what was written while it ran."""
    row = await db.fetchrow(
        """SELECT conversation_id, status, answer, error::text, usage::text,
                  (SELECT m.reasoning FROM messages m
                   WHERE m.conversation_id = t.conversation_id AND m.turn_id = t.id
                     AND m.role = 'assistant'
                   ORDER BY m.id DESC LIMIT 1) AS reasoning
           FROM turns t WHERE tenant_id = $1 AND id = $2""",
        tenant, turn_id,
    )
    if row is None:
        return None
    paused = row["status"] in PAUSED_STATUSES
    return TurnResult(
        id=turn_id, conversation_id=row["conversation_id"], status=row["status"],
        pending=await waiting_calls(db, turn_id) if paused else [],
        message=None if row["answer"] is None else answer_message(row["answer"], row["reasoning"]),
        tool_calls=await call_records(db, turn_id),
        usage=msgspec.json.decode(row["usage"] or "{}", type=Usage),
        error=msgspec.json.decode(row["error"], type=Problem) if row["error"] else None,
    )


OUTCOME_COLUMNS = "result::text, error, error_type, started_at, finished_at, attempts, truncated"
"""A call row's columns that read back as its `CallOutcome` (`outcome_fields`)."""


def outcome_fields(row: asyncpg.Record) -> dict[str, Any]:
    """The `CallOutcome` fields of a call row selected with OUTCOME_COLUMNS."""
    return {
        "result": msgspec.json.decode(row["result"]) if row["result"] else None,
        "error": row["error"], "error_type": row["error_type"],
        "started_at": row["started_at"], "finished_at": row["finished_at"],
        "attempts": row["attempts"], "truncated": row["truncated"],
    }


async def call_records(db: Db, turn_id: str) -> list[ToolCallRecord]:
    """The turn's calls as the API reports them, in step and call order."""
    rows = await db.fetch(
        f"""SELECT id, name, arguments::text, step, position, depends_on, {OUTCOME_COLUMNS}
            FROM tool_calls WHERE turn_id = $1 ORDER BY step, position""",
        turn_id,
    )
    return [_call_record(r) for r in rows]


def _call_record(row: asyncpg.Record) -> ToolCallRecord:
    return ToolCallRecord(
        id=row["id"], name=row["name"],
        arguments=msgspec.json.decode(row["arguments"]) if row["arguments"] else None,
        step=row["step"], position=row["position"], depends_on=list(row["depends_on"]),
        **outcome_fields(row),
    )
