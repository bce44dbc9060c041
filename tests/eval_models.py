"""Scripted models of known behaviour for eval runs, answering each case from its expected
calls (in plan mode, as one plan of independent steps): `oracle` makes them all in one reply;
`sloppy` makes one call per reply and drops an argument of the first call in the cases `drops`
picks. Also a small BFCL-format slice of invented questions, so tests need no downloaded
data."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from planner.evals.cases import EvalCase, ExpectedCall
from tests.scripted_model import Responder, ScriptedReply, Step

FUNCTIONS = [
    {"name": "weather.current", "description": "Current weather for a city",
     "parameters": {"type": "dict", "properties": {
         "city": {"type": "string", "description": "City name"},
         "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
         "required": ["city"]}},
    {"name": "currency.convert", "description": "Convert an amount between currencies",
     "parameters": {"type": "dict", "properties": {
         "amount": {"type": "float"}, "source": {"type": "string"},
         "target": {"type": "string"}}, "required": ["amount", "source", "target"]}},
    {"name": "time.in_zone", "description": "The current time in a time zone",
     "parameters": {"type": "dict", "properties": {"zone": {"type": "string"}},
                    "required": ["zone"]}},
]


def _question(qid: str, text: str) -> dict[str, Any]:
    return {"id": qid, "question": [[{"role": "user", "content": text}]], "function": FUNCTIONS}


QUESTIONS = [
    _question("simple_0", "What is the weather in Oslo right now?"),
    _question("simple_1", "Convert 20 US dollars to euros."),
    _question("simple_2", "What time is it in Tokyo?"),
    _question("simple_3", "How warm is it in Lisbon, in fahrenheit?"),
    _question("parallel_0", "Weather in Paris and in Rome, please."),
    _question("parallel_1", "What time is it in London and in New York?"),
    _question("parallel_multiple_0", "Weather in Bergen, and convert 5 euros to kroner."),
    _question("parallel_multiple_1", "Time in Sydney and 100 yen in dollars."),
]

ANSWERS = [
    {"id": "simple_0", "ground_truth": [{"weather.current": {"city": ["Oslo"],
                                                             "unit": ["", "celsius"]}}]},
    {"id": "simple_1", "ground_truth": [{"currency.convert": {
        "amount": [20.0], "source": ["USD", "US dollars"], "target": ["EUR", "euros"]}}]},
    {"id": "simple_2", "ground_truth": [{"time.in_zone": {"zone": ["Asia/Tokyo", "Tokyo"]}}]},
    {"id": "simple_3", "ground_truth": [{"weather.current": {"city": ["Lisbon"],
                                                             "unit": ["fahrenheit"]}}]},
    {"id": "parallel_0", "ground_truth": [{"weather.current": {"city": ["Paris"]}},
                                          {"weather.current": {"city": ["Rome"]}}]},
    {"id": "parallel_1", "ground_truth": [{"time.in_zone": {"zone": ["Europe/London"]}},
                                          {"time.in_zone": {"zone": ["America/New_York"]}}]},
    {"id": "parallel_multiple_0", "ground_truth": [
        {"weather.current": {"city": ["Bergen"]}},
        {"currency.convert": {"amount": [5], "source": ["EUR"], "target": ["NOK"]}}]},
    {"id": "parallel_multiple_1", "ground_truth": [
        {"time.in_zone": {"zone": ["Australia/Sydney"]}},
        {"currency.convert": {"amount": [100], "source": ["JPY"], "target": ["USD"]}}]},
]


def ground_truth_call(expected: ExpectedCall, drop: bool = False) -> tuple[str, dict[str, Any]]:
    """The call with the first acceptable value of each argument (one whose only acceptable
    value is "" is left out), nested objects filled in the same way; `drop` leaves out the
    first argument."""
    arguments = {k: _instance(_first(values)) for k, values in expected.arguments.items()
                 if any(v != "" for v in values)}
    if drop:
        arguments.pop(next(iter(arguments)))
    return expected.name, arguments


def _first(values: list[Any]) -> Any:
    return next(v for v in values if v != "")


def _instance(value: Any) -> Any:
    """An acceptable value as a model would write it: inside an object each key lists its
    acceptable values (BFCL's convention), so the first is taken."""
    if isinstance(value, dict):
        return {k: _instance(_first(alts)) if isinstance(alts, list) else alts
                for k, alts in value.items()
                if not isinstance(alts, list) or any(a != "" for a in alts)}
    if isinstance(value, list):
        return [_instance(v) for v in value]
    return value


def _this_turn(body: dict[str, Any]) -> tuple[str, int]:
    """The turn's user message and how many tool results have come back since it."""
    messages = body.get("messages") or []
    last_user = max(i for i, m in enumerate(messages) if m.get("role") == "user")
    done = sum(1 for m in messages[last_user:] if m.get("role") == "tool")
    return str(messages[last_user].get("content")), done


def case_model(cases: list[EvalCase], *, one_at_a_time: bool,
               drops: Callable[[int], bool] = lambda _i: False) -> Responder:
    """A responder that answers each case's message with its expected calls."""
    by_message = {case.turns[0].user: (i, case) for i, case in enumerate(cases)}

    def respond(body: dict[str, Any]) -> Step:
        message, done = _this_turn(body)
        index, case = by_message[message]
        expected = case.turns[0].expected_calls
        calls = [ground_truth_call(e, drop=drops(index) and n == 0)
                 for n, e in enumerate(expected)]
        if body.get("response_format"):  # plan mode: every call a step, none waiting on another
            steps = [{"id": f"s{n + 1}", "tool": name, "arguments": arguments}
                     for n, (name, arguments) in enumerate(calls)]
            return ScriptedReply(content=json.dumps({"steps": steps}))
        if one_at_a_time:
            if done < len(calls):
                return ScriptedReply(tool_calls=[calls[done]])
        elif done == 0 and calls:
            return ScriptedReply(tool_calls=calls)
        return ScriptedReply(content=f"Done: {json.dumps([c[0] for c in calls])}")

    return respond
