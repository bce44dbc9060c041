"""Liveness under hostile load: does the service still say it is alive, at once, while a
thousand clients flood it with searches and turns call a tool with a catastrophic `pattern`?

    .venv/bin/python -m bench.liveness [--quick] [--clients N] [--turns N] [--seconds S]
                                       [--data ../shared/data]

Processes on loopback: the service (`python -m app serve`, with LIVENESS_PORT set, on an
embedded Postgres this script starts), a scripted SGLang stand-in (`python -m
tests.scripted_model`) whose every first reply calls the tool `hostile` with 40 `a`s and a
`!`, two probes, and this client. `hostile` declares `"pattern": "^(a+)+$"` for that argument:
a backtracking engine would take hours to check the call. The registry holds 500 real tools
besides (from --data, as bench.search_latency loads them; synthetic ones when the data is not
there), so every search ranks.

The load, for --seconds: --clients concurrent clients, each sending `GET /v1/tools/search`
with a query of its own as soon as its last one is answered (a hostile client: a 503's
`Retry-After` is not honoured), and --turns concurrent clients running turns back to back.
Searches are written and read by hand, one connection each: httpx spends about ten times the
CPU per request with a thousand open, and would starve the service of the machine's cores.
Meanwhile one probe process asks `GET /live` on the liveness port and another `GET /health`
on the service's port, each every 10 ms. Reported: both probes' latency idle and under the
load (p50, p99, max, failures); searches answered and turned away (503 with `Retry-After`) with
their latency; the turns' outcomes; where the CPU went. A full run rewrites the generated block
of the "Liveness under load" section of bench/BENCHMARKS.md; `--quick` (5 s) only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import queue
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx

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

BEGIN, END = "<!-- liveness:begin -->", "<!-- liveness:end -->"
SECTION = "## Liveness under load"
ADMIN_KEY = "sb_liveness-benchmark-admin-key"
HOSTILE_TEXT = "a" * 40 + "!"
HOSTILE_TOOL = {
    "name": "hostile",
    "description": "Check a text against a pattern that backtracks badly.",
    "parameters": {"type": "object", "required": ["text"],
                   "properties": {"text": {"type": "string", "pattern": "^(a+)+$"}}},
}
TARGET_MS = 100.0
PROBE_EVERY_S = 0.01
OTHERS = 500


@dataclass
class Probed:
    """One probe's answers: the latency of each in ms, and the statuses that were not 200."""

    ms: list[float] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)


@dataclass
class Load:
    live_idle: Probed = field(default_factory=Probed)
    live_load: Probed = field(default_factory=Probed)
    health_idle: Probed = field(default_factory=Probed)
    health_load: Probed = field(default_factory=Probed)
    answered_ms: list[float] = field(default_factory=list)
    refused_ms: list[float] = field(default_factory=list)
    retry_after: set[str] = field(default_factory=set)
    other_statuses: dict[str, int] = field(default_factory=dict)
    turns: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    service_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    machine_busy_s: float = 0.0


@dataclass
class Service:
    client: httpx.AsyncClient
    pid: int
    live_url: str


@contextlib.asynccontextmanager
async def stack(folder: Path) -> AsyncIterator[Service]:
    with embedded_postgres() as postgres:
        url = await fresh_database(postgres, "bench_liveness")
        model_port, port, live_port = free_port(), free_port(), free_port()
        model_args = [sys.executable, "-m", "tests.scripted_model", "--port", str(model_port),
                      "--tool", "hostile", "--arguments", json.dumps({"text": HOSTILE_TEXT})]
        env = service_env(database=url, model_url=f"http://127.0.0.1:{model_port}/v1",
                          port=port, data_dir=folder, admin_key=ADMIN_KEY, tracing=False)
        env["LIVENESS_PORT"] = str(live_port)
        with process(model_args, env, folder / "model.log") as model, \
                process(SERVE, env, folder / "service.log") as service:
            await wait_ready(f"http://127.0.0.1:{model_port}/health", model,
                             folder / "model.log", 60)
            await wait_ready(f"http://127.0.0.1:{port}/health", service,
                             folder / "service.log", 120)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=300,
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            ) as client:
                yield Service(client, service.pid, f"http://127.0.0.1:{live_port}/live")


