"""SQL for conversations, turns, messages and tool calls. Functions take a pool or connection."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from planner._db import Db, jsonb_text, new_id
from planner.errors import ConversationNotFound, TurnConflict
from planner.messages import AssistantToolCall, ChatMessage, Usage
from planner.results import waiting_calls
from tools.outcome import CallOutcome
from tools.storable import clean_text

_tool_calls = msgspec.json.Decoder(list[AssistantToolCall])


class Conversation(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    metadata: dict[str, Any]
    created_at: datetime


class StoredMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: int
    turn_id: str
    role: str
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[AssistantToolCall] | None = None
    tool_call_id: str | None = None
    created_at: datetime

    def chat(self) -> ChatMessage:
        return ChatMessage(
            role=self.role,  # type: ignore[arg-type]
            content=self.content,
            tool_calls=self.tool_calls,
            tool_call_id=self.tool_call_id,
        )


async def create_conversation(db: Db, tenant: str, metadata: dict[str, Any]) -> Conversation:
    row = await db.fetchrow(
        """INSERT INTO conversations (tenant_id, id, metadata) VALUES ($1, $2, $3::jsonb)
           RETURNING id, metadata, created_at""",
        tenant,
        new_id("conv"),
        jsonb_text(metadata),
    )
    return _conversation(row)


async def get_conversation(db: Db, tenant: str, conversation_id: str) -> Conversation:
    row = await db.fetchrow(
        "SELECT id, metadata, created_at FROM conversations WHERE tenant_id = $1 AND id = $2",
        tenant,
        conversation_id,
    )
    if row is None:
        raise ConversationNotFound(conversation_id)
    return _conversation(row)


def _conversation(row: asyncpg.Record) -> Conversation:
    return Conversation(
        id=row["id"], metadata=msgspec.json.decode(row["metadata"]), created_at=row["created_at"]
    )


async def import_history(
    db: Db, tenant: str, conversation_id: str, history: list[ChatMessage], *,
    model: str, owner: str,
) -> None:
    """Earlier messages a client already had become completed turns of mode `imported`, one
    per exchange (a user message and the replies after it), so history budgets drop the oldest
    exchange whole."""
    for exchange in exchanges(history):
        turn_id = new_id("turn")
        answers = [m.content for m in exchange if m.role == "assistant" and m.content]
        await db.execute(
            """INSERT INTO turns (tenant_id, id, conversation_id, status, mode, model, request,
                                  answer, owner, finished_at)
               VALUES ($1, $2, $3, 'completed', 'imported', $4, '{"imported": true}', $5, $6,
                       now())""",
            tenant, turn_id, conversation_id, model, clean_text(answers[-1] if answers else None),
            owner,
        )
        await add_messages(db, tenant, conversation_id, turn_id, exchange)


def exchanges(history: list[ChatMessage]) -> list[list[ChatMessage]]:
    """Messages split at each user message: an exchange is a user message and the replies
    after it."""
    found: list[list[ChatMessage]] = []
    for message in history:
        if message.role == "user" or not found:
            found.append([])
        found[-1].append(message)
    return found


async def list_messages(db: Db, tenant: str, conversation_id: str) -> list[StoredMessage]:
    rows = await db.fetch(
        """SELECT id, turn_id, role, content, reasoning, tool_calls::text, tool_call_id, created_at
           FROM messages WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY id""",
        tenant,
        conversation_id,
    )
    return [
        StoredMessage(
            id=r["id"],
            turn_id=r["turn_id"],
            role=r["role"],
            content=r["content"],
            reasoning=r["reasoning"],
            tool_calls=_tool_calls.decode(r["tool_calls"]) if r["tool_calls"] else None,
            tool_call_id=r["tool_call_id"],
            created_at=r["created_at"],
        )
        for r in rows
    ]


async def begin_turn(
    db: asyncpg.Pool,
    tenant: str,
    conversation_id: str,
    *,
    mode: str,
    model: str,
    request: dict[str, Any],
    owner: str,
    message: str,
) -> str:
    """Insert the running turn and its user message, in one statement; one active turn per
    conversation."""
    turn_id = new_id("turn")
    try:
        started = await db.fetchval(
            f"""WITH conversation AS (
                   SELECT id FROM conversations WHERE tenant_id = $1 AND id = $3
               ), turn AS (
                   INSERT INTO turns (tenant_id, id, conversation_id, status, mode, model,
                                      request, owner)
                   SELECT $1, $2, id, 'running', $4, $5, $6::jsonb, $7 FROM conversation
                   RETURNING id
               ), message AS (
                   INSERT INTO messages ({_MESSAGE_COLUMNS})
                   SELECT $1, $3, id, 'user', $8, NULL, NULL, NULL FROM turn
               )
               SELECT id FROM turn""",
            tenant,
            turn_id,
            conversation_id,
            mode,
            model,
            jsonb_text(request),
            owner,
            clean_text(message),
        )
    except asyncpg.UniqueViolationError as exc:
        active = await db.fetchrow(
            """SELECT id, status FROM turns WHERE conversation_id = $1
               AND status IN ('running', 'awaiting_approval', 'requires_action')""",
            conversation_id,
        )
        turn, status = (active["id"], active["status"]) if active else ("?", "running")
        described = [
            f"{'approval of' if w.waits_for == 'approval' else 'the output of'} "
            f"call {w.id!r} ({w.name})"
            for w in await waiting_calls(db, turn)
        ]
        raise TurnConflict(conversation_id, turn, status, described) from exc
    if started is None:
        raise ConversationNotFound(conversation_id)
    return turn_id


async def add_messages(
    db: Db, tenant: str, conversation_id: str, turn_id: str, messages: list[ChatMessage],
    reasoning: str | None = None,
) -> None:
    """Append messages in order, in one round trip (`reasoning` goes with the first)."""
    rows = [
        (tenant, conversation_id, turn_id, m.role, clean_text(m.content),
         clean_text(reasoning or None) if i == 0 else None,
         jsonb_text(m.tool_calls) if m.tool_calls else None, m.tool_call_id)
        for i, m in enumerate(messages)
    ]
    await db.executemany(
        """INSERT INTO messages (tenant_id, conversation_id, turn_id, role, content, reasoning,
                                 tool_calls, tool_call_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)""",
        rows,
    )


async def set_turn_json(db: Db, turn_id: str, column: str, value: Any) -> None:
    assert column in ("candidates", "plans", "usage")
    await db.execute(
        f"UPDATE turns SET {column} = $2::jsonb, heartbeat_at = now() WHERE id = $1",
        turn_id,
        jsonb_text(value),
    )


async def set_turn_trace(db: Db, turn_id: str, trace_id: str, traceparent: str) -> None:
    await db.execute(
        "UPDATE turns SET trace_id = $2, traceparent = $3 WHERE id = $1",
        turn_id, trace_id, traceparent,
    )


async def turn_trace_id(db: Db, tenant: str, turn_id: str) -> str | None:
    """The turn's trace id; None when the turn is unknown or was not traced."""
    value = await db.fetchval(
        "SELECT trace_id FROM turns WHERE tenant_id = $1 AND id = $2", tenant, turn_id
    )
    return None if value is None else str(value)


