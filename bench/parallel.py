"""Parallel tool calls end to end: eight calls in one reply, a plan of eight steps, and the
one-call-per-reply loop, each run as a turn over HTTP against the real service.

    .venv/bin/python -m bench.parallel [--quick] [--turns N] [--no-tracing] [--registry N]
                                       [--data ../shared/data]

The service (`python -m app serve`, a process of its own, set up by bench/_stack.py's
`service_env`: LOG_LEVEL=WARNING, no rate limit; on an embedded Postgres in a temp dir, a fresh
database) talks to a scripted model that answers at once and to eight HTTP tools
`sleep_0` .. `sleep_7` that each sleep 200 ms. Each registry size runs in a database of its own:
the eight sleep tools alone (no more than a turn offers, so the service offers them all without
ranking), and the eight among 500 (492 real tools from --data, as bench.search_latency loads
them), where every turn embeds its message and ranks the registry. The client, the scripted
model and the tool server share this process's event loop, apart from the service, as a
deployment has them. Model time is measured at the scripted server (from the ASGI call to the
last byte sent) and tool time at the tool server, with time.monotonic on this process's clock,
as the client's wall time is:

    bound    = model time + the longest chain of tool time (1 call for ways 1-2, 8 for way 3)
    overhead = wall at the client - bound   (the engine's, Postgres's and the transports' share)

A full run rewrites the generated part of the "Parallel tool calls" section of
bench/BENCHMARKS.md; `--quick` only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import psutil

from bench._markdown import publish
from bench._stack import (
    SERVE,
    SetUpError,
    embedded_postgres,
    free_port,
    fresh_database,
    process,
    service_env,
    wait_ready,
)
from bench.search_latency import load_corpus
from tests.scripted_model import Receive, ScriptedModel, ScriptedReply, Send, Step
from tests.tool_server import Received, ToolServer, http_tool, tool_server

SECTION = "## Parallel tool calls"
BEGIN, END = "<!-- parallel:begin -->", "<!-- parallel:end -->"
TOOLS = 8
SLEEP_MS = 200
WARMUP = 2
FULL_TURNS, QUICK_TURNS = 20, 3
REGISTRIES = (TOOLS, 500)
"""Tools registered, the sleep tools included: as many as a turn offers, and many more."""
TARGET_OVER_BOUND = 0.10
TARGET_SPEEDUP = 3.5
NOTE = "[switchboard]"  # the engine's own notes to the model come as user messages
ADMIN_KEY = "sbk_bench_parallel_admin_key"


class BenchError(RuntimeError):
    """A turn did not do the work it was scripted to do; the numbers would mean nothing."""


class Way(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    """The first word of the user message; the scripted model answers by it."""
    title: str
    mode: str
    model_calls: int
    chain: int
    """Tool calls on the critical path: the batches the tools run in, one after another."""


WAYS = (
    Way(key="parallel", title="1. auto, 8 calls in one reply", mode="auto", model_calls=2,
        chain=1),
    Way(key="plan", title="2. plan, 8 independent steps", mode="plan", model_calls=2, chain=1),
    Way(key="sequential", title="3. auto, 1 call per reply (loop)", mode="auto", model_calls=9,
        chain=TOOLS),
)


# -- the scripted model ------------------------------------------------------------------------


def arguments(i: int) -> dict[str, Any]:
    return {"ms": SLEEP_MS, "label": f"task {i}"}


PLAN = json.dumps(
    {"steps": [{"id": f"s{i}", "tool": f"sleep_{i}", "arguments": arguments(i)}
               for i in range(TOOLS)]}
)


def respond(body: dict[str, Any]) -> Step:
    """Decide from the request alone, so any number of turns and conversations work: the way is
    the first word of the last user message, progress the tool results since it."""
    messages: list[dict[str, Any]] = body.get("messages") or []
    asked = max(i for i, m in enumerate(messages)
                if m.get("role") == "user" and not str(m.get("content")).startswith(NOTE))
    way = str(messages[asked].get("content")).split(":", 1)[0]
    done = sum(1 for m in messages[asked + 1:] if m.get("role") == "tool")
    if body.get("response_format") is not None:
        return ScriptedReply(content=PLAN)
    if way == "parallel" and done == 0:
        return ScriptedReply(tool_calls=[(f"sleep_{i}", arguments(i)) for i in range(TOOLS)])
    if way == "sequential" and done < TOOLS:
        return ScriptedReply(tool_calls=[(f"sleep_{done}", arguments(done))])
    return ScriptedReply(content=f"All {done} tasks are done.")


class Interval(msgspec.Struct, frozen=True):
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


class TimedModel(ScriptedModel):
    """The scripted model, timing each chat request from the ASGI call to its last byte."""

    def __init__(self) -> None:
        super().__init__(responder=respond)
        self.spans: list[Interval] = []

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        started = time.monotonic()
        await super().__call__(scope, receive, send)
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
            self.spans.append(Interval(started, time.monotonic()))


# -- one turn ----------------------------------------------------------------------------------


class Cpu(msgspec.Struct, frozen=True):
    """The service's CPU seconds so far (user + system)."""

    process: float
    loop: float
    """The main thread's, which runs the event loop."""

    @classmethod
    def of(cls, service: psutil.Process) -> Cpu:
        times = service.cpu_times()
        main = next(t for t in service.threads() if t.id == service.pid)
        return cls(times.user + times.system, main.user_time + main.system_time)

    def minus(self, earlier: Cpu) -> Cpu:
        return Cpu(self.process - earlier.process, self.loop - earlier.loop)


