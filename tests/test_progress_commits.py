"""Which of a turn's writes wait for Postgres to flush them: its start and end always, and the
running row of a call that may have side effects; the rest of its progress goes through the
progress pool, whose commits do not wait."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from app.database import connect_pool, init_connection, progress_pool
from app.problems import turn_problem
from planner.call_batch import COALESCE_S
from planner.engine import EngineSettings, TurnEngine, TurnRequest
from planner.messages import ChatMessage
from planner.model_client import ChatModel, ModelBackend, ModelClient
from planner.records import FinishedCall, StartedCall
from planner.store import PostgresTurnStore
from tests.memory_store import MemoryTurnStore
from tests.scripted_model import ScriptedModel, ScriptedReply
from tools.builtins import BuiltinFunctions, builtin_specs, default_builtins
from tools.embed import SentenceTransformerEmbedder
from tools.executors import ToolRunner
from tools.registry import ToolRegistry
from tools.spec import BuiltinExecutor, ToolPolicy, ToolSpec

TENANT = "default"
SIDE_EFFECTS = ToolSpec(
    name="append_note", description="Append a note to the user's notebook.",
    parameters={"type": "object", "properties": {"expression": {"type": "string"}}},
    executor=BuiltinExecutor(function="calculate"),
    policy=ToolPolicy(idempotent=False),
)


class LoggedPool:
    """A real pool like `progress_pool`'s, remembering the statements its connections ran."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.pool: asyncpg.Pool | None = None

    async def open(self, url: str) -> asyncpg.Pool:
        async def init(conn: asyncpg.Connection) -> None:
            await init_connection(conn)
            conn.add_query_logger(lambda record: self.statements.append(record.query))

        self.pool = await asyncpg.create_pool(
            url, min_size=1, max_size=4, init=init,
            server_settings={"synchronous_commit": "off"},
        )
        assert self.pool is not None
        return self.pool

    def kinds(self) -> list[str]:
        """What each of the turn's statements wrote, by its leading clause (asyncpg's own
        queries, type introspection and the reset on release, are left out)."""
        found = []
        for text in self.statements:
            words = " ".join(text.split())
            found += [kind for kind in KINDS if words.startswith(kind)][:1]
        return found


KINDS = ("WITH reply", "WITH finished", "WITH answer", "INSERT INTO messages",
         "INSERT INTO tool_calls", "UPDATE turns SET candidates", "UPDATE turns SET trace_id",
         "UPDATE tool_calls", "UPDATE turns SET status", "INSERT INTO turns")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await connect_pool(database_url)
    yield pool
    await pool.close()


@pytest.fixture
async def logged(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, LoggedPool]]:
    pool = await connect_pool(database_url)
    progress = LoggedPool()
    await progress.open(database_url)
    yield pool, progress
    assert progress.pool is not None
    await progress.pool.close()
    await pool.close()


NAP = ToolSpec(
    name="nap", description="Wait a number of milliseconds.",
    parameters={"type": "object", "properties": {"ms": {"type": "number"}}},
    executor=BuiltinExecutor(function="nap"), policy=ToolPolicy(idempotent=True),
)


async def _turn(pool: asyncpg.Pool, progress: LoggedPool, embedder: SentenceTransformerEmbedder,
                model: ScriptedModel, *replies: ScriptedReply, mode: str = "auto",
                functions: BuiltinFunctions | None = None) -> str:
    async with httpx.AsyncClient() as http:
        registry = ToolRegistry(pool, embedder)
        await registry.write(TENANT, [*builtin_specs(), SIDE_EFFECTS, NAP])
        models: dict[str, ChatModel] = {
            "default": ModelClient(ModelBackend(base_url=model.url), http)
        }
        assert progress.pool is not None
        runner = ToolRunner(http, functions or default_builtins())
        engine = TurnEngine(PostgresTurnStore(pool, progress.pool), registry, runner, models,
                            default_model="default", settings=EngineSettings(),
                            owner="test-replica", problem_of=turn_problem)
        conversation = await engine.open_conversation(TENANT, {}, [])
        model.push(*replies, ScriptedReply(content="Done."))
        asked = TurnRequest(message="work out six times seven", mode=mode)
        turn_id = await engine.start_turn(TENANT, conversation, asked)
        result = await engine.run_turn(TENANT, conversation, turn_id, asked)
        assert result.status == "completed", result
        return turn_id


def calling(tool: str, *more: str) -> ScriptedReply:
    return ScriptedReply(tool_calls=[(name, {"expression": "6 * 7"}, f"c{i}")
                                     for i, name in enumerate((tool, *more))])


