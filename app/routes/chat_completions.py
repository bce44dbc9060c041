"""`POST /v1/chat/completions`: the OpenAI-compatible chat route. Switchboard finds and runs
tools server-side; the client sees an assistant message (or a stream of chunks)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, post
from litestar.params import JSONBody
from litestar.response import ServerSentEvent

from app import idempotency
from app.auth import require
from app.errors import RequestFieldInvalid
from app.idempotency import Claim
from app.openai_wire import (
    CONVERSATION_HEADER,
    ChatAsk,
    ChatCompletionIn,
    Frame,
    read_request,
    respond,
    stream_chunks,
    with_error_member,
)
from app.problems import EXCEPTION_HANDLERS
from app.tenancy import tenant_of
from app.turns import answer_call, launch_turn
from planner import pauses, results
from planner.engine import TurnEngine
from planner.errors import UnknownModel
from planner.events import TurnEvent, TurnResult
from planner.supervisor import TurnSupervisor


@post(
    "/v1/chat/completions",
    status_code=200,
    tags=["openai"],
    summary="OpenAI-compatible chat: one turn, answered as a completion or a chunk stream",
    guards=[require("chat:write")],
    exception_handlers=with_error_member(EXCEPTION_HANDLERS),
)
async def create_chat_completion(
    request: Request[Any, Any, Any], data: JSONBody[ChatCompletionIn]
) -> Response[Any]:
    engine: TurnEngine = request.app.state.engine
    supervisor: TurnSupervisor = request.app.state.supervisor
    ask = read_request(data, request.headers.get(CONVERSATION_HEADER))
    _check_model(engine, data.model)
    frame = Frame(model=data.model, created=int(time.time()))
    tenant = tenant_of(request)

    async def run(claim: Claim | None) -> Response[Any]:
        if ask.outputs:
            return await _send_outputs(engine, supervisor, claim, tenant, ask, frame,
                                       request.url.path)
        conversation_id = await _conversation(engine, tenant, ask)
        ran = await launch_turn(engine, supervisor, claim, tenant, conversation_id, ask.turn)
        if isinstance(ran, TurnResult):
            return respond(ran, frame, request.url.path)
        return ServerSentEvent(stream_chunks(ran, frame, ask.include_usage),
                               headers={CONVERSATION_HEADER: conversation_id})

    return await idempotency.guarded(request, "POST chat/completions", run,
                                     lambda result: respond(result, frame, request.url.path))


def _check_model(engine: TurnEngine, model: str) -> None:
    try:
        engine.model_for(model)
    except UnknownModel as exc:
        raise RequestFieldInvalid("/model", str(exc)) from exc


async def _conversation(engine: TurnEngine, tenant: str, ask: ChatAsk) -> str:
    """The conversation to continue, or a new one holding the request's earlier messages."""
    if ask.conversation_id is not None:
        return ask.conversation_id
    return await engine.open_conversation(tenant, ask.metadata, ask.history, ask.turn.model)


async def _send_outputs(
    engine: TurnEngine, supervisor: TurnSupervisor, claim: Claim | None, tenant: str,
    ask: ChatAsk, frame: Frame, path: str,
) -> Response[Any]:
    """The results of client tools go to the paused turn that waits on them; once none is
    missing, the turn goes on and its answer is this request's."""
    assert ask.conversation_id is not None  # read_request asks for it with tool results
    turn_id = await _waiting_turn(engine, tenant, ask)
    await idempotency.record_turn(engine.pool, claim, turn_id)
    ran: TurnResult | AsyncIterator[TurnEvent] | None = None
    for output in ask.outputs:
        decision = pauses.ClientOutput(output=_decoded(output.content))
        ran = await answer_call(engine, supervisor, tenant, turn_id, output.call_id, decision,
                                ask.turn.stream)
    if ran is None:  # it still waits, on a person's approval say
        ran = await results.turn_result(engine.pool, tenant, turn_id)
        assert ran is not None
    if isinstance(ran, TurnResult):
        return respond(ran, frame, path)
    return ServerSentEvent(stream_chunks(ran, frame, ask.include_usage),
                           headers={CONVERSATION_HEADER: ask.conversation_id})


async def _waiting_turn(engine: TurnEngine, tenant: str, ask: ChatAsk) -> str:
    """The paused turn of the conversation, checked to wait on every call answered, so a
    wrong id changes nothing."""
    assert ask.conversation_id is not None
    turn_id = await pauses.paused_turn(engine.pool, tenant, ask.conversation_id)
    if turn_id is None:
        raise RequestFieldInvalid("/messages", f"conversation {ask.conversation_id!r} has no "
                                  "turn waiting on client tools; send a user message instead")
    waiting = {p.id for p in await results.waiting_calls(engine.pool, turn_id)}
    for output in ask.outputs:
        if output.call_id not in waiting:
            raise RequestFieldInvalid(
                "/messages", f"tool result for {output.call_id!r}: turn {turn_id!r} does not "
                f"wait on that call; it waits on {', '.join(sorted(waiting)) or 'nothing'}")
    return turn_id


def _decoded(content: str) -> Any:
    """A tool message's content: JSON when it is JSON, else the text itself."""
    try:
        return json.loads(content)
    except ValueError:
        return content
