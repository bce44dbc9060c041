"""A stand-in for SGLang in tests and benchmarks: a real HTTP server on loopback that speaks the
OpenAI-compatible chat API and replays scripted steps.

    async with scripted_model(ScriptedReply(content="hi")) as model:
        client = ModelClient(ModelBackend(base_url=model.url), http)
        ...
        assert model.requests[0]["tool_choice"] == "auto"

As a process, for load tests (answers forever: call the tool, then answer its result):

    python -m tests.scripted_model --port 30000 --latency-ms 50 --tool get_weather [--parallel 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import msgspec

from planner.messages import Usage
from tests.loopback import LoopbackServer

__all__ = [
    "ScriptedDisconnect",
    "ScriptedFailure",
    "ScriptedHang",
    "ScriptedModel",
    "ScriptedReply",
    "Step",
    "call_then_answer",
    "scripted_model",
    "split_evenly",
]

ScriptedCall = tuple[str, dict[str, Any] | str] | tuple[str, dict[str, Any] | str, str]
"""(name, arguments) or (name, arguments, id); string arguments are sent as written."""


class ScriptedReply(msgspec.Struct, frozen=True, kw_only=True):
    """A model answer. `finish_reason` defaults to "tool_calls" when there are calls, else
    "stop"; `usage` defaults to counts derived from the text sizes."""

    content: str = ""
    reasoning: str = ""
    tool_calls: Sequence[ScriptedCall] = ()
    usage: Usage | None = None
    finish_reason: str | None = None


class ScriptedFailure(msgspec.Struct, frozen=True, kw_only=True):
    """An HTTP error; `body` None sends SGLang's error shape with a stock message."""

    status: int = 500
    body: str | dict[str, Any] | None = None
    headers: dict[str, str] = {}


class ScriptedHang(msgspec.Struct, frozen=True):
    """Accept the request and say nothing for `seconds`, then send `then` (if the client is
    still there)."""

    seconds: float
    then: ScriptedReply | ScriptedFailure = ScriptedFailure(status=504)


class ScriptedDisconnect(msgspec.Struct, frozen=True, kw_only=True):
    """Send the first `after_chunks` stream chunks of `reply`, then drop the connection. A
    non-streamed request gets half of the body before the drop."""

    after_chunks: int = 0
    reply: ScriptedReply = ScriptedReply(content="this reply is cut short")


