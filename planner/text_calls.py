"""Tool calls and thinking a model wrote into its text, read out of it. A server started without
a tool-call parser or a reasoning parser (SGLang's `--tool-call-parser`, `--reasoning-parser`)
passes them on as plain text: Qwen and Hermes-style `<tool_call>{"name": ..., "arguments":
{...}}</tool_call>` blocks, and `<think>...</think>` (or only the closing tag, when the chat
template opened it). A backend that says so (`text_tool_calls`, `inline_thinking`) has them read
back into calls and reasoning here; the parsers at the source are the better fix."""

from __future__ import annotations

import json
import re
import secrets

import msgspec

from planner.messages import ContentDelta, Delta, ModelReply, ReasoningDelta, ToolCallRequest

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_THINK = re.compile(r"^\s*(?:<think>)?(.*?)</think>\s*", re.S)
_NAME = re.compile(r'"name"\s*:\s*"([^"]{1,200})"')
TOOL_CALL_FLAGS = "--tool-call-parser (qwen for Qwen2.5 and Qwen3, hermes for Hermes-style models)"
REASONING_FLAGS = "--reasoning-parser (qwen3, deepseek-r1, ...)"


def read_text(reply: ModelReply, *, tool_calls: bool, thinking: bool) -> ModelReply:
    """The reply with the thinking and tool calls its text holds moved where they belong."""
    content, reasoning, calls = reply.content, reply.reasoning, list(reply.tool_calls)
    if thinking:
        found = _THINK.match(content)
        if found is not None:
            reasoning = (reasoning + "\n" + found[1].strip()).strip()
            content = content[found.end():]
    if tool_calls and not calls and "<tool_call>" in content:
        calls = [_call(block) for block in _TOOL_CALL.findall(content)]
        content = _TOOL_CALL.sub("", content).strip()
    if (content, reasoning, calls) == (reply.content, reply.reasoning, reply.tool_calls):
        return reply
    finish = "tool_calls" if calls and not reply.tool_calls else reply.finish_reason
    return msgspec.structs.replace(reply, content=content, reasoning=reasoning, tool_calls=calls,
                                   finish_reason=finish)


def _call(block: str) -> ToolCallRequest:
    """A call from a block's JSON; a block that is not JSON keeps its text as the arguments,
    so the engine tells the model what is wrong with them."""
    call_id = f"call_text_{secrets.token_hex(6)}"
    try:
        parsed = json.loads(block)
    except json.JSONDecodeError:
        named = _NAME.search(block)
        return ToolCallRequest(id=call_id, name=named[1] if named else "", arguments=block)
    if not isinstance(parsed, dict):
        return ToolCallRequest(id=call_id, name="", arguments=block)
    arguments = parsed.get("arguments", parsed.get("parameters", {}))
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCallRequest(id=call_id, name=str(parsed.get("name", "")), arguments=text)


def written_as_text(reply: ModelReply) -> tuple[bool, bool]:
    """Whether the reply's text holds tool calls, and thinking, that a parser would have read."""
    return ("<tool_call>" in reply.content and not reply.tool_calls,
            "</think>" in reply.content)


_OPEN_CALL, _CLOSE_CALL = "<tool_call>", "</tool_call>"
_OPEN_THINK, _CLOSE_THINK = "<think>", "</think>"


class StreamedText:
    """A streamed reply's text as its client should see it, for a backend whose text may hold
    tool calls or thinking: a `<tool_call>` block is held back (it becomes a call once the
    reply is whole, `read_text`) and `<think>...</think>` at the start comes out as reasoning.
    A tag cut across two pieces is held until the next one says what it is. Thinking whose
    opening tag the chat template wrote (only `</think>` in the text) cannot be told from an
    answer while it streams; the whole reply still reads it out."""

    def __init__(self, *, tool_calls: bool, thinking: bool) -> None:
        self.tool_calls, self.thinking = tool_calls, thinking
        self._held = ""
        self._inside: str | None = None  # the closing tag awaited
        self._started = False

    def feed(self, text: str) -> list[Delta]:
        """The deltas a client may see now, from the next piece of the text."""
        self._held += text
        out: list[Delta] = []
        while self._step(out):
            pass
        return out

    def flush(self) -> list[Delta]:
        """What is still held once the reply is complete (text, never a call's)."""
        held, self._held = self._held, ""
        if not held or self._inside == _CLOSE_CALL:
            return []
        return [ReasoningDelta(held) if self._inside == _CLOSE_THINK else ContentDelta(held)]

    def _step(self, out: list[Delta]) -> bool:
        """Move what can be told apart from `_held` to `out`; whether to look again."""
        if self._inside is not None:
            return self._close(out)
        if not self._started and self.thinking:
            lead = self._held.lstrip()
            if _OPEN_THINK.startswith(lead):
                return False  # not enough yet to know whether the reply opens with thinking
            self._started = True
            if lead.startswith(_OPEN_THINK):
                self._held, self._inside = lead[len(_OPEN_THINK):], _CLOSE_THINK
                return True
        self._started = True
        at = self._held.find(_OPEN_CALL) if self.tool_calls else -1
        if at >= 0:
            _emit(out, ContentDelta(self._held[:at]))
            self._held, self._inside = self._held[at + len(_OPEN_CALL):], _CLOSE_CALL
            return True
        keep = _partial_tag(self._held, _OPEN_CALL) if self.tool_calls else 0
        _emit(out, ContentDelta(self._held[:len(self._held) - keep]))
        self._held = self._held[len(self._held) - keep:]
        return False

    def _close(self, out: list[Delta]) -> bool:
        closing = self._inside
        assert closing is not None
        at = self._held.find(closing)
        if at < 0:
            keep = _partial_tag(self._held, closing)
            if closing == _CLOSE_THINK:
                _emit(out, ReasoningDelta(self._held[:len(self._held) - keep]))
            self._held = self._held[len(self._held) - keep:]
            return False
        if closing == _CLOSE_THINK:
            _emit(out, ReasoningDelta(self._held[:at]))
        self._held, self._inside = self._held[at + len(closing):], None
        return True


def _partial_tag(text: str, tag: str) -> int:
    """How many characters at the end of `text` could be the start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


def _emit(out: list[Delta], delta: Delta) -> None:
    if delta.text:
        out.append(delta)
