"""The OpenAI-compatible chat route, driven by the official `openai` client: the app over HTTP,
a real Postgres, an HTTP tool on loopback, and the scripted SGLang stand-in."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import asyncpg
import openai
import pytest
from openai import AsyncOpenAI

from planner.messages import Usage
from planner.prompt import INSTRUCTIONS_HEADING, SYSTEM_AUTO
from tests.conftest import ADMIN_KEY, RunningApp
from tests.scripted_model import ScriptedFailure, ScriptedHang, ScriptedModel, ScriptedReply
from tests.tool_server import ToolServer, http_tool

WEATHER_CALL = ScriptedReply(
    reasoning="Need the weather.",
    tool_calls=[("get_weather", {"city": "Oslo"})],
    usage=Usage(prompt_tokens=100, completion_tokens=10, cached_tokens=0),
)
ANSWER = ScriptedReply(
    content="It is 7 degrees in Oslo.",
    usage=Usage(prompt_tokens=130, completion_tokens=8, cached_tokens=100),
)


@pytest.fixture
async def app(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer
) -> RunningApp:
    running: RunningApp = await start_app(database_url, model_url=model.url)
    weather = http_tool(f"{tools.url}/weather", "get_weather", "Current weather in a city",
                        {"city": {"type": "string"}}, ["city"])
    response = await running.client.post("/v1/tools", json=weather)
    assert response.status_code == 201, response.text
    return running


@pytest.fixture
async def client(app: RunningApp) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{app.url}/v1", api_key=ADMIN_KEY)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def sent(request: dict[str, Any]) -> list[tuple[str, str | None]]:
    """What the model was sent after the system prompt: (role, content) pairs."""
    return [(m["role"], m.get("content")) for m in request["messages"][1:]]


async def test_a_completion_answers_after_a_tool_call_ran_on_the_server(
    client: AsyncOpenAI, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(WEATHER_CALL, ANSWER)
    raw = await client.chat.completions.with_raw_response.create(
        model="default", messages=[user("weather in Oslo?")]  # type: ignore[list-item]
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "It is 7 degrees in Oslo."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "default"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens,
            completion.usage.total_tokens) == (230, 18, 248)
    assert [r.body for r in tools.calls("/weather")] == [{"city": "Oslo"}]
    extension = (completion.model_extra or {})["switchboard"]
    assert extension["turn_id"] == completion.id
    assert extension["conversation_id"] == raw.headers["X-Switchboard-Conversation"]
    [call] = extension["tool_calls"]
    assert (call["name"], call["arguments"], call["result"]) == (
        "get_weather", {"city": "Oslo"}, {"city": "Oslo", "temp_c": 7})


async def test_a_streamed_completion_sends_role_reasoning_content_finish_usage_in_order(
    client: AsyncOpenAI, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(WEATHER_CALL, ANSWER)
    stream = await client.chat.completions.create(
        model="default", messages=[user("weather in Oslo?")],  # type: ignore[list-item]
        stream=True, stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    first, *middle, finish, usage = chunks
    assert (first.choices[0].delta.role, first.choices[0].delta.content) == ("assistant", "")
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content", "")
                        for c in middle)
    assert reasoning == "Need the weather."
    assert "".join(c.choices[0].delta.content or "" for c in middle) == "It is 7 degrees in Oslo."
    assert finish.choices[0].finish_reason == "stop"
    [call] = (finish.model_extra or {})["switchboard"]["tool_calls"]
    assert call["result"] == {"city": "Oslo", "temp_c": 7}
    assert usage.choices == []
    assert usage.usage is not None
    assert (usage.usage.prompt_tokens, usage.usage.completion_tokens,
            usage.usage.total_tokens) == (230, 18, 248)
    assert [r.body for r in tools.calls("/weather")] == [{"city": "Oslo"}]


async def test_metadata_conversation_id_continues_a_conversation_whose_history_the_server_holds(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="Hello Ann."), ScriptedReply(content="Your name is Ann."))
    first = await client.chat.completions.create(
        model="default", messages=[user("My name is Ann.")]  # type: ignore[list-item]
    )
    conversation = (first.model_extra or {})["switchboard"]["conversation_id"]
    second = await client.chat.completions.create(
        model="default",
        messages=[user("My name is Ann."), {"role": "assistant", "content": "Hello Ann."},
                  user("What is my name?")],  # type: ignore[list-item]
        metadata={"conversation_id": conversation},
    )
    assert second.choices[0].message.content == "Your name is Ann."
    assert (second.model_extra or {})["switchboard"]["conversation_id"] == conversation
    assert sent(model.requests[1]) == [
        ("user", "My name is Ann."), ("assistant", "Hello Ann."), ("user", "What is my name?"),
    ]


async def test_the_conversation_header_continues_a_conversation(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="Noted: blue."), ScriptedReply(content="Blue."))
    first = await client.chat.completions.with_raw_response.create(
        model="default", messages=[user("My colour is blue.")]  # type: ignore[list-item]
    )
    conversation = first.headers["X-Switchboard-Conversation"]
    second = await client.chat.completions.with_raw_response.create(
        model="default", messages=[user("Which colour?")],  # type: ignore[list-item]
        extra_headers={"X-Switchboard-Conversation": conversation},
    )
    assert second.headers["X-Switchboard-Conversation"] == conversation
    assert second.parse().choices[0].message.content == "Blue."
    assert sent(model.requests[1]) == [
        ("user", "My colour is blue."), ("assistant", "Noted: blue."), ("user", "Which colour?"),
    ]


async def test_a_new_conversation_holds_the_earlier_messages_and_system_text_is_instructions(
    client: AsyncOpenAI, model: ScriptedModel, app: RunningApp
) -> None:
    model.push(ScriptedReply(content="Your name is Ann."))
    completion = await client.chat.completions.create(
        model="default",
        messages=[{"role": "system", "content": "Answer in one sentence."},
                  user("My name is Ann."), {"role": "assistant", "content": "Hello Ann."},
                  user("What is my name?")],  # type: ignore[list-item]
    )
    assert completion.choices[0].message.content == "Your name is Ann."
    [request] = model.requests
    assert request["messages"][0] == {
        "role": "system", "content": f"{SYSTEM_AUTO}{INSTRUCTIONS_HEADING}Answer in one sentence."
    }
    assert sent(request) == [
        ("user", "My name is Ann."), ("assistant", "Hello Ann."), ("user", "What is my name?"),
    ]
    conversation = (completion.model_extra or {})["switchboard"]["conversation_id"]
    turns = (await app.client.get(f"/v1/conversations/{conversation}")).json()["turns"]
    assert [(t["mode"], t["status"], t["answer"]) for t in turns] == [
        ("imported", "completed", "Hello Ann."), ("auto", "completed", "Your name is Ann."),
    ]


async def test_models_list_reads_the_configured_backends(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    page = await client.models.list()
    [backend] = page.data
    assert (backend.id, backend.object, backend.owned_by) == ("default", "model", "switchboard")
    assert backend.created > 0
    assert (backend.model_extra or {})["base_url"] == model.url


async def test_an_unknown_model_is_refused_naming_the_field_and_the_known_ids(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        await client.chat.completions.create(
            model="gpt-4o", messages=[user("hi")]  # type: ignore[list-item]
        )
    error = raised.value
    assert error.status_code == 422
    assert (error.param, error.code, error.type) == ("model", "invalid-request",
                                                     "invalid_request_error")
    assert error.body == {
        "message": "/model: unknown model backend 'gpt-4o'; configured: default "
                   "(GET /v1/models lists them)",
        "type": "invalid_request_error", "param": "model", "code": "invalid-request",
    }
    assert model.requests == []


@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        ({"n": 2}, "n", "/n: n=2 is not supported: a turn has one answer; send n=1 or leave it "
                        "out"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions",
         '/functions: the deprecated functions field is not supported: send them as tools, '
         '{"type": "function", "function": {...}} each'),
    ],
)
async def test_a_field_whose_meaning_would_be_lost_is_refused_by_name(
    client: AsyncOpenAI, model: ScriptedModel, extra: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        await client.chat.completions.create(
            model="default", messages=[user("hi")], **extra  # type: ignore[list-item]
        )
    assert (raised.value.param, raised.value.message) == (param, f"Error code: 422 - "
                                                           f"{raised.value.response.json()}")
    assert raised.value.body["message"] == message  # type: ignore[index]
    assert model.requests == []


async def test_sampling_fields_are_accepted_and_left_to_the_backend(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="hi"))
    completion = await client.chat.completions.create(
        model="default", messages=[user("hi")],  # type: ignore[list-item]
        temperature=0.2, top_p=0.9, max_tokens=50, presence_penalty=0.1, user="u-1",
    )
    assert completion.choices[0].message.content == "hi"
    assert "top_p" not in model.requests[0] and "presence_penalty" not in model.requests[0]


async def test_a_misspelt_parameter_is_refused_naming_the_one_it_meant(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        await client.chat.completions.create(
            model="default", messages=[user("hi")],  # type: ignore[list-item]
            extra_body={"temprature": 0.2},
        )
    assert raised.value.param == "temprature"
    assert raised.value.body["message"] == (  # type: ignore[index]
        "/temprature: unknown field `temprature`: did you mean `temperature`?")
    assert model.requests == []


async def test_every_parameter_openai_defines_is_accepted(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="hi"))
    completion = await client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "hi", "name": "ann"}],
        max_completion_tokens=50, seed=7, stop=["\n\n"], frequency_penalty=0.1,
        logit_bias={"50256": -100}, parallel_tool_calls=True, store=False,
        reasoning_effort="low", service_tier="auto", stream_options=None,
        extra_body={"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}},
    )
    assert completion.choices[0].message.content == "hi"


async def test_a_second_message_while_a_turn_runs_is_a_conflict_the_client_does_not_retry(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedHang(1.0, then=ScriptedReply(content="late")))
    stream = await client.chat.completions.create(
        model="default", messages=[user("slow")], stream=True  # type: ignore[list-item]
    )
    chunks = stream.__aiter__()
    first = await chunks.__anext__()
    conversation = (first.model_extra or {})["switchboard"]["conversation_id"]
    with pytest.raises(openai.ConflictError) as raised:
        await client.chat.completions.create(
            model="default", messages=[user("me too")],  # type: ignore[list-item]
            metadata={"conversation_id": conversation},
        )
    assert raised.value.code == "turn-in-progress"
    assert raised.value.body["message"].startswith(  # type: ignore[index]
        f"conversation '{conversation}' already has a running turn 'turn_"
    )
    assert raised.value.response.headers["x-should-retry"] == "false"
    rest = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    assert rest == "late"
    assert len(model.requests) == 1


async def test_a_model_failing_mid_stream_raises_in_the_client(
    client: AsyncOpenAI, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(WEATHER_CALL, *[ScriptedFailure(status=500)] * 4)
    stream = await client.chat.completions.create(
        model="default", messages=[user("weather in Oslo?")], stream=True  # type: ignore[list-item]
    )
    received = []
    with pytest.raises(openai.APIError) as raised:
        async for chunk in stream:
            received.append(chunk)
    assert raised.value.message.startswith(
        f"model server at {model.url}/chat/completions is unavailable"
    )
    assert (raised.value.code, raised.value.type) == ("model-unavailable", "server_error")
    assert received[0].choices[0].delta.role == "assistant"
    assert [r.body for r in tools.calls("/weather")] == [{"city": "Oslo"}]


async def test_a_failed_turn_is_a_problem_with_an_error_member_and_no_retry(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(*[ScriptedFailure(status=500)] * 4)
    with pytest.raises(openai.InternalServerError) as raised:
        await client.chat.completions.create(
            model="default", messages=[user("hi")]  # type: ignore[list-item]
        )
    body = raised.value.response.json()
    assert raised.value.status_code == 503
    assert raised.value.response.headers["content-type"] == "application/problem+json"
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert (body["type"], body["turn"]["status"]) == ("/problems/model-unavailable", "failed")
    assert body["error"]["message"] == body["detail"]
    assert len(model.requests) == 4


async def test_a_wrong_api_key_reads_as_an_authentication_error(app: RunningApp) -> None:
    client = AsyncOpenAI(base_url=f"{app.url}/v1", api_key="sbk_wrong")
    with pytest.raises(openai.AuthenticationError) as raised:
        await client.chat.completions.create(
            model="default", messages=[user("hi")]  # type: ignore[list-item]
        )
    assert raised.value.body == {"message": "unknown or revoked API key",
                                 "type": "authentication_error", "param": None,
                                 "code": "unauthorized"}


async def test_a_retry_with_the_same_idempotency_key_gets_the_first_completion_back(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="Only once."))
    key = {"Idempotency-Key": "retry-1"}
    first, second = [
        await client.chat.completions.with_raw_response.create(
            model="default", messages=[user("hi")], extra_headers=key  # type: ignore[list-item]
        )
        for _ in range(2)
    ]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.parse().id == first.parse().id
    assert second.parse().object == "chat.completion"
    assert second.parse().choices[0].message.content == "Only once."
    assert len(model.requests) == 1


@pytest.fixture
async def paused_tools(app: RunningApp, tools: ToolServer) -> None:
    """A client tool the frontend runs, and a tool that needs a person's approval."""
    specs = [
        {"name": "pick_file", "description": "Let the user pick a file on their device",
         "parameters": {"type": "object", "properties": {"kind": {"type": "string"}}},
         "executor": {"kind": "client"}},
        http_tool(f"{tools.url}/weather", "post_weather", "Publish the weather", {
            "city": {"type": "string"}}, ["city"], requires_approval=True),
    ]
    response = await app.client.post("/v1/tools/bulk", json={"tools": specs})
    assert response.status_code == 200, response.text


