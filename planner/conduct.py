"""What a turn tolerates of the model's calls: a call it got wrong (arguments that are not JSON
or do not fit the schema, a tool that does not exist) goes back to it once to correct, and a
second failure of the same tool ends its attempts in this turn; the same call with the same
arguments in a third step is not made, and the turn goes on to its answer. (Identical calls in
one reply are not a loop: "roll a die three times" is three calls.)"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import msgspec

from tools.outcome import CallOutcome

MALFORMED = frozenset({"invalid_arguments", "unknown_tool"})
REPEATS = 3
"""The same call (tool and arguments) in this many steps of a turn is a loop."""


class CallConduct:
    def __init__(self) -> None:
        self.failures: Counter[str] = Counter()
        self.given_up: set[str] = set()
        self.steps: dict[tuple[str, str], set[int]] = {}
        """The steps each call (tool and arguments) was made in."""
        self.looping = False
        """Set once a call was refused as a loop: the turn should answer now."""

    def refusal(self, name: str, arguments: Any, step: int) -> tuple[str, str] | None:
        """Why a call of step `step` is not made at all (its error and type), or None."""
        if name in self.given_up:
            return (f"calls of {name!r} failed twice in this turn and are not made again; "
                    "answer with what you have, or use another tool", "gave_up")
        steps = self.steps.setdefault((name, _canonical(arguments)), set())
        steps.add(step)
        if len(steps) >= REPEATS:
            self.looping = True
            return (f"{name} was called with these same arguments in {len(steps) - 1} earlier "
                    "steps of this turn, so it is not made again: answer with the results you "
                    "have", "repeated_call")
        return None

    def judged(self, name: str, outcome: CallOutcome) -> CallOutcome:
        """A malformed call's error, saying whether it may be corrected."""
        if outcome.error_type not in MALFORMED:
            return outcome
        self.failures[name] += 1
        if self.failures[name] < 2:
            return msgspec.structs.replace(
                outcome, error=f"{outcome.error}. Correct the call and make it again.")
        self.given_up.add(name)
        return msgspec.structs.replace(
            outcome, error=f"{outcome.error}. This was the second failed call of {name!r} in "
                           "this turn; it is not made again.")


def _canonical(arguments: Any) -> str:
    """The arguments as one text whatever their key order or spacing."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (json.JSONDecodeError, RecursionError):
            return arguments
    try:
        return json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return repr(arguments)