_FINISH_TURN = """UPDATE turns SET status = $2, answer = $3, error = $4::jsonb,
                                    usage = $5::jsonb, finished_at = now()
                   WHERE id = $1"""


async def finish_turn(
    db: Db,
    turn_id: str,
    *,
    status: str,
    answer: str | None,
    error: dict[str, Any] | None,
    usage: Usage,
) -> None:
    await db.execute(
        _FINISH_TURN,
        turn_id,
        status,
        clean_text(answer),
        jsonb_text(error) if error else None,
        jsonb_text(usage),
    )


async def complete_turn(
    db: Db,
    tenant: str,
    conversation_id: str,
    turn_id: str,
    *,
    reply: ChatMessage,
    reasoning: str | None,
    usage: Usage,
) -> None:
    """The model's answer and the turn's end, in one statement: both or neither."""
    await db.execute(
        f"""WITH answer AS (
               INSERT INTO messages ({_MESSAGE_COLUMNS})
               VALUES ($6, $7, $1, 'assistant', $3, $8, NULL, NULL))
            {_FINISH_TURN}""",
        turn_id,
        "completed",
        clean_text(reply.content),
        None,
        jsonb_text(usage),
        tenant,
        conversation_id,
        clean_text(reasoning or None),
    )


class StartedCall(msgspec.Struct, frozen=True, kw_only=True):
    """A tool call's row as it starts: written before the call is made."""

    id: str
    step: int
    position: int
    name: str
    namespace: str | None
    version: int | None
    raw_arguments: str
    arguments: Any
    """The parsed arguments, or None when they are not (yet) a JSON value."""
    depends_on: list[str] = []
    side_effects: bool = True
    """Whether making the call may change something outside (its tool is not marked
    idempotent); a call that will not be made (unknown tool, built-in search) has none."""