@pytest.mark.usefixtures("paused_tools")
async def test_a_client_tool_is_handed_over_as_tool_calls_and_its_result_continues_the_turn(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(tool_calls=[("pick_file", {"kind": "photo"})]),
               ScriptedReply(content="Nice photo."))
    asked = [user("use a photo")]
    first = await client.chat.completions.create(model="default", messages=asked)  # type: ignore[arg-type]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert (call.type, call.function.name, call.function.arguments) == (
        "function", "pick_file", '{"kind": "photo"}')
    conversation = (first.model_extra or {})["switchboard"]["conversation_id"]
    assert (first.model_extra or {})["switchboard"]["status"] == "requires_action"

    # What an OpenAI client does with a function call: run it, send its result back.
    history = [*asked, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": '{"path": "/tmp/cat.jpg"}'}]
    second = await client.chat.completions.create(
        model="default", messages=history, metadata={"conversation_id": conversation})  # type: ignore[arg-type]
    assert second.id == first.id  # the same turn, gone on
    assert second.choices[0].message.content == "Nice photo."
    assert second.choices[0].finish_reason == "stop"
    tool_results = [m["content"] for m in model.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_results == ['{"result": {"path": "/tmp/cat.jpg"}}']


@pytest.mark.usefixtures("paused_tools")
async def test_a_streamed_client_tool_call_arrives_as_tool_call_deltas(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(tool_calls=[("pick_file", {})]), ScriptedReply(content="Got it."))
    stream = await client.chat.completions.create(
        model="default", messages=[user("pick one")], stream=True)  # type: ignore[list-item]
    chunks = [chunk async for chunk in stream]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    [call] = [t for d in deltas for t in (d.tool_calls or [])]
    assert (call.index, call.function and call.function.name) == (0, "pick_file")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    conversation = (chunks[0].model_extra or {})["switchboard"]["conversation_id"]

    resumed = await client.chat.completions.create(
        model="default", stream=True, extra_headers={"X-Switchboard-Conversation": conversation},
        messages=[user("pick one"), {"role": "tool", "tool_call_id": call.id, "content": "a.txt"}],
    )
    text = "".join([c.choices[0].delta.content or "" async for c in resumed if c.choices])
    assert text == "Got it."
    tool_results = [m["content"] for m in model.requests[1]["messages"] if m["role"] == "tool"]
    assert tool_results == ['{"result": "a.txt"}']


@pytest.mark.usefixtures("paused_tools")
async def test_a_turn_waiting_for_approval_says_so_in_its_answer(
    client: AsyncOpenAI, model: ScriptedModel, app: RunningApp
) -> None:
    model.push(ScriptedReply(tool_calls=[("post_weather", {"city": "Oslo"})]),
               ScriptedReply(content="Published."))
    first = await client.chat.completions.create(model="default", messages=[user("post it")])  # type: ignore[list-item]
    extension = (first.model_extra or {})["switchboard"]
    assert first.choices[0].finish_reason == "stop"
    assert first.choices[0].message.content == (
        'This needs approval before it runs: post_weather {"city": "Oslo"}. Approve or reject '
        f"it with POST /v1/turns/{first.id}/approvals; the answer follows.")
    [pending] = extension["pending"]
    assert (extension["status"], pending["name"]) == ("awaiting_approval", "post_weather")
    decided = await app.client.post(f"/v1/turns/{first.id}/approvals",
                                    json={"call_id": pending["id"], "approve": True})
    assert decided.json()["message"]["content"] == "Published."


@pytest.mark.usefixtures("paused_tools")
async def test_a_tool_result_for_a_call_nothing_waits_on_changes_nothing(
    client: AsyncOpenAI, model: ScriptedModel, app: RunningApp
) -> None:
    model.push(ScriptedReply(tool_calls=[("pick_file", {})]))
    first = await client.chat.completions.create(model="default", messages=[user("pick")])  # type: ignore[list-item]
    conversation = (first.model_extra or {})["switchboard"]["conversation_id"]
    waiting = first.choices[0].message.tool_calls[0].id  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        await client.chat.completions.create(
            model="default", metadata={"conversation_id": conversation},
            messages=[{"role": "tool", "tool_call_id": "call_other", "content": "x"}])
    assert raised.value.body["message"] == (  # type: ignore[index]
        f"/messages: tool result for 'call_other': turn {first.id!r} does not wait on that "
        f"call; it waits on {waiting}")
    stored = (await app.client.get(f"/v1/turns/{first.id}")).json()
    assert stored["status"] == "requires_action"


async def test_a_completion_carries_the_answers_reasoning_as_reasoning_content(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="Hello.", reasoning="a greeting needs no tools"),
               ScriptedReply(content="Hello again."))
    reasoned = await client.chat.completions.create(
        model="default", messages=[user("hi")]  # type: ignore[list-item]
    )
    message = reasoned.choices[0].message
    assert (message.model_extra or {}).get("reasoning_content") == "a greeting needs no tools"
    plain = await client.chat.completions.create(
        model="default", messages=[user("hi again")]  # type: ignore[list-item]
    )
    assert "reasoning_content" not in (plain.choices[0].message.model_extra or {})


async def test_a_client_sending_the_whole_history_continues_its_conversation_and_tool_results(
    client: AsyncOpenAI, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(WEATHER_CALL, ANSWER, ScriptedReply(content="About 45 degrees Fahrenheit."))
    history: list[Any] = [{"role": "system", "content": "Be brief."}, user("weather in Oslo?")]
    first = await client.chat.completions.create(model="default", messages=history)
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                user("and in fahrenheit?")]
    second = await client.chat.completions.create(model="default", messages=history)

    ours = [(c.model_extra or {})["switchboard"]["conversation_id"] for c in (first, second)]
    assert ours[0] == ours[1]  # the same conversation, found by the history it repeats
    followed = model.requests[2]
    tool_results = [m for m in followed["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_results] != []  # the earlier result came along
    assert "temp_c" in tool_results[0]["content"]
    assert len(tools.calls("/weather")) == 1

    # A history that differs (an edited answer) is another conversation.
    model.push(ScriptedReply(content="Noted."))
    edited = [*history[:2], {"role": "assistant", "content": "It is warm."},
              user("and in fahrenheit?")]
    third = await client.chat.completions.create(model="default", messages=edited)
    assert (third.model_extra or {})["switchboard"]["conversation_id"] != ours[0]


async def test_tool_choice_none_answers_without_any_tool(
    client: AsyncOpenAI, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(ScriptedReply(content="I cannot look that up."))
    completion = await client.chat.completions.create(
        model="default", messages=[user("weather in Oslo?")], tool_choice="none")
    assert completion.choices[0].message.content == "I cannot look that up."
    [request] = model.requests
    assert request["tool_choice"] == "none"
    assert (completion.model_extra or {})["switchboard"]["tool_calls"] == []
    assert tools.received == []


# --- the client's own tools -------------------------------------------------------------------

PICK_COLOUR: dict[str, Any] = {"type": "function", "function": {
    "name": "pick_colour", "description": "Let the user pick a colour",
    "parameters": {"type": "object", "properties": {"palette": {"type": "string"}},
                   "required": ["palette"]}}}


def tool_result(call_id: str, content: str) -> dict[str, str]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def offered(request: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in request["tools"]]


async def test_a_request_tool_call_comes_back_as_tool_calls_and_its_result_gets_the_answer(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(tool_calls=[("pick_colour", {"palette": "warm"})]),
               ScriptedReply(content="You picked red."))
    asked: list[Any] = [user("pick me a colour")]
    first = await client.chat.completions.create(model="default", messages=asked,
                                                 tools=[PICK_COLOUR])
    choice = first.choices[0]
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", None)
    [call] = choice.message.tool_calls or []
    assert (call.id, call.type, call.function.name, call.function.arguments) == (
        "call_1_0", "function", "pick_colour", '{"palette": "warm"}')
    assert model.requests[0]["tools"][1] == PICK_COLOUR  # as the client wrote it

    # A stateless client: the whole history, the call and its result last; no conversation id.
    history = [*asked, choice.message.model_dump(exclude_none=True), tool_result(call.id, "red")]
    second = await client.chat.completions.create(model="default", messages=history,
                                                  tools=[PICK_COLOUR])
    assert second.id == first.id  # the same turn, gone on
    assert (second.choices[0].finish_reason, second.choices[0].message.content) == (
        "stop", "You picked red.")
    assert [m["content"] for m in model.requests[1]["messages"] if m["role"] == "tool"] == [
        '{"result": "red"}']


async def test_a_streamed_request_tool_call_arrives_as_indexed_deltas_and_its_result_streams_on(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(tool_calls=[("pick_colour", {"palette": "cool"})]),
               ScriptedReply(content="Blue it is."))
    asked: list[Any] = [user("pick me a colour")]
    stream = await client.chat.completions.create(model="default", messages=asked,
                                                  tools=[PICK_COLOUR], stream=True)
    chunks = [chunk async for chunk in stream]
    [call] = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
    assert call.function is not None
    assert (call.index, call.id, call.type, call.function.name, call.function.arguments) == (
        0, "call_1_0", "function", "pick_colour", '{"palette": "cool"}')
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    assistant = {"role": "assistant", "tool_calls": [
        {"id": call.id, "type": "function",
         "function": {"name": "pick_colour", "arguments": '{"palette": "cool"}'}}]}
    resumed = await client.chat.completions.create(
        model="default", messages=[*asked, assistant, tool_result("call_1_0", "blue")],
        tools=[PICK_COLOUR], stream=True)
    rest = [chunk async for chunk in resumed]
    assert "".join(c.choices[0].delta.content or "" for c in rest if c.choices) == "Blue it is."
    assert rest[-1].choices[0].finish_reason == "stop"


async def test_a_registered_tool_runs_here_and_a_request_tool_of_the_same_reply_is_handed_over(
    client: AsyncOpenAI, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(ScriptedReply(tool_calls=[("get_weather", {"city": "Oslo"}),
                                         ("pick_colour", {"palette": "warm"})]),
               ScriptedReply(content="7 degrees in Oslo, and red."))
    asked: list[Any] = [user("weather in Oslo, and pick a colour")]
    first = await client.chat.completions.create(model="default", messages=asked,
                                                 tools=[PICK_COLOUR])
    [handed] = first.choices[0].message.tool_calls or []
    assert (handed.function.name, first.choices[0].finish_reason) == ("pick_colour", "tool_calls")
    [ran] = (first.model_extra or {})["switchboard"]["tool_calls"]
    assert (ran["name"], ran["result"]) == ("get_weather", {"city": "Oslo", "temp_c": 7})
    assert [r.body for r in tools.calls("/weather")] == [{"city": "Oslo"}]

    history = [*asked, first.choices[0].message.model_dump(exclude_none=True),
               tool_result(handed.id, "red")]
    second = await client.chat.completions.create(model="default", messages=history,
                                                  tools=[PICK_COLOUR])
    assert second.choices[0].message.content == "7 degrees in Oslo, and red."
    results = [(m["tool_call_id"], m["content"]) for m in model.requests[1]["messages"]
               if m["role"] == "tool"]
    assert results == [("call_1_0", '{"result": {"city": "Oslo", "temp_c": 7}}'),
                       ("call_1_1", '{"result": "red"}')]
    assert len(tools.calls("/weather")) == 1


async def test_a_conversation_with_request_tool_calls_is_continued_by_its_whole_history(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(tool_calls=[("pick_colour", {"palette": "warm"})]),
               ScriptedReply(content="You picked red."), ScriptedReply(content="Red, again."))
    history: list[Any] = [user("pick me a colour")]
    first = await client.chat.completions.create(model="default", messages=history,
                                                 tools=[PICK_COLOUR])
    history += [first.choices[0].message.model_dump(exclude_none=True),
                tool_result("call_1_0", "red")]
    second = await client.chat.completions.create(model="default", messages=history,
                                                  tools=[PICK_COLOUR])
    history += [{"role": "assistant", "content": "You picked red."}, user("which one?")]
    third = await client.chat.completions.create(model="default", messages=history,
                                                 tools=[PICK_COLOUR])
    ours = {(c.model_extra or {})["switchboard"]["conversation_id"] for c in (first, second, third)}
    assert len(ours) == 1
    assert third.choices[0].message.content == "Red, again."
    assert [m["role"] for m in model.requests[2]["messages"][1:]] == [
        "user", "assistant", "tool", "assistant", "user"]


async def test_a_request_tool_keeps_its_name_and_a_registered_tool_of_that_name_is_qualified(
    client: AsyncOpenAI, model: ScriptedModel, tools: ToolServer
) -> None:
    theirs = {"type": "function", "function": {
        "name": "get_weather", "description": "The weather where the user is",
        "parameters": {"type": "object", "properties": {}}}}
    model.push(ScriptedReply(tool_calls=[("get_weather", {})]))
    completion = await client.chat.completions.create(
        model="default", messages=[user("weather here?")], tools=[theirs])
    assert offered(model.requests[0]) == ["search_tools", "get_weather", "default_get_weather"]
    [call] = completion.choices[0].message.tool_calls or []
    assert (call.function.name, completion.choices[0].finish_reason) == (
        "get_weather", "tool_calls")
    assert tools.received == []


async def test_tool_choice_none_answers_without_handing_over_a_request_tool(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="Pick any colour you like."))
    completion = await client.chat.completions.create(
        model="default", messages=[user("pick me a colour")], tools=[PICK_COLOUR],
        tool_choice="none")
    assert (completion.choices[0].finish_reason, completion.choices[0].message.content) == (
        "stop", "Pick any colour you like.")
    assert completion.choices[0].message.tool_calls is None
    [request] = model.requests
    assert (request["tool_choice"], offered(request)) == ("none", ["search_tools", "pick_colour"])


@pytest.mark.parametrize(
    ("tool_choice", "sent"),
    [("required", "required"),
     ({"type": "function", "function": {"name": "pick_colour"}},
      {"type": "function", "function": {"name": "pick_colour"}})],
)
async def test_a_forced_tool_choice_holds_for_the_first_reply_and_later_ones_choose_freely(
    client: AsyncOpenAI, model: ScriptedModel, tool_choice: Any, sent: Any
) -> None:
    model.push(ScriptedReply(tool_calls=[("pick_colour", {"palette": "warm"})]),
               ScriptedReply(content="Red."))
    asked: list[Any] = [user("pick me a colour")]
    first = await client.chat.completions.create(
        model="default", messages=asked, tools=[PICK_COLOUR], tool_choice=tool_choice)
    history = [*asked, first.choices[0].message.model_dump(exclude_none=True),
               tool_result("call_1_0", "red")]
    await client.chat.completions.create(model="default", messages=history,
                                         tools=[PICK_COLOUR], tool_choice=tool_choice)
    assert [r["tool_choice"] for r in model.requests] == [sent, "auto"]


@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "array"}}}]}, "tools.0.function.parameters.type",
         '/tools/0/function/parameters/type: the root of parameters must be {"type": '
         '"object", "properties": {...}}: tool arguments are always a JSON object'),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"n": {"type": "integer", "minimum": "1"}}}}}]},
         "tools.0.function.parameters.properties.n.minimum",
         "/tools/0/function/parameters/properties/n/minimum: not a valid JSON Schema "
         "(2020-12): '1' is not of type 'number'"),
        ({"tools": [PICK_COLOUR, PICK_COLOUR]}, "tools.1.function.name",
         "/tools/1/function/name: 'pick_colour' is also the name of /tools/0; each function "
         "needs a name of its own"),
        ({"tools": [{"type": "function", "function": {"name": "search_tools"}}]},
         "tools.0.function.name",
         "/tools/0/function/name: 'search_tools' is the name of one of Switchboard's own "
         "tools; give the function another name"),
        ({"tools": [{"type": "function", "function": {"name": "pick colour"}}]},
         "tools.0.function.name",
         "/tools/0/function/name: Expected `str` matching regex '^[A-Za-z0-9_-]{1,64}$': use "
         "1-64 letters, digits, '_' or '-' (e.g. math_factorial)"),
        ({"tools": [PICK_COLOUR], "tool_choice": {"type": "function",
                                                  "function": {"name": "get_weather"}}},
         "tool_choice.function.name",
         "/tool_choice/function/name: 'get_weather' is not one of the request's tools "
         "(pick_colour); name one of them, since registered tools are found by search, not "
         "by name"),
    ],
)
async def test_a_request_tool_or_tool_choice_that_cannot_be_honoured_is_refused_by_field(
    client: AsyncOpenAI, model: ScriptedModel, database_url: str, extra: dict[str, Any],
    param: str, message: str
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        await client.chat.completions.create(
            model="default", messages=[user("hi")], **extra)  # type: ignore[list-item]
    assert (raised.value.param, raised.value.body["message"]) == (  # type: ignore[index]
        param, message)
    assert raised.value.response.headers["content-type"] == "application/problem+json"
    assert model.requests == []
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM conversations") == 0
    finally:
        await conn.close()


async def test_malformed_arguments_for_a_request_tool_go_back_to_the_model_not_to_the_client(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(tool_calls=[("pick_colour", '{"palette": ')]),
               ScriptedReply(tool_calls=[("pick_colour", {"palette": "warm"})]))
    completion = await client.chat.completions.create(
        model="default", messages=[user("pick me a colour")], tools=[PICK_COLOUR])
    [call] = completion.choices[0].message.tool_calls or []
    assert (call.id, call.function.arguments) == ("call_2_0", '{"palette": "warm"}')
    [told] = [m["content"] for m in model.requests[1]["messages"] if m["role"] == "tool"]
    assert json.loads(told) == {
        "error": "arguments are not valid JSON (Expecting value at position 12); send a JSON "
                 "object. Correct the call and make it again.",
        "error_type": "invalid_arguments"}


async def test_arguments_a_request_tool_schema_refuses_go_back_to_the_model_not_to_the_client(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(tool_calls=[("pick_colour", {"palette": 3})]),
               ScriptedReply(tool_calls=[("pick_colour", {"palette": "warm"})]))
    completion = await client.chat.completions.create(
        model="default", messages=[user("pick me a colour")], tools=[PICK_COLOUR])
    [call] = completion.choices[0].message.tool_calls or []
    assert (call.id, call.function.arguments) == ("call_2_0", '{"palette": "warm"}')
    [told] = [m["content"] for m in model.requests[1]["messages"] if m["role"] == "tool"]
    assert json.loads(told) == {
        "error": "arguments invalid: /palette: 3 is not of type 'string'. Correct the call and "
                 "make it again.",
        "error_type": "invalid_arguments"}


async def test_a_tool_result_no_turn_waits_on_is_refused_naming_the_call(
    client: AsyncOpenAI, model: ScriptedModel
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        await client.chat.completions.create(
            model="default", messages=[user("pick"), tool_result("call_gone", "red")],
            tools=[PICK_COLOUR])
    assert raised.value.body["message"] == (  # type: ignore[index]
        "/messages: no turn waits on the results of 'call_gone': send results only for the "
        "tool_calls of the last completion, once each")
    assert model.requests == []


async def test_models_retrieve_reads_a_configured_backend(client: AsyncOpenAI) -> None:
    listed = (await client.models.list()).data[0]
    found = await client.models.retrieve("default")
    assert (found.id, found.object, found.created, found.owned_by) == (
        "default", "model", listed.created, "switchboard")


async def test_models_retrieve_of_an_unknown_id_is_a_404_naming_it_and_the_known_ones(
    client: AsyncOpenAI,
) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        await client.models.retrieve("gpt-4o")
    assert raised.value.body == {
        "message": "model 'gpt-4o' not found; configured: default (GET /v1/models lists them)",
        "type": "not_found_error", "param": None, "code": "not-found"}
    assert raised.value.response.headers["content-type"] == "application/problem+json"
