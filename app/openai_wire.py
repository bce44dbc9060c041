"""The OpenAI chat-completions wire format: what a request asks of a turn, and how a turn's
result, its events and its problems read as completions, chunks and `error` members."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response
from litestar.response import ServerSentEventMessage
from msgspec import UNSET, UnsetType

from app.errors import RequestFieldInvalid
from app.problems import PROBLEM_JSON
from planner.events import (
    MessageDelta,
    PendingCall,
    Problem,
    ReasoningDelta,
    ToolCallRecord,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
    TurnPaused,
    TurnResult,
    TurnResumed,
    TurnStarted,
)
from planner.messages import ChatMessage, Usage
from planner.records import MAX_CLIENT_TOOLS, ClientTool, TurnRequest, TurnToolChoice
from planner.statuses import PAUSED_STATUSES

CONVERSATION_HEADER = "X-Switchboard-Conversation"
_encoder = msgspec.json.Encoder()
_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error"}
_FINISH_REASONS = {"completed": "stop", "awaiting_approval": "stop",
                   "requires_action": "tool_calls"}
"""A turn's end as a finish reason. A turn paused on client tools hands their calls to the
client as `tool_calls`, the way OpenAI clients run their own functions; one that waits for a
person's approval answers with a message that says so."""


class ContentPart(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: str
    text: str | None = None
    # Parts OpenAI defines that are not text: read so that their type is what is refused.
    image_url: Any = None
    input_audio: Any = None
    file: Any = None
    refusal: str | None = None


class MessageIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    # OpenAI's other message fields: accepted, not read.
    name: str | None = None
    refusal: str | None = None
    function_call: Any = None
    audio: Any = None


class ToolOutput(msgspec.Struct, frozen=True, kw_only=True):
    """A client tool's result, sent back as a `tool` message."""

    call_id: str
    content: str


class StreamOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    include_usage: bool = False
    include_obfuscation: bool | None = None


class ChatCompletionIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The fields Switchboard reads, and every other parameter OpenAI's API (and SGLang's,
    which clients of it send) defines: those are accepted and ignored, since the backend's
    settings apply. Any other name is refused with the one it is likely a typo of.
    `tools` are the client's own functions: the turn offers them beside the registered tools
    it finds, and hands their calls back as `tool_calls`."""

    model: str
    messages: Annotated[list[MessageIn], msgspec.Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    metadata: dict[str, Any] | None = None
    n: int | None = None
    tools: Annotated[list[ClientTool], msgspec.Meta(max_length=MAX_CLIENT_TOOLS)] | None = None
    functions: list[Any] | None = None
    tool_choice: TurnToolChoice | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    # Accepted, not read: sampling, accounting and output options.
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    top_logprobs: int | None = None
    user: str | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    separate_reasoning: bool | None = None


class ChatAsk(msgspec.Struct, frozen=True, kw_only=True):
    """What a chat-completions request asks of Switchboard."""

    conversation_id: str | None
    """The conversation to continue; None opens a new one holding `history`."""
    metadata: dict[str, Any]
    history: list[ChatMessage]
    turn: TurnRequest
    include_usage: bool
    outputs: list[ToolOutput] = []
    """Results of the client tools a paused turn waits on: the turn goes on, no new one."""
    tool_traffic: str | None = None
    """Where the messages first hold tool calls or results: they must continue a conversation
    Switchboard holds, since only it knows what those calls were."""


class OpenAIError(msgspec.Struct, frozen=True, kw_only=True):
    message: str
    type: str
    param: str | None
    code: str | None


class Extension(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The `switchboard` member: the turn behind a completion and the tools it ran itself; for
    a paused turn, its status and the calls it waits on."""

    turn_id: str
    conversation_id: str
    tool_calls: list[ToolCallRecord] | None = None
    status: str | None = None
    pending: list[PendingCall] | None = None


class FunctionOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    arguments: str


