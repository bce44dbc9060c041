"""The model backend: SGLang's OpenAI-compatible `POST /chat/completions`, streamed or not."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager, suppress
from typing import Annotated, Any, Literal, Protocol, TypeVar

import httpx
import msgspec

from planner._sse import iter_sse_data
from planner.errors import ModelResponseError, ModelUnavailable
from planner.messages import (
    ChatMessage,
    ContentDelta,
    Delta,
    ModelReply,
    ModelRequest,
    ReasoningDelta,
    ToolCallRequest,
    ToolChoice,
    ToolChoiceFunction,
    ToolEntry,
    Usage,
)
from planner.text_calls import REASONING_FLAGS, TOOL_CALL_FLAGS, read_text, written_as_text
from tools.retry import RetryPolicy, RetrySchedule, parse_retry_after, retryable_status

__all__ = [
    "ChatCompletionPayload",
    "ModelBackend",
    "ModelClient",
    "OnDelta",
    "RetryPolicy",
    "build_payload",
]

OnDelta = Callable[[Delta], Awaitable[None]]
log = logging.getLogger(__name__)


NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class Price(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a backend's tokens cost, per million: fresh input, cached input, output."""

    input: NonNegative
    output: NonNegative
    cached_input: NonNegative | None = None
    """Unset: cached input costs as much as fresh."""

    @property
    def cached_input_or_input(self) -> float:
        return self.input if self.cached_input is None else self.cached_input


class ModelBackend(msgspec.Struct, frozen=True, kw_only=True):
    """Where the model is served, and the sampling a request gets unless it says otherwise."""

    name: str = "default"
    base_url: str
    """The OpenAI-compatible root, including `/v1`: http://localhost:30000/v1."""
    model: str = "default"
    api_key: str | None = None
    temperature: float | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    enable_thinking: bool | None = None
    price: Price | None = None
    """For eval runs' cost; unset: their cost is not known."""
    text_tool_calls: bool = False
    """Read `<tool_call>` blocks in the text as calls (a server without a tool-call parser)."""
    inline_thinking: bool = False
    """Read `<think>...</think>` in the text as reasoning (a server without a reasoning
    parser)."""
    context_window: Annotated[int, msgspec.Meta(ge=1024)] | None = None
    """Tokens the model takes in and writes out together; unset: read from the server at
    start-up where it says (SGLang's `max_model_len`), else requests are not fitted."""


async def model_cards(backend: ModelBackend, http: httpx.AsyncClient, *, timeout_s: float
                      ) -> httpx.Response:
    """`GET /models` on the backend's server: its model cards, and whether it answers at all."""
    headers = {"Authorization": f"Bearer {backend.api_key}"} if backend.api_key else {}
    return await http.get(backend.base_url.rstrip("/") + "/models", headers=headers,
                          timeout=timeout_s)


async def with_context_window(backend: ModelBackend, http: httpx.AsyncClient) -> ModelBackend:
    """The backend with its context window: as configured, else as its server reports it at
    `GET /models` (SGLang's `max_model_len`), else unknown. A server that is not up yet
    leaves it unknown; the service still starts."""
    if backend.context_window is not None:
        return backend
    try:
        response = await model_cards(backend, http, timeout_s=2.0)
        cards = response.json().get("data", []) if response.status_code == 200 else []
    except (httpx.HTTPError, ValueError, AttributeError):
        return backend
    card = next((c for c in cards if isinstance(c, dict) and c.get("id") == backend.model),
                cards[0] if cards else None)
    window = card.get("max_model_len") if isinstance(card, dict) else None
    if not isinstance(window, int) or isinstance(window, bool) or window < 1024:
        return backend
    return msgspec.structs.replace(backend, context_window=window)


class ChatModel(Protocol):
    """The model seam the engine talks to: `ModelClient` over HTTP is the real one."""

    backend: ModelBackend

    async def complete(
        self, request: ModelRequest, *, stream: bool = False, on_delta: OnDelta | None = None
    ) -> ModelReply: ...


