"""The turn engine on either turn store: the same turn leaves the same conversation, messages,
call records and status in Postgres (`PostgresTurnStore`) and in memory (`MemoryTurnStore`).
The engine runs in-process against a real registry on Postgres and the scripted model server;
the memory store's refusal of pauses is specified last."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from app.database import connect_pool
from app.problems import turn_problem
from planner.engine import EngineSettings, TurnEngine, TurnRequest
from planner.errors import ConversationNotFound, StoreUnsupported, TurnConflict
from planner.events import ToolCallRecord
from planner.messages import ChatMessage
from planner.model_client import ModelBackend, ModelClient
from planner.records import Approved
from planner.store import PostgresTurnStore
from planner.turn_store import TurnStore
from tests.memory_store import MemoryTurnStore
from tests.scripted_model import ScriptedFailure, ScriptedModel, ScriptedReply
from tools.builtins import builtin_specs, default_builtins
from tools.embed import SentenceTransformerEmbedder
from tools.executors import ToolRunner
from tools.registry import ToolRegistry
from tools.spec import BuiltinExecutor, ToolPolicy, ToolSpec

TENANT = "default"
NEEDS_APPROVAL = ToolSpec(
    name="wire_money", description="Send money to an account; a person approves each transfer.",
    parameters={"type": "object", "properties": {"amount": {"type": "number"}}},
    executor=BuiltinExecutor(function="calculate"),
    policy=ToolPolicy(requires_approval=True),
)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool(database_url)
    yield pool
    await pool.close()


@pytest.fixture(params=["postgres", "memory"])
def turn_store(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> TurnStore:
    return PostgresTurnStore(pool) if request.param == "postgres" else MemoryTurnStore()


async def _engine(pool: asyncpg.Pool, embedder: SentenceTransformerEmbedder,
                  model: ScriptedModel, store: TurnStore, http: httpx.AsyncClient) -> TurnEngine:
    registry = ToolRegistry(pool, embedder)
    await registry.write(TENANT, [*builtin_specs(), NEEDS_APPROVAL])
    models = {"default": ModelClient(ModelBackend(base_url=model.url), http)}
    return TurnEngine(store, registry, ToolRunner(http, default_builtins()), models,
                      default_model="default", settings=EngineSettings(), owner="test-replica",
                      problem_of=turn_problem)


@pytest.fixture
async def engine(pool: asyncpg.Pool, embedder: SentenceTransformerEmbedder,
                 model: ScriptedModel, turn_store: TurnStore) -> AsyncIterator[TurnEngine]:
    async with httpx.AsyncClient() as http:
        yield await _engine(pool, embedder, model, turn_store, http)


async def run(engine: TurnEngine, conversation: str, message: str, **request: Any) -> str:
    asked = TurnRequest(message=message, **request)
    turn_id = await engine.start_turn(TENANT, conversation, asked)
    await engine.run_turn(TENANT, conversation, turn_id, asked)
    return turn_id


async def new_conversation(engine: TurnEngine) -> str:
    return await engine.open_conversation(TENANT, {}, [])


async def messages(store: TurnStore, conversation: str) -> list[tuple[Any, ...]]:
    """(role, content, reasoning, [(call id, name, arguments)], tool call id) in order."""
    return [
        (m.role, m.content, m.reasoning,
         [(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or []],
         m.tool_call_id)
        for m in await store.list_messages(TENANT, conversation)
    ]


_UNSET = msgspec.to_builtins(ToolCallRecord(id="", name="", arguments=None))


async def calls(store: TurnStore, turn_id: str) -> list[dict[str, Any]]:
    """The turn's call records: their times left out, and fields at their defaults too."""
    return [
        {k: v for k, v in msgspec.to_builtins(c).items()
         if k in ("id", "name", "arguments") or (k not in ("started_at", "finished_at")
                                                  and v != _UNSET[k])}
        for c in await store.call_records(turn_id)
    ]


def observed(**body: Any) -> str:
    return json.dumps(body, ensure_ascii=False)


