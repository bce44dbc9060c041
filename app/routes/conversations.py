"""Conversation routes: create, read, and run turns (one JSON reply or an SSE stream)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED

from app import idempotency
from app.auth import require
from app.idempotency import Claim
from app.problems import PROBLEM_JSON
from app.tenancy import tenant_of
from app.turns import answer_call, launch_turn
from planner import pauses, results, store
from planner.engine import TurnEngine
from planner.errors import TurnNotFound
from planner.events import TurnEvent, TurnResult
from planner.supervisor import TurnSupervisor
from planner.turn import Mode, TurnRequest

Engine = NamedDependency[TurnEngine]
Supervisor = NamedDependency[TurnSupervisor]
_event_encoder = msgspec.json.Encoder()
WRITE = require("chat:write")


class NewConversation(msgspec.Struct, frozen=True):
    metadata: dict[str, Any] = {}


class ConversationOut(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    metadata: dict[str, Any]
    created_at: datetime
    turns: list[results.TurnRow] = []


class MessagesOut(msgspec.Struct, frozen=True):
    messages: list[store.StoredMessage]


class TurnIn(msgspec.Struct, frozen=True, kw_only=True):
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
    mode: Mode = "auto"
    stream: bool = False
    model: str | None = None
    max_steps: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None


async def provide_engine(request: Request[Any, Any, Any]) -> TurnEngine:
    engine: TurnEngine = request.app.state.engine
    return engine


async def provide_supervisor(request: Request[Any, Any, Any]) -> TurnSupervisor:
    supervisor: TurnSupervisor = request.app.state.supervisor
    return supervisor


class ConversationController(Controller):
    path = "/v1/conversations"
    tags = ["conversations"]
    dependencies = {"engine": Provide(provide_engine), "supervisor": Provide(provide_supervisor)}
    guards = [require("chat:read")]

    @post("/", status_code=HTTP_201_CREATED, summary="Start a conversation", guards=[WRITE])
    async def create_conversation(
        self,
        request: Request[Any, Any, Any],
        engine: Engine,
        data: JSONBody[NewConversation | None] = None,
    ) -> ConversationOut:
        metadata = data.metadata if data else {}
        made = await store.create_conversation(engine.pool, tenant_of(request), metadata)
        return ConversationOut(id=made.id, metadata=made.metadata, created_at=made.created_at)

    @get("/{conversation_id:str}", summary="A conversation and its turns")
    async def get_conversation(
        self, request: Request[Any, Any, Any], engine: Engine, conversation_id: FromPath[str]
    ) -> ConversationOut:
        found = await store.get_conversation(engine.pool, tenant_of(request), conversation_id)
        turns = await results.list_turns(engine.pool, tenant_of(request), conversation_id)
        return ConversationOut(
            id=found.id, metadata=found.metadata, created_at=found.created_at, turns=turns
        )

    @get("/{conversation_id:str}/messages", summary="Every message, in order")
    async def list_messages(
        self, request: Request[Any, Any, Any], engine: Engine, conversation_id: FromPath[str]
    ) -> MessagesOut:
        tenant = tenant_of(request)
        await store.get_conversation(engine.pool, tenant, conversation_id)
        return MessagesOut(await store.list_messages(engine.pool, tenant, conversation_id))

    @post(
        "/{conversation_id:str}/turns",
        status_code=200,
        summary="Send a message; run a turn",
        guards=[WRITE],
    )
    async def create_turn(
        self,
        request: Request[Any, Any, Any],
        engine: Engine,
        supervisor: Supervisor,
        conversation_id: FromPath[str],
        data: JSONBody[TurnIn],
    ) -> Response[Any]:
        """`stream: false` answers with the finished turn; `stream: true` with SSE events."""
        turn_request = msgspec.convert(msgspec.to_builtins(data), TurnRequest)
        tenant = tenant_of(request)

        async def run(claim: Claim | None) -> Response[Any]:
            ran = await launch_turn(engine, supervisor, claim, tenant, conversation_id,
                                    turn_request)
            if isinstance(ran, TurnResult):
                return _turn_response(ran)
            return ServerSentEvent(_sse(ran))

        return await idempotency.guarded(request, f"POST turns {conversation_id}", run)


async def _sse(events: AsyncIterator[TurnEvent]) -> AsyncIterator[ServerSentEventMessage]:
    number = itertools.count(1)
    async for event in events:
        payload = _event_encoder.encode(event).decode()
        kind = type(event).__struct_config__.tag
        yield ServerSentEventMessage(data=payload, event=str(kind), id=str(next(number)))


async def _answer(
    request: Request[Any, Any, Any], engine: TurnEngine, supervisor: TurnSupervisor,
    turn_id: str, call_id: str, decision: pauses.Decision, stream: bool,
) -> Response[Any]:
    tenant = tenant_of(request)
    ran = await answer_call(engine, supervisor, tenant, turn_id, call_id, decision, stream)
    if ran is None:  # other calls still wait
        result = await results.turn_result(engine.pool, tenant, turn_id)
        return Response(result, status_code=HTTP_202_ACCEPTED)
    if isinstance(ran, TurnResult):
        return _turn_response(ran)
    return ServerSentEvent(_sse(ran))


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
    dependencies = {"engine": Provide(provide_engine), "supervisor": Provide(provide_supervisor)}

    @post("/{turn_id:str}/approvals", status_code=200, summary="Approve or reject a paused call",
          guards=[WRITE])
    async def decide_approval(
        self, request: Request[Any, Any, Any], engine: Engine, supervisor: Supervisor,
        turn_id: FromPath[str], data: JSONBody[ApprovalIn],
    ) -> Response[Any]:
        """When this was the last call the turn waited on, the turn goes on: the answer is its
        result (or SSE events with `stream: true`); otherwise 202 and what it still waits on."""
        decision: pauses.Decision = (
            pauses.Approved(arguments=data.arguments) if data.approve
            else pauses.Rejected(reason=data.reason)
        )
        return await _answer(request, engine, supervisor, turn_id, data.call_id, decision,
                             data.stream)

    @post("/{turn_id:str}/outputs", status_code=200, summary="Send a client tool's output",
          guards=[WRITE])
    async def send_output(
        self, request: Request[Any, Any, Any], engine: Engine, supervisor: Supervisor,
        turn_id: FromPath[str], data: JSONBody[OutputIn],
    ) -> Response[Any]:
        """The output (or error) of a client tool's call; the turn goes on as with approvals."""
        decision = pauses.ClientOutput(output=data.output, error=data.error)
        return await _answer(request, engine, supervisor, turn_id, data.call_id, decision,
                             data.stream)

    @get("/{turn_id:str}", summary="A turn: its status, answer, calls and usage")
    async def get_turn(self, request: Request[Any, Any, Any], turn_id: FromPath[str]
                       ) -> TurnResult:
        result = await results.turn_result(request.app.state.pool, tenant_of(request), turn_id)
        if result is None:
            raise TurnNotFound(turn_id)
        return result
