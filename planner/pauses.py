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

from planner._db import Db, PostgresTables, jsonb_text
from planner.errors import CallNotWaiting, TurnNotFound, TurnNotPaused
from planner.events import PendingCall, Takeover
from planner.messages import Usage
from planner.plan import Plan
from planner.records import Candidate, Decision, SavedCall, SavedTurn, TurnRequest, Waiting
from planner.results import OUTCOME_COLUMNS, outcome_fields, pending_call, waiting_calls
from planner.statuses import (
    PAUSED_SQL,
    PAUSED_STATUSES,
    WAITING_SQL,
    WAITING_STATUS,
    PausedStatus,
    WaitsFor,
)

_decision = msgspec.json.Decoder(Decision)
_request = msgspec.json.Decoder(TurnRequest)
_candidates = msgspec.json.Decoder(list[Candidate])
_plans = msgspec.json.Decoder(list[Plan])
_takeovers = msgspec.json.Decoder(list[Takeover])


class PauseQueries(PostgresTables):
    """The pauses of `PostgresTurnStore` (its `PauseStore` half), and the supervisor's taking up
    of paused turns whose waiting calls ran out of time."""

    async def wait_for(
        self, turn_id: str, call_id: str, waits_for: WaitsFor, deadline: datetime
    ) -> None:
        """Mark a started call as waiting for its answer until `deadline`."""
        await self.pool.execute(
            "UPDATE tool_calls SET status = $3, deadline = $4 WHERE turn_id = $1 AND id = $2",
            turn_id, call_id, WAITING_STATUS[waits_for], deadline,
        )

    async def pause_turn(self, turn_id: str, status: PausedStatus, usage: Usage) -> None:
        """A running turn now waits."""
        await self.pool.execute(
            "UPDATE turns SET status = $2, usage = $3::jsonb WHERE id = $1 AND status = 'running'",
            turn_id, status, jsonb_text(usage),
        )

    async def waiting_call(self, tenant: str, turn_id: str, call_id: str) -> Waiting:
        """The call, if the turn is paused and the call still waits on an answer; else why
        not."""
        turn = await self.pool.fetchrow(
            "SELECT status FROM turns WHERE tenant_id = $1 AND id = $2", tenant, turn_id
        )
        if turn is None:
            raise TurnNotFound(turn_id)
        if turn["status"] not in PAUSED_STATUSES:
            raise TurnNotPaused(turn_id, turn["status"])
        row = await self.pool.fetchrow(
            """SELECT id, name, namespace, version, arguments::text, raw_arguments, status,
                      deadline, decision IS NOT NULL AS decided
               FROM tool_calls WHERE turn_id = $1 AND id = $2""",
            turn_id, call_id,
        )
        if row is None:
            raise CallNotWaiting(turn_id, call_id, "does not exist", exists=False)
        if row["status"] not in WAITING_STATUS.values():
            raise CallNotWaiting(turn_id, call_id, f"is not waiting: it has {row['status']}")
        if row["decided"]:
            raise CallNotWaiting(turn_id, call_id, "already has its answer")
        return Waiting(call=pending_call(row), namespace=row["namespace"],
                       version=row["version"])

    async def decide(
        self, tenant: str, turn_id: str, call_id: str, decision: Decision, owner: str
    ) -> list[PendingCall]:
        """Record the answer for one waiting call. When it was the last, the turn is `running`
        again, owned by `owner`, and the caller must take it up; returns the calls still
        waiting."""
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval(
                "SELECT status FROM turns WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                tenant, turn_id,
            )
            if status is None:
                raise TurnNotFound(turn_id)
            if status not in PAUSED_STATUSES:
                raise TurnNotPaused(turn_id, status)
            updated = await conn.fetchval(
                f"""UPDATE tool_calls SET decision = $3::jsonb
                    WHERE turn_id = $1 AND id = $2 AND decision IS NULL
                      AND status IN {WAITING_SQL}
                    RETURNING id""",
                turn_id, call_id, jsonb_text(decision),
            )
            if updated is None:
                raise CallNotWaiting(turn_id, call_id, "already has its answer")
            remaining = await waiting_calls(conn, turn_id)
            if not remaining:
                await _take_up(conn, [turn_id], owner)
            return remaining

    async def expire_overdue(self, owner: str) -> list[tuple[str, str]]:
        """Answer every call whose deadline has passed with `Expired`, and take up the paused
        turns that wait on nothing now; returns their (tenant, turn id)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"""UPDATE tool_calls SET decision = jsonb_build_object(
                        'decision', 'expired',
                        'waited_s', extract(epoch FROM now() - started_at))
                    WHERE status IN {WAITING_SQL} AND decision IS NULL AND deadline < now()"""
            )
            rows = await conn.fetch(
                f"""SELECT tenant_id, id FROM turns t
                    WHERE status IN {PAUSED_SQL}
                      AND NOT EXISTS (SELECT 1 FROM tool_calls c WHERE c.turn_id = t.id
                                      AND c.status IN {WAITING_SQL} AND c.decision IS NULL)
                    FOR UPDATE SKIP LOCKED"""
            )
            await _take_up(conn, [r["id"] for r in rows], owner)
        return [(r["tenant_id"], r["id"]) for r in rows]

    async def load_paused(self, tenant: str, turn_id: str) -> SavedTurn:
        """A taken-up turn and the calls of the step it paused in."""
        saved = await load_saved(self.pool, tenant, turn_id,
                                 "step = (SELECT max(step) FROM tool_calls WHERE turn_id = $1)")
        if saved is None:
            raise TurnNotFound(turn_id)
        return saved

    async def edit_arguments(self, turn_id: str, call_id: str, arguments: dict[str, Any]) -> None:
        """The arguments a person approved the call with; what the model wrote stays in
        `raw_arguments`."""
        await self.pool.execute(
            "UPDATE tool_calls SET arguments = $3::jsonb WHERE turn_id = $1 AND id = $2",
            turn_id, call_id, jsonb_text(arguments),
        )


async def load_saved(db: Db, tenant: str, turn_id: str, calls_where: str) -> SavedTurn | None:
    """What a turn had stored, to go on from: its request, candidates, plans and usage, and its
    calls that match `calls_where` (SQL over tool_calls; `$1` is the turn's id)."""
    row = await db.fetchrow(
        """SELECT conversation_id, request::text, candidates::text, plans::text, usage::text,
                  traceparent, started_at, takeovers::text,
                  (SELECT max(step) FROM tool_calls WHERE turn_id = $2) AS step,
                  jsonb_array_length(takeovers) > 1 OR EXISTS (
                      SELECT 1 FROM tool_calls WHERE turn_id = $2 AND decision IS NOT NULL
                  ) AS root_ended
           FROM turns WHERE tenant_id = $1 AND id = $2""",
        tenant, turn_id,
    )
    if row is None:
        return None
    calls = await db.fetch(
        f"""SELECT id, name, namespace, version, step, position, arguments::text,
                   raw_arguments, status, decision::text, {OUTCOME_COLUMNS}
            FROM tool_calls WHERE turn_id = $1 AND {calls_where} ORDER BY step, position""",
        turn_id,
    )
    return SavedTurn(
        tenant=tenant, id=turn_id, conversation_id=row["conversation_id"],
        request=_request.decode(row["request"]),
        candidates=_candidates.decode(row["candidates"]), plans=_plans.decode(row["plans"]),
        usage=msgspec.json.decode(row["usage"] or "{}", type=Usage),
        traceparent=row["traceparent"], started_at=row["started_at"],
        root_ended=row["root_ended"], step=row["step"] or 0,
        takeovers=_takeovers.decode(row["takeovers"]),
        calls=[_saved_call(c) for c in calls],
    )


async def _take_up(conn: Db, turn_ids: list[str], owner: str) -> None:
    await conn.execute(
        """UPDATE turns SET status = 'running', owner = $2, heartbeat_at = now()
           WHERE id = ANY($1::text[])""",
        turn_ids, owner,
    )


def _saved_call(row: asyncpg.Record) -> SavedCall:
    return SavedCall(
        id=row["id"], name=row["name"], namespace=row["namespace"], version=row["version"],
        step=row["step"], position=row["position"], raw_arguments=row["raw_arguments"],
        arguments=msgspec.json.decode(row["arguments"]) if row["arguments"] else
        row["raw_arguments"],
        status=row["status"],
        decision=_decision.decode(row["decision"]) if row["decision"] else None,
        **outcome_fields(row),
    )
