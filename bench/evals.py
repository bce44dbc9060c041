"""Eval throughput, and what an eval case costs over the plain turn it wraps.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.evals [--quick] [--cases N] [--concurrency N]
                                                     [--rounds N] [--data ../shared/data]

The service runs as in production (`python -m app serve` on an embedded Postgres this script
starts, tracing on). The model is a scripted SGLang stand-in served from this process that
answers at once: for each case, the BFCL ground truth (every expected call in one reply, the
first acceptable value of each argument), then a short answer. The cases are --cases BFCL
questions, a quarter from each of simple_python, multiple, parallel and parallel_multiple (the
first of each file), and the tenant holds every function those files offer, so retrieval ranks
(CANDIDATE_K 8 of about 770 tools).

Each round runs the set once as an eval run (`executor: mocked`, --concurrency cases at once)
and once as plain turns (each message a turn of a new conversation over `POST .../turns`, the
same concurrency), alternating which goes first. Reported: cases (or turns) per second, the
service's CPU per case, per-case latency as the run records it, and the run's own scores, which
with a model that always writes the ground truth measure retrieval and the scorer: a case can
fail only when retrieval did not offer an expected tool (an unknown tool's call is refused and
does not count) or when the scorer disagrees with BFCL's answer. Plain turns' calls go to tools
that have no executor (BFCL functions) and fail at once; an eval case's are answered from its
results. A full run rewrites the "Eval throughput" block of bench/BENCHMARKS.md; --quick prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import msgspec

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
from bench.liveness import process_cpu_s
from bench.retrieval_pools import BFCL_SETS
from planner.evals.bfcl import bfcl_cases, read_lines
from planner.evals.cases import EvalCase
from tests.eval_models import case_model
from tests.scripted_model import scripted_model

ADMIN_KEY = "sk-bench-evals"
MARKERS = ("<!-- evals:begin -->", "<!-- evals:end -->")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def bfcl_slice(data: Path, cases: int) -> tuple[list[dict[str, Any]], list[EvalCase]]:
    """Every function of the four sets (a name BFCL gives two functions is made two), and the
    first cases/4 of each set's questions."""
    specs: dict[str, dict[str, Any]] = {}
    chosen: list[EvalCase] = []
    for name in BFCL_SETS:
        questions = read_lines(data / "bfcl" / "question" / f"BFCL_v4_{name}.json")
        answers = read_lines(data / "bfcl" / "possible_answer" / f"BFCL_v4_{name}.json")
        _found, made = bfcl_cases(questions, answers, tag=name, taken=specs)
        chosen += made[: cases // len(BFCL_SETS)]
    return list(specs.values()), chosen


@contextlib.asynccontextmanager
async def service(folder: Path, model_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    with embedded_postgres() as postgres:
        url = await fresh_database(postgres, "bench_evals")
        port = free_port()
        env = service_env(database=url, model_url=model_url, port=port, data_dir=folder,
                          admin_key=ADMIN_KEY)
        with process(SERVE, env, folder / "service.log") as served:
            await wait_ready(f"http://127.0.0.1:{port}/health", served, folder / "service.log",
                             120)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=600,
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                limits=httpx.Limits(max_connections=64),
            ) as client:
                yield client, served.pid


async def run_eval(client: httpx.AsyncClient, set_id: str, concurrency: int, pid: int
                   ) -> dict[str, Any]:
    cpu, started = process_cpu_s(pid), time.perf_counter()
    response = await client.post("/v1/evals/runs", json={
        "set": set_id, "concurrency": concurrency, "configs": [{"name": "auto"}]})
    if response.status_code != 202:
        raise SetUpError(f"starting the run failed: {response.status_code} {response.text}")
    run_id = response.json()["id"]
    while True:
        report: dict[str, Any] = (await client.get(f"/v1/evals/runs/{run_id}")).json()
        if report["status"] != "running":
            break
        await asyncio.sleep(0.02)
    wall = time.perf_counter() - started
    return {"wall": wall, "cpu": process_cpu_s(pid) - cpu, "report": report}


async def run_turns(client: httpx.AsyncClient, cases: list[EvalCase], concurrency: int,
                    pid: int) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(case: EvalCase) -> None:
        async with gate:
            began = time.perf_counter()
            conversation = (await client.post("/v1/conversations", json={})).json()["id"]
            answer = await client.post(f"/v1/conversations/{conversation}/turns",
                                       json={"message": case.turns[0].user})
            if answer.status_code != 200:
                raise SetUpError(f"a turn failed: {answer.status_code} {answer.text}")
            latencies.append((time.perf_counter() - began) * 1000)

    cpu, started = process_cpu_s(pid), time.perf_counter()
    await asyncio.gather(*(one(c) for c in cases))
    return {"wall": time.perf_counter() - started, "cpu": process_cpu_s(pid) - cpu,
            "latencies": latencies}


async def measure(args: argparse.Namespace) -> str:
    if not (args.data / "bfcl").is_dir():
        raise SetUpError(f"BFCL data not found under {args.data}; pass --data")
    specs, cases = bfcl_slice(args.data, args.cases)
    responder = case_model(cases, one_at_a_time=False)
    evals: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-evals-") as folder:
        async with scripted_model(responder=responder) as model, \
                service(Path(folder), model.url) as (client, pid):
            registered = await client.post("/v1/tools/bulk", json={"tools": specs}, timeout=900)
            if registered.status_code != 200:
                raise SetUpError(f"registering failed: {registered.text[:500]}")
            made = await client.post("/v1/evals/sets", json={
                "name": "bfcl", "cases": msgspec.to_builtins(cases)})
            set_id = made.json()["id"]
            await run_turns(client, cases[:8], args.concurrency, pid)  # warm-up
            for round_ in range(args.rounds):
                order = ("eval", "turns") if round_ % 2 == 0 else ("turns", "eval")
                for way in order:
                    if way == "eval":
                        evals.append(await run_eval(client, set_id, args.concurrency, pid))
                    else:
                        turns.append(await run_turns(client, cases, args.concurrency, pid))
    return report(args, len(specs), len(cases), evals, turns)


def report(args: argparse.Namespace, tools: int, cases: int, evals: list[dict[str, Any]],
           turns: list[dict[str, Any]]) -> str:
    eval_rate = statistics.median(cases / e["wall"] for e in evals)
    turn_rate = statistics.median(cases / t["wall"] for t in turns)
    eval_cpu = statistics.median(e["cpu"] / cases * 1000 for e in evals)
    turn_cpu = statistics.median(t["cpu"] / cases * 1000 for t in turns)
    last = evals[-1]["report"]["results"][0]
    turn_p50 = statistics.median(statistics.median(t["latencies"]) for t in turns)
    lines = [
        MARKERS[0],
        f"Command: `python -m bench.evals` on {date.today()}; {cases} BFCL cases, {tools} tools "
        f"registered, concurrency {args.concurrency}, {args.rounds} rounds (medians shown); "
        f"{platform.machine()}, Python {platform.python_version()}.",
        "",
        "| | per second | service CPU per case, ms | latency p50 ms |",
        "|---|---|---|---|",
        f"| eval run (mocked) | {eval_rate:.1f} | {eval_cpu:.1f} | "
        f"{last['latency_ms']['p50']:.1f} (per turn, as the run records it) |",
        f"| plain turns | {turn_rate:.1f} | {turn_cpu:.1f} | {turn_p50:.1f} (per request) |",
        "",
        f"- An eval case costs {eval_cpu - turn_cpu:+.1f} ms of service CPU over a plain turn "
        f"({(eval_cpu / turn_cpu - 1) * 100:+.0f}%), and the run moves at "
        f"{eval_rate / turn_rate:.2f}x the plain turns' rate.",
        f"- The run's scores with a model that writes BFCL's ground truth: accuracy "
        f"{last['accuracy']:.3f}, call accuracy {last['call_accuracy']:.3f}, retrieval recall "
        f"{last['retrieval_recall']:.3f}, parallel share {last['parallel_share']:.3f}, failed "
        f"turns {last['failed_turns']}.",
        MARKERS[1],
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.rounds = min(args.cases, 40), 1
    try:
        block = asyncio.run(measure(args))
    except SetUpError as exc:
        print(f"bench.evals: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    publish(block, quick=args.quick, heading="## Eval throughput", markers=MARKERS)


if __name__ == "__main__":
    main()
