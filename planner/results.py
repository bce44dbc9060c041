"""How turns read back from Postgres: a conversation with its turns and messages, a turn's row,
its result with its calls, and the calls a paused turn waits on; rebuilt from what was written
while the turn ran."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from planner._db import Db, PostgresTables
from planner.errors import ConversationNotFound
from planner.events import (
    PendingCall,
    Problem,
    Takeover,
    ToolCallRecord,
    TurnResult,
    answer_message,
    usage_by_backend,
)
from planner.messages import AssistantToolCall, Usage
from planner.records import Candidate, Conversation, StoredMessage, TurnRow
from planner.routing import Route
from planner.statuses import PAUSED_SQL, PAUSED_STATUSES, WAITING_SQL, waits_for
from tools.outcome import ModelUsage

_tool_calls = msgspec.json.Decoder(list[AssistantToolCall])
_candidates = msgspec.json.Decoder(list[Candidate])
_usage = msgspec.json.Decoder(ModelUsage)

OUTCOME_COLUMNS = ("result::text, error, error_type, started_at, finished_at, attempts, "
                   "truncated, usage::text")
"""A call row's columns that read back as its `CallOutcome` (`outcome_fields`)."""
_TURN_SQL = """SELECT id, conversation_id, status, mode, model, answer, error::text,
                      usage::text, started_at, finished_at FROM turns"""
_MESSAGE_SQL = """SELECT id, turn_id, role, content, reasoning, tool_calls::text, tool_call_id,
                         created_at FROM messages"""
_WAITING = f"""SELECT id, name, arguments::text, raw_arguments, status, deadline FROM tool_calls
               WHERE turn_id = $1 AND status IN {WAITING_SQL} AND decision IS NULL
               ORDER BY step, position"""


