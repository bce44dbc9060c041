"""What passes between the turn engine and the model: chat messages, tool calls, replies."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from tools.outcome import ModelUsage

Role = Literal["system", "user", "assistant", "tool"]


class FunctionCall(msgspec.Struct, frozen=True):
    name: str
    arguments: str
    """The arguments as the model wrote them: JSON text, parsed only once the call is complete."""


class AssistantToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A tool call inside an assistant message, in the OpenAI wire shape."""

    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One message of a chat request, in the OpenAI wire shape."""

    role: Role
    content: str | None = None
    tool_calls: list[AssistantToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class ToolCallRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A complete tool call from the model; `arguments` is the raw JSON text."""

    id: str
    name: str
    arguments: str


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    """`prompt_tokens_details.cached_tokens` when the server reports it."""

    def __add__(self, other: Usage) -> Usage:
        cached = (
            None
            if self.cached_tokens is None and other.cached_tokens is None
            else (self.cached_tokens or 0) + (other.cached_tokens or 0)
        )
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cached_tokens=cached,
        )

    @classmethod
    def spent_by(cls, usage: ModelUsage) -> Usage:
        """An expert tool's call's tokens (`ModelUsage`, which also names the backend)."""
        return cls(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                   cached_tokens=usage.cached_tokens)

    def __sub__(self, other: Usage) -> Usage:
        cached = (None if self.cached_tokens is None
                  else max(self.cached_tokens - (other.cached_tokens or 0), 0))
        return Usage(prompt_tokens=max(self.prompt_tokens - other.prompt_tokens, 0),
                     completion_tokens=max(self.completion_tokens - other.completion_tokens, 0),
                     cached_tokens=cached)


class ModelReply(msgspec.Struct, frozen=True, kw_only=True):
    """One model call's assembled answer, streamed or not."""

    content: str
    reasoning: str
    tool_calls: list[ToolCallRequest]
    finish_reason: str | None
    usage: Usage
    model: str
    id: str | None = None
    """The completion's id as the server gave it (`chatcmpl-…`)."""


class FunctionSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    parameters: dict[str, Any]
    """A JSON Schema whose root is an object."""


class ToolEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A tool the model may call, in the OpenAI wire shape; the same entry encodes to the same
    bytes, so an unchanged tool block keeps the model server's prefix cache."""

    type: Literal["function"] = "function"
    function: FunctionSpec


class ToolChoiceFunction(msgspec.Struct, frozen=True):
    name: str


ToolChoice = Literal["auto", "required", "none"] | ToolChoiceFunction


class ModelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What the engine asks of the model; the client adds backend defaults and wire details."""

    messages: list[ChatMessage]
    tools: list[ToolEntry] = []
    tool_choice: ToolChoice | None = None
    response_format: dict[str, Any] | None = None
    """{"type": "json_schema", "json_schema": {"name", "schema", "strict"}} for plans."""
    max_completion_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    enable_thinking: bool | None = None


class ContentDelta(msgspec.Struct, frozen=True, tag="content"):
    text: str


class ReasoningDelta(msgspec.Struct, frozen=True, tag="reasoning"):
    text: str


Delta = ContentDelta | ReasoningDelta
