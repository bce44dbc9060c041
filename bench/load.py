"""Load over HTTP: many concurrent conversations against the running service.

    .venv/bin/python -m bench.load [--quick] [--conversations N] [--turns N] [--registry N]
                                   [--data ../shared/data]

Four processes on loopback, as a deployment has them: the service (`python -m app serve`,
tracing on, on an embedded Postgres this script starts), a scripted SGLang stand-in that
answers every request after a fixed 50 ms (`python -m tests.scripted_model`), HTTP tools that
take 100 ms (`python -m tests.tool_server`), and this client (asyncio + httpx). Every
conversation runs its turns one after another, all conversations at once; in each turn the
model calls the tool twice in one reply, then answers. So a turn waits for 200 ms of scripted
time (two model calls, one parallel batch of tools); the rest is the service. The `wait` tool is
registered among 499 real ones (--registry; from --data, as bench.search_latency loads them), so
every turn embeds its message and ranks the registry, as a service with hundreds of tools does.

Reported: turns/s, turn latency minus the scripted time (p50, p99), errors (any non-200 or any
turn that did not complete), the service's peak RSS, and the most Postgres connections open to
the service's database at once (sampled every 50 ms). Bounded by `--deadline` seconds.

A full run rewrites the generated block of the "Load over HTTP" section of bench/BENCHMARKS.md;
`--quick` only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import asyncpg
import httpx
import msgspec
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
from bench.parallel import register_others
from tests.tool_server import http_tool

BEGIN, END = "<!-- load:begin -->", "<!-- load:end -->"
SECTION = "## Load over HTTP"
ADMIN_KEY = "sb_load-benchmark-admin-key"
MODEL_LATENCY_MS, TOOL_MS, PARALLEL = 50, 100, 2
SCRIPTED_S = (2 * MODEL_LATENCY_MS + TOOL_MS) / 1000
"""What a turn waits for by design: two model calls and one batch of tool calls."""


class Turn(msgspec.Struct, frozen=True):
    latency_s: float
    ok: bool
    error: str | None = None


class Results(msgspec.Struct, frozen=True, kw_only=True):
    conversations: int
    turns_each: int
    turns: list[Turn]
    wall_s: float
    peak_rss_mib: float
    peak_connections: int
    cpu_s: dict[str, float]
    """CPU seconds (user + system) each process used during the load."""
    errors: list[str]


class Stack(msgspec.Struct, frozen=True):
    url: str
    database: str
    processes: dict[str, int]
    """pid by role: service, model, tools."""


@contextlib.asynccontextmanager
async def stack(folder: Path, data: Path, others: int) -> AsyncIterator[Stack]:
    """Postgres, the scripted model, the tool server and the service, with the `wait` tool and
    `others` real tools from `data` registered."""
    python = sys.executable
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    model_port, tool_port, service_port = free_port(), free_port(), free_port()
    with embedded_postgres() as postgres:
        database = await fresh_database(postgres, "bench_load")
        app_env = service_env(database=database, model_url=f"http://127.0.0.1:{model_port}/v1",
                              port=service_port, data_dir=folder / "data", admin_key=ADMIN_KEY)
        model_args = [python, "-m", "tests.scripted_model", "--port", str(model_port),
                      "--latency-ms", str(MODEL_LATENCY_MS), "--tool", "wait",
                      "--arguments", f'{{"ms": {TOOL_MS}}}', "--parallel", str(PARALLEL)]
        tool_args = [python, "-m", "tests.tool_server", "--port", str(tool_port)]
        with (
            process(model_args, env, folder / "model.log") as model,
            process(tool_args, env, folder / "tools.log") as tools,
            process(SERVE, app_env, folder / "service.log") as app,
        ):
            await wait_ready(f"http://127.0.0.1:{model_port}/health", model,
                             folder / "model.log", 60)
            await wait_ready(f"http://127.0.0.1:{tool_port}/", tools, folder / "tools.log", 60,
                             status=404)
            await wait_ready(f"http://127.0.0.1:{service_port}/health", app,
                             folder / "service.log", 180)
            url = f"http://127.0.0.1:{service_port}"
            async with httpx.AsyncClient(base_url=url, timeout=30, headers=_auth()) as client:
                spec = http_tool(f"http://127.0.0.1:{tool_port}/sleep", "wait",
                                 "Wait a while and report how long", {"ms": {"type": "number"}},
                                 ["ms"], max_concurrency=10_000)
                created = await client.post("/v1/tools", json=spec)
                if created.status_code != 201:
                    raise SetUpError(f"registering the tool: {created.status_code} "
                                     f"{created.text[:300]}")
                if others:
                    await register_others(client, data, others)
            yield Stack(url, database, {"service": app.pid, "model": model.pid,
                                        "tools": tools.pid})


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


class Sampler:
    """The service's RSS and the database's open connections, every 50 ms."""

    def __init__(self, pid: int, database: str) -> None:
        self.process = psutil.Process(pid)
        self.database = database
        self.peak_rss = 0
        self.peak_connections = 0

    async def run(self, stop: asyncio.Event) -> None:
        connection = await asyncpg.connect(self.database)
        try:
            while not stop.is_set():
                self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
                count = await connection.fetchval(
                    """SELECT count(*) FROM pg_stat_activity
                       WHERE datname = current_database() AND pid <> pg_backend_pid()"""
                )
                self.peak_connections = max(self.peak_connections, int(count))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)
        finally:
            await connection.close()


async def conversation(client: httpx.AsyncClient, turns: int, out: list[Turn]) -> None:
    created = await client.post("/v1/conversations", json={})
    if created.status_code != 201:
        out.append(Turn(0.0, False, f"create: HTTP {created.status_code} {created.text[:200]}"))
        return
    path = f"/v1/conversations/{created.json()['id']}/turns"
    for number in range(turns):
        body = {"message": f"Run the two waits, please ({number + 1}).", "stream": False}
        started = time.perf_counter()
        try:
            response = await client.post(path, json=body)
        except httpx.HTTPError as exc:
            out.append(Turn(time.perf_counter() - started, False, f"{type(exc).__name__}: {exc}"))
            return
        latency = time.perf_counter() - started
        reply = response.json() if response.status_code == 200 else None
        if reply is None or reply.get("status") != "completed" or len(reply["tool_calls"]) != 2:
            out.append(Turn(latency, False, f"HTTP {response.status_code}: {response.text[:200]}"))
            return
        out.append(Turn(latency, True))


async def measure(conversations: int, turns: int, deadline_s: float,
                  data: Path, others: int) -> Results:
    with tempfile.TemporaryDirectory(prefix="switchboard-load-") as folder:
        async with stack(Path(folder), data, others) as running:
            url = running.url
            sampler = Sampler(running.processes["service"], running.database)
            watched = {role: psutil.Process(pid) for role, pid in running.processes.items()}
            watched["client"] = psutil.Process()
            before = {role: _cpu(p) for role, p in watched.items()}
            stop = asyncio.Event()
            sampling = asyncio.create_task(sampler.run(stop))
            done: list[Turn] = []
            limits = httpx.Limits(max_connections=conversations + 10, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=url, timeout=deadline_s, headers=_auth(),
                                         limits=limits) as client:
                started = time.perf_counter()
                work = asyncio.gather(*(conversation(client, turns, done)
                                        for _ in range(conversations)))
                try:
                    await asyncio.wait_for(work, deadline_s)
                except TimeoutError:
                    done.append(Turn(deadline_s, False, f"deadline of {deadline_s:.0f} s passed"))
                wall = time.perf_counter() - started
            cpu = {role: _cpu(p) - before[role] for role, p in watched.items()}
            stop.set()
            await sampling
    errors = [t.error for t in done if t.error]
    return Results(conversations=conversations, turns_each=turns, turns=done, wall_s=wall,
                   peak_rss_mib=sampler.peak_rss / 2**20,
                   peak_connections=sampler.peak_connections, cpu_s=cpu, errors=errors)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(results: Results, command: str, registry: int) -> str:
    ok = [t.latency_s for t in results.turns if t.ok]
    over = [max(0.0, t - SCRIPTED_S) * 1000 for t in ok]
    expected = results.conversations * results.turns_each
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        BEGIN,
        f"`{command}` on {date.today().isoformat()}; {machine}. {results.conversations} "
        f"conversations at once, {results.turns_each} turns each; model {MODEL_LATENCY_MS} ms a "
        f"call, tools {TOOL_MS} ms, {PARALLEL} calls per reply; {SCRIPTED_S * 1000:.0f} ms of "
        f"scripted time per turn; {registry} tools registered.",
        "",
        "| turns done | errors | wall s | turns/s | latency p50 ms | latency p99 ms | "
        "minus scripted p50 ms | minus scripted p99 ms | service peak RSS MiB | "
        "Postgres connections, peak |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    if ok:
        lines.append(
            f"| {len(ok):,} of {expected:,} | {len(results.errors)} | {results.wall_s:.1f} | "
            f"{len(ok) / results.wall_s:.1f} | {statistics.median(ok) * 1000:.0f} | "
            f"{percentile(ok, 0.99) * 1000:.0f} | {statistics.median(over):.0f} | "
            f"{percentile(over, 0.99):.0f} | {results.peak_rss_mib:.0f} | "
            f"{results.peak_connections} |"
        )
    else:
        lines.append(f"| 0 of {expected:,} | {len(results.errors)} | {results.wall_s:.1f} | "
                     "0 | | | | | | |")
    per_turn = {role: seconds * 1000 / max(len(ok), 1) for role, seconds in results.cpu_s.items()}
    lines += [
        "",
        f"- Errors: {len(results.errors)} (target 0).",
        "- CPU per completed turn, by process (ms): "
        + ", ".join(f"{role} {ms:.1f}" for role, ms in per_turn.items())
        + f"; the machine has {os.cpu_count()} cores, "
        f"{(os.cpu_count() or 1) * 1000 / max(len(ok) / results.wall_s, 1e-9):.1f} ms of CPU "
        "per turn at this rate (Postgres not counted above).",
    ]
    lines += [f"  - {e}" for e in sorted({e for e in results.errors})[:5]]
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.load",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="50 conversations of 2 turns; BENCHMARKS.md untouched")
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--turns", type=int, default=3, help="turns per conversation")
    parser.add_argument("--deadline", type=float, default=600, help="seconds for the load")
    parser.add_argument("--registry", type=int, default=500,
                        help="tools registered, `wait` included (500: every turn embeds its "
                             "message and ranks them; 8 or fewer: all are offered unranked)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"),
                        help="the benchmark data the other tools come from")
    args = parser.parse_args(argv)
    conversations, turns = (50, 2) if args.quick else (args.conversations, args.turns)
    try:
        results = asyncio.run(measure(conversations, turns, args.deadline, args.data,
                                      args.registry - 1))
    except SetUpError as exc:
        print(f"bench.load: {exc}", file=sys.stderr)
        return 1
    command = " ".join(["python -m bench.load", *(argv or sys.argv[1:])])
    markdown = report(results, command, args.registry)
    publish(markdown, quick=args.quick, heading=SECTION, markers=(BEGIN, END))
    return 0 if not results.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
