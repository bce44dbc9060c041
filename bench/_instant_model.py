"""An in-process model that answers at once, for measuring what the orchestration costs.

It implements the engine's `ChatModel` seam (no HTTP): it calls one tool per reply, `steps`
times in a turn, then answers. Every call marks a `StepClock`, so the time between two model
calls is one step: one model call, one tool call, and everything the engine writes for them.
"""

from __future__ import annotations

import json
import time
from typing import Any

from planner.messages import ModelReply, ModelRequest, ToolCallRequest, Usage
from planner.model_client import ModelBackend, OnDelta

TOOL_NAMES = ("get_weather", "get_time", "lookup_order", "convert_currency")
"""The tools the script calls, in turn; each runs the same no-op."""
FINAL_ANSWER = "All steps are done."
ENGINE_NOTE = "[switchboard]"  # the engine's own notes to the model come as user messages


class Mark:
    """One model call's arrival: wall clock and process CPU, in nanoseconds."""

    __slots__ = ("cpu", "wall")

    def __init__(self) -> None:
        self.wall = time.perf_counter_ns()
        self.cpu = time.process_time_ns()


class StepClock:
    """Marks every model call of the turn being measured."""

    def __init__(self) -> None:
        self.marks: list[Mark] = []

    def reset(self) -> None:
        self.marks = []

    def mark(self) -> None:
        self.marks.append(Mark())


def scripted_call(done: int, steps: int) -> tuple[str, dict[str, Any]] | None:
    """The tool call to make after `done` results, or None when it is time to answer."""
    if done >= steps:
        return None
    return TOOL_NAMES[done % len(TOOL_NAMES)], {"query": f"step {done}"}


class InstantModel:
    """A `ChatModel` that follows `scripted_call`, deciding from the request alone."""

    def __init__(self, clock: StepClock, steps: int) -> None:
        self.backend = ModelBackend(name="default", base_url="http://instant.invalid/v1",
                                    model="instant")
        self.clock, self.steps = clock, steps

    async def complete(
        self, request: ModelRequest, *, stream: bool = False, on_delta: OnDelta | None = None
    ) -> ModelReply:
        self.clock.mark()
        asked = max(i for i, m in enumerate(request.messages)
                    if m.role == "user" and not (m.content or "").startswith(ENGINE_NOTE))
        done = sum(1 for m in request.messages[asked + 1:] if m.role == "tool")
        call = scripted_call(done, self.steps)
        if call is None:
            return _reply(FINAL_ANSWER, [], "stop")
        name, arguments = call
        request_call = ToolCallRequest(id=f"call_{done}", name=name,
                                       arguments=json.dumps(arguments))
        return _reply("", [request_call], "tool_calls")


def _reply(content: str, calls: list[ToolCallRequest], finish_reason: str) -> ModelReply:
    return ModelReply(content=content, reasoning="", tool_calls=calls,
                      finish_reason=finish_reason, usage=Usage(), model="instant")
