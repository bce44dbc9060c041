"""Scripted model profiles that misbehave as real models do, one behaviour each. Each is a
responder: it decides from the request alone (the turn's messages so far), as a model does."""

from __future__ import annotations

import json
from typing import Any

from tests.scripted_model import Responder, ScriptedReply, Step


def _results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool messages of the current turn (after its last user message)."""
    messages = body.get("messages") or []
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"
                     and not str(m.get("content", "")).startswith("[switchboard]")), default=0)
    return [m for m in messages[last_user:] if m.get("role") == "tool"]


def _error(message: dict[str, Any]) -> str:
    return str(json.loads(message["content"]).get("error", ""))


def typo_then_corrected() -> Responder:
    """Calls `get_wether`; once told the nearest name, calls that; then answers."""

    def respond(body: dict[str, Any]) -> Step:
        done = _results(body)
        if not done:
            return ScriptedReply(tool_calls=[("get_wether", {"city": "Oslo"})])
        if len(done) == 1:
            return ScriptedReply(tool_calls=[("get_weather", {"city": "Oslo"})])
        return ScriptedReply(content="7 degrees in Oslo.")

    return respond


def malformed_forever(arguments: str = '{"city": ') -> Responder:
    """Writes the same broken arguments every time it calls, until told the call is given up."""

    def respond(body: dict[str, Any]) -> Step:
        done = _results(body)
        if done and "not made again" in _error(done[-1]):
            return ScriptedReply(content="I could not get the weather.")
        return ScriptedReply(tool_calls=[("get_weather", arguments)])

    return respond


def loops() -> Responder:
    """Makes the same call in every reply, whatever comes back."""

    def respond(body: dict[str, Any]) -> Step:
        if body.get("tool_choice") == "none":
            return ScriptedReply(content="It is 7 degrees in Oslo.")
        return ScriptedReply(tool_calls=[("get_weather", {"city": "Oslo"})])

    return respond


def calls_as_text(thinking: bool = False) -> Responder:
    """Writes its call as a Hermes/Qwen `<tool_call>` block in the text (a server without a
    tool-call parser), and its thinking inline when `thinking`."""

    def respond(body: dict[str, Any]) -> Step:
        think = "<think>The user wants the weather.</think>\n" if thinking else ""
        if not _results(body):
            block = json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}})
            return ScriptedReply(content=f"{think}<tool_call>\n{block}\n</tool_call>")
        return ScriptedReply(content=f"{think}It is 7 degrees in Oslo.")

    return respond


def empty_answer(times: int) -> Responder:
    """Calls one tool, then answers with nothing `times` times before answering."""
    answered = {"empty": 0}

    def respond(body: dict[str, Any]) -> Step:
        if not _results(body):
            return ScriptedReply(tool_calls=[("get_weather", {"city": "Oslo"})])
        if answered["empty"] < times:
            answered["empty"] += 1
            return ScriptedReply(content="")
        return ScriptedReply(content="7 degrees in Oslo.")

    return respond
