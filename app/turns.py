"""Running a turn for a route: start it, tie the idempotency key to it, then wait for its
result or follow its events. Both chat routes (native and OpenAI-compatible) start turns here."""

from __future__ import annotations

from collections.abc import AsyncIterator

from app import idempotency
from app.idempotency import Claim
from planner.engine import TurnEngine
from planner.events import TurnEvent, TurnResult
from planner.supervisor import TurnSupervisor
from planner.turn import TurnRequest


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
