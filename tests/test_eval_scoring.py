"""The eval scorer against BFCL's possible_answer semantics, case by case."""

from __future__ import annotations

from typing import Any

import pytest

from planner.evals.cases import CaseTurn, ExpectedCall
from planner.evals.scoring import MadeCall, score_turn, standard

WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "unit": {"type": "string"},
                                            "days": {"type": "integer"},
                                            "lat": {"type": "number"}},
           "required": ["city"]}
PARAMS = {"get_weather": WEATHER,
          "plot": {"type": "object", "properties": {"points": {"type": "array"},
                                                    "style": {"type": "object"}},
                   "required": ["points"]}}


def turn(*calls: tuple[str, dict[str, list[Any]]], order: str = "any",
         answer: list[str] | None = None) -> CaseTurn:
    return CaseTurn(user="q", expected_calls=[ExpectedCall(name=n, arguments=a) for n, a in calls],
                    order=order, answer_contains=answer or [])  # type: ignore[arg-type]


def made(*calls: tuple[str, Any]) -> list[MadeCall]:
    return [MadeCall(name=n, arguments=a) for n, a in calls]


def kinds(case: CaseTurn, calls: list[MadeCall], answer: str = "") -> list[str]:
    return [r.kind for r in score_turn(case, calls, PARAMS, answer).reasons]


SCORED = [
    # (what, expected, made, reasons)
    ("exact", turn(("get_weather", {"city": ["Oslo"]})),
     made(("get_weather", {"city": "Oslo"})), []),
    ("strings without case, spaces or punctuation", turn(("get_weather", {"city": ["New York"]})),
     made(("get_weather", {"city": "new-york."})), []),
    ("any of several acceptable values", turn(("get_weather", {"city": ["Oslo", "Kristiania"]})),
     made(("get_weather", {"city": "Kristiania"})), []),
    ("a wrong value", turn(("get_weather", {"city": ["Oslo"]})),
     made(("get_weather", {"city": "Bergen"})), ["wrong_value"]),
    ("an optional argument left out", turn(("get_weather", {"city": ["Oslo"], "unit": ["", "c"]})),
     made(("get_weather", {"city": "Oslo"})), []),
    ("an optional argument given right", turn(("get_weather", {"city": ["Oslo"],
                                                                 "unit": ["", "c"]})),
     made(("get_weather", {"city": "Oslo", "unit": "C"})), []),
    ("an argument the case needs left out", turn(("get_weather", {"city": ["Oslo"],
                                                                    "unit": ["c"]})),
     made(("get_weather", {"city": "Oslo"})), ["missing_argument"]),
    ("a required argument missing even when the case allows it",
     turn(("get_weather", {"city": ["", "Oslo"]})), made(("get_weather", {})),
     ["missing_argument"]),
    ("an argument the case does not name", turn(("get_weather", {"city": ["Oslo"]})),
     made(("get_weather", {"city": "Oslo", "days": 3})), ["unexpected_argument"]),
    ("an int for a number", turn(("get_weather", {"city": ["Oslo"], "lat": [60.0]})),
     made(("get_weather", {"city": "Oslo", "lat": 60})), []),
    ("a float for an integer", turn(("get_weather", {"city": ["Oslo"], "days": [3]})),
     made(("get_weather", {"city": "Oslo", "days": 3.0})), ["wrong_type"]),
    ("a bool is not a number", turn(("get_weather", {"city": ["Oslo"], "days": [1]})),
     made(("get_weather", {"city": "Oslo", "days": True})), ["wrong_type"]),
    ("lists compare in order", turn(("plot", {"points": [[1, 2]]})),
     made(("plot", {"points": [2, 1]})), ["wrong_value"]),
    ("nested objects list acceptable values per key",
     turn(("plot", {"points": [[1]], "style": [{"color": ["red", "RED"], "width": ["", 2]}]})),
     made(("plot", {"points": [1], "style": {"color": "Red"}})), []),
    ("a nested key the case does not name",
     turn(("plot", {"points": [[1]], "style": [{"color": ["red"]}]})),
     made(("plot", {"points": [1], "style": {"color": "red", "dash": True}})), ["wrong_value"]),
    ("the wrong function", turn(("get_weather", {"city": ["Oslo"]})),
     made(("plot", {"points": [1]})), ["missing_call", "extra_call"]),
    ("parallel calls in any order", turn(("get_weather", {"city": ["Oslo"]}),
                                         ("get_weather", {"city": ["Paris"]})),
     made(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})), []),
    ("parallel calls: one missing", turn(("get_weather", {"city": ["Oslo"]}),
                                         ("get_weather", {"city": ["Paris"]})),
     made(("get_weather", {"city": "Paris"})), ["missing_call"]),
    ("parallel calls: one too many", turn(("get_weather", {"city": ["Oslo"]})),
     made(("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Oslo"})), ["extra_call"]),
    ("a call that fits two expected ones goes where it leaves both matched",
     turn(("get_weather", {"city": ["Oslo", "Paris"]}), ("get_weather", {"city": ["Oslo"]})),
     made(("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Paris"})), []),
    ("a sequence in its order", turn(("get_weather", {"city": ["Oslo"]}),
                                     ("plot", {"points": [[1]]}), order="sequence"),
     made(("get_weather", {"city": "Oslo"}), ("plot", {"points": [1]})), []),
    ("a sequence out of order", turn(("get_weather", {"city": ["Oslo"]}),
                                     ("plot", {"points": [[1]]}), order="sequence"),
     made(("plot", {"points": [1]}), ("get_weather", {"city": "Oslo"})), ["order", "order"]),
    ("no call expected, none made", turn(), made(), []),
    ("no call expected, one made", turn(), made(("get_weather", {"city": "Oslo"})),
     ["extra_call"]),
    ("arguments that are not an object", turn(("get_weather", {"city": ["Oslo"]})),
     made(("get_weather", "Oslo")), ["missing_argument"]),
]


