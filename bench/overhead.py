"""What the orchestration itself costs per tool-calling step, in-process: Switchboard's
TurnEngine with tracing off, on, and on with content capture, against LangGraph's prebuilt
tool-calling agent with and without its Postgres checkpointer; and each without persistence.

    .venv/bin/python -m bench.overhead [--quick] [--turns N] [--profile]

Every way runs the same script: a model that answers at once calls one no-op tool per reply,
STEPS times, then answers. Switchboard's engine is called directly (start_turn + run_turn) with
its Postgres persistence as the service sets it up (`PostgresTurnStore` with its progress pool;
the "DURABLE_STEPS=true" ways without it), an in-process `ChatModel` (bench/_instant_model.py)
and four registered tools run by a no-op async builtin, declared idempotent. Four tools are
fewer than a turn offers (CANDIDATE_K), so retrieval offers them all without embedding the
message (the embedder is loaded, and the per-turn table would show its time if it ran).
LangGraph's agent (bench/_langgraph_agent.py) gets a BaseChatModel that follows the same script,
a ToolNode of four no-op tools and `AsyncPostgresSaver` on the same embedded Postgres.
Without persistence, Switchboard's engine keeps its turns in a `MemoryTurnStore`
(tests/memory_store.py; its registry and span writes stay on Postgres, neither is on a step's
path) and LangGraph's agent runs without a checkpointer.

A step is the time from one model call to the next: the model call (instant), one tool call,
and every write the framework makes for them (Switchboard: the assistant message with the tool
call's running row, then the call's end with the tool result message; LangGraph: the
checkpoints and writes of the model and tool nodes). What a turn does once (the turn row,
history, retrieval, the final answer) is outside the steps and reported per turn. Ways run
interleaved, turn by turn in a rotating order, so drift falls on all alike; a full GC runs
between turns, outside the timing.
Spans are written off the request path: after each traced turn the span queue is drained,
outside the timing, and that cost is reported as span writes per step. The embedder's OpenMP
threads run with OMP_WAIT_POLICY=PASSIVE unless it is set: spinning after each query embedding,
they would add their CPU to the first steps of the turn (retrieval's cost, not the steps').

`--quick` prints; a full run also rewrites the generated blocks of the sections "Tracing
overhead" and "Orchestration overhead vs LangGraph" of bench/BENCHMARKS.md. `--profile` runs
Switchboard's turns under cProfile and prints the top costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import itertools
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import msgspec
import psutil

from app.database import connect_pool, progress_pool, start_embedded
from app.problems import turn_problem
from app.telemetry import Telemetry, build_telemetry
from app.tenancy import DEFAULT_TENANT
from bench._instant_model import FINAL_ANSWER, TOOL_NAMES, InstantModel, StepClock
from bench._markdown import BENCHMARKS, write_sections
from bench._overhead_report import (
    NO_TIME,
    TRACING_MARKS,
    VERSUS_MARKS,
    Clocks,
    Environment,
    TurnSample,
    preamble,
    report,
)
from bench.search_latency import TimedEmbedder
from planner.engine import EngineSettings, TurnEngine, TurnRequest
from planner.store import PostgresTurnStore
from planner.tracing import CAPTURE_ENV, TurnTracer
from planner.turn_store import TurnStore
from tests.memory_store import MemoryTurnStore
from tools.builtins import BuiltinFunctions
from tools.embed import SentenceTransformerEmbedder
from tools.executors import ToolRunner
from tools.registry import ToolRegistry
from tools.spec import BuiltinExecutor, ToolPolicy, ToolSpec

TRACING_SECTION, VERSUS_SECTION = "## Tracing overhead", "## Orchestration overhead vs LangGraph"
TENANT = DEFAULT_TENANT
STEPS = 5
FULL_TURNS, QUICK_TURNS, PROFILE_TURNS = 200, 20, 200
FULL_WARMUP, QUICK_WARMUP = 10, 3
MESSAGE = "Check the weather, the time, an order and a currency, then tell me."
Durability = Literal["sync", "async", "exit"]


class BenchError(RuntimeError):
    """A turn did not do the scripted work; its timings would mean nothing."""


# -- measuring helpers ----------------------------------------------------------------------


class PostgresCpu:
    """CPU used by the embedded server: the postmaster, its live children, reaped children."""

    def __init__(self, data_dir: Path, *, enabled: bool = True) -> None:
        pid = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
        self.postmaster, self.enabled = psutil.Process(pid), enabled

    def ns(self) -> int:
        if not self.enabled:  # reading /proc would show in a profile
            return 0
        times = self.postmaster.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self.postmaster.children():
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
        return int(total * 1e9)


def timeline(
    start: Clocks, clock: StepClock, end: Clocks, *, embed_ns: int = 0,
    spans: Clocks = NO_TIME, postgres_cpu_ns: int = 0,
) -> TurnSample:
    """One turn cut at its model calls: before the first, the steps between, after the last."""
    marks = [Clocks(m.wall, m.cpu) for m in clock.marks]
    if len(marks) != STEPS + 1:
        raise BenchError(f"{len(marks)} model calls, not {STEPS + 1}")
    return TurnSample(steps=[b.since(a) for a, b in itertools.pairwise(marks)],
                      turn=end.since(start), before=marks[0].since(start),
                      after=end.since(marks[-1]), embed_ns=embed_ns, spans=spans,
                      postgres_cpu_ns=postgres_cpu_ns)


# -- Switchboard --------------------------------------------------------------------------------


async def noop(**arguments: Any) -> dict[str, bool]:
    return {"ok": True}


def tool_specs() -> list[ToolSpec]:
    parameters = {"type": "object", "properties": {"query": {"type": "string"}},
                  "required": ["query"]}
    # A no-op changes nothing, so it is declared idempotent: its steps are progress, which
    # commits without waiting for the flush unless DURABLE_STEPS (the "sb-steps" ways).
    return [ToolSpec(name=name, description=f"{name.replace('_', ' ').capitalize()}.",
                     parameters=parameters, executor=BuiltinExecutor(function="noop"),
                     policy=ToolPolicy(idempotent=True))
            for name in TOOL_NAMES]


class SwitchboardTurns:
    """One engine (one tracer) over the shared pool, registry and runner."""

    def __init__(self, engine: TurnEngine, clock: StepClock, embedder: TimedEmbedder,
                 postgres: PostgresCpu, telemetry: Telemetry | None) -> None:
        self.engine, self.clock, self.embedder = engine, clock, embedder
        self.postgres, self.telemetry = postgres, telemetry

    async def __call__(self) -> TurnSample:
        conversation = await self.engine.open_conversation(TENANT, {}, [])
        request = TurnRequest(message=MESSAGE)
        self.clock.reset()
        self.embedder.total = 0.0
        server = self.postgres.ns()
        start = Clocks.now()
        turn_id = await self.engine.start_turn(TENANT, conversation, request)
        result = await self.engine.run_turn(TENANT, conversation, turn_id, request)
        end = Clocks.now()
        spans = await self._drain_spans()
        problems = [c.error for c in result.tool_calls if c.error is not None]
        if result.status != "completed" or len(result.tool_calls) != STEPS or problems:
            raise BenchError(f"switchboard turn {result.status}: {result.error} {problems[:2]}")
        return timeline(start, self.clock, end, embed_ns=round(self.embedder.total * 1e9),
                        spans=spans, postgres_cpu_ns=self.postgres.ns() - server)

    async def _drain_spans(self) -> Clocks:
        start = Clocks.now()
        if self.telemetry is not None:
            await self.telemetry.store.flush()
        return Clocks.now().since(start)


Tracing = Literal["on", "capture"] | None
"""Tracing off (None), on, or on with content capture."""
Storage = Literal["service", "durable-steps", "memory"]
"""Where a way's turns go: Postgres as the service writes them by default (progress through a
pool that does not wait for the flush), Postgres with every step waiting (DURABLE_STEPS=true),
or a MemoryTurnStore of its own."""
Engines = Callable[[Tracing, Storage], SwitchboardTurns]


@contextlib.asynccontextmanager
async def switchboard_engines(
    url: str, embedder: TimedEmbedder, postgres: PostgresCpu
) -> AsyncIterator[Engines]:
    """Engines sharing the pools, registry and runner on `url`, and one clock."""
    pool = await connect_pool(url)
    telemetry = {"on": build_telemetry(enabled=True, environ={}),
                 "capture": build_telemetry(enabled=True, environ={CAPTURE_ENV: "true"})}
    try:
        registry = ToolRegistry(pool, embedder)
        await registry.write(TENANT, tool_specs())
        builtins = BuiltinFunctions()
        builtins.register("noop", noop)
        async with httpx.AsyncClient() as http, progress_pool(url) as progress:
            runner = ToolRunner(http, builtins)
            for t in telemetry.values():
                t.store.start(pool)
            clock = StepClock()

            def way(tracing: Tracing, storage: Storage) -> SwitchboardTurns:
                traced = None if tracing is None else telemetry[tracing]
                stores: dict[Storage, Callable[[], TurnStore]] = {
                    "service": lambda: PostgresTurnStore(pool, progress),
                    "durable-steps": lambda: PostgresTurnStore(pool),
                    "memory": MemoryTurnStore,
                }
                engine = TurnEngine(stores[storage](), registry, runner,
                                    {"default": InstantModel(clock, STEPS)},
                                    default_model="default", settings=EngineSettings(),
                                    owner=uuid.uuid4().hex, problem_of=turn_problem,
                                    tracer=TurnTracer() if traced is None else traced.tracer)
                return SwitchboardTurns(engine, clock, embedder, postgres, traced)

            yield way
    finally:
        for t in telemetry.values():
            await t.store.stop()
            t.shutdown()
        await pool.close()


@contextlib.asynccontextmanager
async def switchboard_ways(
    url: str, mode: str, embedder: TimedEmbedder, postgres: PostgresCpu
) -> AsyncIterator[dict[str, SwitchboardTurns]]:
    async with switchboard_engines(url, embedder, postgres) as way:
        yield {f"sb-off:{mode}": way(None, "service"), f"sb-on:{mode}": way("on", "service"),
               f"sb-capture:{mode}": way("capture", "service"),
               f"sb-steps:{mode}": way("on", "durable-steps")}


@contextlib.asynccontextmanager
async def switchboard_in_memory(
    url: str, embedder: TimedEmbedder, postgres: PostgresCpu
) -> AsyncIterator[dict[str, SwitchboardTurns]]:
    """Turns kept in a `MemoryTurnStore` each; the registry (and, traced, the spans) on `url`."""
    async with switchboard_engines(url, embedder, postgres) as way:
        yield {"sb-mem": way(None, "memory"), "sb-mem-on": way("on", "memory")}


# -- LangGraph ----------------------------------------------------------------------------------


class LangGraphTurns:
    def __init__(self, agent: Any, clock: StepClock, postgres: PostgresCpu,
                 durability: Durability | None) -> None:
        self.agent, self.clock, self.postgres = agent, clock, postgres
        self.durability = durability

    async def __call__(self) -> TurnSample:
        from langchain_core.messages import HumanMessage, ToolMessage

        config: Any = {"configurable": {"thread_id": uuid.uuid4().hex}}
        self.clock.reset()
        server = self.postgres.ns()
        start = Clocks.now()
        state = await self.agent.ainvoke({"messages": [HumanMessage(content=MESSAGE)]}, config,
                                         durability=self.durability)
        end = Clocks.now()
        messages = state["messages"]
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if len(results) != STEPS or messages[-1].content != FINAL_ANSWER or any(
            m.status != "success" for m in results
        ):
            raise BenchError(f"langgraph turn: {[m.content for m in messages][-3:]}")
        return timeline(start, self.clock, end, postgres_cpu_ns=self.postgres.ns() - server)


@contextlib.asynccontextmanager
async def langgraph_ways(
    url: str, mode: str, postgres: PostgresCpu
) -> AsyncIterator[dict[str, LangGraphTurns]]:
    from bench._langgraph_agent import build_agent, postgres_checkpointer

    clock = StepClock()
    async with postgres_checkpointer(url) as saver:
        saved = build_agent(clock, STEPS, saver)
        yield {f"lg-pg:{mode}": LangGraphTurns(saved, clock, postgres, None),
               f"lg-pg-sync:{mode}": LangGraphTurns(saved, clock, postgres, "sync")}


def langgraph_in_memory(postgres: PostgresCpu) -> dict[str, LangGraphTurns]:
    from bench._langgraph_agent import build_agent

    clock = StepClock()
    return {"lg-none": LangGraphTurns(build_agent(clock, STEPS, None), clock, postgres, None)}


# -- the run ------------------------------------------------------------------------------------


COMMIT_MODES = {"durable": "on", "no-wait": "off"}
"""Each way on Postgres runs on two databases: commits that wait for the WAL flush (the
default), and `synchronous_commit = off` (a crash may lose the last moments of writes, never
consistency), which leaves the orchestration and the round trips without the disk."""


Way = Callable[[], Awaitable[TurnSample]]


@contextlib.asynccontextmanager
async def ways_on_embedded_postgres(
    *, server_cpu: bool = True
) -> AsyncIterator[tuple[dict[str, Way], Environment]]:
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-overhead-") as tmp:
        server = start_embedded(Path(tmp))
        embedder = SentenceTransformerEmbedder()
        try:
            base = server.get_uri()
            postgres = PostgresCpu(Path(tmp), enabled=server_cpu)
            timed = TimedEmbedder(embedder)
            environment = Environment(postgres=await _postgres_settings(base))
            ways: dict[str, Way] = {}
            async with contextlib.AsyncExitStack() as stack:
                for mode, commit in COMMIT_MODES.items():
                    sb_url = await _database(base, f"bench_sb_{commit}", commit)
                    lg_url = await _database(base, f"bench_lg_{commit}", commit)
                    ways |= await stack.enter_async_context(
                        switchboard_ways(sb_url, mode, timed, postgres))
                    ways |= await stack.enter_async_context(
                        langgraph_ways(lg_url, mode, postgres))
                memory_url = await _database(base, "bench_sb_memory", "off")
                ways |= await stack.enter_async_context(
                    switchboard_in_memory(memory_url, timed, postgres))
                ways |= langgraph_in_memory(postgres)
                yield ways, environment
        finally:
            embedder.close()
            server.cleanup()


async def _database(url: str, name: str, synchronous_commit: str) -> str:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.execute(
            f'ALTER DATABASE "{name}" SET synchronous_commit = {synchronous_commit}'
        )
    finally:
        await admin.close()
    base, _, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


async def _postgres_settings(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        version = await conn.fetchval("SHOW server_version")
        fsync = await conn.fetchval("SHOW fsync")
        commit = await conn.fetchval("SHOW synchronous_commit")
    finally:
        await conn.close()
    return f"PostgreSQL {version} (embedded; fsync={fsync}, synchronous_commit={commit})"


async def measure(
    turns: int, warmup: int
) -> tuple[dict[str, list[TurnSample]], Environment]:
    started, load = time.monotonic(), os.getloadavg()[0]
    async with ways_on_embedded_postgres() as (ways, environment):
        for key, way in ways.items():
            for _ in range(warmup):
                await way()
            print(f"  warmed up {key}", file=sys.stderr, flush=True)
        gc.collect()
        gc.freeze()  # the loaded model and libraries are not garbage; don't rescan them
        samples, peak = await _interleaved(ways, turns)
    return samples, msgspec.structs.replace(environment, seconds=time.monotonic() - started,
                                            load=(load, peak))


async def _interleaved(
    ways: dict[str, Way], turns: int
) -> tuple[dict[str, list[TurnSample]], float]:
    """Round after round, every way once, in an order rotated by one each round."""
    keys = list(ways)
    samples: dict[str, list[TurnSample]] = {k: [] for k in keys}
    peak = 0.0
    for number in range(turns):
        shift = number % len(keys)
        for key in keys[shift:] + keys[:shift]:
            gc.collect()
            samples[key].append(await ways[key]())
        peak = max(peak, os.getloadavg()[0])
        if (number + 1) % max(1, turns // 10) == 0:
            print(f"  round {number + 1}/{turns}", file=sys.stderr, flush=True)
    return samples, peak


async def profile(turns: int, keys: Sequence[str]) -> str:
    """cProfile over Switchboard's turns only, timed by the main thread's CPU (so waits for
    Postgres and the embedder's thread do not count): the top costs by own time, then the
    project's functions by cumulative time."""
    async with ways_on_embedded_postgres(server_cpu=False) as (ways, _):
        for key in keys:
            for _ in range(FULL_WARMUP):
                await ways[key]()
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        for _ in range(turns):
            for key in keys:
                await ways[key]()
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(r"/(planner|tools|app)/\w+\.py", 40)
    return out.getvalue().replace(f"{Path.cwd()}/", "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.overhead",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_TURNS} turns per way; BENCHMARKS.md untouched")
    parser.add_argument("--turns", type=int, help="measured turns per way")
    parser.add_argument("--profile", action="store_true",
                        help="profile Switchboard's turns (tracing off) with cProfile")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Else torch's OpenMP threads busy-wait after each query embedding, and that CPU lands on
    # the steps that follow it (set OMP_WAIT_POLICY=ACTIVE to see it).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    turns = args.turns or (QUICK_TURNS if args.quick else FULL_TURNS)
    if turns < 1:
        parser.error("--turns must be at least 1")
    if args.profile:
        keys = ["sb-off:no-wait"]
        print(asyncio.run(profile(args.turns or PROFILE_TURNS, keys)))
        return 0
    warmup = QUICK_WARMUP if args.quick else FULL_WARMUP
    samples, environment = asyncio.run(measure(turns, warmup))
    command = "python -m bench.overhead" + (" --quick" if args.quick else "")
    tracing, versus = report(samples, preamble(command, turns, warmup, environment, STEPS))
    print(tracing, versus, sep="\n\n")
    if not args.quick and args.turns is None:
        write_sections(BENCHMARKS, [(TRACING_SECTION, TRACING_MARKS, tracing),
                                    (VERSUS_SECTION, VERSUS_MARKS, versus)])
        print(f"wrote {BENCHMARKS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