class ModelClient:
    """Sends a `ModelRequest` to one backend and assembles the `ModelReply`."""

    def __init__(
        self, backend: ModelBackend, http: httpx.AsyncClient, retry: RetryPolicy | None = None
    ) -> None:
        if not backend.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"model backend {backend.name!r}: base_url {backend.base_url!r} must be an "
                "http(s) URL ending in /v1, e.g. http://localhost:30000/v1"
            )
        self.backend, self.retry = backend, retry or RetryPolicy()
        self.url = backend.base_url.rstrip("/") + "/chat/completions"
        self._http = http
        self._headers = {"Content-Type": "application/json"}
        self._warned: set[str] = set()
        if backend.api_key:
            self._headers["Authorization"] = f"Bearer {backend.api_key}"

    async def complete(
        self, request: ModelRequest, *, stream: bool = False, on_delta: OnDelta | None = None
    ) -> ModelReply:
        """One model call, retried as the policy allows; `on_delta` sees a stream's text as it
        arrives. Raises ModelUnavailable, ModelResponseError, or ValueError for a request SGLang
        would refuse."""
        body = _payload_encoder.encode(build_payload(self.backend, request, stream=stream))
        if stream:
            reply = await self._with_retries(lambda: self._stream_once(body, on_delta))
        else:
            reply = await self._with_retries(lambda: self._post_once(body))
        return self._read_text(reply)

    def _read_text(self, reply: ModelReply) -> ModelReply:
        """Calls and thinking written as text, read out where the backend says so; where it
        does not, a warning (once) names the server flag that would have."""
        backend = self.backend
        calls, thinking = written_as_text(reply)
        for seen, read, flags, what in ((calls, backend.text_tool_calls, TOOL_CALL_FLAGS,
                                         "text_tool_calls"),
                                        (thinking, backend.inline_thinking, REASONING_FLAGS,
                                         "inline_thinking")):
            if seen and not read and what not in self._warned:
                self._warned.add(what)
                log.warning("model backend %r wrote %s into its text: start SGLang with %s, or "
                            "set %s in MODEL_BACKENDS", backend.name,
                            "tool calls" if what == "text_tool_calls" else "its thinking",
                            flags, what)
        if not (backend.text_tool_calls or backend.inline_thinking):
            return reply
        return read_text(reply, tool_calls=backend.text_tool_calls,
                         thinking=backend.inline_thinking)

    async def _with_retries(self, attempt: Callable[[], Awaitable[ModelReply]]) -> ModelReply:
        schedule = RetrySchedule(self.retry)
        while True:
            try:
                return await attempt()
            except _Retryable as failure:
                delay = schedule.next_delay(failure.retry_after)
                if delay is None:
                    reason = failure.explain(schedule.summary())
                    raise ModelUnavailable(self.url, reason) from failure.__cause__
                await asyncio.sleep(delay)

    async def _post_once(self, body: bytes) -> ModelReply:
        try:
            response = await self._http.post(
                self.url, content=body, headers=self._headers, timeout=self._timeout()
            )
        except httpx.TransportError as exc:
            raise self._retryable(exc) from exc
        self._check_status(response)
        return _ReplyBuilder(self.url).add_completion(_decode(self.url, response.content))

    async def _stream_once(self, body: bytes, on_delta: OnDelta | None) -> ModelReply:
        builder = _ReplyBuilder(self.url)
        async with self._open_stream(body) as response, aclosing(self._chunks(response)) as chunks:
            async for chunk in chunks:
                for delta in builder.add_chunk(chunk):
                    if on_delta is not None:
                        await on_delta(delta)
        return builder.reply()

    @asynccontextmanager
    async def _open_stream(self, body: bytes) -> AsyncIterator[httpx.Response]:
        request = self._http.build_request(
            "POST", self.url, content=body, headers=self._headers, timeout=self._timeout()
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._retryable(exc) from exc
        try:
            if response.is_error:
                await _read_error_body(response)
            self._check_status(response)
            yield response
        finally:
            await response.aclose()

    async def _chunks(self, response: httpx.Response) -> AsyncGenerator[_WireCompletion, None]:
        """The stream's chunks up to `[DONE]`. Only a stream that failed before its first chunk
        is retried: after that, the caller has already seen part of the reply."""
        received = 0
        try:
            async for data in iter_sse_data(response.aiter_lines()):
                if data == "[DONE]":
                    return
                received += 1
                yield _decode(self.url, data.encode(), f"stream chunk {received}")
        except httpx.TransportError as exc:
            if received == 0:
                raise self._retryable(exc) from exc
            broke = f"the stream broke after {_count(received, 'chunk')}: {self._describe(exc)}"
            raise ModelUnavailable(self.url, broke) from exc
        raise ModelUnavailable(
            self.url, f"the stream ended after {_count(received, 'chunk')} without `data: [DONE]`"
        )

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if response.is_success:
            return
        said = _server_message(response.content)
        if retryable_status(status):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _Retryable(f"HTTP {status}", said, retry_after)
        raise ModelResponseError(self.url, f"HTTP {status}: {said}{_STATUS_HINTS.get(status, '')}",
                                 status)

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.retry.request_timeout_s)

    def _describe(self, exc: httpx.TransportError) -> str:
        return _describe_transport_error(exc, self.retry.request_timeout_s)

    def _retryable(self, exc: httpx.TransportError) -> _Retryable:
        slow = isinstance(exc, httpx.TimeoutException)
        hint = "raise RetryPolicy.request_timeout_s if the model needs longer" if slow else ""
        return _Retryable(self._describe(exc), hint=hint)