@pytest.mark.parametrize(("what", "case", "calls", "reasons"), SCORED,
                         ids=[row[0] for row in SCORED])
def test_scoring_follows_bfcl(what: str, case: CaseTurn, calls: list[MadeCall],
                              reasons: list[str]) -> None:
    assert kinds(case, calls) == reasons


def test_the_answer_must_hold_each_text_without_regard_to_case() -> None:
    case = turn(answer=["3 °C", "oslo"])
    assert kinds(case, [], "It is 3 °C in Oslo.") == []
    scored = score_turn(case, [], PARAMS, "It is cold in Oslo.")
    assert [r.detail for r in scored.reasons] == ["the answer does not contain '3 °C'"]


def test_a_wrong_value_names_the_call_the_argument_and_what_was_acceptable() -> None:
    scored = score_turn(turn(("get_weather", {"city": ["Oslo", "oslo"]})),
                        made(("get_weather", {"city": "Bergen"})), PARAMS, None)
    assert not scored.passed
    assert (scored.expected, scored.matched) == (1, 0)
    [reason] = scored.reasons
    assert (reason.call, reason.argument, reason.got, reason.acceptable) == (
        "get_weather", "city", "Bergen", ["Oslo", "oslo"])
    assert reason.detail == "get_weather: argument 'city' is 'Bergen'; acceptable: ['Oslo', 'oslo']"


def test_matched_counts_the_expected_calls_made_exactly() -> None:
    scored = score_turn(turn(("get_weather", {"city": ["Oslo"]}),
                             ("get_weather", {"city": ["Paris"]})),
                        made(("get_weather", {"city": "Oslo"}),
                             ("get_weather", {"city": "Rome"})), PARAMS, None)
    assert (scored.passed, scored.expected, scored.matched) == (False, 2, 1)


def test_strings_are_standardised_as_bfcl_does() -> None:
    assert standard("San Francisco, CA") == "sanfranciscoca"
    assert standard("it's_a-b/c*d^e.f") == 'it"sabcdef'
