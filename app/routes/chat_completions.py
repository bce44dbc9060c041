"""`POST /v1/chat/completions`: the OpenAI-compatible chat route. Switchboard finds and runs
registered tools server-side; the client's own `tools` come back to it as `tool_calls`."""

from __future__ import annotations

import json
import time
from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import ServerSentEvent

from app.auth import require
from app.errors import RequestFieldInvalid
from app.idempotency import Claim, IdempotencyKeys
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
from app.problems import EXCEPTION_HANDLERS, planner_detail
from app.tenancy import tenant_of
from planner.conversations import Conversations, Ran
from planner.errors import UnknownModel
from planner.events import TurnResult
from planner.records import ClientOutput
from planner.routing import AUTO_MODEL


@post(
    "/v1/chat/completions",
    status_code=200,
    tags=["openai"],
    summary="OpenAI-compatible chat: one turn, answered as a completion or a chunk stream",
    guards=[require("chat:write")],
    exception_handlers=with_error_member(EXCEPTION_HANDLERS),
)
async def create_chat_completion(
    request: Request[Any, Any, Any], conversations: NamedDependency[Conversations],
    idempotency: NamedDependency[IdempotencyKeys], data: JSONBody[ChatCompletionIn],
) -> Response[Any]:
    ask = read_request(data, request.headers.get(CONVERSATION_HEADER))
    _check_model(conversations, data.model)
    if not ask.outputs:
        conversations.check(ask.turn)
    frame = Frame(model=data.model, created=int(time.time()))
    tenant, path = tenant_of(request), request.url.path

    async def run(claim: Claim | None) -> Response[Any]:
        on_started = idempotency.tie_to_turn(claim)
        if ask.outputs:
            conversation_id = await _answered(conversations, tenant, ask)
            turn_id = await _waiting_turn(conversations, tenant, conversation_id, ask)
            await on_started(turn_id)
            ran = await _send_outputs(conversations, tenant, turn_id, ask)
        else:
            conversation_id = await _conversation(conversations, tenant, ask)
            ran = await conversations.launch(tenant, conversation_id, ask.turn, on_started)
        if isinstance(ran, TurnResult):
            return respond(ran, frame, path)
        return ServerSentEvent(stream_chunks(ran, frame, ask.include_usage),
                               headers={CONVERSATION_HEADER: str(conversation_id)})

    return await idempotency.guarded(request, "POST chat/completions", run,
                                     lambda result: respond(result, frame, path))


def _check_model(conversations: Conversations, model: str) -> None:
    if model == AUTO_MODEL:  # the tenant's router chooses (planner/routing.py)
        return
    try:
        conversations.backend(model)
    except UnknownModel as exc:
        raise RequestFieldInvalid("/model", planner_detail(exc)) from exc


async def _conversation(conversations: Conversations, tenant: str, ask: ChatAsk) -> str:
    """The conversation to continue: the one named, else the one whose messages the request
    repeats (a client that sends the whole history each time), else a new one holding them."""
    if ask.conversation_id is not None:
        return ask.conversation_id
    continued = await conversations.continued_by(tenant, ask.history)
    if continued is not None:
        return continued
    if ask.tool_traffic is not None:
        raise RequestFieldInvalid(
            ask.tool_traffic, "tool calls and their results belong to a conversation "
            "Switchboard holds, and these messages continue none: continue it "
            f"(metadata.conversation_id or the {CONVERSATION_HEADER} header), or send system, "
            "user and assistant messages only")
    model = None if ask.turn.model == AUTO_MODEL else ask.turn.model
    return await conversations.open(tenant, ask.metadata, ask.history, model)


async def _send_outputs(
    conversations: Conversations, tenant: str, turn_id: str, ask: ChatAsk
) -> Ran:
    """The results of client tools go to the paused turn that waits on them; once none is
    missing, the turn goes on and its answer is this request's."""
    ran: Ran | None = None
    for output in ask.outputs:
        decision = ClientOutput(output=_decoded(output.content))
        ran = await conversations.answer(tenant, turn_id, output.call_id, decision,
                                         ask.turn.stream)
    if ran is None:  # it still waits, on a person's approval say
        return await conversations.turn(tenant, turn_id)
    return ran


async def _answered(conversations: Conversations, tenant: str, ask: ChatAsk) -> str:
    """The conversation the tool results go to: the one named, else the one whose paused
    turn waits on their calls (a client that sends the whole history each time)."""
    if ask.conversation_id is not None:
        return ask.conversation_id
    call_ids = [output.call_id for output in ask.outputs]
    found = await conversations.waiting_on(tenant, call_ids)
    if len(found) == 1:
        return found[0]
    named = ", ".join(repr(c) for c in call_ids)
    if not found:
        raise RequestFieldInvalid("/messages", f"no turn waits on the results of {named}: "
                                  "send results only for the tool_calls of the last completion, "
                                  "once each")
    raise RequestFieldInvalid("/messages", f"turns of several conversations ({', '.join(found)}) "
                              f"wait on {named}; name the one to continue (metadata."
                              f"conversation_id or the {CONVERSATION_HEADER} header)")


async def _waiting_turn(conversations: Conversations, tenant: str, conversation_id: str,
                        ask: ChatAsk) -> str:
    """The paused turn of the conversation, checked to wait on every call answered, so a
    wrong id changes nothing."""
    turn_id = await conversations.paused_turn(tenant, conversation_id)
    if turn_id is None:
        raise RequestFieldInvalid("/messages", f"conversation {conversation_id!r} has no "
                                  "turn waiting on client tools; send a user message instead")
    waiting = {p.id for p in await conversations.waiting_calls(turn_id)}
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