class TurnReads(PostgresTables):
    """The reads of `PostgresTurnStore`: what the engine takes up again and what the routes
    report."""

    async def get_conversation(self, tenant: str, conversation_id: str) -> Conversation:
        row = await self.pool.fetchrow(
            "SELECT id, metadata, created_at FROM conversations WHERE tenant_id = $1 AND id = $2",
            tenant, conversation_id,
        )
        if row is None:
            raise ConversationNotFound(conversation_id)
        return conversation_of(row)

    async def list_conversations(
        self, tenant: str, metadata: dict[str, str], before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Conversation]:
        """The tenant's conversations, newest first, whose metadata has each key with the value
        given (compared as text), from after `before` (created_at, id); eval runs' own are not
        listed."""
        at, last = before if before is not None else (None, None)
        rows = await self.pool.fetch(
            """SELECT id, metadata, created_at FROM conversations c
               WHERE tenant_id = $1 AND eval_run IS NULL
                 AND NOT EXISTS (SELECT 1 FROM jsonb_each_text($2::jsonb) wanted
                                 WHERE c.metadata ->> wanted.key IS DISTINCT FROM wanted.value)
                 AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
               ORDER BY created_at DESC, id DESC LIMIT $5""",
            tenant, msgspec.json.encode(metadata).decode(), at, last, limit,
        )
        return [conversation_of(r) for r in rows]

    async def list_messages(self, tenant: str, conversation_id: str, *, after: int = 0,
                            limit: int | None = None) -> list[StoredMessage]:
        """The conversation's messages in the order written: every one, or `limit` of them
        after message `after`."""
        rows = await self.pool.fetch(
            _MESSAGE_SQL + """ WHERE tenant_id = $1 AND conversation_id = $2 AND id > $3
                               ORDER BY id LIMIT $4""",
            tenant, conversation_id, after, limit,
        )
        return [_message(r) for r in rows]

    async def turn_messages(self, tenant: str, turn_id: str) -> list[StoredMessage] | None:
        """The turn's messages, in the order written; None when the tenant has no such turn."""
        # Through the turn's conversation: messages are indexed by conversation.
        rows = await self.pool.fetch(
            _MESSAGE_SQL + """ WHERE conversation_id = (SELECT conversation_id FROM turns
                                                        WHERE tenant_id = $1 AND id = $2)
                               AND turn_id = $2 ORDER BY id""",
            tenant, turn_id,
        )
        if not rows and await self.get_turn(tenant, turn_id) is None:
            return None
        return [_message(r) for r in rows]

    async def last_candidates(self, tenant: str, conversation_id: str, turn_id: str
                              ) -> list[Candidate]:
        """The candidate tools the conversation's latest turn before `turn_id` offered, in
        the order it offered them (its tool block)."""
        raw = await self.pool.fetchval(
            """SELECT candidates::text FROM turns
               WHERE tenant_id = $1 AND conversation_id = $2 AND id <> $3
               ORDER BY started_at DESC, id DESC LIMIT 1""",
            tenant, conversation_id, turn_id,
        )
        return [] if raw is None else _candidates.decode(raw)

    async def get_turn(self, tenant: str, turn_id: str) -> TurnRow | None:
        """The turn as it stands: status, answer, error, usage."""
        row = await self.pool.fetchrow(_TURN_SQL + " WHERE tenant_id = $1 AND id = $2", tenant,
                                       turn_id)
        return None if row is None else _turn(row)

    async def list_turns(self, tenant: str, conversation_id: str) -> list[TurnRow]:
        rows = await self.pool.fetch(
            _TURN_SQL + " WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY started_at, id",
            tenant, conversation_id,
        )
        return [_turn(r) for r in rows]

    async def turn_result(self, tenant: str, turn_id: str) -> TurnResult | None:
        """A turn as the API reports it."""
        row = await self.pool.fetchrow(
            """SELECT conversation_id, status, model, answer, error::text, usage::text,
                      route::text, takeovers::text,
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
        answer = row["answer"]
        calls = await self.call_records(turn_id)
        usage = msgspec.json.decode(row["usage"] or "{}", type=Usage)
        return TurnResult(
            id=turn_id, conversation_id=row["conversation_id"], status=row["status"],
            pending=await self.waiting_calls(turn_id) if paused else [],
            message=None if answer is None else answer_message(answer, row["reasoning"]),
            tool_calls=calls, usage=usage,
            error=msgspec.json.decode(row["error"], type=Problem) if row["error"] else None,
            usage_by_backend=usage_by_backend(row["model"], usage, calls),
            route=msgspec.json.decode(row["route"], type=Route) if row["route"] else None,
            takeovers=msgspec.json.decode(row["takeovers"], type=list[Takeover]),
        )

    async def call_records(self, turn_id: str) -> list[ToolCallRecord]:
        """The turn's calls as the API reports them, in step and call order."""
        rows = await self.pool.fetch(
            f"""SELECT id, name, arguments::text, step, position, depends_on, {OUTCOME_COLUMNS}
                FROM tool_calls WHERE turn_id = $1 ORDER BY step, position""",
            turn_id,
        )
        return [_call_record(r) for r in rows]

    async def waiting_calls(self, turn_id: str) -> list[PendingCall]:
        """The calls of a turn still without an answer, in the order they were asked for."""
        return await waiting_calls(self.pool, turn_id)

    async def paused_turn(self, tenant: str, conversation_id: str) -> str | None:
        """The conversation's paused turn, if it has one."""
        value = await self.pool.fetchval(
            f"""SELECT id FROM turns WHERE tenant_id = $1 AND conversation_id = $2
                AND status IN {PAUSED_SQL}""",
            tenant, conversation_id,
        )
        return None if value is None else str(value)

    async def waiting_on(self, tenant: str, call_ids: list[str]) -> list[str]:
        """The conversations whose paused turn waits on any of these calls (one, unless call
        ids repeat across conversations)."""
        rows = await self.pool.fetch(
            f"""SELECT DISTINCT t.conversation_id FROM tool_calls c JOIN turns t ON t.id = c.turn_id
                WHERE c.tenant_id = $1 AND c.id = ANY($2::text[]) AND c.status IN {WAITING_SQL}
                  AND c.decision IS NULL AND t.status IN {PAUSED_SQL}
                ORDER BY t.conversation_id""",
            tenant, call_ids,
        )
        return [str(r["conversation_id"]) for r in rows]

    async def turn_trace_id(self, tenant: str, turn_id: str) -> str | None:
        """The turn's trace id; None when the turn is unknown or was not traced."""
        value = await self.pool.fetchval(
            "SELECT trace_id FROM turns WHERE tenant_id = $1 AND id = $2", tenant, turn_id
        )
        return None if value is None else str(value)


async def waiting_calls(db: Db, turn_id: str) -> list[PendingCall]:
    """As `TurnReads.waiting_calls`, on a connection (inside a transaction)."""
    return [pending_call(r) for r in await db.fetch(_WAITING, turn_id)]


def pending_call(row: asyncpg.Record) -> PendingCall:
    arguments = msgspec.json.decode(row["arguments"]) if row["arguments"] else row["raw_arguments"]
    return PendingCall(id=row["id"], name=row["name"], arguments=arguments,
                       waits_for=waits_for(row["status"]), deadline=row["deadline"])


def conversation_of(row: asyncpg.Record) -> Conversation:
    return Conversation(id=row["id"], metadata=msgspec.json.decode(row["metadata"]),
                        created_at=row["created_at"])


def outcome_fields(row: asyncpg.Record) -> dict[str, Any]:
    """The `CallOutcome` fields of a call row selected with OUTCOME_COLUMNS."""
    return {
        "result": msgspec.json.decode(row["result"]) if row["result"] else None,
        "error": row["error"], "error_type": row["error_type"],
        "started_at": row["started_at"], "finished_at": row["finished_at"],
        "attempts": row["attempts"], "truncated": row["truncated"],
        "usage": _usage.decode(row["usage"]) if row["usage"] else None,
    }


def _turn(row: asyncpg.Record) -> TurnRow:
    return TurnRow(
        id=row["id"], conversation_id=row["conversation_id"], status=row["status"],
        mode=row["mode"], model=row["model"], answer=row["answer"],
        error=msgspec.json.decode(row["error"]) if row["error"] else None,
        usage=msgspec.json.decode(row["usage"]), started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _message(row: asyncpg.Record) -> StoredMessage:
    return StoredMessage(
        id=row["id"], turn_id=row["turn_id"], role=row["role"], content=row["content"],
        reasoning=row["reasoning"], tool_call_id=row["tool_call_id"],
        tool_calls=_tool_calls.decode(row["tool_calls"]) if row["tool_calls"] else None,
        created_at=row["created_at"],
    )


def _call_record(row: asyncpg.Record) -> ToolCallRecord:
    return ToolCallRecord(
        id=row["id"], name=row["name"],
        arguments=msgspec.json.decode(row["arguments"]) if row["arguments"] else None,
        step=row["step"], position=row["position"], depends_on=list(row["depends_on"]),
        **outcome_fields(row),
    )
