"""Conversation routes: create, read, and run turns (one JSON reply or an SSE stream)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from app.auth import require
from app.errors import RequestFieldInvalid
from app.idempotency import Claim, IdempotencyKeys
from app.pages import MAX_PAGE, Cursor, Limit, cut, page_of
from app.problems import PROBLEM_JSON
from app.sse import kept_alive, live_events, stored_events
from app.tenancy import tenant_of
from planner.conversations import Conversations, Ran
from planner.event_log import EventId, EventLog, StoredEvent
from planner.events import TurnResult
from planner.learning import Feedback, FeedbackResult, TurnLearning
from planner.records import (
    Approved,
    ClientOutput,
    Decision,
    Rejected,
    StoredMessage,
    TurnRequest,
    TurnRow,
)
from tools.cursors import decode_cursor
from tools.errors import FieldError, SpecInvalid

Chats = NamedDependency[Conversations]
Events = NamedDependency[EventLog]
Idempotency = NamedDependency[IdempotencyKeys]
Learner = NamedDependency[TurnLearning]
_event_encoder = msgspec.json.Encoder()
WRITE = require("chat:write")


class NewConversation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    metadata: dict[str, Any] = {}


class ConversationOut(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    metadata: dict[str, Any]
    created_at: datetime
    turns: list[TurnRow] = []


class MessagePage(msgspec.Struct, frozen=True):
    items: list[StoredMessage]
    next_cursor: str | None = None


class ConversationPage(msgspec.Struct, frozen=True):
    items: list[ConversationOut]
    next_cursor: str | None = None


MetadataFilter = Annotated[list[str] | None, QueryParameter(
    description="`key:value`: only conversations whose metadata has the key with the value "
                "(compared as text); repeat for several", max_length=20)]


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

    @get("/", summary="The tenant's conversations, newest first")
    async def list_conversations(
        self, request: Request[Any, Any, Any], conversations: Chats,
        metadata: MetadataFilter = None, cursor: Cursor = None, limit: Limit = 50,
    ) -> ConversationPage:
        """Without their turns (GET one for those). Conversations eval runs hold are not
        listed."""
        before = decode_cursor(cursor, tuple[datetime, str]) if cursor else None
        found = await conversations.listed(tenant_of(request), _wanted(metadata or []), before,
                                         limit + 1)
        page, next_cursor = cut(found, limit, lambda c: (c.created_at, c.id))
        return ConversationPage([ConversationOut(id=c.id, metadata=c.metadata,
                                                 created_at=c.created_at) for c in page],
                                next_cursor)

    @get("/{conversation_id:str}", summary="A conversation and its turns")
    async def get_conversation(
        self, request: Request[Any, Any, Any], conversations: Chats,
        conversation_id: FromPath[str],
    ) -> ConversationOut:
        found, turns = await conversations.get(tenant_of(request), conversation_id)
        return ConversationOut(id=found.id, metadata=found.metadata, created_at=found.created_at,
                               turns=turns)

    @get("/{conversation_id:str}/messages", summary="The messages, in order")
    async def list_messages(
        self, request: Request[Any, Any, Any], conversations: Chats,
        conversation_id: FromPath[str], cursor: Cursor = None, limit: Limit = MAX_PAGE,
    ) -> MessagePage:
        after = decode_cursor(cursor, tuple[int])[0] if cursor else 0
        found = await conversations.messages(tenant_of(request), conversation_id, after,
                                             limit + 1)
        return MessagePage(*cut(found, limit, lambda m: (m.id,)))

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
            return _ran_response(request, ran)

        return await idempotency.guarded(request, f"POST turns {conversation_id}", run,
                                         _turn_response)


def _ran_response(request: Request[Any, Any, Any], ran: Ran) -> Response[Any]:
    if isinstance(ran, TurnResult):
        return _turn_response(ran)
    return _streamed(request, live_events(ran))


def _streamed(request: Request[Any, Any, Any],
              messages: AsyncGenerator[ServerSentEventMessage, None]) -> ServerSentEvent:
    every = request.app.state.settings.sse_keepalive_s
    return ServerSentEvent(kept_alive(messages, every))


async def _answer(
    request: Request[Any, Any, Any], conversations: Conversations, turn_id: str, call_id: str,
    decision: Decision, stream: bool,
) -> Response[Any]:
    tenant = tenant_of(request)
    ran = await conversations.answer(tenant, turn_id, call_id, decision, stream)
    if ran is None:  # other calls still wait
        return Response(await conversations.turn(tenant, turn_id), status_code=HTTP_202_ACCEPTED)
    return _ran_response(request, ran)


def _turn_response(result: TurnResult) -> Response[Any]:
    if result.error is not None:  # failed, or interrupted
        body = {**msgspec.to_builtins(result.error), "turn": msgspec.to_builtins(result)}
        return Response(body, status_code=result.error.status, media_type=PROBLEM_JSON)
    return Response(result)


def _event_id(header: str | None, query: str | None) -> EventId | None:
    """Where a reconnecting client left off; a value that is not an event id of ours is
    refused, naming where it came from."""
    for given, source in ((header, "header 'Last-Event-ID'"), (query, "query parameter 'after'")):
        if given is None or not given.strip():
            continue
        found = EventId.parse(given)
        if found is None:
            raise RequestFieldInvalid(
                "", f"{given[:40]!r} is not an event id: send the `id` of the last event "
                "received, as given (like 1.17)", parameter=source)
        return found
    return None


async def _chain(first: StoredEvent, rest: AsyncIterator[StoredEvent]
                 ) -> AsyncIterator[StoredEvent]:
    yield first
    async for event in rest:
        yield event


class ApprovalIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    call_id: str
    approve: bool
    arguments: dict[str, Any] | None = None
    """Approve the call with these arguments instead of the model's (checked again)."""
    reason: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    """Why it was rejected; the model reads it."""
    stream: bool = False


class OutputIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
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

    @post("/{turn_id:str}/feedback", status_code=200, summary="Rate a turn's tool calls",
          guards=[WRITE])
    async def rate_turn(
        self, request: Request[Any, Any, Any], learner: Learner, turn_id: FromPath[str],
        data: JSONBody[Feedback],
    ) -> FeedbackResult:
        """`good` confirms the requests retrieval learnt from the turn's calls (or from the
        calls named); `bad` deletes them and records each call's request as one its tool was
        wrong for, which pushes the tool down for similar requests. Rating again replaces the
        rating."""
        return await learner.feedback(tenant_of(request), turn_id, data)

    @get("/{turn_id:str}/events", summary="A turn's events, from where a stream left off",
         status_code=200)
    async def turn_events(
        self, request: Request[Any, Any, Any], conversations: Chats, events: Events,
        turn_id: FromPath[str],
        last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
        after: Annotated[str | None, QueryParameter(
            description="The id of the last event received, for clients that cannot send "
                        "Last-Event-ID")] = None,
    ) -> Response[Any]:
        """Server-sent events: those the turn stored after the one whose id is `Last-Event-ID`
        (or `after`; all of them when neither is given), then each as it happens, until the
        turn ends or pauses. Works on any replica, whichever runs the turn. 204 when the turn
        is over and nothing is left to send."""
        tenant = tenant_of(request)
        last = _event_id(last_event_id, after)
        await conversations.turn(tenant, turn_id)  # 404 for another tenant's or none
        pending = events.follow(tenant, turn_id, last)
        first = await anext(pending, None)
        if first is None:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        return _streamed(request, stored_events(_chain(first, pending)))

    @get("/{turn_id:str}/messages", summary="A turn's messages, in order")
    async def turn_messages(
        self, request: Request[Any, Any, Any], conversations: Chats, turn_id: FromPath[str],
        cursor: Cursor = None, limit: Limit = MAX_PAGE,
    ) -> MessagePage:
        """The user's message, the model's replies (with the calls each asked for), the tool
        results as the model read them, and the engine's notes to the model."""
        found = await conversations.turn_messages(tenant_of(request), turn_id)
        return MessagePage(*page_of(found, lambda m: m.id, cursor, limit))

    @get("/{turn_id:str}", summary="A turn: its status, answer, calls and usage")
    async def get_turn(
        self, request: Request[Any, Any, Any], conversations: Chats, turn_id: FromPath[str]
    ) -> TurnResult:
        return await conversations.turn(tenant_of(request), turn_id)


def _wanted(pairs: list[str]) -> dict[str, str]:
    """`key:value` filters as a mapping; the first colon splits (a value may hold more)."""
    wanted: dict[str, str] = {}
    for pair in pairs:
        key, colon, value = pair.partition(":")
        if not colon or not key:
            raise SpecInvalid([FieldError(
                "", f"{pair!r} is not key:value (e.g. metadata=user:alice)",
                parameter="query parameter 'metadata'")])
        wanted[key] = value
    return wanted
