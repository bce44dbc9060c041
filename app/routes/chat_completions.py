"""`POST /v1/chat/completions`: the OpenAI-compatible chat route. Switchboard finds and runs
tools server-side; the client sees an assistant message (or a stream of chunks)."""

from __future__ import annotations

import time
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
from app.turns import launch_turn
from planner.engine import TurnEngine
from planner.errors import UnknownModel
from planner.events import TurnResult
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
