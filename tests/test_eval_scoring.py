"""The eval scorer against BFCL's possible_answer semantics, case by case."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from planner.evals.bfcl import bfcl_cases, read_lines
from planner.evals.cases import CaseTurn, ExpectedCall
from planner.evals.scoring import MadeCall, score_turn, standard
from tests.eval_models import ground_truth_call

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
    ("a value of the type the case's answers have, where the schema says otherwise",
     turn(("get_weather", {"city": ["Oslo"], "days": ["three"]})),
     made(("get_weather", {"city": "Oslo", "days": "three"})), []),
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


SHARED_DATA = Path(os.environ.get("SWITCHBOARD_BENCH_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.mark.skipif(not (SHARED_DATA / "bfcl").is_dir(), reason="needs ../shared/data")
def test_every_bfcl_ground_truth_passes_the_scorer() -> None:
    """The scorer agrees with BFCL's possible answers: each case's ground truth, written as a
    model would write it, passes (1,000 cases over the four non-live sets)."""
    taken: dict[str, dict[str, Any]] = {}
    failed = []
    for name in ("simple_python", "multiple", "parallel", "parallel_multiple"):
        questions = read_lines(SHARED_DATA / "bfcl" / "question" / f"BFCL_v4_{name}.json")
        answers = read_lines(SHARED_DATA / "bfcl" / "possible_answer" / f"BFCL_v4_{name}.json")
        _specs, cases = bfcl_cases(questions, answers, taken=taken)
        for case in cases:
            expected = case.turns[0]
            calls = [MadeCall(name=n, arguments=a)
                     for n, a in (ground_truth_call(e) for e in expected.expected_calls)]
            parameters = {n: spec.get("parameters") for n, spec in taken.items()}
            if not score_turn(expected, calls, parameters, "").passed:
                failed.append(case.id)
    assert failed == []
    assert len(taken) > 700  # the functions, BFCL's clashing names made distinct


def test_bfcl_functions_sharing_a_name_become_tools_of_their_own() -> None:
    def question(qid: str, parameter: str) -> dict[str, Any]:
        return {"id": qid, "question": [[{"role": "user", "content": qid}]],
                "function": [{"name": "stock.price", "description": "Price",
                              "parameters": {"type": "dict", "required": [parameter],
                                             "properties": {parameter: {"type": "string"}}}}]}

    answers = [{"id": "a", "ground_truth": [{"stock.price": {"ticker": ["X"]}}]},
               {"id": "b", "ground_truth": [{"stock.price": {"company": ["Y"]}}]},
               {"id": "c", "ground_truth": [{"stock.price": {"ticker": ["Z"]}}]}]
    specs, cases = bfcl_cases([question("a", "ticker"), question("b", "company"),
                               question("c", "ticker")], answers)
    assert [s["name"] for s in specs] == ["stock_price", "stock_price_2"]
    assert [c.turns[0].expected_calls[0].name for c in cases] == [
        "stock_price", "stock_price_2", "stock_price"]
