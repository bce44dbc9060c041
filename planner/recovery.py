"""A taken-over turn's unfinished step, ended from what is stored.

The replica that died had written the model's reply (or plan) and a row for each call before
making it. Every call of that reply gets its result now: one that had finished keeps its stored
outcome; one that was running is made again only if repeating it is safe (its tool is
idempotent, or it is the engine's own, or the turn has no tool by its name, so it was never
made), else it ends `unknown`, reported to the model as possibly made; a plan step that had
not started is reported as not made.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import msgspec

from planner.calls import Call, CallRunner, observation
from planner.messages import ChatMessage
from planner.prompt import READ_RESULT, SEARCH_TOOLS
from planner.records import SavedCall
from planner.statuses import OUTCOME_UNKNOWN
from planner.turn import TurnState

NOT_STARTED = "not_started"
"""The error type of a plan step that had not started when its replica died."""


async def finish_unfinished(calls: CallRunner, turn: TurnState, running: list[SavedCall]
                            ) -> None:
    """End the calls the last reply of `turn` asked for that have no result in its messages,
    and send their results to the model in the order the reply wrote them. Running calls no
    reply names (steps of a plan whose message was never written) end too, and the model is
    told of those that may have been made."""
    asked = _unanswered(turn)
    by_id = {c.id: c for c in running}
    ended = {c.id: c for c in turn.calls}
    jobs: list[Awaitable[None]] = []
    for call in asked:
        saved = by_id.pop(call.id, None)
        if saved is not None:
            jobs.append(_redo_or_unknown(calls, turn, saved))
        elif call.id in ended:
            turn.observations[call.id] = ChatMessage(role="tool", tool_call_id=call.id,
                                                     content=observation(ended[call.id]))
        else:
            jobs.append(calls.refuse(turn, call, "this step had not started when the replica "
                                     "running the turn stopped; it was not made",
                                     NOT_STARTED))
    unnamed = list(by_id.values())
    jobs.extend(_unknown(calls, turn, saved) for saved in unnamed)
    batch = calls.open_batch(turn, len(jobs))
    await calls.collect(turn, batch, asyncio.gather(*jobs), [c.id for c in asked])
    for saved in unnamed:
        turn.observations.pop(saved.id, None)
    if unnamed:
        names = ", ".join(f"{c.name} ({c.raw_arguments})" for c in unnamed)
        await turn.note(f"Before this turn moved to another replica these calls had started, "
                        f"and may have been made: {names}. Check before making them again.")


def _unanswered(turn: TurnState) -> list[Call]:
    """The calls of the turn's last assistant message that no tool message answers."""
    answered = {m.tool_call_id for m in turn.messages if m.role == "tool"}
    own = turn.messages[turn.earlier:]
    last = next((m for m in reversed(own) if m.role == "assistant" and m.tool_calls), None)
    if last is None or last.tool_calls is None:
        return []
    return [Call(id=c.id, name=c.function.name, arguments=c.function.arguments, step=turn.step,
                 position=i)
            for i, c in enumerate(last.tool_calls) if c.id not in answered]


def _call(saved: SavedCall) -> Call:
    return Call(id=saved.id, name=saved.name, arguments=saved.raw_arguments, step=saved.step,
                position=saved.position, begun=True, approved=True)


async def _redo_or_unknown(calls: CallRunner, turn: TurnState, saved: SavedCall) -> None:
    """Make the call again when that changes nothing more than the first attempt could: the
    engine's own tools, an idempotent tool, or a name the turn has no tool by (a call the model
    made up is refused again, as it was)."""
    tool = turn.tools.get(saved.name)
    safe = saved.name in (SEARCH_TOOLS, READ_RESULT) or tool is None or \
        tool.record.policy.idempotent
    if safe:
        await calls.start(turn, _call(saved))
    else:
        await _unknown(calls, turn, saved)


async def _unknown(calls: CallRunner, turn: TurnState, saved: SavedCall) -> None:
    await calls.refuse(
        turn, msgspec.structs.replace(_call(saved), arguments=saved.arguments),
        "this call had started when the replica running the turn stopped, and its outcome was "
        "never recorded: it may or may not have been made. It was not repeated, because its "
        "tool is not marked idempotent; check whether it took effect before making it again",
        OUTCOME_UNKNOWN, started_at=saved.started_at, attempts=1,
    )