async def register(client: httpx.AsyncClient, data: Path) -> None:
    specs = _others(data)
    response = await client.post("/v1/tools/bulk", json={"tools": [*specs, HOSTILE_TOOL]},
                                 timeout=900)
    if response.status_code != 200:
        raise SetUpError(f"registering tools failed: {response.status_code} {response.text}")


def _others(data: Path) -> list[dict[str, object]]:
    """OTHERS real tools when the benchmark data is there, else as many synthetic ones."""
    if (data / "bfcl").exists():
        import msgspec

        from bench.search_latency import load_corpus

        return list(msgspec.to_builtins(load_corpus(data, OTHERS, 0).tools[:OTHERS]))
    topics = ["weather", "flights", "hotels", "stocks", "email", "calendar", "maps", "music"]
    return [{"name": f"tool_{i}", "description": f"Look up {topics[i % len(topics)]} data, "
             f"variant {i}: answers questions about {topics[(i * 3) % len(topics)]}."}
            for i in range(OTHERS)]


# -- probes ---------------------------------------------------------------------------------

def probe(url: str, stop: Any, results: Any) -> None:
    """GET `url` every PROBE_EVERY_S until `stop` is set, in a process of its own (the load
    keeps this one's event loop busy, which would slow the probe itself)."""
    probed = Probed()
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status = str(client.get(url).status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            probed.ms.append((time.perf_counter() - started) * 1000)
            if status != "200":
                probed.failed[status] = probed.failed.get(status, 0) + 1
            time.sleep(PROBE_EVERY_S)
    results.put((probed.ms, probed.failed))


@contextlib.contextmanager
def probing(*targets: tuple[str, Probed]) -> Iterator[None]:
    """A probe process per (url, where its answers go), for the length of the block."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    running = []
    for url, into in targets:
        results = context.Queue()
        child = context.Process(target=probe, args=(url, stop, results))
        child.start()
        running.append((child, results, into))
    try:
        time.sleep(0.5)  # the probes' own start-up
        yield
    finally:
        stop.set()
        for child, results, into in running:
            try:
                into.ms, into.failed = results.get(timeout=60)
            except queue.Empty:
                raise SetUpError(f"the probe of {child.name} ended without its answers "
                                 "(its error is above)") from None
            child.join(timeout=10)


# -- the load -------------------------------------------------------------------------------

async def search(url: httpx.URL, query: str, load: Load) -> None:
    """One search over a connection of its own, written and read by hand."""
    request = (f"GET /v1/tools/search?{urllib.parse.urlencode({'q': query})} HTTP/1.1\r\n"
               f"Host: {url.host}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
               "Connection: close\r\n\r\n").encode()
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(request)
        answer = await reader.read()
        writer.close()
    except OSError as exc:
        load.other_statuses[type(exc).__name__] = load.other_statuses.get(
            type(exc).__name__, 0) + 1
        return
    elapsed = (time.perf_counter() - started) * 1000
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    status = head[0].split()[1] if head[0] else "(no answer)"
    if status == "200":
        load.answered_ms.append(elapsed)
    elif status == "503":
        load.refused_ms.append(elapsed)
        headers = dict(line.lower().split(": ", 1) for line in head[1:] if ": " in line)
        load.retry_after.add(headers.get("retry-after", "(none)"))
    else:
        load.other_statuses[status] = load.other_statuses.get(status, 0) + 1


async def searcher(url: httpx.URL, n: int, until: float, load: Load) -> None:
    sent = 0
    while time.monotonic() < until:
        await search(url, f"find tool {n}-{sent} for the weather and flights", load)
        sent += 1


async def turner(client: httpx.AsyncClient, until: float, load: Load) -> None:
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    while time.monotonic() < until:
        response = await client.post(f"/v1/conversations/{conversation}/turns",
                                     json={"message": "check the text please"})
        body = response.json()
        calls = body.get("tool_calls") or []
        kinds = [c.get("error_type") or "ok" for c in calls] or ["no call"]
        key = f"HTTP {response.status_code}, {body.get('status', '?')}, calls: {', '.join(kinds)}"
        load.turns[key] = load.turns.get(key, 0) + 1


async def measure(clients: int, turns: int, seconds: float, data: Path) -> Load:
    load = Load()
    with tempfile.TemporaryDirectory(prefix="switchboard-liveness-") as folder:
        async with stack(Path(folder)) as service:
            await register(service.client, data)
            health = str(service.client.base_url.join("/health"))
            with probing((service.live_url, load.live_idle), (health, load.health_idle)):
                await asyncio.sleep(2)
            with probing((service.live_url, load.live_load), (health, load.health_load)):
                started = time.perf_counter()
                cpu = (process_cpu_s(service.pid), time.process_time(), machine_busy_s())
                until = time.monotonic() + seconds
                base = service.client.base_url
                await asyncio.gather(*(searcher(base, n, until, load) for n in range(clients)),
                                     *(turner(service.client, until, load) for _ in range(turns)))
                load.wall_s = time.perf_counter() - started
                load.service_cpu_s = process_cpu_s(service.pid) - cpu[0]
                load.client_cpu_s = time.process_time() - cpu[1]
                load.machine_busy_s = machine_busy_s() - cpu[2]
    return load


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user and system, all threads) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds all the machine's cores have spent busy (not idle or waiting on disk), from
    /proc/stat."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


# -- the report -----------------------------------------------------------------------------

def _pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))]:.1f}"


def _probe_row(name: str, probed: Probed) -> str:
    failed = ", ".join(f"{n} x {s}" for s, n in sorted(probed.failed.items())) or "none"
    return (f"| {name} | {len(probed.ms)} | {_pct(probed.ms, 0.5)} | {_pct(probed.ms, 0.99)} | "
            f"{max(probed.ms, default=0):.1f} | {failed} |")


def report(load: Load, clients: int, turns: int, seconds: float, quick: bool) -> str:
    during = load.live_load
    meets = bool(during.ms) and not during.failed and float(_pct(during.ms, 0.99)) <= TARGET_MS
    command = "python -m bench.liveness" + (" --quick" if quick else "")
    searches = len(load.answered_ms) + len(load.refused_ms)
    cores = os.cpu_count() or 1
    lines = [
        BEGIN,
        f"Command: `{command}` on {date.today()}; {clients} clients searching and {turns} "
        f"running turns for {seconds:g} s; {cores} cores, {platform.machine()}, Python "
        f"{platform.python_version()}.",
        "",
        "| probe | answers | p50 ms | p99 ms | max ms | not 200 |",
        "|---|---|---|---|---|---|",
        _probe_row("`/live` (liveness port), idle", load.live_idle),
        _probe_row("`/live` (liveness port), under the load", load.live_load),
        _probe_row("`/health` (service port), idle", load.health_idle),
        _probe_row("`/health` (service port), under the load", load.health_load),
        "",
        "| searches | count | per second | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
        f"| answered (200) | {len(load.answered_ms)} | {len(load.answered_ms) / load.wall_s:.0f}"
        f" | {_pct(load.answered_ms, 0.5)} | {_pct(load.answered_ms, 0.99)} |",
        f"| turned away (503) | {len(load.refused_ms)} | {len(load.refused_ms) / load.wall_s:.0f}"
        f" | {_pct(load.refused_ms, 0.5)} | {_pct(load.refused_ms, 0.99)} |",
        "",
        f"- {searches} searches in {load.wall_s:.1f} s. Retry-After on the 503s: "
        f"{sorted(load.retry_after) or '-'}; other answers: {load.other_statuses or 'none'}.",
        f"- Turns: {load.turns or 'none finished'}.",
        f"- `/live` p99 under the load {'meets' if meets else 'misses'} the "
        f"{TARGET_MS:.0f} ms target.",
        f"- CPU during the load: the {cores} cores were busy {load.machine_busy_s:.1f} of "
        f"{load.wall_s * cores:.1f} CPU-s; the service used {load.service_cpu_s:.1f}, this "
        f"load client {load.client_cpu_s:.1f}.",
        END,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s, prints only")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=None, help="default 20 (quick: 5)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 20.0)
    load = asyncio.run(measure(args.clients, args.turns, seconds, args.data))
    markdown = report(load, args.clients, args.turns, seconds, args.quick)
    publish(markdown, quick=args.quick, heading=SECTION, markers=(BEGIN, END))


if __name__ == "__main__":
    main()