class ToolCallOut(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    function: FunctionOut
    type: str = "function"
    index: int | UnsetType = UNSET
    """Only in stream deltas."""


class UsageOut(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


class MessageOut(msgspec.Struct, frozen=True, kw_only=True):
    content: str | None
    role: str = "assistant"
    reasoning_content: str | UnsetType = UNSET
    """The answer's reasoning, as SGLang's own route returns it with a reasoning parser."""
    tool_calls: list[ToolCallOut] | UnsetType = UNSET


class Choice(msgspec.Struct, frozen=True, kw_only=True):
    message: MessageOut
    finish_reason: str
    index: int = 0
    logprobs: None = None


class _Completion(msgspec.Struct, frozen=True, kw_only=True):
    """What a completion and each of its chunks repeat: the turn's id, when, which model."""

    id: str
    created: int
    model: str


class ChatCompletion(_Completion, frozen=True, kw_only=True):
    choices: list[Choice]
    usage: UsageOut
    switchboard: Extension
    object: str = "chat.completion"


class Delta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChunkChoice(msgspec.Struct, frozen=True, kw_only=True):
    delta: Delta
    finish_reason: str | None = None
    index: int = 0
    logprobs: None = None


class ChatCompletionChunk(_Completion, frozen=True, kw_only=True):
    choices: list[ChunkChoice]
    usage: UsageOut | UnsetType = UNSET
    switchboard: Extension | UnsetType = UNSET
    object: str = "chat.completion.chunk"


class StreamError(msgspec.Struct, frozen=True, kw_only=True):
    """A failed turn's last event: the openai client raises on a chunk with `error`."""

    error: OpenAIError
    switchboard: Extension


def read_request(body: ChatCompletionIn, header_conversation: str | None) -> ChatAsk:
    """The turn a request asks for; a field whose meaning would be lost is refused by name.
    A conversation that is continued is held by the server: of the messages, only the system
    ones and the last ones (a user message, or the results of client tools) are read."""
    _refuse_unsupported(body)
    metadata = dict(body.metadata or {})
    conversation_id = _conversation_id(metadata.pop("conversation_id", None),
                                       header_conversation)
    texts = [_text(message, i) for i, message in enumerate(body.messages)]
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    outputs = _tool_outputs(body.messages, texts)
    if outputs:
        return ChatAsk(conversation_id=conversation_id, metadata=metadata, history=[],
                       turn=TurnRequest(message="", stream=body.stream, model=body.model),
                       include_usage=include_usage, outputs=outputs)
    spoken = [i for i, m in enumerate(body.messages)
              if m.role not in ("system", "developer") and not _tool_traffic(m)]
    _check_last(body.messages, spoken, texts)
    instructions = "\n\n".join(
        texts[i] for i, m in enumerate(body.messages) if m.role in ("system", "developer")
    )
    history = [ChatMessage(role=body.messages[i].role, content=texts[i])  # type: ignore[arg-type]
               for i in spoken[:-1] if texts[i]]
    return ChatAsk(
        conversation_id=conversation_id,
        metadata=metadata,
        history=history,
        turn=TurnRequest(message=texts[spoken[-1]], stream=body.stream, model=body.model,
                         instructions=instructions or None, tools=body.tools or [],
                         tool_choice=_tool_choice(body)),
        include_usage=include_usage,
        tool_traffic=_first_tool_traffic(body.messages),
    )


def _check_last(messages: list[MessageIn], spoken: list[int], texts: list[str]) -> None:
    """The last message but system ones is the user's: the message this turn answers."""
    if not spoken:
        raise RequestFieldInvalid("/messages", "holds no user message: send the message this "
                                               "turn should answer as the last one")
    last = spoken[-1]
    if messages[last].role != "user":
        raise RequestFieldInvalid(
            f"/messages/{last}/role", f"the last message (but system ones) must be the user's, "
            f"the one this turn answers; got {messages[last].role!r}")
    if not texts[last]:
        raise RequestFieldInvalid(f"/messages/{last}/content", "the user message has no text")


def _refuse_unsupported(body: ChatCompletionIn) -> None:
    if body.n is not None and body.n != 1:
        raise RequestFieldInvalid("/n", f"n={body.n} is not supported: a turn has one answer; "
                                        "send n=1 or leave it out")
    if body.functions:
        raise RequestFieldInvalid("/functions", "the deprecated functions field is not "
                                  'supported: send them as tools, {"type": "function", '
                                  '"function": {...}} each')
    if body.function_call not in (None, "auto", "none"):
        raise RequestFieldInvalid("/function_call", "the deprecated function_call field takes "
                                  "'auto' or 'none' only: name a function with tool_choice")
    if body.response_format is not None and body.response_format.get("type") != "text":
        raise RequestFieldInvalid("/response_format", "structured output is not supported: "
                                                      "answers are text; leave this field out")
    if body.logprobs:
        raise RequestFieldInvalid("/logprobs", "log probabilities are not reported: a turn's "
                                               "answer comes from several model calls")


def _tool_choice(body: ChatCompletionIn) -> TurnToolChoice:
    if body.tool_choice is not None:
        return body.tool_choice
    return "none" if body.function_call == "none" else "auto"


def _tool_traffic(message: MessageIn) -> bool:
    return message.role in ("tool", "function") or bool(message.tool_calls)


def _first_tool_traffic(messages: list[MessageIn]) -> str | None:
    for i, message in enumerate(messages):
        if _tool_traffic(message):
            return f"/messages/{i}" + ("/tool_calls" if message.tool_calls else "/role")
    return None


def _tool_outputs(messages: list[MessageIn], texts: list[str]) -> list[ToolOutput]:
    """The trailing `tool` messages: results of the client tools a paused turn waits on."""
    first = len(messages)
    while first > 0 and messages[first - 1].role == "tool":
        first -= 1
    outputs = []
    for i in range(first, len(messages)):
        call_id = messages[i].tool_call_id
        if not call_id:
            raise RequestFieldInvalid(f"/messages/{i}/tool_call_id", "a tool result must name "
                                      "the call it answers (the id from the tool_calls)")
        outputs.append(ToolOutput(call_id=call_id, content=texts[i]))
    return outputs


def _text(message: MessageIn, index: int) -> str:
    if message.role == "function":
        raise RequestFieldInvalid(f"/messages/{index}/role", "the deprecated function role is "
                                  "not supported: send a function's result as a tool message "
                                  "with the tool_call_id it answers")
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    for number, part in enumerate(message.content):
        if part.type != "text":
            raise RequestFieldInvalid(f"/messages/{index}/content/{number}/type",
                                      f"content parts of type {part.type!r} are not supported; "
                                      "send text parts only")
    return "\n".join(part.text or "" for part in message.content)


def _conversation_id(from_metadata: Any, from_header: str | None) -> str | None:
    if from_metadata is not None and not isinstance(from_metadata, str):
        raise RequestFieldInvalid("/metadata/conversation_id", "must be a string: the id a "
                                  "completion returned in switchboard.conversation_id")
    if from_metadata and from_header and from_metadata != from_header:
        raise RequestFieldInvalid(
            "/metadata/conversation_id", f"names conversation {from_metadata!r} but the "
            f"{CONVERSATION_HEADER} header names {from_header!r}; send one of them")
    return from_metadata or from_header or None


class Frame(msgspec.Struct, frozen=True, kw_only=True):
    """What every completion and chunk of one request repeats."""

    model: str
    created: int

    def chunk(self, turn_id: str, delta: Delta, **more: Any) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=turn_id, created=self.created, model=self.model,
                                   choices=[ChunkChoice(delta=delta)], **more)


def respond(result: TurnResult, frame: Frame, path: str) -> Response[Any]:
    """A finished turn as a `chat.completion`, or as a problem when it failed."""
    headers = {CONVERSATION_HEADER: result.conversation_id}
    if result.error is not None:
        body = {**msgspec.to_builtins(result.error), "instance": path,
                "error": openai_error(result.error), "turn": msgspec.to_builtins(result)}
        # The turn ran, and failed after the engine's own retries: a client retry would run
        # another turn, so the client is asked not to.
        return Response(body, status_code=result.error.status, media_type=PROBLEM_JSON,
                        headers={**headers, "x-should-retry": "false"})
    choice = Choice(message=_message(result), finish_reason=_FINISH_REASONS[result.status])
    completion = ChatCompletion(id=result.id, created=frame.created, model=frame.model,
                                choices=[choice], usage=_usage(result.usage),
                                switchboard=_extension(result))
    return Response(completion, headers=headers)


async def stream_chunks(
    events: AsyncIterator[TurnEvent], frame: Frame, include_usage: bool
) -> AsyncIterator[ServerSentEventMessage]:
    """A turn's events as `chat.completion.chunk`s, ending with `[DONE]`."""
    turn_id = ""
    async for event in events:
        if isinstance(event, TurnStarted | TurnResumed):
            turn_id = event.turn_id
        for payload in _chunks(event, turn_id, frame, include_usage):
            yield ServerSentEventMessage(data=_encoder.encode(payload).decode())
    yield ServerSentEventMessage(data="[DONE]")


def _chunks(event: TurnEvent, turn_id: str, frame: Frame, include_usage: bool
            ) -> list[ChatCompletionChunk | StreamError]:
    match event:
        case TurnStarted(conversation_id=conversation_id) | TurnResumed(
            conversation_id=conversation_id
        ):
            ids = Extension(turn_id=turn_id, conversation_id=conversation_id)
            return [frame.chunk(turn_id, Delta(role="assistant", content=""), switchboard=ids)]
        case MessageDelta(text=text):
            return [frame.chunk(turn_id, Delta(content=text))]
        case ReasoningDelta(text=text):
            return [frame.chunk(turn_id, Delta(reasoning_content=text))]
        case TurnPaused(turn=result):
            delta = (Delta(tool_calls=_client_calls(result.pending, indexed=True))
                     if result.status == "requires_action"
                     else Delta(content=_waiting_text(result)))
            return [frame.chunk(turn_id, delta), *_closing(result, turn_id, frame, include_usage)]
        case TurnCompleted(turn=result):
            return _closing(result, turn_id, frame, include_usage)
        case TurnFailed(turn=result) if result.error is not None:
            return [StreamError(error=openai_error(result.error), switchboard=_extension(result))]
    return []


def _closing(result: TurnResult, turn_id: str, frame: Frame, include_usage: bool
             ) -> list[ChatCompletionChunk | StreamError]:
    """The finish chunk, and the usage chunk when the client asked for it."""
    last = ChatCompletionChunk(
        id=turn_id, created=frame.created, model=frame.model,
        choices=[ChunkChoice(delta=Delta(), finish_reason=_FINISH_REASONS[result.status])],
        switchboard=_extension(result))
    usage = ChatCompletionChunk(id=turn_id, created=frame.created, model=frame.model,
                                choices=[], usage=_usage(result.usage))
    return [last, usage] if include_usage else [last]


def _extension(result: TurnResult) -> Extension:
    paused = result.status in PAUSED_STATUSES
    return Extension(turn_id=result.id, conversation_id=result.conversation_id,
                     tool_calls=list(result.tool_calls),
                     status=result.status if paused else None,
                     pending=list(result.pending) if paused else None)


def _message(result: TurnResult) -> MessageOut:
    """The assistant message of a turn: its answer, the client tools' calls it hands over,
    or what it waits for a person to approve."""
    if result.status == "requires_action":
        return MessageOut(content=None, tool_calls=_client_calls(result.pending))
    if result.status == "awaiting_approval":
        return MessageOut(content=_waiting_text(result))
    if result.message is None:
        return MessageOut(content="")
    return MessageOut(content=result.message.content, reasoning_content=result.message.reasoning)


def _client_calls(pending: list[PendingCall], indexed: bool = False) -> list[ToolCallOut]:
    client = [p for p in pending if p.waits_for == "output"]
    return [
        ToolCallOut(id=p.id, index=i if indexed else UNSET, function=FunctionOut(
            name=p.name, arguments=json.dumps(p.arguments, ensure_ascii=False)))
        for i, p in enumerate(client)
    ]


def _waiting_text(result: TurnResult) -> str:
    calls = "; ".join(f"{p.name} {json.dumps(p.arguments, ensure_ascii=False)}"
                      for p in result.pending if p.waits_for == "approval")
    return (f"This needs approval before it runs: {calls}. Approve or reject it with POST "
            f"/v1/turns/{result.id}/approvals; the answer follows.")


def _usage(usage: Usage) -> UsageOut:
    cached = None if usage.cached_tokens is None else {"cached_tokens": usage.cached_tokens}
    return UsageOut(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                    total_tokens=usage.prompt_tokens + usage.completion_tokens,
                    prompt_tokens_details=cached)


def openai_error(problem: Problem) -> OpenAIError:
    """A problem as OpenAI clients read an error: `type` by status, `code` the problem's slug,
    `param` the first field named (`messages.2.content`)."""
    status, errors = problem.status, problem.errors
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    param = errors[0].pointer.lstrip("/").replace("/", ".") if errors else ""
    return OpenAIError(message=problem.detail, type=kind, param=param or None,
                       code=problem.type.rsplit("/", 1)[-1])


Handler = Callable[[Request[Any, Any, Any], Any], Response[Any]]


def with_error_member(handlers: Mapping[type[Exception] | int, Handler]
                      ) -> dict[type[Exception] | int, Handler]:
    """The app's exception handlers, each adding the OpenAI `error` member to its problem."""
    return {kind: _adding_error_member(handler) for kind, handler in handlers.items()}


def _adding_error_member(handler: Handler) -> Handler:
    def handle(request: Request[Any, Any, Any], exc: Any) -> Response[Any]:
        response = handler(request, exc)
        found: Problem = response.content
        body = msgspec.to_builtins(found)
        body["error"] = msgspec.to_builtins(openai_error(found))
        # A conflict means a turn of this conversation still runs; retrying at once would only
        # meet it again, and whether to send the message later is the user's call.
        retry = {"x-should-retry": "false"} if response.status_code == 409 else {}
        return Response(body, status_code=response.status_code, media_type=PROBLEM_JSON,
                        headers={**response.headers, **retry})

    return handle
