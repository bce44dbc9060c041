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

from planner.messages import ModelReply, ToolCallRequest

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
