"""Several replicas on one Postgres: the load benchmark's turns spread over 1, 2 and 3 replicas,
how long a dead replica's turns wait before another runs them, and what the limits shared
through Postgres add to a call and a request.

    .venv/bin/python -m bench.replicas [--quick] [--data ../shared/data]

Load: the workload of bench.load (every turn: two model calls of 50 ms, one batch of two
100 ms tool calls, 500 tools registered), with each turn of a conversation sent to the next
replica in turn (no stickiness). Everything runs on this 2-core machine, so more replicas do
not add capacity: reported is where the CPU goes, per turn, in the services and in Postgres.

Takeover: a replica holding streamed turns (each in a 2 s tool call) is SIGKILLed; measured is
the time from the kill to another replica taking each turn over (the takeover's own timestamp,
written by Postgres), over several kills, with TURN_LEASE_S at its default.

Shared limits: the p50 of taking and giving back a concurrency slot of a capped tool, and of
counting a request against its key's rate limit, against the same embedded Postgres.

A full run rewrites the generated block of the "Replicas" section of bench/BENCHMARKS.md;
`--quick` only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date
from pathlib import Path

import asyncpg
import httpx
import msgspec
import psutil

from app.database import connect_pool
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
from bench.load import MODEL_LATENCY_MS, PARALLEL, SCRIPTED_S, TOOL_MS, percentile
from bench.parallel import register_others
from planner.engine import EngineSettings
from tests.tool_server import http_tool

BEGIN, END = "<!-- replicas:begin -->", "<!-- replicas:end -->"
SECTION = "## Replicas"
ADMIN_KEY = "sb_replicas-benchmark-admin-key"
LEASE_S = EngineSettings().turn_lease_s


class Load(msgspec.Struct, frozen=True, kw_only=True):
    replicas: int
    turns: int
    errors: int
    wall_s: float
    latencies: list[float]
    service_cpu_s: float
    postgres_cpu_s: float


class Stack(msgspec.Struct, frozen=True):
    urls: list[str]
    database: str
    model_url: str
    pids: list[int]
    postgres: int
    """The postmaster's pid: its own CPU, its exited backends' and its live ones'."""


def _env(database: str, model_url: str, port: int, folder: Path) -> dict[str, str]:
    env = service_env(database=database, model_url=model_url, port=port,
                      data_dir=folder / "data", admin_key=ADMIN_KEY)
    env["SECRET_KEY"] = "bench-replicas-shared-key"  # replicas share one key
    return env


@contextlib.asynccontextmanager
async def stack(folder: Path, data: Path, replicas: int, others: int, tool_ms: int
                ) -> AsyncIterator[Stack]:
    """Postgres, the scripted model, the tool server and `replicas` services on one database,
    with the `wait` tool and `others` real tools registered."""
    python = sys.executable
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    model_port, tool_port = free_port(), free_port()
    model_url = f"http://127.0.0.1:{model_port}/v1"
    ports = [free_port() for _ in range(replicas)]
    with embedded_postgres() as postgres:
        database = await fresh_database(postgres, "bench_replicas")
        model_args = [python, "-m", "tests.scripted_model", "--port", str(model_port),
                      "--latency-ms", str(MODEL_LATENCY_MS), "--tool", "wait",
                      "--arguments", f'{{"ms": {tool_ms}}}', "--parallel", str(PARALLEL)]
        tool_args = [python, "-m", "tests.tool_server", "--port", str(tool_port)]
        with contextlib.ExitStack() as running:
            model = running.enter_context(process(model_args, env, folder / "model.log"))
            tools = running.enter_context(process(tool_args, env, folder / "tools.log"))
            services = [running.enter_context(process(
                SERVE, _env(database, model_url, port, folder), folder / f"service-{n}.log"))
                for n, port in enumerate(ports)]
            await wait_ready(f"http://127.0.0.1:{model_port}/health", model,
                             folder / "model.log", 60)
            await wait_ready(f"http://127.0.0.1:{tool_port}/", tools, folder / "tools.log", 60,
                             status=404)
            for n, (port, service) in enumerate(zip(ports, services, strict=True)):
                await wait_ready(f"http://127.0.0.1:{port}/health", service,
                                 folder / f"service-{n}.log", 240)
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            async with httpx.AsyncClient(base_url=urls[0], timeout=60, headers=_auth()) as client:
                spec = http_tool(f"http://127.0.0.1:{tool_port}/sleep", "wait",
                                 "Wait a while and report how long", {"ms": {"type": "number"}},
                                 ["ms"], max_concurrency=10_000, idempotent=True)
                created = await client.post("/v1/tools", json=spec)
                if created.status_code != 201:
                    raise SetUpError(f"registering the tool: {created.status_code} "
                                     f"{created.text[:300]}")
                if others:
                    await register_others(client, data, others)
            yield Stack(urls, database, model_url, [s.pid for s in services],
                        _postmaster(postgres))


