"""History within a token budget, shortened deterministically: tool outputs first, then the
oldest turns."""

from __future__ import annotations

from planner.messages import AssistantToolCall, ChatMessage, FunctionCall
from planner.prompt import SHORTENED, close_dangling_calls, estimate_tokens, fit_history


def turn(n: int, tool_output: str) -> tuple[list[ChatMessage], list[str]]:
    call = AssistantToolCall(id=f"c{n}", function=FunctionCall("lookup", "{}"))
    messages = [
        ChatMessage(role="user", content=f"question {n}"),
        ChatMessage(role="assistant", content="", tool_calls=[call]),
        ChatMessage(role="tool", tool_call_id=f"c{n}", content=tool_output),
        ChatMessage(role="assistant", content=f"answer {n}"),
    ]
    return messages, [f"t{n}"] * len(messages)


def history(*outputs: str) -> tuple[list[ChatMessage], list[str]]:
    messages: list[ChatMessage] = []
    ids: list[str] = []
    for n, output in enumerate(outputs):
        m, t = turn(n, output)
        messages += m
        ids += t
    return messages, ids


def test_history_within_budget_is_unchanged() -> None:
    messages, ids = history("x" * 100, "y" * 100)
    assert fit_history(messages, ids, 10_000, 50) == messages


def test_the_oldest_tool_outputs_are_shortened_first() -> None:
    messages, ids = history("a" * 4000, "b" * 4000)
    budget = estimate_tokens(messages) - 500
    fitted = fit_history(messages, ids, budget, keep_tool_chars=100)
    assert fitted[2].content == "a" * 100 + SHORTENED
    assert fitted[6].content == "b" * 4000
    assert [m.content for m in fitted if m.role == "user"] == ["question 0", "question 1"]


def test_then_the_oldest_turns_are_dropped_whole() -> None:
    messages, ids = history("a" * 4000, "b" * 4000, "c" * 50)
    budget = estimate_tokens(messages[8:]) + 10
    fitted = fit_history(messages, ids, budget, keep_tool_chars=100)
    assert [m.content for m in fitted if m.role == "user"] == ["question 2"]
    assert fitted == messages[8:]


def test_shortening_is_deterministic() -> None:
    messages, ids = history("a" * 4000, "b" * 4000, "c" * 4000)
    budget = estimate_tokens(messages) // 2
    assert fit_history(messages, ids, budget, 100) == fit_history(messages, ids, budget, 100)


def test_a_call_without_a_result_gets_one_so_history_stays_valid() -> None:
    call = AssistantToolCall(id="lost", function=FunctionCall("lookup", "{}"))
    messages = [
        ChatMessage(role="user", content="q"),
        ChatMessage(role="assistant", content="", tool_calls=[call]),
    ]
    closed = close_dangling_calls(messages)
    assert closed[2] == ChatMessage(
        role="tool",
        tool_call_id="lost",
        content='{"error": "this call was interrupted and never finished"}',
    )