Step = ScriptedReply | ScriptedFailure | ScriptedHang | ScriptedDisconnect
Responder = Callable[[dict[str, Any]], Step]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class ScriptedModel:
    """The server: steps are taken from the queue in order, or from `responder` when given."""

    def __init__(
        self,
        *steps: Step,
        responder: Responder | None = None,
        latency_s: float = 0.0,
        argument_fragments: int = 1,
        model_name: str = "scripted-model",
        context_window: int = 32768,
        count_prompt: Callable[[dict[str, Any]], int] | None = None,
        tokens_per_s: float | None = None,
    ) -> None:
        self.context_window = context_window
        """Reported as `max_model_len` at GET /v1/models, as SGLang does."""
        self.count_prompt = count_prompt
        """The prompt tokens reported for a request body; unset: a quarter of its messages'
        characters."""
        self.tokens_per_s = tokens_per_s
        """A streamed reply's pace: its text in tokens of four characters, one chunk each, at
        this rate (a real server's decode speed); unset: words, as fast as they go."""
        self.answered: list[float] = []
        """When each chat request's answer was sent whole (time.monotonic), in request order
        of completion."""
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.models_listed = 0
        """How many times GET /v1/models was asked."""
        self.latency_s, self.argument_fragments = latency_s, argument_fragments
        self.model_name = model_name
        self._queue: deque[Step] = deque(steps)
        self._responder = responder
        self._server: LoopbackServer | None = None
        self.url = ""

    def push(self, *steps: Step) -> None:
        self._queue.extend(steps)

    @property
    def steps_left(self) -> int:
        return len(self._queue)

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, own_signals: bool = False
    ) -> None:
        self._server = LoopbackServer(
            self,
            host=host,
            port=port,
            own_signals=own_signals,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self.url = f"{await self._server.start()}/v1"

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()

    async def wait_closed(self) -> None:
        """Until the server stops (`stop()`, or SIGINT/SIGTERM when it owns the signals)."""
        if self._server is not None:
            await self._server.wait_closed()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        route = (scope["method"], scope["path"])
        if route == ("POST", "/v1/chat/completions"):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            await self._chat(receive, send, headers)
        elif route == ("GET", "/v1/models"):
            self.models_listed += 1
            await _send_json(send, 200, self._models())
        elif route == ("GET", "/health"):
            await _send_json(send, 200, None)
        else:
            await _send_json(send, 404, {"detail": "Not Found"})

    async def _chat(self, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        try:
            body = json.loads(await _read_body(receive))
        except ValueError as exc:
            await _send_json(send, 400, _sglang_error(400, f"the body is not JSON: {exc}"))
            return
        self.requests.append(body)
        self.request_headers.append(headers)
        step = self._next_step(body)
        if not await _pause(receive, self.latency_s):
            return
        exchange = _Exchange(self, body, len(self.requests), receive, send)
        await exchange.play(step)
        self.answered.append(time.monotonic())

    def _next_step(self, body: dict[str, Any]) -> Step:
        if self._queue:
            return self._queue.popleft()
        if self._responder is not None:
            return self._responder(body)
        return ScriptedFailure(
            status=500,
            body=_sglang_error(
                500,
                f"the scripted model ran out of steps at request {len(self.requests)}; "
                "push more with model.push(...) or pass a responder",
            ),
        )

    def _models(self) -> dict[str, Any]:
        entry = {
            "id": self.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "sglang",
            "root": self.model_name,
            "max_model_len": self.context_window,
        }
        return {"object": "list", "data": [entry]}


class _Exchange:
    """One chat request being answered."""

    def __init__(
        self, model: ScriptedModel, body: dict[str, Any], number: int, receive: Receive, send: Send
    ) -> None:
        self.model, self.body, self.number = model, body, number
        self.receive, self.send = receive, send
        self.streamed = body.get("stream") is True

    async def play(self, step: Step) -> None:
        match step:
            case ScriptedReply():
                await self._reply(step, complete=True)
            case ScriptedFailure(status=status, body=body, headers=headers):
                payload = _sglang_error(status, "scripted failure") if body is None else body
                await _send_json(self.send, status, payload, headers)
            case ScriptedHang(seconds=seconds, then=then):
                if await _pause(self.receive, seconds):
                    await self.play(then)
            case ScriptedDisconnect(after_chunks=after_chunks, reply=reply):
                await self._reply(reply, complete=False, chunk_limit=after_chunks)

    async def _reply(self, reply: ScriptedReply, *, complete: bool, chunk_limit: int = 0) -> None:
        if self.streamed:
            chunks = self._chunks(reply)
            pace = 1 / self.model.tokens_per_s if self.model.tokens_per_s else 0.0
            await _send_stream(self.send, chunks if complete else chunks[:chunk_limit], complete,
                               pace)
        else:
            await _send_json(self.send, 200, self._completion(reply), complete=complete)

    def _completion(self, reply: ScriptedReply) -> dict[str, Any]:
        calls = [_wire_call(self._call_id(i, c), c) for i, c in enumerate(reply.tool_calls)]
        message = {
            "role": "assistant",
            "content": reply.content or None,
            "reasoning_content": reply.reasoning or None,
            "tool_calls": calls or None,
        }
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": _finish_reason(reply),
            "matched_stop": None,
        }
        return {
            **self._envelope("chat.completion"),
            "choices": [choice],
            "usage": self._usage(reply),
        }

    def _chunks(self, reply: ScriptedReply) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        pieces = _tokens if self.model.tokens_per_s else _words
        deltas += [{"reasoning_content": piece} for piece in pieces(reply.reasoning)]
        deltas += [{"content": piece} for piece in pieces(reply.content)]
        for index, call in enumerate(reply.tool_calls):
            deltas += self._call_deltas(index, call)
        chunks = [self._chunk([_delta_choice(delta)]) for delta in deltas]
        chunks.append(self._chunk([_delta_choice({}, _finish_reason(reply))]))
        if (self.body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**self._chunk([]), "usage": self._usage(reply)})
        return chunks

    def _call_deltas(self, index: int, call: ScriptedCall) -> list[dict[str, Any]]:
        """The first delta names the call; the arguments follow in fragments, as SGLang sends
        them (later fragments carry null id and name)."""
        head = {
            "index": index,
            "id": self._call_id(index, call),
            "type": "function",
            "function": {"name": call[0], "arguments": ""},
        }
        fragments = split_evenly(_arguments(call), self.model.argument_fragments)
        tail = [
            {
                "index": index,
                "id": None,
                "type": "function",
                "function": {"name": None, "arguments": fragment},
            }
            for fragment in fragments
        ]
        return [{"tool_calls": [part]} for part in [head, *tail]]

    def _call_id(self, index: int, call: ScriptedCall) -> str:
        return call[2] if len(call) == 3 else f"call_{self.number}_{index}"

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{self.number}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model.model_name,
        }

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {**self._envelope("chat.completion.chunk"), "choices": choices, "usage": None}

    def _usage(self, reply: ScriptedReply) -> dict[str, Any]:
        usage = reply.usage or _estimated_usage(self.body, reply)
        if reply.usage is None and self.model.count_prompt is not None:
            usage = msgspec.structs.replace(usage, prompt_tokens=self.model.count_prompt(self.body))
        details = None if usage.cached_tokens is None else {"cached_tokens": usage.cached_tokens}
        return {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": details,
        }


