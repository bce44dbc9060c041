"""Running a turn for a route: start it, tie the idempotency key to it, then wait for its
result or follow its events. Both chat routes (native and OpenAI-compatible) start turns here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from app import idempotency
from app.idempotency import Claim
from planner import pauses
from planner.engine import TurnEngine
from planner.events import PendingCall, TurnEvent, TurnResult
from planner.supervisor import TurnSupervisor
from planner.turn import EventSink, TurnRequest, ignore


async def launch_turn(
    engine: TurnEngine, supervisor: TurnSupervisor, claim: Claim | None, tenant: str,
    conversation_id: str, request: TurnRequest,
) -> TurnResult | AsyncIterator[TurnEvent]:
    """The finished turn, or (`request.stream`) its events as they happen. Either way the turn
    runs under the supervisor, so a client that goes away does not cut it short."""
    turn_id = await engine.start_turn(tenant, conversation_id, request)
    await idempotency.record_turn(engine.pool, claim, turn_id)
    if not request.stream:
        return await supervisor.outcome(engine.run_turn(tenant, conversation_id, turn_id, request))
    return supervisor.follow(
        lambda emit: engine.run_turn(tenant, conversation_id, turn_id, request, emit)
    )


async def answer_call(
    engine: TurnEngine, supervisor: TurnSupervisor, tenant: str, turn_id: str, call_id: str,
    decision: pauses.Decision, stream: bool,
) -> TurnResult | AsyncIterator[TurnEvent] | None:
    """Record the answer for a waiting call; None while other calls still wait, else the rest of
    the turn, as with `launch_turn`. The answer and taking the turn up are one supervisor task,
    so a client that goes away between them cannot leave the turn owned but not running."""
    decided: asyncio.Future[list[PendingCall]] = asyncio.get_running_loop().create_future()

    async def go_on(emit: EventSink) -> TurnResult | None:
        try:
            waiting = await engine.decide(tenant, turn_id, call_id, decision)
        except Exception as exc:  # the caller gets it from `decided`
            decided.set_exception(exc)
            return None
        decided.set_result(waiting)
        return None if waiting else await engine.resume_turn(tenant, turn_id, emit)

    if not stream:
        task = supervisor.spawn(go_on(ignore))
        if await asyncio.shield(decided):
            return None
        result: TurnResult = await asyncio.shield(task)
        return result
    events = supervisor.follow(go_on)
    return None if await asyncio.shield(decided) else events
