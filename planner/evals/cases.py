"""Eval cases as a tenant writes them: the requests, the calls each should lead to, and the
results the tools give back when a run answers calls itself."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from tools.errors import FieldError
from tools.validation import pointer

CaseId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
MAX_CASES = 5_000
MAX_TURNS = 16


class ExpectedCall(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A call the turn should make: for each argument, the values that are right. `""` among
    them means the argument may be left out (BFCL's convention)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    arguments: dict[str, list[Any]] = {}


class CaseTurn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    user: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    expected_calls: list[ExpectedCall] = []
    """[] means no tool may be called."""
    order: Literal["any", "sequence", "parallel"] = "any"
    """`any`: the calls as a set; `sequence`: in this order; `parallel`: as a set, and
    dispatched together (one reply, or plan steps none of which waits on another)."""
    answer_contains: list[str] = []
    """Texts the final answer must hold (compared without case)."""


class EvalCase(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: CaseId
    turns: Annotated[list[CaseTurn], msgspec.Meta(min_length=1, max_length=MAX_TURNS)]
    tool_results: dict[str, Any] = {}
    """What a called tool returns when the run answers calls itself, by tool name; a tool not
    named here returns {"ok": true}."""
    tags: list[str] = []


class EvalSetIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    cases: Annotated[list[EvalCase], msgspec.Meta(min_length=1, max_length=MAX_CASES)]


def case_errors(cases: list[EvalCase]) -> list[FieldError]:
    """What the types alone cannot say: repeated case ids, and an expected argument with no
    acceptable value."""
    errors: list[FieldError] = []
    seen: dict[str, int] = {}
    for i, case in enumerate(cases):
        if case.id in seen:
            errors.append(FieldError(pointer("cases", i, "id"),
                                     f"case id {case.id!r} is also item {seen[case.id]}'s; each "
                                     "id may appear once per set", index=i))
        seen.setdefault(case.id, i)
        for t, turn in enumerate(case.turns):
            for c, call in enumerate(turn.expected_calls):
                for name, values in call.arguments.items():
                    if not values:
                        errors.append(FieldError(
                            pointer("cases", i, "turns", t, "expected_calls", c, "arguments",
                                    name),
                            "lists no acceptable value: give at least one (\"\" among them "
                            "means the argument may be left out)", index=i))
    return errors