class Sample(msgspec.Struct, frozen=True, kw_only=True):
    """One turn, in seconds. wall = before + model + to_tools + tools + skew + to_model +
    after."""

    wall: float
    model: float
    tools: float
    """Longest chain of tool time, at the tool server."""
    before: float
    """Client send -> first model request (route, turn row, history, retrieval)."""
    to_tools: float
    """From a model reply to the first request of the tool batch it asked for."""
    to_model: float
    """From a tool batch's last reply to the next model request."""
    skew: float
    """A batch's span at the tool server beyond its longest call (calls not started at once)."""
    after: float
    """Last model reply -> response at the client (final message, turn row, response)."""
    engine_tools: float
    """Longest chain of tool time as the turn's tool_calls record it."""
    spread: float
    """The largest gap between the first and the last start of one batch, as recorded."""
    cpu: float
    """CPU time of the service's process."""
    loop_cpu: float
    """CPU time of the service's event loop thread: all of it but the embedder's threads."""

    @property
    def bound(self) -> float:
        return self.model + self.tools


async def run_turn(running: Service, model: TimedModel, tools: ToolServer, way: Way) -> Sample:
    client = running.client
    made = await client.post("/v1/conversations", json={})
    made.raise_for_status()
    conversation = made.json()["id"]
    body = {"message": f"{way.key}: wait 200 ms in each of the eight sleep tasks",
            "mode": way.mode, "stream": False}
    model.spans.clear()
    tools.received.clear()
    cpu = Cpu.of(running.process)
    started = time.monotonic()
    response = await client.post(f"/v1/conversations/{conversation}/turns", json=body)
    finished = time.monotonic()
    cpu = Cpu.of(running.process).minus(cpu)
    turn = _checked(way, response, model.spans, tools.received)
    return _sample(Interval(started, finished), cpu, model.spans, tools.received, turn)


def _checked(
    way: Way, response: httpx.Response, spans: list[Interval], received: list[Received]
) -> dict[str, Any]:
    if response.status_code != 200:
        raise BenchError(f"{way.key}: HTTP {response.status_code}: {response.text[:500]}")
    turn: dict[str, Any] = response.json()
    batches = len(_batches(spans, received))
    failed = [c for c in turn["tool_calls"] if c["error"] is not None]
    problems = [
        f"status {turn['status']!r}" if turn["status"] != "completed" else "",
        f"{len(turn['tool_calls'])} tool calls, not {TOOLS}" if len(turn["tool_calls"]) != TOOLS
        else "",
        f"failed calls: {failed[:2]}" if failed else "",
        f"{len(received)} tool requests served, not {TOOLS}" if len(received) != TOOLS else "",
        f"{len(spans)} model calls, not {way.model_calls}" if len(spans) != way.model_calls
        else "",
        f"tools ran in {batches} batches, not {way.chain}" if batches != way.chain else "",
    ]
    if any(problems):
        raise BenchError(f"{way.key}: " + "; ".join(p for p in problems if p))
    return turn


