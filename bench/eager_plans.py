"""Eager dispatch of streamed plans: how soon the first tool call starts, and how long the
turn takes, when each step starts as its JSON object completes, against waiting for the whole
plan (`EAGER_PLANS=false`).

    .venv/bin/python -m bench.eager_plans [--quick] [--turns N] [--tokens-per-s 50]

Two services (`python -m app serve`, each a process of its own on its own database of one
embedded Postgres), one with eager dispatch and one without, take turns with the same
workloads. Both talk to one scripted model that writes each reply at `--tokens-per-s` (50 by
default, a reasoning model's decode speed on a loaded server; four characters a token) and to
HTTP tools that sleep as asked. Each turn is `mode: plan, stream: true`, read as SSE by the
client; times are taken on this process's clock (time.monotonic):

    first call = the first tool request at the tool server - the client's send
    turn       = `turn.completed` at the client            - the client's send
    plan       = the plan's model call from its request to its last byte, at the model

Workloads (tool times are the tools' own sleeps):
    fan-out  six independent steps of 500 ms each
    chain    three steps of 500 ms, each taking the one before's output, then three
             independent steps of 200 ms

A full run rewrites the generated part of the "Eager plan dispatch" section of
bench/BENCHMARKS.md; `--quick` only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

from bench._markdown import publish
from bench._stack import SetUpError, embedded_postgres, fresh_database
from bench.parallel import service
from tests.scripted_model import Receive, ScriptedModel, ScriptedReply, Send, Step
from tests.tool_server import ToolServer, http_tool, tool_server

SECTION = "## Eager plan dispatch"
BEGIN, END = "<!-- eager-plans:begin -->", "<!-- eager-plans:end -->"
FULL_TURNS, QUICK_TURNS = 5, 1
NOTE = "[switchboard]"


def _step(number: int, ms: int, label: str) -> dict[str, Any]:
    return {"id": f"s{number}", "tool": f"task_{number}", "arguments": {"ms": ms, "label": label}}


WORKLOADS: dict[str, list[dict[str, Any]]] = {
    "fan-out": [_step(i, 500, f"look up source {i} for the report") for i in range(1, 7)],
    "chain": [
        _step(1, 500, "find the account for the customer"),
        _step(2, 500, "$s1.label"),
        _step(3, 500, "$s2.label"),
        *[_step(i, 200, f"fetch the independent record {i}") for i in range(4, 7)],
    ],
}
TITLES = {
    "fan-out": "fan-out: 6 independent steps of 500 ms",
    "chain": "chain: 3 dependent steps of 500 ms, then 3 independent of 200 ms",
}


def respond(body: dict[str, Any]) -> Step:
    """The plan for the workload the user message names; after the tools, a short answer."""
    messages: list[dict[str, Any]] = body.get("messages") or []
    asked = next(str(m.get("content")) for m in reversed(messages)
                 if m.get("role") == "user" and not str(m.get("content")).startswith(NOTE))
    if body.get("response_format") is not None:
        return ScriptedReply(content=json.dumps({"steps": WORKLOADS[asked.split(":")[0]]}))
    return ScriptedReply(content="All six tasks are done.")


class Interval(msgspec.Struct, frozen=True):
    start: float
    end: float


class TimedModel(ScriptedModel):
    """The scripted model, noting when each plan request came and when its last byte left."""

    def __init__(self, tokens_per_s: float) -> None:
        super().__init__(responder=respond, tokens_per_s=tokens_per_s)
        self.plans: list[Interval] = []

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        started = time.monotonic()
        await super().__call__(scope, receive, send)
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions" \
                and self.requests[-1].get("response_format") is not None:
            self.plans.append(Interval(started, time.monotonic()))


class Sample(msgspec.Struct, frozen=True):
    first_call: float
    turn: float
    plan: float


async def run_turn(client: httpx.AsyncClient, model: TimedModel, tools: ToolServer,
                   workload: str) -> Sample:
    made = await client.post("/v1/conversations", json={})
    made.raise_for_status()
    path = f"/v1/conversations/{made.json()['id']}/turns"
    body = {"message": f"{workload}: do the six tasks", "mode": "plan", "stream": True}
    tools.received.clear()
    model.plans.clear()
    sent = time.monotonic()
    last = ""
    async with client.stream("POST", path, json=body) as streamed:
        async for line in streamed.aiter_lines():
            if line.startswith("event:"):
                last = line.partition(":")[2].strip()
    done = time.monotonic()
    if last != "turn.completed" or len(tools.received) != len(WORKLOADS[workload]):
        raise SetUpError(f"{workload}: the turn ended with {last!r} after "
                         f"{len(tools.received)} tool calls")
    [plan] = model.plans
    return Sample(first_call=min(r.started for r in tools.received) - sent, turn=done - sent,
                  plan=plan.end - plan.start)


async def register(client: httpx.AsyncClient, tools_url: str) -> None:
    properties = {"ms": {"type": "number"}, "label": {"type": "string"}}
    specs = [http_tool(f"{tools_url}/sleep", f"task_{i}", f"Task {i}: wait, then echo the label",
                       properties, ["ms"], idempotent=True) for i in range(1, 7)]
    response = await client.post("/v1/tools/bulk", json={"tools": specs})
    if response.status_code != 200:
        raise SetUpError(f"registering the tools failed: HTTP {response.status_code}: "
                         f"{response.text[:300]}")


async def measure(turns: int, tokens_per_s: float) -> dict[tuple[str, bool], list[Sample]]:
    model = TimedModel(tokens_per_s)
    samples: dict[tuple[str, bool], list[Sample]] = {}
    await model.start()
    try:
        with embedded_postgres() as postgres, tempfile.TemporaryDirectory() as folder:
            eager_db = await fresh_database(postgres, "bench_eager")
            whole_db = await fresh_database(postgres, "bench_whole")
            for way in ("eager", "whole"):
                (Path(folder) / way).mkdir()
            async with tool_server() as tools, \
                    service(eager_db, model.url, Path(folder) / "eager", True,
                            {"EAGER_PLANS": "true"}) as eager, \
                    service(whole_db, model.url, Path(folder) / "whole", True,
                            {"EAGER_PLANS": "false"}) as whole:
                clients = {True: eager.client, False: whole.client}
                for client in clients.values():
                    await register(client, tools.url)
                    await run_turn(client, model, tools, "fan-out")  # warm-up
                for number in range(turns):
                    for workload in WORKLOADS:
                        for is_eager, client in clients.items():
                            sample = await run_turn(client, model, tools, workload)
                            samples.setdefault((workload, is_eager), []).append(sample)
                    print(f"  round {number + 1}/{turns}", file=sys.stderr, flush=True)
    finally:
        await model.stop()
    return samples


def ms(values: Sequence[float]) -> str:
    return f"{float(np.median(values)) * 1000:.0f}"


def report(samples: dict[tuple[str, bool], list[Sample]], turns: int, tokens_per_s: float,
           seconds: float) -> str:
    lines = [
        f"<!-- generated by bench/eager_plans.py on {date.today()}; do not edit by hand -->",
        f"Run: `.venv/bin/python -m bench.eager_plans` ({turns} turns per workload and way, "
        f"model writing at {tokens_per_s:g} tokens/s), {seconds:.0f} s on "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Medians, in ms.",
        "",
        "| workload | plan written in | first call, whole plan | first call, eager "
        "| turn, whole plan | turn, eager | turn saved |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload in WORKLOADS:
        whole, eager = samples[(workload, False)], samples[(workload, True)]
        saved = 1 - np.median([s.turn for s in eager]) / np.median([s.turn for s in whole])
        lines.append(
            f"| {TITLES[workload]} | {ms([s.plan for s in whole])} "
            f"| {ms([s.first_call for s in whole])} | {ms([s.first_call for s in eager])} "
            f"| {ms([s.turn for s in whole])} | {ms([s.turn for s in eager])} | {saved:.0%} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one turn each; print only")
    parser.add_argument("--turns", type=int)
    parser.add_argument("--tokens-per-s", type=float, default=50.0)
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    turns = args.turns or (QUICK_TURNS if args.quick else FULL_TURNS)
    started = time.monotonic()
    samples = asyncio.run(measure(turns, args.tokens_per_s))
    markdown = BEGIN + "\n" + report(samples, turns, args.tokens_per_s,
                                     time.monotonic() - started) + "\n" + END
    publish(markdown, quick=args.quick, heading=SECTION, markers=(BEGIN, END))


if __name__ == "__main__":
    main()
