"""Conversation routes: create, read, and run turns (one JSON reply or an SSE stream)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED

from app.auth import require
from app.idempotency import Claim, IdempotencyKeys
from app.problems import PROBLEM_JSON
from app.tenancy import tenant_of
from planner.conversations import Conversations, Ran
from planner.events import TurnEvent, TurnResult
from planner.records import (
    Approved,
    ClientOutput,
    Decision,
    Rejected,
    StoredMessage,
    TurnRequest,
    TurnRow,
)

Chats = NamedDependency[Conversations]
Idempotency = NamedDependency[IdempotencyKeys]
_event_encoder = msgspec.json.Encoder()
WRITE = require("chat:write")


class NewConversation(msgspec.Struct, frozen=True):
    metadata: dict[str, Any] = {}


class ConversationOut(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    metadata: dict[str, Any]
    created_at: datetime
    turns: list[TurnRow] = []


class MessagesOut(msgspec.Struct, frozen=True):
    messages: list[StoredMessage]


class ConversationController(Controller):
    path = "/v1/conversations"
    tags = ["conversations"]
    guards = [require("chat:read")]

    @post("/", status_code=HTTP_201_CREATED, summary="Start a conversation", guards=[WRITE])
    async def create_conversation(
        self, request: Request[Any, Any, Any], conversations: Chats,
        data: JSONBody[NewConversation | None] = None,
    ) -> ConversationOut:
        made = await conversations.create(tenant_of(request), data.metadata if data else {})
        return ConversationOut(id=made.id, metadata=made.metadata, created_at=made.created_at)

    @get("/{conversation_id:str}", summary="A conversation and its turns")
    async def get_conversation(
        self, request: Request[Any, Any, Any], conversations: Chats,
        conversation_id: FromPath[str],
    ) -> ConversationOut:
        found, turns = await conversations.get(tenant_of(request), conversation_id)
        return ConversationOut(id=found.id, metadata=found.metadata, created_at=found.created_at,
                               turns=turns)

    @get("/{conversation_id:str}/messages", summary="Every message, in order")
    async def list_messages(
        self, request: Request[Any, Any, Any], conversations: Chats,
        conversation_id: FromPath[str],
    ) -> MessagesOut:
        return MessagesOut(await conversations.messages(tenant_of(request), conversation_id))

    @post(
        "/{conversation_id:str}/turns",
        status_code=200,
        summary="Send a message; run a turn",
        guards=[WRITE],
    )
    async def create_turn(
        self, request: Request[Any, Any, Any], conversations: Chats, idempotency: Idempotency,
        conversation_id: FromPath[str], data: JSONBody[TurnRequest],
    ) -> Response[Any]:
        """`stream: false` answers with the finished turn; `stream: true` with SSE events."""
        tenant = tenant_of(request)

        async def run(claim: Claim | None) -> Response[Any]:
            ran = await conversations.launch(tenant, conversation_id, data,
                                             idempotency.tie_to_turn(claim))
            return _ran_response(ran)

        return await idempotency.guarded(request, f"POST turns {conversation_id}", run)


def _ran_response(ran: Ran) -> Response[Any]:
    if isinstance(ran, TurnResult):
        return _turn_response(ran)
    return ServerSentEvent(_sse(ran))


async def _sse(events: AsyncIterator[TurnEvent]) -> AsyncIterator[ServerSentEventMessage]:
    number = itertools.count(1)
    async for event in events:
        payload = _event_encoder.encode(event).decode()
        kind = type(event).__struct_config__.tag
        yield ServerSentEventMessage(data=payload, event=str(kind), id=str(next(number)))


async def _answer(
    request: Request[Any, Any, Any], conversations: Conversations, turn_id: str, call_id: str,
    decision: Decision, stream: bool,
) -> Response[Any]:
    tenant = tenant_of(request)
    ran = await conversations.answer(tenant, turn_id, call_id, decision, stream)
    if ran is None:  # other calls still wait
        return Response(await conversations.turn(tenant, turn_id), status_code=HTTP_202_ACCEPTED)
    return _ran_response(ran)


def _turn_response(result: TurnResult) -> Response[Any]:
    if result.status == "failed" and result.error is not None:
        body = {**msgspec.to_builtins(result.error), "turn": msgspec.to_builtins(result)}
        return Response(body, status_code=result.error.status, media_type=PROBLEM_JSON)
    return Response(result)


class ApprovalIn(msgspec.Struct, frozen=True, kw_only=True):
    call_id: str
    approve: bool
    arguments: dict[str, Any] | None = None
    """Approve the call with these arguments instead of the model's (checked again)."""
    reason: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    """Why it was rejected; the model reads it."""
    stream: bool = False


class OutputIn(msgspec.Struct, frozen=True, kw_only=True):
    call_id: str
    output: Any = None
    error: Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)] | None = None
    """Set when the client tool failed; the model reads it as the call's error."""
    stream: bool = False


class TurnController(Controller):
    path = "/v1/turns"
    tags = ["conversations"]
    guards = [require("chat:read")]

    @post("/{turn_id:str}/approvals", status_code=200, summary="Approve or reject a paused call",
          guards=[WRITE])
    async def decide_approval(
        self, request: Request[Any, Any, Any], conversations: Chats, turn_id: FromPath[str],
        data: JSONBody[ApprovalIn],
    ) -> Response[Any]:
        """When this was the last call the turn waited on, the turn goes on: the answer is its
        result (or SSE events with `stream: true`); otherwise 202 and what it still waits on."""
        decision: Decision = (
            Approved(arguments=data.arguments) if data.approve else Rejected(reason=data.reason)
        )
        return await _answer(request, conversations, turn_id, data.call_id, decision,
                             data.stream)

    @post("/{turn_id:str}/outputs", status_code=200, summary="Send a client tool's output",
          guards=[WRITE])
    async def send_output(
        self, request: Request[Any, Any, Any], conversations: Chats, turn_id: FromPath[str],
        data: JSONBody[OutputIn],
    ) -> Response[Any]:
        """The output (or error) of a client tool's call; the turn goes on as with approvals."""
        decision = ClientOutput(output=data.output, error=data.error)
        return await _answer(request, conversations, turn_id, data.call_id, decision,
                             data.stream)

    @get("/{turn_id:str}", summary="A turn: its status, answer, calls and usage")
    async def get_turn(
        self, request: Request[Any, Any, Any], conversations: Chats, turn_id: FromPath[str]
    ) -> TurnResult:
        return await conversations.turn(tenant_of(request), turn_id)