def _sample(
    wall: Interval, cpu: Cpu, spans: list[Interval], received: list[Received],
    turn: dict[str, Any],
) -> Sample:
    batches = _batches(spans, received)
    chains = [max(r.finished - r.started for r in batch) for batch in batches]
    stretches = [Interval(min(r.started for r in b), max(r.finished for r in b))
                 for b in batches]
    steps = sorted([(s, False) for s in spans] + [(s, True) for s in stretches],
                   key=lambda step: step[0].start)
    gaps = [(b.start - a.end, tools) for (a, _), (b, tools) in itertools.pairwise(steps)]
    engine_chain, spread = _recorded(turn["tool_calls"])
    return Sample(
        wall=wall.seconds,
        model=sum(s.seconds for s in spans),
        tools=sum(chains),
        before=steps[0][0].start - wall.start,
        to_tools=sum(gap for gap, tools in gaps if tools),
        to_model=sum(gap for gap, tools in gaps if not tools),
        skew=sum(s.seconds for s in stretches) - sum(chains),
        after=wall.end - steps[-1][0].end,
        engine_tools=engine_chain,
        spread=spread,
        cpu=cpu.process,
        loop_cpu=cpu.loop,
    )


def _batches(spans: list[Interval], received: list[Received]) -> list[list[Received]]:
    """Tool requests grouped by the model call they followed."""
    grouped: dict[int, list[Received]] = {}
    for request in received:
        after = sum(1 for s in spans if s.end <= request.started)
        grouped.setdefault(after, []).append(request)
    return [grouped[k] for k in sorted(grouped)]


def _recorded(calls: list[dict[str, Any]]) -> tuple[float, float]:
    """(longest chain, largest start spread within a step) from the turn's tool_calls."""
    steps: dict[int, list[tuple[datetime, datetime]]] = {}
    for call in calls:
        times = (datetime.fromisoformat(call["started_at"]),
                 datetime.fromisoformat(call["finished_at"]))
        steps.setdefault(call["step"], []).append(times)
    chain = sum(max((e - s).total_seconds() for s, e in step) for step in steps.values())
    spread = max((max(s for s, _ in step) - min(s for s, _ in step)).total_seconds()
                 for step in steps.values())
    return chain, spread


# -- the run -----------------------------------------------------------------------------------


class Results(msgspec.Struct, frozen=True):
    samples: dict[str, list[Sample]]
    seconds: float
    load: tuple[float, float]
    """The 1-minute load average before and after: other work on the machine shows here."""
    registry: int
    """Tools registered, the sleep tools included."""


class Service(msgspec.Struct, frozen=True):
    client: httpx.AsyncClient
    process: psutil.Process


@contextlib.asynccontextmanager
async def service(
    database_url: str, model_url: str, folder: Path, tracing: bool,
    settings: dict[str, str] | None = None,
) -> AsyncIterator[Service]:
    """`python -m app serve` as a process of its own (with `settings` added to its
    environment), and a client authenticated to it."""
    port = free_port()
    env = service_env(database=database_url, model_url=model_url, port=port,
                      data_dir=folder / "data", admin_key=ADMIN_KEY, tracing=tracing)
    env.update(settings or {})
    log = folder / "service.log"
    with process(SERVE, env, log) as child:
        url = f"http://127.0.0.1:{port}"
        await wait_ready(f"{url}/health", child, log, 180)
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=auth) as client:
            yield Service(client, psutil.Process(child.pid))