async def test_an_idempotent_calls_step_commits_without_waiting_but_the_turns_ends_wait(
    logged: tuple[asyncpg.Pool, LoggedPool], embedder: SentenceTransformerEmbedder,
    model: ScriptedModel,
) -> None:
    pool, progress = logged
    await _turn(pool, progress, embedder, model, calling("calculate"))
    # The candidates, the reply with the call's running row, then the result with the tool
    # message; the turn row, its user message and its answer went through the durable pool.
    assert progress.kinds() == ["UPDATE turns SET candidates", "WITH reply", "WITH finished"]


async def test_a_call_with_side_effects_is_recorded_durably_before_it_is_made(
    logged: tuple[asyncpg.Pool, LoggedPool], embedder: SentenceTransformerEmbedder,
    model: ScriptedModel,
) -> None:
    pool, progress = logged
    await _turn(pool, progress, embedder, model, calling("append_note"))
    assert progress.kinds() == ["UPDATE turns SET candidates", "WITH finished"]


async def test_parallel_calls_that_end_together_are_written_in_one_statement(
    logged: tuple[asyncpg.Pool, LoggedPool], embedder: SentenceTransformerEmbedder,
    model: ScriptedModel,
) -> None:
    pool, progress = logged
    turn_id = await _turn(pool, progress, embedder, model,
                          calling("calculate", "calculate", "calculate"))
    assert progress.kinds() == ["UPDATE turns SET candidates", "WITH reply", "WITH finished"]
    statuses = await pool.fetch("SELECT id, status FROM tool_calls WHERE turn_id = $1 "
                                "ORDER BY id", turn_id)
    assert [(r["id"], r["status"]) for r in statuses] == [
        ("c0", "succeeded"), ("c1", "succeeded"), ("c2", "succeeded")]


async def test_a_call_that_ends_well_before_the_others_is_written_while_they_run(
    logged: tuple[asyncpg.Pool, LoggedPool], embedder: SentenceTransformerEmbedder,
    model: ScriptedModel,
) -> None:
    pool, progress = logged
    seen: list[str] = []

    async def nap(ms: float) -> dict[str, bool]:
        await asyncio.sleep(ms / 1000)
        status = await pool.fetchval("SELECT status FROM tool_calls WHERE id = 'fast'")
        seen.append(str(status))
        return {"ok": True}

    functions = default_builtins()
    functions.register("nap", nap)
    reply = ScriptedReply(tool_calls=[("calculate", {"expression": "1 + 1"}, "fast"),
                                      ("nap", {"ms": 5 * COALESCE_S * 1000}, "slow")])
    await _turn(pool, progress, embedder, model, reply, functions=functions)
    assert seen == ["succeeded"]
    assert progress.kinds() == ["UPDATE turns SET candidates", "WITH reply", "UPDATE tool_calls",
                                "WITH finished"]


PLAN = {"steps": [
    {"id": "s1", "tool": "calculate", "arguments": {"expression": "6 * 7"}},
    {"id": "s2", "tool": "calculate", "arguments": {"expression": "2 + 2"}},
    {"id": "s3", "tool": "calculate", "arguments": {"expression": "$s1.expression"}},
]}


async def test_a_plan_and_its_first_steps_running_rows_are_one_statement(
    logged: tuple[asyncpg.Pool, LoggedPool], embedder: SentenceTransformerEmbedder,
    model: ScriptedModel,
) -> None:
    pool, progress = logged
    await _turn(pool, progress, embedder, model, ScriptedReply(content=json.dumps(PLAN)),
                mode="plan")
    kinds = progress.kinds()
    # s1 and s2 start with the plan; s3, which waits for s1, writes its own row when it starts.
    assert kinds.count("WITH reply") == 1
    assert kinds.count("INSERT INTO tool_calls") == 1
    assert kinds.index("WITH reply") < kinds.index("INSERT INTO tool_calls")


async def test_the_progress_pool_commits_without_waiting_for_the_flush(database_url: str) -> None:
    pool = await connect_pool(database_url)  # migrates, as the service does first
    try:
        async with progress_pool(database_url) as progress:
            assert progress is not None
            assert await progress.fetchval("SHOW synchronous_commit") == "off"
        assert await pool.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await pool.close()


async def test_durable_steps_turn_the_progress_pool_off(database_url: str) -> None:
    async with progress_pool(database_url, enabled=False) as progress:
        assert progress is None


