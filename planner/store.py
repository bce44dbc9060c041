"""`PostgresTurnStore`: the service's `TurnStore`, over its tables. Every write is one statement
(or one transaction), so a turn outlives the process and any replica can read it; the reads
are `TurnReads` (planner/results.py), the pauses `PauseQueries` (planner/pauses.py) and the
leases `TakeoverQueries` (planner/takeovers.py)."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from planner._db import Db, jsonb_text, new_id
from planner.errors import ConversationNotFound, TurnConflict
from planner.events import Problem
from planner.messages import ChatMessage, Usage
from planner.pauses import PauseQueries
from planner.records import (
    Conversation,
    FinishedCall,
    StartedCall,
    TurnJson,
    TurnRequest,
)
from planner.results import TurnReads, conversation_of, waiting_calls
from planner.routing import Route
from planner.statuses import ACTIVE_SQL, call_status
from planner.takeovers import TakeoverQueries
from planner.transcripts import DIGEST_SQL
from tools.storable import clean_text

_MESSAGE_COLUMNS = """tenant_id, conversation_id, turn_id, role, content, reasoning, tool_calls,
                      tool_call_id"""
_FINISH_TURN = """UPDATE turns SET status = $2, answer = $3, error = $4::jsonb,
                                    usage = $5::jsonb, finished_at = now()
                   WHERE id = $1"""
# A batch's rows travel as one JSON document: encoding it is one C call, where unnest() over
# parameter arrays made asyncpg check every element of every array.
_START_CALLS = """INSERT INTO tool_calls (tenant_id, turn_id, id, conversation_id, step, namespace,
                                          name, version, arguments, raw_arguments, depends_on,
                                          status, position)
           SELECT $1, $3, c.id, $2, c.step, c.namespace, c.name, c.version, c.arguments, c.raw,
                  ARRAY(SELECT jsonb_array_elements_text(c.depends_on)), 'running', c.position
           FROM jsonb_to_recordset($4::jsonb)
                AS c(id text, step int, position int, name text, namespace text, version int,
                     arguments jsonb, raw text, depends_on jsonb)"""
_FINISH_CALLS = """UPDATE tool_calls AS t SET status = f.status, result = f.result,
                  error = f.error, error_type = f.error_type, attempts = f.attempts,
                  truncated = f.truncated, started_at = f.started_at, finished_at = f.finished_at,
                  usage = f.usage
           FROM jsonb_to_recordset($2::jsonb)
                AS f(id text, status text, result jsonb, error text, error_type text,
                     attempts int, truncated bool, started_at timestamptz,
                     finished_at timestamptz, usage jsonb)
           WHERE t.turn_id = $1 AND t.id = f.id"""


class PostgresTurnStore(TurnReads, PauseQueries, TakeoverQueries):
    """A `TurnStore` on the service's tables.

    A turn's start, its pauses and answers, and its end are committed on `pool` and wait for
    the WAL flush. So is the running row of a call that may have side effects, before the call
    is made. The rest of a turn's progress (replies, results, candidates, plans) goes through
    `progress`, when given: a pool whose commits do not wait for the flush. Those rows are
    visible at once, and the turn's next durable commit flushes them too; only a crash of
    Postgres itself in between can lose them, and then the turn goes on from the last step
    that was flushed.
    """

    async def create_conversation(
        self, tenant: str, metadata: dict[str, Any], *, eval_run: str | None = None
    ) -> Conversation:
        return await _create_conversation(self.pool, tenant, metadata, eval_run)

    async def open_conversation(
        self, tenant: str, metadata: dict[str, Any], history: list[ChatMessage], *,
        model: str, owner: str,
    ) -> str:
        """A new conversation holding `history` as completed turns of mode `imported`, one per
        exchange (a user message and the replies after it, so history budgets drop the oldest
        exchange whole), written together: all or nothing. Returns its id."""
        async with self.pool.acquire() as conn, conn.transaction():
            made = await _create_conversation(conn, tenant, metadata)
            for exchange in exchanges(history):
                turn_id = new_id("turn")
                answers = [m.content for m in exchange if m.role == "assistant" and m.content]
                await conn.execute(
                    """INSERT INTO turns (tenant_id, id, conversation_id, status, mode, model,
                                          request, answer, owner, finished_at)
                       VALUES ($1, $2, $3, 'completed', 'imported', $4, '{"imported": true}',
                               $5, $6, now())""",
                    tenant, turn_id, made.id, model,
                    clean_text(answers[-1] if answers else None), owner,
                )
                await _add_messages(conn, tenant, made.id, turn_id, exchange)
            await conn.execute(DIGEST_SQL, made.id)
        return made.id

    async def begin_turn(
        self, tenant: str, conversation_id: str, request: TurnRequest, *, model: str, owner: str,
        route: Route | None = None,
    ) -> str:
        """The running turn and its user message, in one statement; raises
        ConversationNotFound, or TurnConflict when the conversation has an active turn."""
        turn_id = new_id("turn")
        try:
            started = await self.pool.fetchval(
                f"""WITH conversation AS (
                       SELECT id FROM conversations WHERE tenant_id = $1 AND id = $3
                   ), turn AS (
                       INSERT INTO turns (tenant_id, id, conversation_id, status, mode, model,
                                          request, owner, route)
                       SELECT $1, $2, id, 'running', $4, $5, $6::jsonb, $7, $9::jsonb
                       FROM conversation
                       RETURNING id
                   ), message AS (
                       INSERT INTO messages ({_MESSAGE_COLUMNS})
                       SELECT $1, $3, id, 'user', $8, NULL, NULL, NULL FROM turn
                   )
                   SELECT id FROM turn""",
                tenant, turn_id, conversation_id, request.mode, model, jsonb_text(request),
                owner, clean_text(request.message),
                None if route is None else jsonb_text(route),
            )
        except asyncpg.UniqueViolationError as exc:
            raise await self._conflict(conversation_id) from exc
        if started is None:
            raise ConversationNotFound(conversation_id)
        return turn_id

    async def _conflict(self, conversation_id: str) -> TurnConflict:
        active = await self.pool.fetchrow(
            f"SELECT id, status FROM turns WHERE conversation_id = $1 AND status IN {ACTIVE_SQL}",
            conversation_id,
        )
        turn, status = (active["id"], active["status"]) if active else ("?", "running")
        return TurnConflict(conversation_id, turn, status, await waiting_calls(self.pool, turn))

    async def add_messages(
        self, tenant: str, conversation_id: str, turn_id: str, messages: list[ChatMessage],
        reasoning: str | None = None,
    ) -> None:
        """Append messages in order, in one round trip (`reasoning` goes with the first)."""
        await _add_messages(self.progress, tenant, conversation_id, turn_id, messages, reasoning)

    async def start_reply(
        self, tenant: str, conversation_id: str, turn_id: str, message: ChatMessage,
        reasoning: str | None, calls: list[StartedCall],
    ) -> None:
        """The model's reply and the running rows of the calls it asks for, in one
        statement."""
        await self._starts(calls).execute(
            f"""WITH reply AS (
                   INSERT INTO messages ({_MESSAGE_COLUMNS})
                   VALUES ($1, $2, $3, $5, $6, $7, $8::jsonb, NULL))
                {_START_CALLS}""",
            tenant, conversation_id, turn_id, _started_rows(calls), message.role,
            clean_text(message.content), clean_text(reasoning or None),
            jsonb_text(message.tool_calls) if message.tool_calls else None,
        )

    async def start_tool_calls(
        self, tenant: str, conversation_id: str, turn_id: str, calls: list[StartedCall]
    ) -> None:
        """Write calls as running, in one round trip, before any of them is made."""
        await self._starts(calls).execute(_START_CALLS, tenant, conversation_id, turn_id,
                                          _started_rows(calls))

    async def finish_tool_calls(self, turn_id: str, calls: list[FinishedCall]) -> None:
        """How calls ended, in one round trip."""
        await self.progress.execute(_FINISH_CALLS, turn_id, _finished_rows(calls))

    async def finish_and_observe(
        self, tenant: str, conversation_id: str, turn_id: str, calls: list[FinishedCall],
        messages: list[ChatMessage],
    ) -> None:
        """The ends of a batch's calls not yet written and every tool message of the batch,
        appended in order, in one statement."""
        await self.progress.execute(
            f"""WITH finished AS ({_FINISH_CALLS})
                INSERT INTO messages ({_MESSAGE_COLUMNS})
                SELECT $3, $4, $1, m.value->>'role', m.value->>'content', NULL, NULL,
                       m.value->>'tool_call_id'
                FROM jsonb_array_elements($5::jsonb) WITH ORDINALITY AS m(value, n)
                ORDER BY m.n""",
            turn_id, _finished_rows(calls), tenant, conversation_id,
            jsonb_text([{"role": m.role, "content": m.content, "tool_call_id": m.tool_call_id}
                        for m in messages]),
        )

    async def set_turn_json(self, turn_id: str, column: TurnJson, value: Any) -> None:
        """The turn's candidate tools or plans so far."""
        sql = {"candidates": "UPDATE turns SET candidates = $2::jsonb, heartbeat_at = now()",
               "plans": "UPDATE turns SET plans = $2::jsonb, heartbeat_at = now()"}[column]
        await self.progress.execute(sql + " WHERE id = $1", turn_id, jsonb_text(value))

    async def set_turn_route(self, turn_id: str, route: Route) -> None:
        """A routed turn moved to another backend: its route and its model."""
        await self.pool.execute("UPDATE turns SET route = $2::jsonb, model = $3 WHERE id = $1",
                                turn_id, jsonb_text(route), route.chosen)

    async def set_turn_trace(self, turn_id: str, trace_id: str, traceparent: str) -> None:
        """The turn's trace, so it can be found from the turn and continued when resumed."""
        await self.progress.execute(
            "UPDATE turns SET trace_id = $2, traceparent = $3 WHERE id = $1",
            turn_id, trace_id, traceparent,
        )

    async def complete_turn(
        self, tenant: str, conversation_id: str, turn_id: str, *, reply: ChatMessage,
        reasoning: str | None, usage: Usage,
    ) -> None:
        """The model's answer and the turn's end as `completed`, in one statement, then the
        conversation's transcript digest, in the same transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"""WITH answer AS (
                       INSERT INTO messages ({_MESSAGE_COLUMNS})
                       VALUES ($6, $7, $1, 'assistant', $3, $8, NULL, NULL))
                    {_FINISH_TURN}""",
                turn_id, "completed", clean_text(reply.content), None, jsonb_text(usage), tenant,
                conversation_id, clean_text(reasoning or None),
            )
            await conn.execute(DIGEST_SQL, conversation_id)

    async def continued_by(self, tenant: str, digest: str) -> str | None:
        """The newest conversation whose transcript has this digest."""
        found: str | None = await self.pool.fetchval(
            """SELECT id FROM conversations WHERE tenant_id = $1 AND transcript_digest = $2
               ORDER BY created_at DESC LIMIT 1""", tenant, digest)
        return found

    async def fail_turn(self, turn_id: str, *, error: Problem, usage: Usage) -> None:
        """The turn's end as `failed`, with the problem that ended it."""
        await self.pool.execute(_FINISH_TURN, turn_id, "failed", None, jsonb_text(error),
                                jsonb_text(usage))

    def _starts(self, calls: list[StartedCall]) -> asyncpg.Pool:
        """A call that may have side effects is on record, durably, before it is made."""
        return self.pool if any(c.side_effects for c in calls) else self.progress