def _postmaster(uri: str) -> int:
    """The embedded Postgres' postmaster: its socket directory is its data directory."""
    folder = uri.partition("host=")[2].split("&")[0]
    return int((Path(folder) / "postmaster.pid").read_text().splitlines()[0])


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _postgres_cpu(pid: int) -> float:
    """The postmaster's CPU, its exited children's, and its live children's."""
    postmaster = psutil.Process(pid)
    times = postmaster.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in postmaster.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += _cpu(child)
    return float(total)


async def _conversation(clients: list[httpx.AsyncClient], first: int, turns: int,
                        latencies: list[float], errors: list[str]) -> None:
    created = await clients[first % len(clients)].post("/v1/conversations", json={})
    path = f"/v1/conversations/{created.json()['id']}/turns"
    for number in range(turns):
        client = clients[(first + number) % len(clients)]  # no stickiness
        started = time.perf_counter()
        response = await client.post(path, json={"message": f"Run the two waits ({number})."})
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200 or response.json().get("status") != "completed":
            errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
            return


async def load(replicas: int, conversations: int, turns: int, data: Path, others: int) -> Load:
    with tempfile.TemporaryDirectory(prefix="switchboard-replicas-") as folder:
        async with stack(Path(folder), data, replicas, others, TOOL_MS) as running:
            services = [psutil.Process(pid) for pid in running.pids]
            before = (sum(map(_cpu, services)), _postgres_cpu(running.postgres))
            limits = httpx.Limits(max_connections=conversations + 10,
                                  max_keepalive_connections=0)
            latencies: list[float] = []
            errors: list[str] = []
            clients = [httpx.AsyncClient(base_url=url, timeout=300, headers=_auth(),
                                         limits=limits) for url in running.urls]
            started = time.perf_counter()
            try:
                await asyncio.gather(*(_conversation(clients, n, turns, latencies, errors)
                                       for n in range(conversations)))
            finally:
                for client in clients:
                    await client.aclose()
            wall = time.perf_counter() - started
            service_cpu = sum(map(_cpu, services)) - before[0]
            postgres_cpu = _postgres_cpu(running.postgres) - before[1]
    return Load(replicas=replicas, turns=len(latencies) - len(errors), errors=len(errors),
                wall_s=wall, latencies=latencies, service_cpu_s=service_cpu,
                postgres_cpu_s=postgres_cpu)


async def takeovers(kills: int, data: Path) -> list[float]:
    """Seconds from each SIGKILL of a replica to another taking each of its turns over."""
    waits: list[float] = []
    with tempfile.TemporaryDirectory(prefix="switchboard-takeover-") as tmp:
        folder = Path(tmp)
        async with stack(folder, data, 1, 0, 2000) as running:
            for kill in range(kills):
                waits += await _one_kill(folder, running, kill)
    return waits


async def _one_kill(folder: Path, running: Stack, kill: int) -> list[float]:
    """Start a replica, give it four streamed turns, kill it while its tool calls run, and
    wait for the standing replica to take them over."""
    port = free_port()
    env = _env(running.database, running.model_url, port, folder)
    with _doomed(env, folder / f"doomed-{kill}.log") as doomed:
        await wait_ready(f"http://127.0.0.1:{port}/health", doomed, folder / f"doomed-{kill}.log",
                         240)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                     headers=_auth()) as client:
            turn_ids = await asyncio.gather(*(_streamed_until_tool(client) for _ in range(4)))
            doomed.kill()
            killed = time.time()
    pool = await asyncpg.connect(running.database)
    try:
        while True:
            rows = await pool.fetch(
                """SELECT extract(epoch FROM (takeovers -> 0 ->> 'at')::timestamptz) AS at
                   FROM turns WHERE id = ANY($1::text[]) AND jsonb_array_length(takeovers) > 0""",
                list(turn_ids))
            if len(rows) == len(turn_ids):
                return [float(r["at"]) - killed for r in rows]
            await asyncio.sleep(0.05)
    finally:
        await pool.close()


