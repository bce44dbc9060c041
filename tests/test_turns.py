"""Turns end to end: the app over HTTP, a real Postgres, HTTP tools on loopback, and the one
stand-in, a scripted SGLang-compatible model server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from planner.prompt import INSTRUCTIONS_HEADING, SYSTEM_AUTO
from tests.scripted_model import ScriptedFailure, ScriptedModel, ScriptedReply
from tests.test_tracing import stored_trace
from tests.tool_server import ToolServer, http_tool

CITY = {"user": {"type": "string", "description": "User name"}}


@pytest.fixture
async def chat(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer
) -> httpx.AsyncClient:
    app = await start_app(database_url, model_url=model.url, register_builtins=False)
    specs = [
        http_tool(
            f"{tools.url}/sleep",
            "sleep_a",
            "Wait a while (task A)",
            {"ms": {"type": "number"}, "label": {"type": "string"}},
            ["ms"],
        ),
        http_tool(
            f"{tools.url}/sleep",
            "sleep_b",
            "Wait a while (task B)",
            {"ms": {"type": "number"}, "label": {"type": "string"}},
            ["ms"],
        ),
        http_tool(f"{tools.url}/city", "get_user_city", "The city a user lives in", CITY, ["user"]),
        http_tool(
            f"{tools.url}/weather",
            "get_weather",
            "Current weather in a city",
            {"city": {"type": "string"}},
            ["city"],
        ),
        http_tool(
            f"{tools.url}/sleep",
            "slow_tool",
            "A tool that takes too long",
            {"ms": {"type": "number"}},
            ["ms"],
            timeout_s=0.2,
        ),
    ]
    response = await app.client.post("/v1/tools/bulk", json={"tools": specs})
    assert response.status_code == 200, response.text
    return app.client


async def new_conversation(chat: httpx.AsyncClient) -> str:
    response = await chat.post("/v1/conversations", json={})
    assert response.status_code == 201
    return str(response.json()["id"])


async def turn(
    chat: httpx.AsyncClient, conversation: str, message: str, **extra: Any
) -> httpx.Response:
    body = {"message": message, "mode": "auto", "stream": False, **extra}
    return await chat.post(f"/v1/conversations/{conversation}/turns", json=body)


def tool_messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(m["content"]) for m in request["messages"] if m["role"] == "tool"]


async def test_a_turns_instructions_follow_the_system_prompt_and_are_not_history(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="Hi."), ScriptedReply(content="Hello again."))
    conversation = await new_conversation(chat)
    first = await turn(chat, conversation, "hello", instructions="Answer in one word.")
    assert first.status_code == 200, first.text
    await turn(chat, conversation, "hello again")

    system = [m["content"] for r in model.requests for m in r["messages"] if m["role"] == "system"]
    assert system == [f"{SYSTEM_AUTO}{INSTRUCTIONS_HEADING}Answer in one word.", SYSTEM_AUTO]


async def test_a_turn_sets_its_candidate_count_temperature_and_thinking(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="Sunny."), ScriptedReply(content="Sunny."))
    conversation = await new_conversation(chat)
    asked = await turn(chat, conversation, "weather in Oslo", candidate_k=2, temperature=0.3,
                       thinking=False)
    assert asked.status_code == 200, asked.text
    await turn(chat, conversation, "weather in Oslo")

    tuned, default = model.requests
    offered = [t["function"]["name"] for t in tuned["tools"]
               if t["function"]["name"] != "search_tools"]
    assert len(offered) == 2 and "get_weather" in offered
    assert (tuned["temperature"], tuned["chat_template_kwargs"]) == (
        0.3, {"enable_thinking": False})
    assert len(default["tools"]) == 6  # search_tools and all five: CANDIDATE_K is 8
    assert "temperature" not in default and "chat_template_kwargs" not in default


async def test_calls_in_one_reply_run_at_the_same_time(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(
        ScriptedReply(
            tool_calls=[
                ("sleep_a", {"ms": 300, "label": "a"}),
                ("sleep_b", {"ms": 300, "label": "b"}),
            ]
        ),
        ScriptedReply(content="Both done."),
    )
    response = await turn(chat, await new_conversation(chat), "run both")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["message"] == {"role": "assistant", "content": "Both done."}
    calls = body["tool_calls"]
    assert [c["name"] for c in calls] == ["sleep_a", "sleep_b"]  # in call order
    # Overlap, as recorded by the engine and by the tool server: each began before the other ended.
    first, second = calls
    assert (
        first["started_at"] < second["finished_at"] and second["started_at"] < first["finished_at"]
    )
    a, b = tools.calls("/sleep")
    assert a.started < b.finished and b.started < a.finished
    assert [r["result"] for r in tool_messages(model.requests[1])] == [
        {"slept_ms": 300, "label": "a"},
        {"slept_ms": 300, "label": "b"},
    ]


async def test_a_reply_and_its_calls_are_stored_in_call_order_whatever_order_they_end_in(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(
        ScriptedReply(
            reasoning="slow one first",
            tool_calls=[
                ("sleep_a", {"ms": 300, "label": "slow"}),
                ("get_weather", '{"city": "Os'),
                ("delete_all", {}),
                ("sleep_b", {"ms": 10, "label": "fast"}),
            ],
        ),
        ScriptedReply(content="Done.", reasoning="all four are back"),
    )
    conversation = await new_conversation(chat)
    response = await turn(chat, conversation, "four calls")
    assert response.status_code == 200, response.text
    stored = (await chat.get(f"/v1/turns/{response.json()['id']}")).json()
    calls = stored["tool_calls"]
    assert [c["name"] for c in calls] == ["sleep_a", "get_weather", "delete_all", "sleep_b"]
    assert all(c["finished_at"] is not None for c in calls)  # no row left running
    assert [c["error_type"] for c in calls] == [None, "invalid_arguments", "unknown_tool", None]
    assert calls[0]["finished_at"] > calls[3]["finished_at"]  # the first call ended last
    assert [c["result"] for c in (calls[0], calls[3])] == [
        {"slept_ms": 300, "label": "slow"},
        {"slept_ms": 10, "label": "fast"},
    ]
    messages = (await chat.get(f"/v1/conversations/{conversation}/messages")).json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant", *["tool"] * 4, "assistant"]
    reply = messages[1]
    assert reply["reasoning"] == "slow one first"
    ids = [c["id"] for c in reply["tool_calls"]]
    assert [m["tool_call_id"] for m in messages[2:6]] == ids == [c["id"] for c in calls]
    assert json.loads(messages[2]["content"]) == {"result": {"slept_ms": 300, "label": "slow"}}
    assert json.loads(messages[3]["content"])["error_type"] == "invalid_arguments"
    assert (messages[-1]["content"], messages[-1]["reasoning"]) == ("Done.", "all four are back")
    assert stored["status"] == "completed" and stored["message"]["content"] == "Done."
    # What the model read next is what was stored.
    assert tool_messages(model.requests[1]) == [json.loads(m["content"]) for m in messages[2:6]]


async def test_a_plan_step_that_uses_an_earlier_output_runs_after_it_with_the_value(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    plan = {
        "steps": [
            {"id": "s1", "tool": "get_user_city", "arguments": {"user": "ann"}},
            {"id": "s2", "tool": "get_weather", "arguments": {"city": "$s1.city"}},
        ]
    }
    model.push(ScriptedReply(content=json.dumps(plan)), ScriptedReply(content="7°C in Oslo."))
    response = await turn(
        chat, await new_conversation(chat), "weather where ann lives?", mode="plan"
    )
    assert response.status_code == 200, response.text
    calls = {c["id"]: c for c in response.json()["tool_calls"]}
    assert calls["p0_s2"]["arguments"] == {"city": "Oslo"}
    assert calls["p0_s2"]["depends_on"] == ["s1"]
    assert calls["p0_s1"]["finished_at"] <= calls["p0_s2"]["started_at"]
    assert [r.body for r in tools.calls("/weather")] == [{"city": "Oslo"}]
    plan_request = model.requests[0]
    assert plan_request["response_format"]["type"] == "json_schema"
    schema = plan_request["response_format"]["json_schema"]["schema"]
    tool_enums = sorted(
        v["properties"]["tool"]["enum"][0] for v in schema["properties"]["steps"]["items"]["anyOf"]
    )
    assert tool_enums == ["get_user_city", "get_weather", "sleep_a", "sleep_b", "slow_tool"]
    assert plan_request["tool_choice"] == "none"


async def test_a_plan_with_a_cycle_is_rejected_before_anything_runs(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    plan = {
        "steps": [
            {"id": "s1", "tool": "get_weather", "arguments": {"city": "$s2.city"}},
            {"id": "s2", "tool": "get_weather", "arguments": {"city": "$s1.city"}},
        ]
    }
    model.push(ScriptedReply(content=json.dumps(plan)), ScriptedReply(content=json.dumps(plan)),
               ScriptedReply(content="Sorry."))
    response = await turn(chat, await new_conversation(chat), "x", mode="plan")
    assert response.json()["tool_calls"] == []
    assert tools.received == []
    assert model.requests[1]["messages"][-1] == {  # sent back once, to correct
        "role": "user",
        "content": "[switchboard] The plan was rejected and nothing ran: "
        "the plan has a dependency cycle among steps s1, s2. Write the plan again, corrected.",
    }
    assert model.requests[2]["messages"][-1] == {
        "role": "user",
        "content": "[switchboard] The corrected plan was rejected too and nothing ran: "
        "the plan has a dependency cycle among steps s1, s2",
    }


async def test_invalid_arguments_never_reach_the_tool(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(
        ScriptedReply(tool_calls=[("get_weather", {"city": 3})]),
        ScriptedReply(tool_calls=[("get_weather", '{"city": "Os')]),
        ScriptedReply(content="I could not check."),
    )
    response = await turn(chat, await new_conversation(chat), "weather?")
    assert response.status_code == 200
    assert tools.received == []
    errors = [c["error_type"] for c in response.json()["tool_calls"]]
    assert errors == ["invalid_arguments", "invalid_arguments"]
    assert tool_messages(model.requests[1])[0]["error_type"] == "invalid_arguments"
    assert "/city" in tool_messages(model.requests[1])[0]["error"]


async def test_a_call_to_a_tool_outside_the_turn_is_refused(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(tool_calls=[("delete_all", {})]), ScriptedReply(content="ok"))
    response = await turn(chat, await new_conversation(chat), "x")
    call = response.json()["tool_calls"][0]
    assert call["error_type"] == "unknown_tool"
    assert call["error"] == (
        "unknown tool 'delete_all': only this turn's tools can be called (get_user_city, "
        "get_weather, sleep_a, sleep_b, slow_tool); search_tools finds others. Correct the call "
        "and make it again.")


async def test_a_timing_out_tool_and_a_failing_model_are_reported_and_the_conversation_goes_on(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    conversation = await new_conversation(chat)
    model.push(
        ScriptedReply(tool_calls=[("slow_tool", {"ms": 2000})]),
        ScriptedReply(content="The tool timed out."),
    )
    first = (await turn(chat, conversation, "do the slow thing")).json()
    assert first["status"] == "completed"
    assert first["tool_calls"][0]["error_type"] == "timeout"

    model.push(*[ScriptedFailure(status=500)] * 4)
    failed = await turn(chat, conversation, "again")
    assert failed.status_code == 503
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.json()["detail"].startswith(
        f"model server at {model.url}/chat/completions is unavailable"
    )
    assert failed.json()["turn"]["status"] == "failed"

    model.push(ScriptedReply(content="Back again."))
    third = await turn(chat, conversation, "hello?")
    assert third.json()["message"]["content"] == "Back again."
    detail = (await chat.get(f"/v1/conversations/{conversation}")).json()
    assert "turns" in detail, detail
    assert [t["status"] for t in detail["turns"]] == ["completed", "failed", "completed"]


async def test_a_second_turn_sees_the_first_turns_history(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    conversation = await new_conversation(chat)
    model.push(ScriptedReply(content="Hello Ann."), ScriptedReply(content="Your name is Ann."))
    await turn(chat, conversation, "My name is Ann.")
    await turn(chat, conversation, "What is my name?")
    sent = [(m["role"], m.get("content")) for m in model.requests[1]["messages"][1:]]
    assert sent == [
        ("user", "My name is Ann."),
        ("assistant", "Hello Ann."),
        ("user", "What is my name?"),
    ]
    messages = (await chat.get(f"/v1/conversations/{conversation}/messages")).json()["items"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


async def test_a_second_message_while_a_turn_runs_is_a_conflict(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    from tests.scripted_model import ScriptedHang

    conversation = await new_conversation(chat)
    model.push(ScriptedHang(1.0, then=ScriptedReply(content="late")))
    async with chat.stream(
        "POST", f"/v1/conversations/{conversation}/turns", json={"message": "slow", "stream": True}
    ) as streamed:
        assert streamed.status_code == 200
        second = await turn(chat, conversation, "me too")
        assert second.status_code == 409
        assert "already has a running turn" in second.json()["detail"]
        async for _ in streamed.aiter_lines():
            pass


async def test_streamed_turn_sends_typed_events_in_order(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    model.push(
        ScriptedReply(reasoning="Need weather.", tool_calls=[("get_weather", {"city": "Oslo"})]),
        ScriptedReply(content="It is 7 degrees in Oslo."),
    )
    conversation = await new_conversation(chat)
    events: list[tuple[str, str, dict[str, Any]]] = []
    async with chat.stream(
        "POST",
        f"/v1/conversations/{conversation}/turns",
        json={"message": "weather in Oslo?", "stream": True},
    ) as streamed:
        assert streamed.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in streamed.aiter_lines():
            if line == "" and fields:
                events.append((fields["id"], fields["event"], json.loads(fields["data"])))
                fields = {}
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    kinds = [kind for _, kind, _ in events]
    assert kinds[:2] == ["turn.started", "tools.retrieved"]
    assert kinds[-1] == "turn.completed"
    assert "reasoning.delta" in kinds and "message.delta" in kinds
    assert kinds.index("tool_call.started") < kinds.index("tool_call.finished")
    assert [i for i, _, _ in events] == [f"1.{n}" for n in range(1, len(events) + 1)]
    finished = next(d for _, k, d in events if k == "tool_call.finished")
    assert finished["call"]["result"] == {"city": "Oslo", "temp_c": 7}
    text = "".join(d["text"] for _, k, d in events if k == "message.delta")
    assert text == "It is 7 degrees in Oslo."
    assert events[-1][2]["turn"]["message"]["content"] == "It is 7 degrees in Oslo."


async def test_search_tools_lets_the_model_find_a_tool_retrieval_missed(
    chat: httpx.AsyncClient, model: ScriptedModel, start_app: Callable[..., Any]
) -> None:
    extra = {
        "name": "translate_text",
        "description": "Translate text into another language.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
    }
    await chat.post("/v1/tools", json=extra)
    model.push(
        ScriptedReply(tool_calls=[("search_tools", {"query": "translate text"})]),
        ScriptedReply(content="found it"),
    )
    response = await turn(chat, await new_conversation(chat), "translate hello to French")
    found = response.json()["tool_calls"][0]["result"]["found"]
    names = [t["function"]["name"] for t in model.requests[1]["tools"]]
    assert names[0] == "search_tools"
    # The tool block of the first call is an exact prefix of the second's.
    first_names = [t["function"]["name"] for t in model.requests[0]["tools"]]
    assert names[: len(first_names)] == first_names
    assert all(f["name"] in names for f in found)
    # Six tools, so the turn offered all of them at once: they are pointed out again, marked.
    assert {"name": "translate_text", "description": "Translate text into another language.",
            "already_offered": True} in found
    assert all(f.get("already_offered") for f in found)


async def test_prompts_within_a_turn_grow_append_only_with_a_stable_tool_block(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    model.push(
        ScriptedReply(tool_calls=[("get_weather", {"city": "Oslo"})]),
        ScriptedReply(tool_calls=[("get_weather", {"city": "Rome"})]),
        ScriptedReply(content="Oslo 7, Rome 7."),
    )
    await turn(chat, await new_conversation(chat), "weather in Oslo and Rome, one by one")
    first, second, third = model.requests
    assert first["tools"] == second["tools"] == third["tools"]
    assert second["messages"][: len(first["messages"])] == first["messages"]
    assert third["messages"][: len(second["messages"])] == second["messages"]
    assert first["separate_reasoning"] is True


async def test_usage_adds_up_over_the_model_calls_of_a_turn(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    from planner.messages import Usage

    model.push(
        ScriptedReply(
            tool_calls=[("get_weather", {"city": "Oslo"})],
            usage=Usage(prompt_tokens=100, completion_tokens=10, cached_tokens=0),
        ),
        ScriptedReply(
            content="7.", usage=Usage(prompt_tokens=130, completion_tokens=3, cached_tokens=100)
        ),
    )
    body = (await turn(chat, await new_conversation(chat), "weather?")).json()
    assert body["usage"] == {"prompt_tokens": 230, "completion_tokens": 13, "cached_tokens": 100}


async def test_builtin_tools_run_in_a_turn(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel
) -> None:
    app = await start_app(database_url, model_url=model.url, register_builtins=True)
    model.push(
        ScriptedReply(
            tool_calls=[
                ("calculate", {"expression": "(3 + 4) * 2"}),
                ("convert_units", {"value": 100, "from_unit": "C", "to_unit": "F"}),
            ]
        ),
        ScriptedReply(content="14, and 100 C is 212 F."),
    )
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    response = await app.client.post(
        f"/v1/conversations/{conversation}/turns",
        json={"message": "what is (3+4)*2, and 100 C in F?"},
    )
    calls = response.json()["tool_calls"]
    assert [c["error"] for c in calls] == [None, None], calls
    assert calls[0]["result"]["result"] == 14
    assert calls[1]["result"]["result"] == 212


async def test_the_answer_carries_its_reasoning_when_served_and_when_read_back(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="Hello.", reasoning="a greeting needs no tools"),
               ScriptedReply(content="Hello again."))
    conversation = await new_conversation(chat)
    served = (await turn(chat, conversation, "hi")).json()
    assert served["message"] == {"content": "Hello.", "role": "assistant",
                                 "reasoning": "a greeting needs no tools"}
    read_back = (await chat.get(f"/v1/turns/{served['id']}")).json()
    assert read_back["message"] == served["message"]
    plain = (await turn(chat, conversation, "hi again")).json()
    assert plain["message"] == {"content": "Hello again.", "role": "assistant"}
    assert (await chat.get(f"/v1/turns/{plain['id']}")).json()["message"] == plain["message"]


async def test_a_follow_up_keeps_the_tools_the_last_turn_called(
    chat: httpx.AsyncClient, model: ScriptedModel, tools: ToolServer
) -> None:
    model.push(ScriptedReply(tool_calls=[("get_weather", {"city": "Oslo"})]),
               ScriptedReply(content="7 degrees."),
               ScriptedReply(tool_calls=[("get_weather", {"city": "Bergen"})]),
               ScriptedReply(content="5 degrees."))
    conversation = await new_conversation(chat)
    await turn(chat, conversation, "weather in Oslo")
    # One candidate, and words that point to another tool: the last turn's tool stays.
    follow_up = await turn(chat, conversation, "and then wait a while", candidate_k=1)
    assert follow_up.json()["status"] == "completed"
    offered = [t["function"]["name"] for t in model.requests[2]["tools"]]
    # The one candidate comes from the conversation (the request before weighs in), and the
    # tool the last turn called is kept besides: the same tool, offered once.
    assert offered == ["search_tools", "get_weather"]
    assert [c.body["city"] for c in tools.calls("/weather")] == ["Oslo", "Bergen"]


async def test_a_follow_up_to_a_question_back_finds_the_tool_the_request_before_it_needs(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="In Celsius or Fahrenheit?"),
               ScriptedReply(content="Which city, then?"),
               ScriptedReply(content="Which city, then?"))
    conversation = await new_conversation(chat)
    await turn(chat, conversation, "What is the weather like in Oslo right now?")
    # Nothing was called, and the answer names no tool; the request before it does. Two
    # candidates: one the answer's own best, one the conversation's.
    answered = await turn(chat, conversation, "Yes, go ahead.", candidate_k=2)
    assert answered.json()["status"] == "completed"
    offered = [t["function"]["name"] for t in model.requests[1]["tools"]]
    assert "get_weather" in offered and len(offered) == 3
    spans = (await stored_trace(chat, answered.json()["id"]))["spans"]
    retrieval = next(s for s in spans if s["name"] == "retrieval")
    assert retrieval["attributes"]["switchboard.retrieval.context_messages"] == 1
    # A new conversation with the same answer has no request before it to go by.
    alone = await turn(chat, await new_conversation(chat), "Yes, go ahead.", candidate_k=2)
    assert alone.json()["status"] == "completed"
    alone_offered = [t["function"]["name"] for t in model.requests[2]["tools"]]
    assert "get_weather" not in alone_offered


async def test_a_follow_up_on_the_same_topic_offers_the_last_turns_tool_block_unchanged(
    chat: httpx.AsyncClient, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(tool_calls=[("get_weather", {"city": "Oslo"})]),
               ScriptedReply(content="7 degrees."),
               ScriptedReply(content="Much the same tomorrow."),
               ScriptedReply(content="Waited."))
    conversation = await new_conversation(chat)
    await turn(chat, conversation, "What is the weather in Oslo?", candidate_k=2)
    follow_up = await turn(chat, conversation, "And tomorrow?", candidate_k=2)
    # The same tools in the same order: the prompt up to the new message is the one SGLang
    # has cached from the turn before.
    assert model.requests[2]["tools"] == model.requests[1]["tools"]
    switched = await turn(chat, conversation, "Wait 300 ms in task B, please.", candidate_k=2)
    assert [t["function"]["name"] for t in model.requests[3]["tools"]] == [
        "search_tools", "get_weather", "sleep_b"]
    decided = []
    for each in (follow_up, switched):
        spans = (await stored_trace(chat, each.json()["id"]))["spans"]
        [root] = [s for s in spans if s["parent_span_id"] is None]
        decided.append((root["attributes"]["switchboard.tool_block.kept"],
                        root["attributes"]["switchboard.tool_block.why"]))
    assert decided == [(True, "kept, 0 added"),
                       (False, "a new topic: the request's best match, sleep_b, is new")]