async def _read_error_body(response: httpx.Response) -> None:
    """Read an error's body for its message; the status alone still tells what happened."""
    with suppress(httpx.TransportError):
        await response.aread()


class _Retryable(Exception):
    """An attempt failed in a way that another attempt might not."""

    def __init__(
        self, what: str, said: str = "", retry_after: float | None = None, hint: str = ""
    ) -> None:
        super().__init__(what)
        self.what, self.said, self.retry_after, self.hint = what, said, retry_after, hint

    def explain(self, attempts: str) -> str:
        """E.g. "HTTP 503 after 4 attempts; the server said: overloaded"."""
        parts = [f"{self.what} {attempts}"]
        parts += [f"the server said: {self.said}"] if self.said else []
        parts += [self.hint] if self.hint else []
        return "; ".join(parts)


_STATUS_HINTS = {
    401: " (check the backend's api_key)",
    403: " (check the backend's api_key)",
    404: " (check that base_url ends in /v1, e.g. http://localhost:30000/v1)",
}


def _describe_transport_error(exc: httpx.TransportError, timeout_s: float) -> str:
    """A short account of a network failure, e.g. "connection refused"."""
    match exc:
        case httpx.ConnectTimeout():
            return f"no connection within {timeout_s:g}s"
        case httpx.TimeoutException():
            return f"no response within {timeout_s:g}s"
        case httpx.ConnectError() if _caused_by(exc, ConnectionRefusedError):
            return "connection refused"
        case httpx.ConnectError():
            return f"cannot connect ({exc})"
        case httpx.RemoteProtocolError():
            return f"the server dropped the connection ({exc})"
        case _:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, kind):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


class _FunctionName(msgspec.Struct, frozen=True):
    name: str


class _NamedToolChoice(msgspec.Struct, frozen=True):
    function: _FunctionName
    type: Literal["function"] = "function"


