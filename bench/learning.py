"""Retrieval that learns from use, on MetaTool: usage simulated through the real path, then
recall on held-out requests.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.learning [--data ../shared/data] [--quick]
                                                        [--requests N] [--concurrency N]

The service runs in this process as in production (create_app under uvicorn, an embedded
Postgres, the bundled MiniLM, tracing off), with the 199 MetaTool tools registered as HTTP tools
of a loopback tool server (descriptions only, no examples). The model is a scripted SGLang
stand-in that knows which tool each request is for, as a capable model would: it calls that
tool when the turn offers it; when it does not, it calls `search_tools` once, with the tool's
name in words ("pdf url tool", what a model that knows what it wants would ask for), calls the
tool if that found it, and answers without a call if not.

Usage: --requests (5,000) requests drawn (fixed seed) from the rows of `all_clean_data.csv`
whose text is not one of the 2,000 scored queries (`bench.retrieval_pools.metatool_pools`), each
a turn of its own conversation, --concurrency at once. Every completed turn teaches retrieval
through the same code as in production (planner/learning.py). Then each scored query is searched
over `GET /v1/tools/search` (k = 10), before and after the usage, and scored on the dev half
(what the weights were chosen on) and the held-out half (a hash of the query). A full run
rewrites the generated block of the "Learning from use" section of bench/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import logging
import platform
import random
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import msgspec

from app.main import create_app
from app.settings import Settings
from bench._markdown import publish
from bench._stack import embedded_postgres, fresh_database
from bench.retrieval_pools import Query, metatool_pools
from planner.learning import TurnLearning
from tests.loopback import serving
from tests.scripted_model import ScriptedReply, Step, scripted_model
from tests.tool_server import http_tool, tool_server
from tools.embed import SentenceTransformerEmbedder
from tools.index import RankingWeights
from tools.registry import ToolRegistry
from tools.spec import ToolSpec, function_name

SECTION = "## Learning from use"
MARKERS = ("<!-- learning:begin -->", "<!-- learning:end -->")
ADMIN_KEY = "sbk_bench_learning_admin_key"
USAGE_SEED = 20250102
CUTOFFS = (1, 5, 10)
TARGETS = {1: 0.75, 5: 0.92}


class Scores(msgspec.Struct, frozen=True):
    queries: int
    recall: dict[int, float]


def usage_requests(data: Path, scored: Sequence[Query], count: int) -> list[tuple[str, str]]:
    """(request, tool) pairs from the rows whose text is not scored, distinct, sampled."""
    taken = {q.text.casefold() for q in scored}
    with (data / "metatool" / "all_clean_data.csv").open(encoding="utf-8", newline="") as rows:
        pairs = sorted({(r["Query"].strip(), function_name(r["Tool"]))
                        for r in csv.DictReader(rows)
                        if r["Query"].strip().casefold() not in taken})
    return random.Random(USAGE_SEED).sample(pairs, min(count, len(pairs)))


def in_words(name: str) -> str:
    """`PDF_URLTool` -> "pdf url tool"."""
    return " ".join(re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)).lower()


def usage_model(wanted: dict[str, str]) -> Any:
    """The model's side of a usage turn: the right tool, found with search_tools if need be."""

    def respond(body: dict[str, Any]) -> Step:
        messages = body["messages"]
        request = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        tool = wanted[request]
        offered = {t["function"]["name"] for t in body.get("tools") or []}
        called = [c["function"]["name"] for m in messages if m["role"] == "assistant"
                  for c in m.get("tool_calls") or []]
        if tool in called:
            return ScriptedReply(content="Done.")
        if tool in offered:
            return ScriptedReply(tool_calls=[(tool, {"ms": 0})])
        if "search_tools" not in called:
            return ScriptedReply(tool_calls=[("search_tools", {"query": in_words(tool)})])
        return ScriptedReply(content="No tool does that.")

    return respond


@contextlib.asynccontextmanager
async def service(database: str, data_dir: str, model_url: str
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, TurnLearning, ToolRegistry]]:
    settings = Settings(database_url=database, model_url=model_url, data_dir_path=data_dir,
                        register_builtins=False, admin_key=ADMIN_KEY, tracing=False,
                        egress_allowlist="127.0.0.0/8", rate_limit_per_minute=0)
    app = create_app(settings, embedder=SentenceTransformerEmbedder())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    async with serving(app, lifespan="on") as server:
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, timeout=120, headers=auth) as client:
            yield client, app.state["learner"], app.state["registry"]


async def recall(client: httpx.AsyncClient, queries: Sequence[Query]) -> Scores:
    """Recall@k of each query searched over `GET /v1/tools/search`."""

    async def ranked(text: str) -> list[str]:
        response = await client.get("/v1/tools/search", params={"q": text, "k": 10})
        response.raise_for_status()
        return [h["name"] for h in response.json()["results"]]

    return await scored(queries, ranked)


async def scored(queries: Sequence[Query], ranked: Callable[[str], Awaitable[list[str]]]
                 ) -> Scores:
    found = {k: 0.0 for k in CUTOFFS}
    for query in queries:
        names = await ranked(query.text)
        for k in CUTOFFS:
            found[k] += len(query.relevant & set(names[:k])) / len(query.relevant)
    return Scores(queries=len(queries),
                  recall={k: round(v / max(1, len(queries)), 4) for k, v in found.items()})


