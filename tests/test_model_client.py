"""ModelClient against the scripted SGLang stand-in, over real HTTP on loopback."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from planner.errors import ModelResponseError, ModelUnavailable
from planner.messages import (
    ChatMessage,
    ContentDelta,
    Delta,
    FunctionSpec,
    ModelRequest,
    ReasoningDelta,
    ToolCallRequest,
    ToolChoiceFunction,
    ToolEntry,
    Usage,
)
from planner.model_client import ModelBackend, ModelClient, RetryPolicy
from tests.scripted_model import (
    ScriptedDisconnect,
    ScriptedFailure,
    ScriptedHang,
    ScriptedReply,
    scripted_model,
    split_evenly,
)

FAST = RetryPolicy(
    attempts=4, base_delay_s=0.01, max_delay_s=0.02, deadline_s=5.0, request_timeout_s=5.0
)
HELLO = ModelRequest(messages=[ChatMessage(role="user", content="What's the weather in Paris?")])
WEATHER_TOOL = ToolEntry(function=FunctionSpec(
    name="get_weather",
    description="Current weather for a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
    },
))
UNAVAILABLE_TAIL = "; check that SGLang is running there (MODEL_URL) and retry"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def client_for(
    url: str, http: httpx.AsyncClient, retry: RetryPolicy = FAST, **backend: object
) -> ModelClient:
    return ModelClient(ModelBackend(base_url=url, **backend), http, retry)  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.deltas: list[Delta] = []

    async def __call__(self, delta: Delta) -> None:
        self.deltas.append(delta)


async def test_non_streamed_reply_carries_both_tool_calls(http: httpx.AsyncClient) -> None:
    step = ScriptedReply(
        reasoning="Two cities.",
        tool_calls=[
            ("get_weather", {"city": "Paris"}),
            ("get_weather", {"city": "Oslo"}),
        ],
    )
    async with scripted_model(step) as model:
        reply = await client_for(model.url, http).complete(HELLO)
    assert reply.tool_calls == [
        ToolCallRequest(id="call_1_0", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCallRequest(id="call_1_1", name="get_weather", arguments='{"city": "Oslo"}'),
    ]
    assert (reply.content, reply.reasoning) == ("", "Two cities.")
    assert (reply.finish_reason, reply.model) == ("tool_calls", "scripted-model")


async def test_streamed_arguments_split_mid_string_assemble_to_the_exact_text(
    http: httpx.AsyncClient,
) -> None:
    arguments = '{"city": "San Francisco", "unit": "celsius"}'
    fragments = split_evenly(arguments, 4)
    assert fragments[0] == '{"city": "S'  # the cut falls inside a string value
    async with scripted_model(
        ScriptedReply(tool_calls=[("get_weather", arguments)]), argument_fragments=4
    ) as model:
        reply = await client_for(model.url, http).complete(HELLO, stream=True)
    assert reply.tool_calls == [
        ToolCallRequest(id="call_1_0", name="get_weather", arguments=arguments)
    ]
    assert reply.finish_reason == "tool_calls"


async def test_malformed_arguments_stay_raw_text(http: httpx.AsyncClient) -> None:
    async with scripted_model(
        ScriptedReply(tool_calls=[("get_weather", '{"city": "Par')]), argument_fragments=3
    ) as model:
        reply = await client_for(model.url, http).complete(HELLO, stream=True)
    assert reply.tool_calls[0].arguments == '{"city": "Par'


async def test_streamed_calls_keep_their_order_and_ids(http: httpx.AsyncClient) -> None:
    step = ScriptedReply(
        tool_calls=[
            ("get_weather", {"city": "Paris"}, "call_a"),
            ("get_time", {"zone": "Europe/Oslo"}, "call_b"),
            ("get_weather", {"city": "Lima"}, "call_c"),
        ]
    )
    async with scripted_model(step, argument_fragments=3) as model:
        reply = await client_for(model.url, http).complete(HELLO, stream=True)
    assert reply.tool_calls == [
        ToolCallRequest(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCallRequest(id="call_b", name="get_time", arguments='{"zone": "Europe/Oslo"}'),
        ToolCallRequest(id="call_c", name="get_weather", arguments='{"city": "Lima"}'),
    ]


async def test_a_call_without_an_id_gets_a_generated_one(http: httpx.AsyncClient) -> None:
    step = ScriptedReply(tool_calls=[("get_weather", {"city": "Paris"}, "")])
    async with scripted_model(step, step) as model:
        client = client_for(model.url, http)
        streamed = await client.complete(HELLO, stream=True)
        whole = await client.complete(HELLO)
    assert re.fullmatch(r"call_0_[0-9a-f]{8}", streamed.tool_calls[0].id)
    assert re.fullmatch(r"call_0_[0-9a-f]{8}", whole.tool_calls[0].id)


async def test_reasoning_and_content_deltas_reach_on_delta_in_order(
    http: httpx.AsyncClient,
) -> None:
    recorder = Recorder()
    step = ScriptedReply(reasoning="Paris is in France. ", content="It is sunny.")
    async with scripted_model(step) as model:
        reply = await client_for(model.url, http).complete(HELLO, stream=True, on_delta=recorder)
    assert recorder.deltas == [
        ReasoningDelta("Paris "),
        ReasoningDelta("is "),
        ReasoningDelta("in "),
        ReasoningDelta("France. "),
        ContentDelta("It "),
        ContentDelta("is "),
        ContentDelta("sunny."),
    ]
    assert (reply.reasoning, reply.content) == ("Paris is in France. ", "It is sunny.")
    assert reply.finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_usage_includes_cached_tokens(http: httpx.AsyncClient, stream: bool) -> None:
    usage = Usage(prompt_tokens=120, completion_tokens=7, cached_tokens=96)
    async with scripted_model(ScriptedReply(content="Sunny.", usage=usage)) as model:
        reply = await client_for(model.url, http).complete(HELLO, stream=stream)
    assert reply.usage == Usage(prompt_tokens=120, completion_tokens=7, cached_tokens=96)


async def test_usage_without_cache_report_has_no_cached_tokens(http: httpx.AsyncClient) -> None:
    usage = Usage(prompt_tokens=12, completion_tokens=3)
    async with scripted_model(ScriptedReply(content="Sunny.", usage=usage)) as model:
        reply = await client_for(model.url, http).complete(HELLO)
    assert reply.usage == Usage(prompt_tokens=12, completion_tokens=3, cached_tokens=None)


async def test_a_500_then_success_is_retried(http: httpx.AsyncClient) -> None:
    async with scripted_model(ScriptedFailure(status=500), ScriptedReply(content="ok")) as model:
        reply = await client_for(model.url, http).complete(HELLO)
        assert len(model.requests) == 2
    assert reply.content == "ok"


async def test_persistent_500_raises_model_unavailable(http: httpx.AsyncClient) -> None:
    async with scripted_model(*[ScriptedFailure(status=500)] * 4) as model:
        with pytest.raises(ModelUnavailable) as caught:
            await client_for(model.url, http).complete(HELLO)
        assert len(model.requests) == 4
    url = f"{model.url}/chat/completions"
    assert (caught.value.url, caught.value.reason) == (
        url,
        "HTTP 500 after 4 attempts; the server said: scripted failure",
    )
    assert str(caught.value) == (
        f"model server at {url} is unavailable: HTTP 500 after 4 attempts; "
        f"the server said: scripted failure{UNAVAILABLE_TAIL}"
    )


async def test_an_exhausted_script_fails_loudly(http: httpx.AsyncClient) -> None:
    async with scripted_model() as model:
        with pytest.raises(ModelUnavailable) as caught:
            await client_for(model.url, http, RetryPolicy(attempts=1)).complete(HELLO)
    assert caught.value.reason == (
        "HTTP 500 after 1 attempt; the server said: the scripted model ran out of steps at "
        "request 1; push more with model.push(...) or pass a responder"
    )


async def test_a_429_retry_after_is_honoured_up_to_the_deadline(http: httpx.AsyncClient) -> None:
    retry = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.01, deadline_s=0.3)
    busy = ScriptedFailure(status=429, headers={"Retry-After": "30"})
    async with scripted_model(busy, ScriptedReply(content="ok")) as model:
        started = time.monotonic()
        reply = await client_for(model.url, http, retry).complete(HELLO)
        waited = time.monotonic() - started
    assert reply.content == "ok"
    assert 0.25 <= waited < 2.0


async def test_retrying_stops_at_the_deadline(http: httpx.AsyncClient) -> None:
    retry = RetryPolicy(attempts=10, base_delay_s=0.01, max_delay_s=0.01, deadline_s=0.2)
    busy = ScriptedFailure(status=503, headers={"Retry-After": "0.15"})
    async with scripted_model(*[busy] * 10) as model:
        with pytest.raises(ModelUnavailable) as caught:
            await client_for(model.url, http, retry).complete(HELLO)
        attempts = len(model.requests)
    assert attempts == 3
    assert caught.value.reason == (
        "HTTP 503 after 3 attempts (the 0.2s retry deadline passed); "
        "the server said: scripted failure"
    )


async def test_a_hang_beyond_the_request_timeout_raises_model_unavailable(
    http: httpx.AsyncClient,
) -> None:
    retry = RetryPolicy(attempts=2, base_delay_s=0.01, request_timeout_s=0.2)
    async with scripted_model(ScriptedHang(5), ScriptedHang(5)) as model:
        with pytest.raises(ModelUnavailable) as caught:
            await client_for(model.url, http, retry).complete(HELLO)
        assert len(model.requests) == 2
    assert caught.value.reason == (
        "no response within 0.2s after 2 attempts; "
        "raise RetryPolicy.request_timeout_s if the model needs longer"
    )


async def test_a_slow_reply_within_the_timeout_succeeds(http: httpx.AsyncClient) -> None:
    retry = RetryPolicy(attempts=1, request_timeout_s=2.0)
    async with scripted_model(ScriptedHang(0.1, then=ScriptedReply(content="late"))) as model:
        reply = await client_for(model.url, http, retry).complete(HELLO, stream=True)
    assert reply.content == "late"


async def test_an_unreachable_server_raises_model_unavailable_naming_the_url(
    http: httpx.AsyncClient,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(ModelUnavailable) as caught:
        await client_for(url, http).complete(HELLO)
    assert str(caught.value) == (
        f"model server at {url}/chat/completions is unavailable: "
        f"connection refused after 4 attempts{UNAVAILABLE_TAIL}"
    )


async def test_a_400_raises_model_response_error_at_once(http: httpx.AsyncClient) -> None:
    refusal = ScriptedFailure(
        status=400,
        body={
            "object": "error",
            "message": "messages: field required",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    )
    async with scripted_model(refusal) as model:
        with pytest.raises(ModelResponseError) as caught:
            await client_for(model.url, http).complete(HELLO)
        assert len(model.requests) == 1
    assert str(caught.value) == (
        f"model server at {model.url}/chat/completions sent an unusable response: "
        "HTTP 400: messages: field required"
    )


async def test_an_openai_shaped_404_names_the_fix(http: httpx.AsyncClient) -> None:
    missing = ScriptedFailure(status=404, body={"error": {"message": "no such route"}})
    async with scripted_model(missing) as model:
        with pytest.raises(ModelResponseError) as caught:
            await client_for(model.url, http).complete(HELLO)
    assert caught.value.reason == (
        "HTTP 404: no such route (check that base_url ends in /v1, e.g. http://localhost:30000/v1)"
    )


async def test_an_unparseable_body_raises_model_response_error(http: httpx.AsyncClient) -> None:
    async with scripted_model(ScriptedFailure(status=200, body="<html>proxy</html>")) as model:
        with pytest.raises(ModelResponseError) as caught:
            await client_for(model.url, http).complete(HELLO)
    assert caught.value.reason == (
        "the body is not a chat completion: JSON is malformed: invalid character (byte 0)"
    )


async def test_a_mid_stream_disconnect_raises_model_unavailable(http: httpx.AsyncClient) -> None:
    recorder = Recorder()
    cut = ScriptedDisconnect(after_chunks=3, reply=ScriptedReply(content="one two three four"))
    async with scripted_model(cut, ScriptedReply(content="never sent")) as model:
        client = client_for(model.url, http)
        with pytest.raises(ModelUnavailable) as caught:
            await client.complete(HELLO, stream=True, on_delta=recorder)
        assert len(model.requests) == 1
    assert recorder.deltas == [ContentDelta("one "), ContentDelta("two ")]
    assert caught.value.reason == (
        "the stream broke after 3 chunks: the server dropped the connection (peer closed "
        "connection without sending complete message body (incomplete chunked read))"
    )


async def test_a_stream_dropped_before_its_first_chunk_is_retried(
    http: httpx.AsyncClient,
) -> None:
    async with scripted_model(
        ScriptedDisconnect(after_chunks=0), ScriptedReply(content="second try")
    ) as model:
        reply = await client_for(model.url, http).complete(HELLO, stream=True)
        assert len(model.requests) == 2
    assert reply.content == "second try"


async def test_the_payload_carries_tools_choice_reasoning_and_format(
    http: httpx.AsyncClient,
) -> None:
    schema = {"type": "object", "properties": {"steps": {"type": "array"}}}
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "plan", "schema": schema, "strict": True},
    }
    request = ModelRequest(
        messages=HELLO.messages,
        tools=[WEATHER_TOOL],
        tool_choice=ToolChoiceFunction("get_weather"),
        response_format=response_format,
        enable_thinking=True,
        temperature=0.2,
    )
    async with scripted_model(ScriptedReply(content="{}")) as model:
        await client_for(
            model.url, http, model="qwen3", max_completion_tokens=512, temperature=0.7, seed=7
        ).complete(request, stream=True)
    assert model.requests == [
        {
            "model": "qwen3",
            "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
            "separate_reasoning": True,
            "tools": [msgspec.to_builtins(WEATHER_TOOL)],
            "tool_choice": {"function": {"name": "get_weather"}, "type": "function"},
            "response_format": response_format,
            "chat_template_kwargs": {"enable_thinking": True},
            "max_completion_tokens": 512,
            "temperature": 0.2,
            "seed": 7,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ]


async def test_a_plain_request_sends_only_what_it_sets(http: httpx.AsyncClient) -> None:
    async with scripted_model(ScriptedReply(content="hi")) as model:
        await client_for(model.url, http, api_key="sk-test").complete(
            ModelRequest(messages=HELLO.messages, tool_choice="auto")
        )
    assert model.requests == [
        {
            "model": "default",
            "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
            "separate_reasoning": True,
            "tool_choice": "auto",
        }
    ]
    assert model.request_headers[0]["authorization"] == "Bearer sk-test"


async def test_response_format_with_required_tool_choice_is_refused_before_sending(
    http: httpx.AsyncClient,
) -> None:
    request = ModelRequest(
        messages=HELLO.messages,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        response_format={"type": "json_schema", "json_schema": {}},
    )
    async with scripted_model() as model:
        with pytest.raises(ValueError) as caught:
            await client_for(model.url, http).complete(request)
        assert model.requests == []
    assert str(caught.value) == (
        "a request cannot combine response_format with tool_choice='required': SGLang rejects "
        "the pair; drop response_format, or use tool_choice='auto' or 'none'"
    )


async def test_a_reply_streamed_or_not_assembles_alike(http: httpx.AsyncClient) -> None:
    step = ScriptedReply(
        reasoning="Think.",
        content="Answer.",
        tool_calls=[("get_weather", {"city": "Paris"})],
        usage=Usage(prompt_tokens=5, completion_tokens=6, cached_tokens=0),
    )
    async with scripted_model(step, step, argument_fragments=5) as model:
        client = client_for(model.url, http)
        whole = await client.complete(HELLO)
        streamed = await client.complete(HELLO, stream=True)
    assert whole.tool_calls[0].arguments == json.dumps({"city": "Paris"})
    assert streamed.tool_calls[0].id == "call_2_0"
    assert whole.tool_calls[0].id == "call_1_0"
    same = {"tool_calls": [(c.name, c.arguments) for c in whole.tool_calls]}
    assert same == {"tool_calls": [(c.name, c.arguments) for c in streamed.tool_calls]}
    assert (whole.content, whole.reasoning, whole.usage, whole.finish_reason) == (
        streamed.content,
        streamed.reasoning,
        streamed.usage,
        streamed.finish_reason,
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