@contextlib.contextmanager
def _doomed(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        child = subprocess.Popen(SERVE, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield child
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()


async def _streamed_until_tool(client: httpx.AsyncClient) -> str:
    """A streamed turn, read until its tool calls have started; its id."""
    created = await client.post("/v1/conversations", json={})
    path = f"/v1/conversations/{created.json()['id']}/turns"
    turn_id, started = "", 0
    async with client.stream("POST", path, json={"message": "wait", "stream": True}) as streamed:
        async for line in streamed.aiter_lines():
            if line.startswith("data:") and not turn_id:
                turn_id = msgspec.json.decode(line[5:])["turn_id"]
            if line == "event: tool_call.started":
                started += 1
                if started == PARALLEL:
                    return turn_id
    raise SetUpError(f"turn {turn_id} ended before its tool calls started")


async def shared_limits(rounds: int) -> dict[str, float]:
    """p50 ms of a slot taken and given back, and of a request counted, by Postgres."""
    with embedded_postgres() as postgres:
        return await _limits(await fresh_database(postgres, "bench_limits"), rounds)


async def _limits(database: str, rounds: int) -> dict[str, float]:
    from app.rate_limits import count_request
    from tools.slots import SharedSlots

    pool = await connect_pool(database)
    try:
        slots = SharedSlots(pool)
        held, counted = [], []
        for n in range(rounds):
            started = time.perf_counter()
            async with slots.hold("default", "default/bench", 4, 30.0):
                pass
            held.append(time.perf_counter() - started)
            started = time.perf_counter()
            await count_request(pool, f"key:bench-{n % 10}")
            counted.append(time.perf_counter() - started)
    finally:
        await pool.close()
    return {"slot": statistics.median(held) * 1000, "rate": statistics.median(counted) * 1000}


def report(loads: list[Load], waits: list[float], limits: dict[str, float], command: str,
           registry: int) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        BEGIN,
        f"`{command}` on {date.today().isoformat()}; {machine}; one embedded Postgres. Load: "
        f"each conversation's turns go to the replicas in turn; model {MODEL_LATENCY_MS} ms a "
        f"call, tools {TOOL_MS} ms, {PARALLEL} calls per reply ({SCRIPTED_S * 1000:.0f} ms "
        f"scripted per turn); {registry} tools registered.",
        "",
        "| replicas | turns | errors | turns/s | latency p50 ms | latency p99 ms | "
        "service CPU ms per turn | Postgres CPU ms per turn |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in loads:
        done = max(run.turns, 1)
        lines.append(
            f"| {run.replicas} | {run.turns} | {run.errors} | {run.turns / run.wall_s:.1f} | "
            f"{statistics.median(run.latencies) * 1000:.0f} | "
            f"{percentile(run.latencies, 0.99) * 1000:.0f} | "
            f"{run.service_cpu_s * 1000 / done:.1f} | {run.postgres_cpu_s * 1000 / done:.1f} |")
    lines += [
        "",
        f"- From a replica's SIGKILL to another taking over its turns, TURN_LEASE_S = "
        f"{LEASE_S:g}: p50 {statistics.median(waits):.1f} s, max {max(waits):.1f} s over "
        f"{len(waits)} turns (target: under {2 * LEASE_S:g} s, 2 x TURN_LEASE_S).",
        f"- A concurrency slot taken and given back in Postgres: p50 {limits['slot']:.2f} ms "
        f"per call of a capped tool; a request counted against its key's rate limit: p50 "
        f"{limits['rate']:.2f} ms.",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.replicas",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="20 conversations, 1 and 2 replicas, 2 kills; BENCHMARKS.md untouched")
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--turns", type=int, default=3, help="turns per conversation")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--registry", type=int, default=500)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args(argv)
    conversations, counts, kills = ((20, (1, 2), 2) if args.quick
                                    else (args.conversations, (1, 2, 3), args.kills))
    try:
        loads = [asyncio.run(load(n, conversations, args.turns, args.data, args.registry - 1))
                 for n in counts]
        waits = asyncio.run(takeovers(kills, args.data))
        limits = asyncio.run(shared_limits(2000))
    except SetUpError as exc:
        print(f"bench.replicas: {exc}", file=sys.stderr)
        return 1
    command = " ".join(["python -m bench.replicas", *(argv or sys.argv[1:])])
    publish(report(loads, waits, limits, command, args.registry), quick=args.quick,
            heading=SECTION, markers=(BEGIN, END))
    return 0 if not any(run.errors for run in loads) else 1


if __name__ == "__main__":
    raise SystemExit(main())