def exchanges(history: list[ChatMessage]) -> list[list[ChatMessage]]:
    """Messages split at each user message: an exchange is a user message and the replies
    after it."""
    found: list[list[ChatMessage]] = []
    for message in history:
        if message.role == "user" or not found:
            found.append([])
        found[-1].append(message)
    return found


async def _create_conversation(
    db: Db, tenant: str, metadata: dict[str, Any], eval_run: str | None = None
) -> Conversation:
    row = await db.fetchrow(
        """INSERT INTO conversations (tenant_id, id, metadata, eval_run)
           VALUES ($1, $2, $3::jsonb, $4) RETURNING id, metadata, created_at""",
        tenant, new_id("conv"), jsonb_text(metadata), eval_run,
    )
    return conversation_of(row)


async def _add_messages(
    db: Db, tenant: str, conversation_id: str, turn_id: str, messages: list[ChatMessage],
    reasoning: str | None = None,
) -> None:
    rows = [
        (tenant, conversation_id, turn_id, m.role, clean_text(m.content),
         clean_text(reasoning or None) if i == 0 else None,
         jsonb_text(m.tool_calls) if m.tool_calls else None, m.tool_call_id)
        for i, m in enumerate(messages)
    ]
    await db.executemany(
        f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)",
        rows,
    )


def _started_rows(calls: list[StartedCall]) -> str:
    return jsonb_text([
        {"id": c.id, "step": c.step, "position": c.position, "name": c.name,
         "namespace": c.namespace, "version": c.version, "arguments": c.arguments,
         "raw": c.raw_arguments, "depends_on": c.depends_on}
        for c in calls
    ])


def _finished_rows(calls: list[FinishedCall]) -> str:
    return jsonb_text([
        {"status": call_status(c.error_type, c.ok), **msgspec.structs.asdict(c)}
        for c in calls
    ])