async def register_tools(client: httpx.AsyncClient, tools_url: str) -> None:
    properties = {"ms": {"type": "number"}, "label": {"type": "string"}}
    # Waiting changes nothing, so the tools say so: their steps are progress, committed without
    # waiting for the WAL flush (a tool with side effects has its running rows flushed first).
    specs = [http_tool(f"{tools_url}/sleep", f"sleep_{i}", f"Wait {SLEEP_MS} ms (task {i})",
                       properties, ["ms"], idempotent=True) for i in range(TOOLS)]
    response = await client.post("/v1/tools/bulk", json={"tools": specs})
    if response.status_code != 200:
        raise SetUpError(f"registering the tools failed: HTTP {response.status_code}: "
                         f"{response.text[:500]}")


async def register_others(client: httpx.AsyncClient, data: Path, count: int) -> None:
    """`count` real tools besides the sleep tools, so that retrieval has to rank."""
    specs = load_corpus(data, count, 0).tools[:count]
    response = await client.post("/v1/tools/bulk", json={"tools": msgspec.to_builtins(specs)},
                                 timeout=600)
    if response.status_code != 200:
        raise SetUpError(f"registering {count} other tools failed: HTTP "
                         f"{response.status_code}: {response.text[:500]}")


async def measure(turns: int, tracing: bool, registry: int, data: Path) -> Results:
    model = TimedModel()
    started, load = time.monotonic(), os.getloadavg()[0]
    try:
        with embedded_postgres() as postgres, tempfile.TemporaryDirectory() as folder:
            url = await fresh_database(postgres, "bench_parallel")
            await model.start()
            async with tool_server() as tools, service(url, model.url, Path(folder),
                                                       tracing) as running:
                await register_tools(running.client, tools.url)
                if registry > TOOLS:
                    await register_others(running.client, data, registry - TOOLS)
                samples = await _rounds(running, model, tools, turns)
    finally:
        await model.stop()
    return Results(samples, time.monotonic() - started, (load, os.getloadavg()[0]), registry)


async def _rounds(
    running: Service, model: TimedModel, tools: ToolServer, turns: int
) -> dict[str, list[Sample]]:
    """Warm-ups for every way, then the ways in turn, round after round, so drift (a growing
    database, a warming cache) falls on all three alike."""
    for way in WAYS:
        for _ in range(WARMUP):
            await run_turn(running, model, tools, way)
    samples: dict[str, list[Sample]] = {w.key: [] for w in WAYS}
    for number in range(turns):
        for way in WAYS:
            samples[way.key].append(await run_turn(running, model, tools, way))
        print(f"  round {number + 1}/{turns}", file=sys.stderr, flush=True)
    return samples


# -- the report --------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def median(values: Sequence[float]) -> float:
    return float(np.median(values))


def p90(values: Sequence[float]) -> float:
    return float(np.percentile(values, 90))


