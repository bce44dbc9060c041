"""A turn's content as its spans carry it: messages, replies, offered tools, retrieved tools."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

from planner.messages import ChatMessage, ModelReply, ToolEntry

TEXT = "text/plain"
JSON = "application/json"


class Document(msgspec.Struct, frozen=True, kw_only=True):
    """One of retrieval's picks, as the GenAI conventions' `gen_ai.retrieval.documents` list
    it: a tool, its relevance (None when retrieval did not rank) and what was matched (its
    description)."""

    id: str
    score: float | None
    content: str | None = None


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


def _encoded(value: Any) -> str:
    """JSON of plain values, as fast as it gets: what every model call's span carries, content
    capture or not, is made with this (json.dumps took 9 µs of a step for ten tool names)."""
    return _encoder.encode(value).decode()


_encoder = msgspec.json.Encoder()


def messages_json(messages: Sequence[ChatMessage]) -> str:
    return as_json([_message_parts(m) for m in messages])


def _message_parts(message: ChatMessage) -> dict[str, Any]:
    """A chat message in the GenAI conventions' shape: a role and typed parts."""
    parts: list[dict[str, Any]] = []
    if message.role == "tool":
        parts.append(
            {"type": "tool_call_response", "id": message.tool_call_id, "response": message.content}
        )
    elif message.content:
        parts.append({"type": "text", "content": message.content})
    for call in message.tool_calls or []:
        parts.append(
            {
                "type": "tool_call",
                "id": call.id,
                "name": call.function.name,
                "arguments": call.function.arguments,
            }
        )
    return {"role": message.role, "parts": parts}


def reply_json(reply: ModelReply) -> str:
    parts: list[dict[str, Any]] = (
        [{"type": "text", "content": reply.content}] if reply.content else []
    )
    parts += [
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
        for c in reply.tool_calls
    ]
    return as_json([{"role": "assistant", "parts": parts, "finish_reason": reply.finish_reason}])


def tool_definitions(tools: Sequence[ToolEntry], *, whole: bool) -> str:
    """`gen_ai.tool.definitions`: each offered tool's type and name, and with `whole` its
    description and parameters too (the conventions advise against the optional properties
    by default: a turn offers dozens of schemas on every model call)."""
    if whole:
        return _encoded([{"type": t.type, "name": t.function.name,
                          "description": t.function.description,
                          "parameters": t.function.parameters} for t in tools])
    return _encoded([{"type": t.type, "name": t.function.name} for t in tools])


def documents_json(documents: Sequence[Document], *, content: bool) -> str:
    return _encoded([_document(d, content=content) for d in documents])


def invocation_parameters(settings: dict[str, Any]) -> str:
    return _encoded(settings)


def _document(document: Document, *, content: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {"id": document.id}
    if document.score is not None:
        shown["score"] = document.score
    if content and document.content is not None:
        shown["content"] = document.content
    return shown