async def test_a_turn_with_tool_calls_leaves_its_messages_calls_and_status(
    engine: TurnEngine, model: ScriptedModel
) -> None:
    model.push(
        ScriptedReply(reasoning="two at once", tool_calls=[
            ("calculate", {"expression": "6 * 7"}, "c1"),
            ("delete_all", {}, "c2"),
            ("convert_units", {"value": 1, "from_unit": "km", "to_unit": "m"}, "c3"),
        ]),
        ScriptedReply(tool_calls=[("calculate", '{"expression": ', "c4")]),
        ScriptedReply(content="42, and 1 km is 1000 m.", reasoning="all there"),
    )
    conversation = await new_conversation(engine)
    turn_id = await run(engine, conversation, "what is 6*7, and 1 km in m?")

    unknown = ("unknown tool 'delete_all': only this turn's tools can be called (calculate, "
               "convert_time, convert_units, current_time, wire_money); search_tools finds "
               "others. Correct the call and make it again.")
    invalid = ("arguments are not valid JSON (Expecting value at position 15); send a JSON "
               "object. Correct the call and make it again.")
    converted = {"value": 1, "from_unit": "km", "to_unit": "m", "quantity": "length",
                 "result": 1000.0}
    assert await messages(engine.store, conversation) == [
        ("user", "what is 6*7, and 1 km in m?", None, [], None),
        ("assistant", "", "two at once", [
            ("c1", "calculate", '{"expression": "6 * 7"}'),
            ("c2", "delete_all", "{}"),
            ("c3", "convert_units", '{"value": 1, "from_unit": "km", "to_unit": "m"}'),
        ], None),
        ("tool", observed(result={"expression": "6 * 7", "result": 42}), None, [], "c1"),
        ("tool", observed(error=unknown, error_type="unknown_tool"), None, [], "c2"),
        ("tool", observed(result=converted), None, [], "c3"),
        ("assistant", "", None, [("c4", "calculate", '{"expression": ')], None),
        ("tool", observed(error=invalid, error_type="invalid_arguments"), None, [], "c4"),
        ("assistant", "42, and 1 km is 1000 m.", "all there", [], None),
    ]
    assert await calls(engine.store, turn_id) == [
        {"id": "c1", "name": "calculate", "arguments": {"expression": "6 * 7"},
         "result": {"expression": "6 * 7", "result": 42}, "attempts": 1, "step": 1},
        {"id": "c2", "name": "delete_all", "arguments": {}, "error": unknown,
         "error_type": "unknown_tool", "step": 1, "position": 1},
        {"id": "c3", "name": "convert_units",
         "arguments": {"value": 1, "from_unit": "km", "to_unit": "m"}, "result": converted,
         "attempts": 1, "step": 1, "position": 2},
        {"id": "c4", "name": "calculate", "arguments": None, "error": invalid,
         "error_type": "invalid_arguments", "step": 2},
    ]
    turn = await engine.store.get_turn(TENANT, turn_id)
    assert turn is not None
    assert (turn.status, turn.mode, turn.model, turn.answer, turn.error) == (
        "completed", "auto", "default", "42, and 1 km is 1000 m.", None)
    assert turn.finished_at is not None and turn.finished_at >= turn.started_at


async def test_a_plan_leaves_each_step_with_the_steps_it_waited_for(
    engine: TurnEngine, model: ScriptedModel
) -> None:
    plan = {"steps": [
        {"id": "s1", "tool": "calculate", "arguments": {"expression": "2 + 3"}},
        {"id": "s2", "tool": "convert_units",
         "arguments": {"value": "$s1.result", "from_unit": "km", "to_unit": "m"}},
    ]}
    model.push(ScriptedReply(content=json.dumps(plan)), ScriptedReply(content="5000 m."))
    conversation = await new_conversation(engine)
    turn_id = await run(engine, conversation, "2 + 3 km, in m?", mode="plan")

    assert await calls(engine.store, turn_id) == [
        {"id": "p0_s1", "name": "calculate", "arguments": {"expression": "2 + 3"},
         "result": {"expression": "2 + 3", "result": 5}, "attempts": 1, "step": 1},
        {"id": "p0_s2", "name": "convert_units",
         "arguments": {"value": 5, "from_unit": "km", "to_unit": "m"},
         "result": {"value": 5, "from_unit": "km", "to_unit": "m", "quantity": "length",
                    "result": 5000.0},
         "attempts": 1, "step": 1, "position": 1, "depends_on": ["s1"]},
    ]
    assert [m[0] for m in await messages(engine.store, conversation)] == [
        "user", "assistant", "tool", "tool", "assistant"]
    turn = await engine.store.get_turn(TENANT, turn_id)
    assert turn is not None and (turn.status, turn.mode) == ("completed", "plan")


async def test_the_next_turn_sees_the_history_of_the_first(
    engine: TurnEngine, model: ScriptedModel
) -> None:
    model.push(
        ScriptedReply(tool_calls=[("calculate", {"expression": "6 * 7"}, "c1")]),
        ScriptedReply(content="42."),
        ScriptedReply(content="You asked for 6 * 7."),
    )
    conversation = await new_conversation(engine)
    await run(engine, conversation, "what is 6*7?")
    await run(engine, conversation, "what did I ask?")

    history = [(m["role"], m.get("content"), m.get("tool_call_id"))
               for m in model.requests[-1]["messages"][1:]]
    assert history == [
        ("user", "what is 6*7?", None),
        ("assistant", "", None),
        ("tool", observed(result={"expression": "6 * 7", "result": 42}), "c1"),
        ("assistant", "42.", None),
        ("user", "what did I ask?", None),
    ]


async def test_history_a_conversation_is_opened_with_reaches_its_first_turn(
    engine: TurnEngine, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="Still Ann."))
    history = [ChatMessage(role="user", content="I am Ann."),
               ChatMessage(role="assistant", content="Hello, Ann.")]
    conversation = await engine.open_conversation(TENANT, {"title": "Ann"}, history)
    await run(engine, conversation, "who am I?")

    sent = [(m["role"], m["content"]) for m in model.requests[0]["messages"][1:]]
    assert sent == [("user", "I am Ann."), ("assistant", "Hello, Ann."), ("user", "who am I?")]
    stored = await engine.store.list_messages(TENANT, conversation)
    imported = await engine.store.get_turn(TENANT, stored[0].turn_id)
    assert imported is not None
    assert (imported.status, imported.mode, imported.answer) == (
        "completed", "imported", "Hello, Ann.")