class ChatCompletionPayload(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The body of `POST /chat/completions` as SGLang takes it."""

    model: str
    messages: list[ChatMessage]
    separate_reasoning: bool
    tools: list[ToolEntry] | None = None
    tool_choice: Literal["auto", "required", "none"] | _NamedToolChoice | None = None
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, bool] | None = None


_payload_encoder = msgspec.json.Encoder()
_T = TypeVar("_T")


def build_payload(
    backend: ModelBackend, request: ModelRequest, *, stream: bool
) -> ChatCompletionPayload:
    """The wire body: the request's values, else the backend's defaults."""
    if request.response_format is not None and request.tool_choice == "required":
        raise ValueError(
            "a request cannot combine response_format with tool_choice='required': SGLang "
            "rejects the pair; drop response_format, or use tool_choice='auto' or 'none'"
        )
    thinking = _first(request.enable_thinking, backend.enable_thinking)
    sampled = sampling(backend, request)
    return ChatCompletionPayload(
        model=backend.model,
        messages=request.messages,
        separate_reasoning=True,
        tools=request.tools or None,
        tool_choice=_wire_tool_choice(request.tool_choice),
        response_format=request.response_format,
        chat_template_kwargs=None if thinking is None else {"enable_thinking": thinking},
        max_completion_tokens=sampled.max_completion_tokens,
        temperature=sampled.temperature,
        seed=sampled.seed,
        stream=stream,
        stream_options={"include_usage": True} if stream else None,
    )


class Sampling(msgspec.Struct, frozen=True, kw_only=True):
    temperature: float | None
    max_completion_tokens: int | None
    seed: int | None


def sampling(backend: ModelBackend, request: ModelRequest) -> Sampling:
    """What a request is sampled with: its own values, else the backend's defaults (None:
    the server's)."""
    return Sampling(
        temperature=_first(request.temperature, backend.temperature),
        max_completion_tokens=_first(request.max_completion_tokens, backend.max_completion_tokens),
        seed=_first(request.seed, backend.seed),
    )


def _first(value: _T | None, default: _T | None) -> _T | None:
    return default if value is None else value


def _wire_tool_choice(
    choice: ToolChoice | None,
) -> Literal["auto", "required", "none"] | _NamedToolChoice | None:
    if isinstance(choice, ToolChoiceFunction):
        return _NamedToolChoice(function=_FunctionName(choice.name))
    return choice


class _WireFunction(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _WireToolCall(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _WireFunction | None = None


class _WireMessage(msgspec.Struct):
    """`choices[].message` of a reply, or `choices[].delta` of a stream chunk."""

    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[_WireToolCall] | None = None


class _WireChoice(msgspec.Struct):
    message: _WireMessage | None = None
    delta: _WireMessage | None = None
    finish_reason: str | None = None


class _WirePromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _WireUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _WirePromptDetails | None = None

    def to_usage(self) -> Usage:
        details = self.prompt_tokens_details
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_tokens=details.cached_tokens if details else None,
        )


class _WireError(msgspec.Struct):
    message: str = ""


class _WireCompletion(msgspec.Struct):
    """A whole reply or one stream chunk; SGLang reports a failed stream as `{"error": ...}`."""

    id: str = ""
    choices: list[_WireChoice] = []
    usage: _WireUsage | None = None
    model: str = ""
    error: _WireError | None = None


class _ErrorBody(msgspec.Struct):
    """SGLang's `{"message": ...}`, OpenAI's `{"error": {"message": ...}}`, or `{"detail": ...}`."""

    message: str | None = None
    error: _WireError | str | None = None
    detail: str | None = None


_completion_decoder = msgspec.json.Decoder(_WireCompletion)
_error_decoder = msgspec.json.Decoder(_ErrorBody)


def _decode(url: str, body: bytes, what: str = "the body") -> _WireCompletion:
    try:
        completion = _completion_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ModelResponseError(url, f"{what} is not a chat completion: {exc}") from exc
    if completion.error is not None:
        raise ModelResponseError(url, f"{what} reports an error: {completion.error.message}")
    return completion


def _server_message(body: bytes) -> str:
    try:
        said = _error_decoder.decode(body)
    except msgspec.DecodeError:
        said = _ErrorBody()
    nested = said.error.message if isinstance(said.error, _WireError) else said.error
    text = said.message or nested or said.detail or body.decode(errors="replace").strip()
    return text[:500] if text else "(empty body)"


class _PartialCall:
    def __init__(self) -> None:
        self.id: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []

    def merge(self, wire: _WireToolCall) -> None:
        self.id = self.id or wire.id
        if wire.function is not None:
            self.name = self.name or wire.function.name
            self.arguments.append(wire.function.arguments or "")


class _ReplyBuilder:
    """Assembles a ModelReply from a whole reply or from stream chunks, so that both paths
    end in the same shape."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._finish_reason: str | None = None
        self._usage = Usage()
        self._model = ""
        self._id = ""

    def add_completion(self, completion: _WireCompletion) -> ModelReply:
        if not completion.choices or completion.choices[0].message is None:
            raise ModelResponseError(self._url, "the reply has no choices[0].message")
        self._add_part(completion, completion.choices[0].message, streamed=False)
        return self.reply()

    def add_chunk(self, chunk: _WireCompletion) -> list[Delta]:
        """Take one stream chunk; the text deltas it carries, reasoning first."""
        delta = chunk.choices[0].delta if chunk.choices else None
        self._add_part(chunk, delta, streamed=True)
        if delta is None:
            return []
        found: list[Delta] = []
        if delta.reasoning_content:
            found.append(ReasoningDelta(delta.reasoning_content))
        if delta.content:
            found.append(ContentDelta(delta.content))
        return found

    def _add_part(
        self, part: _WireCompletion, message: _WireMessage | None, *, streamed: bool
    ) -> None:
        self._model = self._model or part.model
        self._id = self._id or part.id
        if part.usage is not None:
            self._usage = part.usage.to_usage()
        if part.choices and part.choices[0].finish_reason:
            self._finish_reason = part.choices[0].finish_reason
        if message is None:
            return
        self._content.append(message.content or "")
        self._reasoning.append(message.reasoning_content or "")
        for wire in message.tool_calls or []:
            self._calls.setdefault(self._index_for(wire, streamed), _PartialCall()).merge(wire)

    def _index_for(self, wire: _WireToolCall, streamed: bool) -> int:
        """A whole reply lists its calls in order. In a stream a chunk names its call by
        `index`; without one, a new id opens a call and a bare fragment extends the last."""
        if wire.index is not None and streamed:
            return wire.index
        if not streamed or wire.id is not None or not self._calls:
            return len(self._calls)
        return max(self._calls)

    def reply(self) -> ModelReply:
        return ModelReply(
            content="".join(self._content),
            reasoning="".join(self._reasoning),
            tool_calls=[self._finish_call(i, self._calls[i]) for i in sorted(self._calls)],
            finish_reason=self._finish_reason,
            usage=self._usage,
            model=self._model,
            id=self._id or None,
        )

    def _finish_call(self, index: int, call: _PartialCall) -> ToolCallRequest:
        if not call.name:
            raise ModelResponseError(self._url, f"tool call {index} has no function name")
        return ToolCallRequest(
            id=call.id or f"call_{index}_{secrets.token_hex(4)}",
            name=call.name,
            arguments="".join(call.arguments),
        )
