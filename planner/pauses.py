"""Paused turns in Postgres: the calls a turn waits on, the answers they get, and taking the turn
back up once every call it waits on has one.

A turn pauses when a call needs a person's approval or is a client tool's. The pause lives in
Postgres only, so it outlives the process; whichever replica records the last answer (or finds
the last deadline passed) takes the turn up again, and the row lock on the turn makes that one
replica only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from planner._db import Db, jsonb_text
from planner.errors import CallNotWaiting, TurnNotFound, TurnNotPaused
from planner.events import PendingCall
from planner.messages import Usage
from planner.results import (
    OUTCOME_COLUMNS,
    PAUSED_STATUSES,
    WaitsFor,
    outcome_fields,
    pending_call,
    waiting_calls,
)
from tools.outcome import CallOutcome

CALL_STATUS: dict[WaitsFor, str] = {"approval": "awaiting_approval", "output": "awaiting_output"}


class Approved(msgspec.Struct, frozen=True, kw_only=True, tag="approved", tag_field="decision"):
    arguments: dict[str, Any] | None = None
    """Arguments a person edited; None runs the call as the model wrote it."""


class Rejected(msgspec.Struct, frozen=True, kw_only=True, tag="rejected", tag_field="decision"):
    reason: str | None = None


class ClientOutput(msgspec.Struct, frozen=True, kw_only=True, tag="output", tag_field="decision"):
    output: Any = None
    error: str | None = None
    """Set when the client tool failed; the model reads it as the call's error."""


class Expired(msgspec.Struct, frozen=True, kw_only=True, tag="expired", tag_field="decision"):
    waited_s: float


Decision = Approved | Rejected | ClientOutput | Expired
_decision = msgspec.json.Decoder(Decision)


class SavedCall(CallOutcome, frozen=True, kw_only=True):
    """One call of the step a turn paused in, as stored: how it ended, if it has."""

    id: str
    name: str
    namespace: str | None
    version: int | None
    position: int
    arguments: Any
    status: str
    decision: Decision | None


class SavedTurn(msgspec.Struct, frozen=True, kw_only=True):
    """What it takes to take a paused turn back up."""

    tenant: str
    id: str
    conversation_id: str
    request: dict[str, Any]
    candidates: list[list[Any]]
    """[function name, namespace, name, version] per candidate, in tool-block order."""
    plans: list[Any]
    usage: Usage
    traceparent: str | None
    step: int
    calls: list[SavedCall]
    """The calls of the step it paused in, in the order the model wrote them."""


async def wait_for(
    db: Db, turn_id: str, call_id: str, waits_for: WaitsFor, deadline: datetime
) -> None:
    await db.execute(
        "UPDATE tool_calls SET status = $3, deadline = $4 WHERE turn_id = $1 AND id = $2",
        turn_id, call_id, CALL_STATUS[waits_for], deadline,
    )


async def pause_turn(db: Db, turn_id: str, status: str, usage: Usage) -> None:
    await db.execute(
        "UPDATE turns SET status = $2, usage = $3::jsonb WHERE id = $1 AND status = 'running'",
        turn_id, status, jsonb_text(usage),
    )


class Waiting(msgspec.Struct, frozen=True, kw_only=True):
    """A call a decision is for, as it waits: which tool version it would run."""

    call: PendingCall
    namespace: str | None
    version: int | None


async def paused_turn(db: Db, tenant: str, conversation_id: str) -> str | None:
    """The conversation's paused turn, if it has one."""
    value = await db.fetchval(
        """SELECT id FROM turns WHERE tenant_id = $1 AND conversation_id = $2
           AND status IN ('awaiting_approval', 'requires_action')""",
        tenant, conversation_id,
    )
    return None if value is None else str(value)


async def waiting_call(db: Db, tenant: str, turn_id: str, call_id: str) -> Waiting:
    """The call, if the turn is paused and the call still waits on an answer; else why not."""
    turn = await db.fetchrow(
        "SELECT status FROM turns WHERE tenant_id = $1 AND id = $2", tenant, turn_id
    )
    if turn is None:
        raise TurnNotFound(turn_id)
    if turn["status"] not in PAUSED_STATUSES:
        raise TurnNotPaused(turn_id, turn["status"])
    row = await db.fetchrow(
        """SELECT id, name, namespace, version, arguments::text, raw_arguments, status, deadline,
                  decision IS NOT NULL AS decided
           FROM tool_calls WHERE turn_id = $1 AND id = $2""",
        turn_id, call_id,
    )
    if row is None:
        raise CallNotWaiting(turn_id, call_id, "does not exist", status=404)
    if row["status"] not in CALL_STATUS.values():
        raise CallNotWaiting(turn_id, call_id, f"is not waiting: it has {row['status']}")
    if row["decided"]:
        raise CallNotWaiting(turn_id, call_id, "already has its answer")
    return Waiting(call=pending_call(row), namespace=row["namespace"], version=row["version"])