async def test_a_second_turn_conflicts_while_the_first_is_running(
    engine: TurnEngine, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="Done."), ScriptedReply(content="Next."))
    conversation = await new_conversation(engine)
    first = await engine.start_turn(TENANT, conversation, TurnRequest(message="one"))

    with pytest.raises(TurnConflict) as raised:
        await engine.start_turn(TENANT, conversation, TurnRequest(message="two"))
    assert str(raised.value) == (
        f"conversation {conversation!r} already has a running turn {first!r}; wait for it to "
        "finish before sending another message")
    assert [m[1] for m in await messages(engine.store, conversation)] == ["one"]

    await engine.run_turn(TENANT, conversation, first, TurnRequest(message="one"))
    second = await run(engine, conversation, "two")
    turn = await engine.store.get_turn(TENANT, second)
    assert turn is not None and turn.status == "completed"


async def test_a_turn_in_another_tenants_conversation_finds_no_conversation(
    engine: TurnEngine
) -> None:
    conversation = await new_conversation(engine)
    with pytest.raises(ConversationNotFound):
        await engine.start_turn("someone-else", conversation, TurnRequest(message="hi"))
    with pytest.raises(ConversationNotFound):
        await engine.start_turn(TENANT, "conv_missing", TurnRequest(message="hi"))
    assert await engine.store.list_messages("someone-else", conversation) == []


async def test_a_turn_whose_model_fails_ends_failed_with_the_problem(
    engine: TurnEngine, model: ScriptedModel
) -> None:
    model.push(ScriptedFailure(status=400, body={"message": "context too long"}))
    conversation = await new_conversation(engine)
    turn_id = await run(engine, conversation, "hi")

    turn = await engine.store.get_turn(TENANT, turn_id)
    assert turn is not None and turn.status == "failed"
    assert turn.error is not None and turn.error["type"] == "/problems/model-error"
    assert turn.answer is None
    assert [m[0] for m in await messages(engine.store, conversation)] == ["user"]


async def test_nul_characters_read_back_replaced_in_either_store(
    engine: TurnEngine, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(content="got a\x00b"))
    conversation = await new_conversation(engine)
    turn_id = await run(engine, conversation, "say a\x00b")

    assert [m[1] for m in await messages(engine.store, conversation)] == ["say a\ufffdb",
                                                                        "got a\ufffdb"]
    turn = await engine.store.get_turn(TENANT, turn_id)
    assert turn is not None and turn.answer == "got a\ufffdb"


# -- what the memory store refuses --------------------------------------------------------------


@pytest.fixture
async def memory_engine(pool: asyncpg.Pool, embedder: SentenceTransformerEmbedder,
                        model: ScriptedModel) -> AsyncIterator[TurnEngine]:
    async with httpx.AsyncClient() as http:
        yield await _engine(pool, embedder, model, MemoryTurnStore(), http)


async def test_a_call_that_needs_approval_fails_the_turn_on_the_memory_store(
    memory_engine: TurnEngine, model: ScriptedModel
) -> None:
    model.push(ScriptedReply(tool_calls=[("wire_money", {"amount": 10}, "c1")]))
    conversation = await new_conversation(memory_engine)
    request = TurnRequest(message="wire 10")
    turn_id = await memory_engine.start_turn(TENANT, conversation, request)
    result = await memory_engine.run_turn(TENANT, conversation, turn_id, request)

    detail = (f"turn {turn_id!r} cannot wait for approval of call 'c1': MemoryTurnStore keeps "
              "no paused turns (a pause must outlive the process, so any replica can take the "
              "turn up); run the engine on PostgresTurnStore for approvals and client tools")
    assert result.status == "failed"
    assert result.error is not None
    assert (result.error.type, result.error.status, result.error.detail) == (
        "/problems/store-unsupported", 501, detail)
    turn = await memory_engine.store.get_turn(TENANT, turn_id)
    assert turn is not None and turn.status == "failed"
    assert turn.error is not None and turn.error["detail"] == detail


async def test_decisions_and_resuming_are_refused_by_the_memory_store(
    memory_engine: TurnEngine,
) -> None:
    with pytest.raises(StoreUnsupported) as decided:
        await memory_engine.decide(TENANT, "turn_1", "c1", Approved())
    assert str(decided.value) == (
        "turn 'turn_1' cannot take an answer for call 'c1': MemoryTurnStore keeps no paused "
        "turns (a pause must outlive the process, so any replica can take the turn up); run "
        "the engine on PostgresTurnStore for approvals and client tools")
    with pytest.raises(StoreUnsupported) as resumed:
        await memory_engine.resume_turn(TENANT, "turn_1")
    assert (resumed.value.store, resumed.value.operation, resumed.value.turn_id) == (
        "MemoryTurnStore", "be taken back up", "turn_1")
