"""Score the calls a turn made against the calls its case expects, as BFCL's AST checker does:
the function name must match, every required argument be present, each value be among the
acceptable ones (strings compared without case, spaces and punctuation; an int is accepted for
a number; a value of another type than the schema's is accepted only when the case's own
answers have that type), no argument be given that the case does not name, and parallel
calls match as a set. Every failed check is kept as a reason that names the call, the
argument, what the model gave and what would have been right."""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from planner.evals.cases import CaseTurn, ExpectedCall

ReasonKind = Literal[
    "missing_call", "extra_call", "order", "missing_argument", "unexpected_argument",
    "wrong_type", "wrong_value", "not_parallel", "answer", "turn_failed",
]

_PUNCTUATION = re.compile(r"[ ,./\-_*^]")


class Reason(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One check a case failed."""

    kind: ReasonKind
    detail: str
    call: str | None = None
    argument: str | None = None
    got: Any = None
    acceptable: list[Any] | None = None


class MadeCall(msgspec.Struct, frozen=True, kw_only=True):
    """A call the model made, as the scorer sees it."""

    name: str
    arguments: Any


class TurnScore(msgspec.Struct, frozen=True, kw_only=True):
    passed: bool
    expected: int
    matched: int
    """Expected calls the turn made exactly."""
    reasons: list[Reason]


def standard(text: str) -> str:
    """A string as BFCL compares it: without spaces and `,./-_*^`, lower case, `'` as `"`."""
    return _PUNCTUATION.sub("", text).lower().replace("'", '"')


def same_value(value: Any, want: Any) -> bool:
    """Whether `value` is the acceptable value `want`. Inside an object, each key lists its
    acceptable values (BFCL's convention), and `""` among them lets the key be left out."""
    if isinstance(want, dict):
        return isinstance(value, dict) and _same_object(value, want)
    if isinstance(want, list):
        return (isinstance(value, list) and len(value) == len(want)
                and all(same_value(v, w) for v, w in zip(value, want, strict=True)))
    if isinstance(want, str):
        return isinstance(value, str) and standard(value) == standard(want)
    if isinstance(want, bool) or isinstance(value, bool):
        return value is want
    if isinstance(want, int | float):
        return isinstance(value, int | float) and value == want
    return bool(value == want)


def _same_object(value: dict[str, Any], want: dict[str, Any]) -> bool:
    for key, given in value.items():
        if key not in want or not any(same_value(given, w) for w in _alternatives(want[key])):
            return False
    return all(key in value or "" in _alternatives(alts) for key, alts in want.items())


def _alternatives(want: Any) -> list[Any]:
    return want if isinstance(want, list) else [want]


_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,),
}


def _type_problem(value: Any, schema: Any) -> str | None:
    """What is wrong with the value's JSON type, as BFCL checks it (5.0 is not an integer)."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    if not isinstance(kind, str) or kind not in _TYPES:
        return None
    fits = isinstance(value, _TYPES[kind]) and (kind == "boolean" or not isinstance(value, bool))
    return None if fits else f"expected {kind}, got {type(value).__name__}"


def call_reasons(made: MadeCall, want: ExpectedCall, parameters: Any) -> list[Reason]:
    """Every way `made` is not `want`, given the tool's parameters schema (None: unknown)."""
    schema = parameters if isinstance(parameters, dict) else {}
    found = schema.get("properties")
    properties: dict[str, Any] = found if isinstance(found, dict) else {}
    required = [r for r in schema.get("required", []) if isinstance(r, str)]
    args = made.arguments if isinstance(made.arguments, dict) else {}
    name = want.name
    reasons = [Reason(kind="missing_argument", call=name, argument=r,
                      detail=f"{name}: required argument {r!r} is missing")
               for r in required if r not in args]
    for key, value in args.items():
        reasons.extend(_argument_reasons(name, key, value, want, properties))
    reasons += [Reason(kind="missing_argument", call=name, argument=key, acceptable=alts,
                       detail=f"{name}: argument {key!r} is missing (acceptable: {alts!r})")
                for key, alts in want.arguments.items()
                if key not in args and key not in required and "" not in alts]
    return reasons


