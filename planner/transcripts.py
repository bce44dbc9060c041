"""A conversation's transcript digest: what a stateless client shows of a conversation (the
user's messages and the assistant's answers, in order), hashed. A client that sends the whole
history with every request (as OpenAI's API expects) is matched to the conversation it
continues by it. Computed in Postgres when a turn ends (`DIGEST_SQL`) and in Python from a
request (`transcript_digest`), the same way."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

NOTE_PREFIX = "[switchboard]"
"""The engine's own notes to the model, written as user messages: not the user's words."""

DIGEST_SQL = f"""
    UPDATE conversations SET transcript_digest = (
        SELECT encode(sha256(convert_to(
                   coalesce(string_agg(m.role || chr(30) || m.content, chr(31) ORDER BY m.id),
                            ''), 'UTF8')), 'hex')
        FROM messages m
        WHERE m.conversation_id = $1 AND m.role IN ('user', 'assistant')
          AND m.content IS NOT NULL AND m.content <> '' AND m.tool_calls IS NULL
          AND NOT (m.role = 'user' AND starts_with(m.content, '{NOTE_PREFIX}')))
    WHERE id = $1"""


def transcript_digest(messages: Iterable[tuple[str, str | None]]) -> str:
    """The digest of (role, content) pairs as `DIGEST_SQL` computes it."""
    kept = [f"{role}\x1e{content}" for role, content in messages
            if role in ("user", "assistant") and content
            and not (role == "user" and content.startswith(NOTE_PREFIX))]
    return hashlib.sha256("\x1f".join(kept).encode()).hexdigest()