class FinishedCall(CallOutcome, frozen=True, kw_only=True):
    """How a tool call ended, to be written to its row."""

    id: str


_MESSAGE_COLUMNS = """tenant_id, conversation_id, turn_id, role, content, reasoning, tool_calls,
                      tool_call_id"""
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
                  truncated = f.truncated, started_at = f.started_at, finished_at = f.finished_at
           FROM jsonb_to_recordset($2::jsonb)
                AS f(id text, status text, result jsonb, error text, error_type text,
                     attempts int, truncated bool, started_at timestamptz,
                     finished_at timestamptz)
           WHERE t.turn_id = $1 AND t.id = f.id"""


def _started_rows(calls: list[StartedCall]) -> str:
    return jsonb_text([
        {"id": c.id, "step": c.step, "position": c.position, "name": c.name,
         "namespace": c.namespace, "version": c.version, "arguments": c.arguments,
         "raw": c.raw_arguments, "depends_on": c.depends_on}
        for c in calls
    ])


def _finished_rows(calls: list[FinishedCall]) -> str:
    return jsonb_text([
        {"status": "succeeded" if c.ok else "failed", **msgspec.structs.asdict(c)}
        for c in calls
    ])


async def start_tool_calls(
    db: Db, tenant: str, conversation_id: str, turn_id: str, calls: list[StartedCall]
) -> None:
    """Write calls as running, in one round trip, before any of them is made."""
    await db.execute(_START_CALLS, tenant, conversation_id, turn_id, _started_rows(calls))


async def start_reply(
    db: Db,
    tenant: str,
    conversation_id: str,
    turn_id: str,
    message: ChatMessage,
    reasoning: str | None,
    calls: list[StartedCall],
) -> None:
    """The model's reply and the running rows of the calls it asks for, in one statement."""
    await db.execute(
        f"""WITH reply AS (
               INSERT INTO messages ({_MESSAGE_COLUMNS})
               VALUES ($1, $2, $3, $5, $6, $7, $8::jsonb, NULL))
            {_START_CALLS}""",
        tenant,
        conversation_id,
        turn_id,
        _started_rows(calls),
        message.role,
        clean_text(message.content),
        clean_text(reasoning or None),
        jsonb_text(message.tool_calls) if message.tool_calls else None,
    )


async def finish_tool_calls(db: Db, turn_id: str, calls: list[FinishedCall]) -> None:
    """How calls ended, in one round trip."""
    await db.execute(_FINISH_CALLS, turn_id, _finished_rows(calls))


async def finish_and_observe(
    db: Db,
    tenant: str,
    conversation_id: str,
    turn_id: str,
    calls: list[FinishedCall],
    messages: list[ChatMessage],
) -> None:
    """The ends of a batch's calls not yet written and every tool message of the batch,
    appended in order, in one statement."""
    await db.execute(
        f"""WITH finished AS ({_FINISH_CALLS})
            INSERT INTO messages ({_MESSAGE_COLUMNS})
            SELECT $3, $4, $1, m.value->>'role', m.value->>'content', NULL, NULL,
                   m.value->>'tool_call_id'
            FROM jsonb_array_elements($5::jsonb) WITH ORDINALITY AS m(value, n)
            ORDER BY m.n""",
        turn_id,
        _finished_rows(calls),
        tenant,
        conversation_id,
        jsonb_text([{"role": m.role, "content": m.content, "tool_call_id": m.tool_call_id}
                    for m in messages]),
    )


async def heartbeat(db: Db, owner: str, turn_ids: Collection[str]) -> None:
    """Renew the lease of the turns `owner` is running now: a turn it wrote but is not running
    (its request failed between the two) runs out of lease and is marked interrupted."""
    if not turn_ids:
        return
    await db.execute(
        """UPDATE turns SET heartbeat_at = now()
           WHERE owner = $1 AND status = 'running' AND id = ANY($2::text[])""",
        owner, list(turn_ids),
    )


async def interrupt_abandoned(db: Db, lease_s: float, *, owner: str | None = None) -> list[str]:
    """Mark running turns interrupted: those of `owner`, or any whose lease ran out."""
    rows = await db.fetch(
        """UPDATE turns SET status = 'interrupted', finished_at = now(),
                  error = jsonb_build_object('type', 'interrupted', 'message',
                      'the process running this turn stopped before it finished')
           WHERE status = 'running'
             AND (owner = $1 OR heartbeat_at < now() - make_interval(secs => $2))
           RETURNING id""",
        owner,
        lease_s,
    )
    return [r["id"] for r in rows]