async def use(client: httpx.AsyncClient, requests: Sequence[tuple[str, str]],
              concurrency: int) -> tuple[int, float]:
    """Each request a turn of its own conversation; returns the turns that completed and the
    seconds they took."""
    queue = list(requests)
    completed = 0
    started = time.monotonic()

    async def worker() -> None:
        nonlocal completed
        while queue:
            text, _tool = queue.pop()
            conversation = (await client.post("/v1/conversations", json={})).json()["id"]
            response = await client.post(f"/v1/conversations/{conversation}/turns",
                                          json={"message": text})
            completed += response.status_code == 200

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return completed, time.monotonic() - started


async def measure(data: Path, count: int, concurrency: int, quick: bool, tune: bool = False
                  ) -> dict[str, Any]:
    plain, _ = metatool_pools(data)
    queries = plain.queries[:300] if quick else plain.queries
    requests = usage_requests(data, plain.queries, count)
    # A request listed with two tools in the file is learnt for the first drawn (a turn calls
    # the tool its model wants).
    wanted = {}
    for text, tool in requests:
        wanted.setdefault(text, tool)
    async with tool_server() as tools, scripted_model(responder=usage_model(wanted)) as model:
        tools.keep = False
        with embedded_postgres() as postgres, tempfile.TemporaryDirectory() as folder:
            database = await fresh_database(postgres, "bench_learning")
            async with service(database, folder, model.url) as (client, learner, registry):
                specs = [_http_spec(s, tools.url) for s in plain.tools]
                (await client.post("/v1/tools/bulk", json={"tools": specs})).raise_for_status()
                splits = {"dev": [q for q in queries if not q.held_out],
                          "held-out": [q for q in queries if q.held_out]}
                before = {s: await recall(client, qs) for s, qs in splits.items()}
                completed, seconds = await use(client, list(wanted.items()), concurrency)
                await learner.settle()
                after = {s: await recall(client, qs) for s, qs in splits.items()}
                learnt = await _learnt(client, plain.tools)
                if tune:
                    await _tune(registry, splits["dev"])
    return {"before": before, "after": after, "turns": completed, "requests": len(wanted),
            "seconds": seconds, **learnt}


TUNED = [RankingWeights(learned=w, learned_nearest=n)
         for w in (0.25, 0.5) for n in (0.0, 1.0)]


async def _tune(registry: ToolRegistry, dev: Sequence[Query]) -> None:
    """Dev-half recall of other learned weights, on what the usage taught (printed only)."""
    for weights in TUNED:
        other = ToolRegistry(registry.pool, registry.embedder, weights=weights)
        await other.load()

        async def ranked(text: str, other: ToolRegistry = other) -> list[str]:
            return [h.name for h in await other.search("default", text, 10)]

        found = await scored(dev, ranked)
        print(f"learned={weights.learned} nearest={weights.learned_nearest}: dev "
              + " ".join(f"R@{k} {v:.3f}" for k, v in found.recall.items()), flush=True)


def _http_spec(spec: ToolSpec, url: str) -> dict[str, Any]:
    return {**http_tool(f"{url}/sleep", spec.name, spec.description,
                        {"ms": {"type": "number"}}, []), "examples": []}


async def _learnt(client: httpx.AsyncClient, tools: Sequence[ToolSpec]) -> dict[str, int]:
    examples = found = with_any = 0
    for spec in tools:
        shown = (await client.get(f"/v1/tools/{spec.name}/examples")).json()
        examples += len(shown["learned"])
        found += shown["found_by_search"]
        with_any += bool(shown["learned"])
    return {"examples": examples, "found_by_search": found, "tools_with_examples": with_any}


def report(result: dict[str, Any], *, quick: bool, command: str) -> str:
    lines = [
        f"Command: `{command}`. Machine: 2 cores, CPU only ({platform.machine()}, Python "
        f"{platform.python_version()}). Date: {date.today().isoformat()}.",
        "",
        f"Usage: {result['requests']:,} requests, {result['turns']:,} turns completed in "
        f"{result['seconds']:.0f} s ({result['turns'] / result['seconds']:.1f} turns/s, "
        f"learning included); {result['examples']:,} learned examples kept over "
        f"{result['tools_with_examples']} tools; {result['found_by_search']:,} requests whose "
        "tool the model had to find with `search_tools`.",
        "",
        "| split | queries | learnt | R@1 | R@5 | R@10 |",
        "|---|---|---|---|---|---|",
    ]
    for split in ("dev", "held-out"):
        for when in ("before", "after"):
            s: Scores = result[when][split]
            lines.append(f"| {split} | {s.queries:,} | {'yes' if when == 'after' else 'no'} | "
                         + " | ".join(f"{s.recall[k]:.3f}" for k in CUTOFFS) + " |")
    held = result["after"]["held-out"]
    met = all(held.recall[k] >= goal for k, goal in TARGETS.items())
    lines += ["", f"Target on the held-out half: R@5 >= {TARGETS[5]} and R@1 >= {TARGETS[1]}: "
              f"{'met' if met else 'not met'}{' (quick run)' if quick else ''}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--requests", type=int, default=None,
                        help="usage requests (5,000; 1,000 with --quick)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true",
                        help="1,000 requests, 300 scored queries; prints only")
    parser.add_argument("--tune", action="store_true",
                        help="also print dev-half recall of other learned weights")
    args = parser.parse_args(argv)
    count = args.requests or (1000 if args.quick else 5000)
    result = asyncio.run(measure(args.data, count, args.concurrency, args.quick, args.tune))
    command = ".venv/bin/python -m bench.learning --data ../shared/data" + (
        " --quick" if args.quick else "")
    publish(_marked(report(result, quick=args.quick, command=command)), quick=args.quick,
            heading=SECTION, markers=MARKERS)


def _marked(block: str) -> str:
    """The block between its markers, so the next full run finds it."""
    return f"{MARKERS[0]}\n{block}\n{MARKERS[1]}"


if __name__ == "__main__":
    main()