def main_table(samples: dict[str, list[Sample]]) -> str:
    loop = median([s.wall for s in samples["sequential"]])
    lines = [
        "| way | model calls | wall p50 ms | wall p90 ms | wall best ms | bound p50 ms "
        "| wall/bound p50 | overhead p50 ms | overhead per model call ms | speedup vs loop |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for way in WAYS:
        got = samples[way.key]
        walls = [s.wall for s in got]
        over = median([s.wall - s.bound for s in got])
        cells = [way.title, str(way.model_calls), ms(median(walls)), ms(p90(walls)),
                 ms(min(walls)), ms(median([s.bound for s in got])),
                 f"{median([s.wall / s.bound for s in got]):.3f}",
                 ms(over), ms(over / way.model_calls), f"{loop / median(walls):.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


BREAKDOWN: tuple[tuple[str, str], ...] = (
    ("model time", "model"),
    ("tool chain (server)", "tools"),
    ("tool chain (recorded)", "engine_tools"),
    ("before 1st model call", "before"),
    ("model -> tools", "to_tools"),
    ("batch skew", "skew"),
    ("start spread (recorded)", "spread"),
    ("tools -> model", "to_model"),
    ("after last model call", "after"),
    ("service CPU (mean)", "cpu"),
    ("its event loop's CPU (mean)", "loop_cpu"),
)
"""(column, Sample field) of the breakdown table."""
MEANS = {"cpu", "loop_cpu"}
"""Read from /proc in clock ticks (10 ms), so a turn's own value is coarse; their mean is not."""


def breakdown_table(samples: dict[str, list[Sample]]) -> str:
    lines = [
        "| way (medians but CPU, ms) | " + " | ".join(title for title, _ in BREAKDOWN) + " |",
        "|---" * (len(BREAKDOWN) + 1) + "|",
    ]
    for way in WAYS:
        got = samples[way.key]
        cells = [ms((np.mean if field in MEANS else median)([getattr(s, field) for s in got]))
                 for _, field in BREAKDOWN]
        lines.append("| " + " | ".join([way.title, *cells]) + " |")
    return "\n".join(lines)


def verdicts(samples: dict[str, list[Sample]], registry: int) -> list[str]:
    loop = median([s.wall for s in samples["sequential"]])
    found = []
    for way in WAYS[:2]:
        got = samples[way.key]
        over = median([s.wall / s.bound for s in got]) - 1
        speedup = loop / median([s.wall for s in got])
        within = "meets" if over <= TARGET_OVER_BOUND else "misses"
        faster = "meets" if speedup >= TARGET_SPEEDUP else "misses"
        found.append(
            f"- {registry} tools, way {way.title[0]}: {over:+.1%} over the bound ({within} the "
            f"{TARGET_OVER_BOUND:.0%} target); {speedup:.2f}x the loop ({faster} the "
            f"{TARGET_SPEEDUP}x target)."
        )
    return found


def registry_title(registry: int) -> str:
    if registry == TOOLS:
        return f"{TOOLS} tools registered: all offered, unranked (no query embedding)"
    return (f"{registry} tools registered: the {TOOLS} sleep tools and {registry - TOOLS} real "
            "ones; each turn embeds its message and ranks them")


def report(runs: Sequence[Results], turns: int, tracing: bool, quick: bool) -> str:
    command = "python -m bench.parallel" + (" --quick" if quick else "")
    command += "" if tracing else " --no-tracing"
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        BEGIN,
        f"`{command}` on {date.today().isoformat()}; {machine}; {turns} measured turns per way "
        f"after {WARMUP} warm-ups each; tracing {'on' if tracing else 'off'}.",
    ]
    for results in runs:
        lines += [
            "",
            f"**{registry_title(results.registry)}.** {results.seconds:.0f} s; load average "
            f"{results.load[0]:.1f} before, {results.load[1]:.1f} after.",
            "",
            main_table(results.samples),
            "",
            breakdown_table(results.samples),
        ]
    lines.append("")
    for results in runs:
        lines += verdicts(results.samples, results.registry)
    return "\n".join([*lines, END])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.parallel",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_TURNS} turns per way; BENCHMARKS.md untouched")
    parser.add_argument("--turns", type=int, help="measured turns per way (overrides the default)")
    parser.add_argument("--no-tracing", action="store_true",
                        help="run the service with tracing off (TRACING=false)")
    parser.add_argument("--registry", type=int, choices=REGISTRIES,
                        help="run only this registry size (default: each of them)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"),
                        help="the benchmark data the other tools come from")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    turns = args.turns or (QUICK_TURNS if args.quick else FULL_TURNS)
    if turns < 1:
        parser.error("--turns must be at least 1")
    tracing = not args.no_tracing
    sizes = REGISTRIES if args.registry is None else (args.registry,)
    runs = [asyncio.run(measure(turns, tracing, size, args.data)) for size in sizes]
    markdown = report(runs, turns, tracing, args.quick)
    # Only the standard run is recorded: tracing on, the default number of turns, every size.
    standard = not args.quick and args.turns is None and tracing and args.registry is None
    publish(markdown, quick=not standard, heading=SECTION, markers=(BEGIN, END))
    return 0


if __name__ == "__main__":
    sys.exit(main())