def _argument_reasons(
    name: str, key: str, value: Any, want: ExpectedCall, properties: dict[str, Any]
) -> list[Reason]:
    if key not in want.arguments:
        where = "the case" if key in properties else "the tool's parameters"
        return [Reason(kind="unexpected_argument", call=name, argument=key, got=value,
                       detail=f"{name}: argument {key!r} is not in {where}")]
    acceptable = want.arguments[key]
    problem = _type_problem(value, properties.get(key))
    # As BFCL does: a value of the type the case's own answers have is taken (its answers may
    # hold a string where the schema says array: a variable's name).
    if problem is not None and not any(type(value) is type(w) for w in acceptable if w != ""):
        return [Reason(kind="wrong_type", call=name, argument=key, got=value,
                       detail=f"{name}: argument {key!r}: {problem}")]
    if any(same_value(value, w) for w in acceptable):
        return []
    return [Reason(kind="wrong_value", call=name, argument=key, got=value, acceptable=acceptable,
                   detail=f"{name}: argument {key!r} is {value!r}; acceptable: {acceptable!r}")]


def score_turn(
    turn: CaseTurn, made: list[MadeCall], parameters: dict[str, Any], answer: str | None
) -> TurnScore:
    """How one turn did: its calls matched against the expected ones (as a set, or in order
    for `order: "sequence"`), then its answer. `parameters` holds each tool's schema."""
    expected = turn.expected_calls
    pairs = _pairs_in_order(made, expected, parameters) if turn.order == "sequence" else \
        _pairs_as_set(made, expected, parameters)
    reasons = _unmatched_reasons(made, expected, pairs, parameters)
    text = (answer or "").casefold()
    reasons += [Reason(kind="answer", detail=f"the answer does not contain {want!r}")
                for want in turn.answer_contains if want.casefold() not in text]
    return TurnScore(passed=not reasons, expected=len(expected), matched=len(pairs),
                     reasons=reasons)


def _fits(made: MadeCall, want: ExpectedCall, parameters: dict[str, Any]) -> bool:
    return made.name == want.name and not call_reasons(made, want, parameters.get(want.name))


def _pairs_in_order(
    made: list[MadeCall], expected: list[ExpectedCall], parameters: dict[str, Any]
) -> dict[int, int]:
    """Expected call i matched by made call i, where it is."""
    return {i: i for i, (m, w) in enumerate(zip(made, expected, strict=False))
            if _fits(m, w, parameters)}


def _pairs_as_set(
    made: list[MadeCall], expected: list[ExpectedCall], parameters: dict[str, Any]
) -> dict[int, int]:
    """The largest matching of expected calls to made calls that fit them exactly (augmenting
    paths: a made call that fits two expected ones goes where it leaves the most matched)."""
    fits = [[j for j, m in enumerate(made) if _fits(m, w, parameters)] for w in expected]
    owner: dict[int, int] = {}  # made index -> expected index

    def assign(i: int, seen: set[int]) -> bool:
        for j in fits[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or assign(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(expected)):
        assign(i, set())
    return {i: j for j, i in owner.items()}


def _unmatched_reasons(
    made: list[MadeCall], expected: list[ExpectedCall], pairs: dict[int, int],
    parameters: dict[str, Any],
) -> list[Reason]:
    """Why each expected call was not matched (set against the closest made call of its name
    that is left, else missing), and each made call that matched nothing (extra)."""
    used = set(pairs.values())
    reasons: list[Reason] = []
    for i, want in enumerate(expected):
        if i in pairs:
            continue
        near = [(call_reasons(made[j], want, parameters.get(want.name)), j)
                for j in range(len(made)) if j not in used and made[j].name == want.name]
        if not near:
            reasons.append(Reason(kind="missing_call", call=want.name,
                                  detail=f"no call of {want.name} matches the expected one"))
            continue
        found, j = min(near, key=lambda pair: len(pair[0]))
        used.add(j)
        reasons.extend(found or [Reason(kind="order", call=want.name,
                                        detail=f"{want.name} was called out of order")])
    reasons += [Reason(kind="extra_call", call=made[j].name, got=made[j].arguments,
                       detail=f"{made[j].name} was called, but the case expects no such call")
                for j in range(len(made)) if j not in used]
    return reasons