class FailingEnds(MemoryTurnStore):
    """A turn store whose writes of call ends on their own fail, as a lost database connection
    would; ends written with a batch's tool messages go through."""

    observing = False

    async def finish_tool_calls(self, turn_id: str, calls: list[FinishedCall]) -> None:
        if not self.observing:
            raise OSError("connection to the database was lost")
        await super().finish_tool_calls(turn_id, calls)

    async def finish_and_observe(
        self, tenant: str, conversation_id: str, turn_id: str, calls: list[FinishedCall],
        messages: list[ChatMessage],
    ) -> None:
        self.observing = True
        try:
            await super().finish_and_observe(tenant, conversation_id, turn_id, calls, messages)
        finally:
            self.observing = False


async def _napping_engine(
    pool: asyncpg.Pool, embedder: SentenceTransformerEmbedder, model: ScriptedModel,
    http: httpx.AsyncClient, store: MemoryTurnStore,
) -> TurnEngine:
    """An engine on `store` whose tools are the builtins and `nap`, which sleeps."""

    async def nap(ms: float) -> dict[str, bool]:
        await asyncio.sleep(ms / 1000)
        return {"ok": True}

    functions = default_builtins()
    functions.register("nap", nap)
    registry = ToolRegistry(pool, embedder)
    await registry.write(TENANT, [*builtin_specs(), NAP])
    models: dict[str, ChatModel] = {"default": ModelClient(ModelBackend(base_url=model.url), http)}
    return TurnEngine(store, registry, ToolRunner(http, functions), models,
                      default_model="default", settings=EngineSettings(), owner="test-replica",
                      problem_of=turn_problem)


async def test_a_failed_write_of_an_early_call_end_fails_the_turn_with_the_fault(
    pool: asyncpg.Pool, embedder: SentenceTransformerEmbedder, model: ScriptedModel,
) -> None:
    async with httpx.AsyncClient() as http:
        engine = await _napping_engine(pool, embedder, model, http, FailingEnds())
        conversation = await engine.open_conversation(TENANT, {}, [])
        model.push(ScriptedReply(tool_calls=[("calculate", {"expression": "1 + 1"}, "fast"),
                                             ("nap", {"ms": 5 * COALESCE_S * 1000}, "slow")]))
        asked = TurnRequest(message="work out one plus one")
        turn_id = await engine.start_turn(TENANT, conversation, asked)
        result = await engine.run_turn(TENANT, conversation, turn_id, asked)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "/problems/database-unavailable"
    assert result.error.detail == "OSError: connection to the database was lost"


class FailingLate(MemoryTurnStore):
    """A lost database, seen twice in one step: a write of call ends that fails after a while,
    and, while it is under way, the running row of a plan step that starts later."""

    async def finish_tool_calls(self, turn_id: str, calls: list[FinishedCall]) -> None:
        await asyncio.sleep(4 * COALESCE_S)
        raise OSError("connection to the database was lost (ends)")

    async def start_tool_calls(
        self, tenant: str, conversation_id: str, turn_id: str, calls: list[StartedCall]
    ) -> None:
        if any(c.id.endswith("_s3") for c in calls):
            raise OSError("connection to the database was lost (running row)")
        await super().start_tool_calls(tenant, conversation_id, turn_id, calls)


async def test_a_write_of_ends_under_way_when_its_step_fails_is_seen_through_and_logged(
    pool: asyncpg.Pool, embedder: SentenceTransformerEmbedder, model: ScriptedModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    plan = {"steps": [
        {"id": "s1", "tool": "calculate", "arguments": {"expression": "1 + 1"}},
        {"id": "s2", "tool": "nap", "arguments": {"ms": 2 * COALESCE_S * 1000}},
        {"id": "s3", "tool": "calculate", "arguments": {"expression": "$s2.ok"}},
    ]}
    async with httpx.AsyncClient() as http:
        engine = await _napping_engine(pool, embedder, model, http, FailingLate())
        conversation = await engine.open_conversation(TENANT, {}, [])
        model.push(ScriptedReply(content=json.dumps(plan)))
        asked = TurnRequest(message="one plus one, then a nap", mode="plan")
        turn_id = await engine.start_turn(TENANT, conversation, asked)
        with caplog.at_level(logging.WARNING):
            result = await engine.run_turn(TENANT, conversation, turn_id, asked)
            # s1 ended at once, so its end's write began COALESCE_S later and is still under
            # way when s3, which waits for s2, fails to write its running row.
            await asyncio.sleep(5 * COALESCE_S)
    assert result.error is not None
    assert result.error.detail == "OSError: connection to the database was lost (running row)"
    logged = [r.getMessage() for r in caplog.records if r.name == "planner.call_batch"]
    assert logged == ["writing the ends of a failed step's calls failed too: OSError: "
                      "connection to the database was lost (ends)"]
