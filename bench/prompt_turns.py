"""Prompt prefix shared across the turns of a conversation, on follow-ups that need the tools
of the turn before, and recall of those tools: what keeping a conversation's tool block
(planner/tool_block.py) gives SGLang's radix cache, and what it costs.

    .venv/bin/python -m bench.prompt_turns [--data ../shared/data] [--quick]

The service runs as `bench.prompt_size` runs it (in this process under uvicorn, an embedded
Postgres, the real embedder) with the 500 tools of `bench.prompt_size` and every MetaTool tool
registered. The conversations are the held-out half of `bench.followups`'s: `same` (a MetaTool
request, then a follow-up in words of its own), `again` (one more follow-up) and, as the
control, `switch` (a whole new request on another topic). The scripted model calls the first
tool it is offered and then answers, so each turn makes two model calls.

Requests are rendered as `bench.prompt_size` renders them (Qwen3's chat template), and each
follow-up turn's first request is compared with the previous turn's last: the share of the
earlier one that the later one starts with. Recall: whether the tools the follow-up needs are
among the tools its first request offers.

A full run rewrites the generated block of the "Prompt prefix across turns" section of
bench/BENCHMARKS.md; `--quick` only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import msgspec

from bench._markdown import publish
from bench.followups import Conversation, conversations
from bench.prompt_size import BenchError, _post, common_prefix, registered, render
from bench.search_latency import load_corpus, metatool_tools
from planner.prompt import SEARCH_TOOLS
from tests.scripted_model import ScriptedModel, ScriptedReply, Step

SECTION = "## Prompt prefix across turns"
BEGIN, END = "<!-- prompt-turns:begin -->", "<!-- prompt-turns:end -->"
KINDS = ("same", "again", "switch")
TARGET = 0.80
FULL_PER_KIND, QUICK_PER_KIND = 60, 10


def respond(body: dict[str, Any]) -> Step:
    """The first tool offered, once; then an answer."""
    messages = body["messages"]
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    offered = [t["function"]["name"] for t in body.get("tools") or []
               if t["function"]["name"] != SEARCH_TOOLS]
    if not any(m["role"] == "assistant" for m in messages[last_user:]) and offered:
        return ScriptedReply(tool_calls=[(offered[0], {})])
    return ScriptedReply(content="Here is what the tool said.")


class FollowUp(msgspec.Struct, frozen=True):
    kind: str
    prefix: float
    """Share of the previous turn's last request that this turn's first request starts with."""
    recall: float


async def run(data: Path, per_kind: int) -> tuple[list[FollowUp], int, float]:
    started = time.monotonic()
    talks = [t for t in conversations(data, per_kind * 3) if t.held_out and t.kind in KINDS]
    talks = [t for kind in KINDS for t in [c for c in talks if c.kind == kind][:per_kind]]
    specs = load_corpus(data, 500, 0).tools[:500]
    names = {s.name for s in specs}
    specs += [s for s in metatool_tools(data) if s.name not in names]
    measured: list[FollowUp] = []
    async with registered(specs, respond, "bench_prompt_turns") as (client, model):
        for talk in talks:
            measured += await _talk(client, model, talk)
    return measured, len(specs), time.monotonic() - started


async def _talk(client: Any, model: ScriptedModel, talk: Conversation) -> list[FollowUp]:
    conversation = await _post(client, "/v1/conversations", {}, 201)
    path = f"/v1/conversations/{conversation['id']}/turns"
    found: list[FollowUp] = []
    previous: str | None = None
    for number, message in enumerate([*talk.earlier, talk.follow_up]):
        first = len(model.requests)
        turn = await _post(client, path, {"message": message, "mode": "auto"}, 200)
        if turn["status"] != "completed":
            raise BenchError(f"a turn did not complete: {turn}")
        requests = model.requests[first:]
        opening = render(requests[0])
        if previous is not None and number == len(talk.earlier):
            offered = {t["function"]["name"] for t in requests[0].get("tools") or []}
            found.append(FollowUp(
                kind=talk.kind, prefix=common_prefix(previous, opening) / len(previous),
                recall=len(talk.relevant & offered) / len(talk.relevant)))
        previous = render(requests[-1])
    return found


def report(found: list[FollowUp], tools: int, seconds: float, command: str) -> str:
    rows = ["| kind | follow-ups | prefix shared p50 | prefix shared mean | min "
            "| recall of the needed tools |", "|---|---|---|---|---|---|"]
    for kind in KINDS:
        mine = [f for f in found if f.kind == kind]
        shares = [f.prefix for f in mine]
        rows.append(f"| {kind} | {len(mine)} | {statistics.median(shares):.3f} "
                    f"| {statistics.fmean(shares):.3f} | {min(shares):.3f} "
                    f"| {statistics.fmean(f.recall for f in mine):.3f} |")
    target = [f.prefix for f in found if f.kind != "switch"]
    verdict = "meets" if statistics.median(target) >= TARGET else "misses"
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    return "\n".join([
        BEGIN,
        f"`{command}` on {date.today().isoformat()}; {machine}; {seconds:.0f} s; {tools} tools "
        "registered.", "", *rows, "",
        f"- Follow-ups that need the tools of the turn before (`same`, `again`): median prefix "
        f"share {statistics.median(target):.3f}, mean {statistics.fmean(target):.3f}; {verdict} "
        f"the >= {TARGET:.0%} target (median).",
        END,
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.prompt_turns",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_PER_KIND} conversations a kind; BENCHMARKS.md untouched")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        found, tools, seconds = asyncio.run(
            run(args.data, QUICK_PER_KIND if args.quick else FULL_PER_KIND))
    except BenchError as exc:
        print(f"bench.prompt_turns: {exc}", file=sys.stderr)
        return 1
    command = " ".join(["python -m bench.prompt_turns", *(argv or sys.argv[1:])])
    publish(report(found, tools, seconds, command), quick=args.quick, heading=SECTION,
            markers=(BEGIN, END))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
