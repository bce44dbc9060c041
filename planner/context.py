"""Fit what is sent to a model into its context window. Everything sent counts: the system
prompt, the tool block, earlier turns and this turn's own steps, with room kept for the reply.
What does not fit is cut in a fixed order: earlier turns, oldest first and whole; then the
bodies of this turn's tool results, each cut to one length, the longest first, with a note
saying how much was left out and how to read the rest (`read_result`). Only the request is cut:
every message stays whole in the turn and in Postgres.

Tokens are counted by an estimate calibrated per backend: characters per token, learnt from
the prompt tokens the server reports for what was sent, kept at the most tokens per character
seen, with a margin on top."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import msgspec

from planner.errors import ContextOverflow
from planner.messages import ChatMessage, ToolEntry

MARGIN = 0.10
"""Added to every estimate: a tokenizer's count of new text can exceed what the ratio says."""
FIRST_CHARS_PER_TOKEN = 3.0
"""Before the server has reported a count: fewer characters a token than English prose has,
so the first request errs toward fitting."""
REPLY_TOKENS = 1024
"""Kept free for the reply when the backend does not cap its length."""
KEEP_AT_LEAST = 200
"""Characters of a cut tool result that are always kept."""

_encoder = msgspec.json.Encoder()


class TokenCounter:
    """Tokens of text by characters per token, calibrated from what the server reports."""

    def __init__(self) -> None:
        self.chars_per_token = FIRST_CHARS_PER_TOKEN
        self.calibrated = False

    @property
    def method(self) -> str:
        """How counts are made, for the trace."""
        return "calibrated_estimate" if self.calibrated else "estimate"

    def count(self, chars: int) -> int:
        return math.ceil(chars / self.chars_per_token * (1 + MARGIN))

    def learn(self, chars: int, prompt_tokens: int) -> None:
        """The server counted `prompt_tokens` for a request of `chars` characters; keep the
        densest ratio seen, so counts err toward more tokens."""
        if prompt_tokens <= 0 or chars <= 0:
            return
        seen = chars / prompt_tokens
        self.chars_per_token = seen if not self.calibrated else min(self.chars_per_token, seen)
        self.calibrated = True


class Fitted(msgspec.Struct, frozen=True, kw_only=True):
    messages: list[ChatMessage]
    chars: int
    """The characters of what is sent (messages and tools), as counted."""
    tokens: int
    dropped_messages: int = 0
    cut_results: list[str] = []
    """The tool calls whose results were cut, by call id."""


def fit(
    messages: list[ChatMessage], tools: Sequence[ToolEntry], *, earlier: int, window: int,
    reply_tokens: int, counter: TokenCounter,
) -> Fitted:
    """`messages` (the system prompt first, then `earlier` messages of earlier turns, then
    this turn's) cut to fit `window` with `reply_tokens` kept free."""
    budget = window - reply_tokens
    sizes = [len(_encoder.encode(m)) for m in messages]
    fixed = sum(len(_encoder.encode(t)) for t in tools)

    def tokens(kept: list[int]) -> int:
        return counter.count(fixed + sum(kept))

    if tokens(sizes) <= budget:
        return Fitted(messages=messages, chars=fixed + sum(sizes), tokens=tokens(sizes))
    messages, sizes, dropped = _drop_earlier(messages, sizes, earlier, budget, tokens)
    if tokens(sizes) <= budget:
        return Fitted(messages=messages, chars=fixed + sum(sizes), tokens=tokens(sizes),
                      dropped_messages=dropped)
    messages, cut = _cut_results(messages, sizes, budget, counter, fixed)
    sizes = [len(_encoder.encode(m)) for m in messages]
    if tokens(sizes) > budget:
        raise ContextOverflow(tokens(sizes) + reply_tokens, window)
    return Fitted(messages=messages, chars=fixed + sum(sizes), tokens=tokens(sizes),
                  dropped_messages=dropped, cut_results=cut)


def _drop_earlier(
    messages: list[ChatMessage], sizes: list[int], earlier: int, budget: int,
    count: Callable[[list[int]], int],
) -> tuple[list[ChatMessage], list[int], int]:
    """Earlier turns' exchanges (a user message and what followed it), oldest first, until
    the rest fits or none is left."""
    start, end = 1, 1 + earlier  # after the system prompt
    while start < end and count(sizes) > budget:
        stop = start + 1
        while stop < end and messages[stop].role != "user":
            stop += 1
        messages = [*messages[:start], *messages[stop:]]
        sizes = [*sizes[:start], *sizes[stop:]]
        end -= stop - start
    return messages, sizes, earlier - (end - 1)


def _cut_results(
    messages: list[ChatMessage], sizes: list[int], budget: int, counter: TokenCounter,
    fixed: int,
) -> tuple[list[ChatMessage], list[str]]:
    """Every tool result longer than one length cut to it: the longest length that fits
    (found by bisection), never under KEEP_AT_LEAST."""
    results = [i for i, m in enumerate(messages) if m.role == "tool" and m.content]
    cuttable = set(results)
    others = fixed + sum(s for i, s in enumerate(sizes) if i not in cuttable)
    low, high = KEEP_AT_LEAST, max((len(messages[i].content or "") for i in results),
                                   default=KEEP_AT_LEAST)
    while low < high:
        middle = (low + high + 1) // 2
        if counter.count(others + _cut_size(messages, results, middle)) <= budget:
            low = middle
        else:
            high = middle - 1
    out, cut = list(messages), []
    for i in results:
        content = messages[i].content or ""
        if len(content) > low:
            out[i] = msgspec.structs.replace(messages[i], content=cut_note(content, low,
                                             messages[i].tool_call_id or ""))
            cut.append(messages[i].tool_call_id or "")
    return out, cut


def _cut_size(messages: list[ChatMessage], results: list[int], keep: int) -> int:
    total = 0
    for i in results:
        message = messages[i]
        content = message.content or ""
        if len(content) > keep:
            message = msgspec.structs.replace(
                message, content=cut_note(content, keep, message.tool_call_id or ""))
        total += len(_encoder.encode(message))
    return total


def cut_note(content: str, keep: int, call_id: str) -> str:
    left = len(content) - keep
    return (f"{content[:keep]}\n[switchboard] {left} of {len(content)} characters of this "
            "result were left out to fit the model's context window. The whole result is "
            f'stored: call read_result with {{"call_id": "{call_id}", "offset": {keep}}} to '
            "read on.")