async def decide(
    pool: asyncpg.Pool, tenant: str, turn_id: str, call_id: str, decision: Decision, owner: str
) -> list[PendingCall]:
    """Record the answer for one waiting call. When it was the last, the turn is `running`
    again, owned by `owner`, and the caller must take it up; returns the calls still waiting."""
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.fetchval(
            "SELECT status FROM turns WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
            tenant, turn_id,
        )
        if status is None:
            raise TurnNotFound(turn_id)
        if status not in PAUSED_STATUSES:
            raise TurnNotPaused(turn_id, status)
        updated = await conn.fetchval(
            """UPDATE tool_calls SET decision = $3::jsonb
               WHERE turn_id = $1 AND id = $2 AND decision IS NULL
                 AND status IN ('awaiting_approval', 'awaiting_output')
               RETURNING id""",
            turn_id, call_id, jsonb_text(decision),
        )
        if updated is None:
            raise CallNotWaiting(turn_id, call_id, "already has its answer")
        remaining = await waiting_calls(conn, turn_id)
        if not remaining:
            await _take_up(conn, [turn_id], owner)
        return remaining


async def _take_up(conn: Db, turn_ids: list[str], owner: str) -> None:
    await conn.execute(
        """UPDATE turns SET status = 'running', owner = $2, heartbeat_at = now()
           WHERE id = ANY($1::text[])""",
        turn_ids, owner,
    )


async def expire_overdue(pool: asyncpg.Pool, owner: str) -> list[tuple[str, str]]:
    """Answer every call whose deadline has passed with `Expired`, and take up the paused turns
    that wait on nothing now; returns their (tenant, turn id)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """UPDATE tool_calls SET decision = jsonb_build_object(
                   'decision', 'expired',
                   'waited_s', extract(epoch FROM now() - started_at))
               WHERE status IN ('awaiting_approval', 'awaiting_output') AND decision IS NULL
                 AND deadline < now()"""
        )
        rows = await conn.fetch(
            """SELECT tenant_id, id FROM turns t
               WHERE status IN ('awaiting_approval', 'requires_action')
                 AND NOT EXISTS (SELECT 1 FROM tool_calls c WHERE c.turn_id = t.id
                                 AND c.status IN ('awaiting_approval', 'awaiting_output')
                                 AND c.decision IS NULL)
               FOR UPDATE SKIP LOCKED"""
        )
        await _take_up(conn, [r["id"] for r in rows], owner)
    return [(r["tenant_id"], r["id"]) for r in rows]


async def load(db: Db, tenant: str, turn_id: str) -> SavedTurn:
    """A taken-up turn and the calls of the step it paused in."""
    row = await db.fetchrow(
        """SELECT conversation_id, request::text, candidates::text, plans::text, usage::text,
                  traceparent, (SELECT max(step) FROM tool_calls WHERE turn_id = $2) AS step
           FROM turns WHERE tenant_id = $1 AND id = $2""",
        tenant, turn_id,
    )
    if row is None:
        raise TurnNotFound(turn_id)
    calls = await db.fetch(
        f"""SELECT id, name, namespace, version, position, arguments::text, raw_arguments, status,
                   decision::text, {OUTCOME_COLUMNS}
            FROM tool_calls WHERE turn_id = $1 AND step = $2 ORDER BY position""",
        turn_id, row["step"],
    )
    return SavedTurn(
        tenant=tenant, id=turn_id, conversation_id=row["conversation_id"],
        request=msgspec.json.decode(row["request"]),
        candidates=msgspec.json.decode(row["candidates"]),
        plans=msgspec.json.decode(row["plans"]),
        usage=msgspec.json.decode(row["usage"] or "{}", type=Usage),
        traceparent=row["traceparent"], step=row["step"] or 0,
        calls=[_saved_call(c) for c in calls],
    )


def _saved_call(row: asyncpg.Record) -> SavedCall:
    return SavedCall(
        id=row["id"], name=row["name"], namespace=row["namespace"], version=row["version"],
        position=row["position"],
        arguments=msgspec.json.decode(row["arguments"]) if row["arguments"] else
        row["raw_arguments"],
        status=row["status"],
        decision=_decision.decode(row["decision"]) if row["decision"] else None,
        **outcome_fields(row),
    )


async def edit_arguments(db: Db, turn_id: str, call_id: str, arguments: dict[str, Any]) -> None:
    """The arguments a person approved the call with; what the model wrote stays in
    `raw_arguments`."""
    await db.execute(
        "UPDATE tool_calls SET arguments = $3::jsonb WHERE turn_id = $1 AND id = $2",
        turn_id, call_id, jsonb_text(arguments),
    )