def split_evenly(text: str, parts: int) -> list[str]:
    """`text` cut into `parts` pieces of near-equal length, wherever the cuts fall (inside a
    JSON string value included), as a streaming model would."""
    parts = max(1, min(parts, len(text)))
    cuts = [round(len(text) * i / parts) for i in range(parts + 1)]
    return [text[start:end] for start, end in itertools.pairwise(cuts)]


def call_then_answer(
    tool: str, arguments: dict[str, Any] | None = None, parallel: int = 1
) -> Responder:
    """A responder for benchmarks: call `tool` (`parallel` times in one reply), and once the
    results are in, answer with text."""

    def respond(body: dict[str, Any]) -> Step:
        messages = body.get("messages") or [{}]
        if messages[-1].get("role") == "tool":
            return ScriptedReply(content=f"Done: {str(messages[-1].get('content'))[:200]}")
        return ScriptedReply(
            reasoning="The user needs a tool.",
            tool_calls=[(tool, arguments or {})] * parallel,
        )

    return respond


@contextlib.asynccontextmanager
async def scripted_model(
    *steps: Step,
    responder: Responder | None = None,
    latency_s: float = 0.0,
    argument_fragments: int = 1,
    model_name: str = "scripted-model",
    context_window: int = 32768,
    count_prompt: Callable[[dict[str, Any]], int] | None = None,
    tokens_per_s: float | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    own_signals: bool = False,
) -> AsyncIterator[ScriptedModel]:
    """A scripted model server for the duration of the block; `model.url` ends in /v1."""
    model = ScriptedModel(
        *steps,
        responder=responder,
        latency_s=latency_s,
        argument_fragments=argument_fragments,
        model_name=model_name,
        context_window=context_window,
        count_prompt=count_prompt,
        tokens_per_s=tokens_per_s,
    )
    await model.start(host, port, own_signals=own_signals)
    try:
        yield model
    finally:
        await model.stop()


def _arguments(call: ScriptedCall) -> str:
    arguments = call[1]
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _wire_call(call_id: str, call: ScriptedCall) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call[0], "arguments": _arguments(call)},
    }


def _finish_reason(reply: ScriptedReply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


def _delta_choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def _words(text: str) -> list[str]:
    """Text in token-sized pieces (a word and the spaces after it)."""
    return re.findall(r"\S+\s*|\s+", text)


def _tokens(text: str) -> list[str]:
    """Text in pieces of four characters, about a token each for English and JSON."""
    return [text[i:i + 4] for i in range(0, len(text), 4)]


def _estimated_usage(body: dict[str, Any], reply: ScriptedReply) -> Usage:
    written = reply.content + reply.reasoning + "".join(_arguments(c) for c in reply.tool_calls)
    prompt = json.dumps(body.get("messages", []))
    return Usage(
        prompt_tokens=max(1, len(prompt) // 4), completion_tokens=max(1, len(written) // 4)
    )


def _sglang_error(status: int, message: str) -> dict[str, Any]:
    kind = "BadRequestError" if status < 500 else "InternalServerError"
    return {"object": "error", "message": message, "type": kind, "param": None, "code": status}


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _pause(receive: Receive, seconds: float) -> bool:
    """Sleep, but stop early if the client goes away; True if it is still there."""
    if seconds <= 0:
        return True
    gone = asyncio.ensure_future(receive())
    try:
        done, _ = await asyncio.wait({gone}, timeout=seconds)
    finally:
        gone.cancel()
    return not done


async def _send_json(
    send: Send,
    status: int,
    payload: Any,
    headers: dict[str, str] | None = None,
    *,
    complete: bool = True,
) -> None:
    """Send a JSON response; with `complete` False, send half of it and drop the connection."""
    body = (
        b""
        if payload is None
        else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
    )
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    if complete:
        await send({"type": "http.response.body", "body": body})
    else:
        await send(
            {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
        )


async def _send_stream(
    send: Send, chunks: list[dict[str, Any]], complete: bool, pace_s: float = 0.0
) -> None:
    """Server-sent events, one chunk per event, `pace_s` apart; an incomplete stream ends
    without `[DONE]` and with the connection dropped (uvicorn closes it when the app returns
    mid-body)."""
    head = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    for chunk in chunks:
        if pace_s:
            await asyncio.sleep(pace_s)
        event = b"data: " + json.dumps(chunk).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": event, "more_body": True})
    if complete:
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a scripted SGLang stand-in forever.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--tool", required=True, help="the tool every first reply calls")
    parser.add_argument("--arguments", default="{}", help="that call's arguments, as JSON")
    parser.add_argument("--argument-fragments", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=1, help="calls in the first reply")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args))


async def _serve_forever(args: argparse.Namespace) -> None:
    responder = call_then_answer(args.tool, json.loads(args.arguments), args.parallel)
    async with scripted_model(
        responder=responder,
        latency_s=args.latency_ms / 1000,
        host=args.host,
        port=args.port,
        argument_fragments=args.argument_fragments,
        own_signals=True,
    ) as model:
        print(f"scripted model serving {model.url} (tool {args.tool!r})", flush=True)
        await model.wait_closed()


if __name__ == "__main__":
    main()
