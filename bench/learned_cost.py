"""What learned examples cost: search at 10,000 tools with 20 learned examples each, the memory
they take, and what learning one costs (Postgres and the index).

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.learned_cost [--data ../shared/data] [--quick]

Tools are the 3,200 distinct real tools of BFCL, MetaTool and APIBench (their keyword text),
then copies in namespaces `copy-1`, ...; their vectors are random unit vectors (what is timed
does not depend on what the vectors say, and embedding 210,000 texts would take over an hour
here). Each tool's learned examples are its vector plus noise, normalised, with real user
requests as their text (so BM25 has real words to index). Queries are 200 real requests,
embedded by the bundled MiniLM; the index search is timed without the query's embedding, and
once with it (the registry's whole search). Learning one example is timed on an embedded
Postgres: `tools.learned.add` in its transaction (the tool's 20 rows locked, compared, one
merged or inserted and the least useful dropped), then the tool's rows read back and its index
rows rebuilt, as `Learning.learn` does. A full run rewrites the generated block of the "Learning
from use" section's cost part of bench/BENCHMARKS.md; `--quick` (1,000 tools) prints only.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import statistics
import time
import tracemalloc
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import msgspec
import numpy as np

from app.database import connect_pool
from bench._markdown import publish
from bench._stack import embedded_postgres, fresh_database
from bench.retrieval_pools import apibench_pools, bfcl_pool, metatool_pools
from tools import learned
from tools.embed import SentenceTransformerEmbedder, Vectors
from tools.framing import framed, framing_shift, shift_texts
from tools.index import IndexedTool, RankingWeights, SearchData, ToolIndex
from tools.learned import Learned, NewExample
from tools.text import keyword_text, tool_text

DIM = 384
PER_TOOL = learned.PER_TOOL
SECTION = "## Learning from use"
MARKERS = ("<!-- learned-cost:begin -->", "<!-- learned-cost:end -->")


class Timing(msgspec.Struct, frozen=True):
    what: str
    p50_ms: float
    p99_ms: float


def unit(rows: np.ndarray) -> Vectors:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def build(count: int, data: Path, rng: np.random.Generator, examples: int
          ) -> tuple[ToolIndex, Learned | None]:
    """The index, and the first tool's learned examples (None: none)."""
    specs = [s for pool in (bfcl_pool(data), *metatool_pools(data)[:1], *apibench_pools(data))
             for s in pool.tools]
    requests = [q.text for q in metatool_pools(data)[0].queries]
    vectors = unit(rng.standard_normal((count, DIM)))
    index = ToolIndex(DIM, RankingWeights())
    empty = np.zeros((0, DIM), dtype=np.float32)
    first = None
    for i in range(count):
        spec = specs[i % len(specs)]
        namespace = "default" if i < len(specs) else f"copy-{i // len(specs)}"
        spec = msgspec.structs.replace(spec, namespace=namespace)
        index.upsert(IndexedTool(
            namespace=namespace, name=spec.name, version=1, description=spec.description,
            tags=frozenset(), search=SearchData(
                model="bench", text=tool_text(spec), vector=vectors[i], examples=[],
                example_vectors=empty, clauses=[], clause_vectors=empty,
                keywords=keyword_text(spec))))
        if examples:
            noisy = unit(vectors[i] + 0.6 * rng.standard_normal((examples, DIM)) / DIM ** 0.5)
            taught = Learned(
                texts=[requests[(i * examples + j) % len(requests)] for j in range(examples)],
                examples=noisy, weights=np.ones(examples, dtype=np.float32), negatives=empty)
            index.set_learned((namespace, spec.name), taught)
            first = first or taught
    return index, first


def percentiles(times: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return (round(statistics.median(ordered) * 1000, 2),
            round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2))


def search_times(index: ToolIndex, queries: Sequence[tuple[str, Vectors]]) -> list[float]:
    times = []
    for text, vector in queries:
        started = time.perf_counter()
        index.search(vector, text, 10)
        times.append(time.perf_counter() - started)
    return times


async def learning_times(rounds: int) -> tuple[list[float], list[float]]:
    """Postgres time of `learned.add` on a tool that holds PER_TOOL examples, and of reading
    its learned rows back."""
    rng = np.random.default_rng(7)
    with embedded_postgres() as postgres:
        url = await fresh_database(postgres, "bench_learned")
        pool = await connect_pool(url, min_size=1, max_size=2)
        try:
            adds, reads = [], []
            for i in range(rounds + PER_TOOL):
                example = NewExample(namespace="default", name="tool", version=1,
                                     text=f"request {i}", vector=unit(rng.standard_normal(
                                         (1, DIM)))[0], found_by_search=False,
                                     turn_id=f"turn_{i}", call_id="c1")
                started = time.perf_counter()
                async with pool.acquire() as conn, conn.transaction():
                    await learned.add(conn, "default", example, "bench")
                middle = time.perf_counter()
                await learned.learned_of(pool, "default", [("default", "tool")], "bench", DIM)
                if i >= PER_TOOL:  # the tool is full: every add also drops one
                    adds.append(middle - started)
                    reads.append(time.perf_counter() - middle)
        finally:
            await pool.close()
    return adds, reads


async def measure(data: Path, count: int) -> tuple[list[Timing], dict[str, float]]:
    rng = np.random.default_rng(20251203)
    embedder = SentenceTransformerEmbedder()
    texts = [q.text for q in bfcl_pool(data).queries[:100]] + [
        q.text for q in metatool_pools(data)[0].queries[:100]]
    shift = framing_shift(embedder.embed_sync(shift_texts()))
    vectors = [framed(v, shift, 0.4) for v in embedder.embed_sync(texts)]
    queries = list(zip(texts, vectors, strict=True))
    timings, memory = [], {}
    for examples in (0, 20, PER_TOOL):
        tracemalloc.start()
        index, taught = build(count, data, rng, examples)
        memory[f"{examples}"] = tracemalloc.get_traced_memory()[0] / 2**20
        tracemalloc.stop()
        search_times(index, queries[:20])  # warm
        p50, p99 = percentiles(search_times(index, queries))
        timings.append(Timing(f"index search, {examples} learned per tool", p50, p99))
        whole = []
        for text, _ in queries:
            started = time.perf_counter()
            vector = framed(embedder.embed_sync([text])[0], shift, 0.4)
            index.search(vector, text, 10)
            whole.append(time.perf_counter() - started)
        p50, p99 = percentiles(whole)
        timings.append(Timing(f"with the query's embedding, {examples} learned per tool",
                              p50, p99))
        if taught is not None and examples == PER_TOOL:
            key = index.keys()[0]
            placed = []
            for _ in range(200):
                started = time.perf_counter()
                index.set_learned(key, taught)
                placed.append(time.perf_counter() - started)
            timings.append(Timing("index: one tool's learned examples replaced",
                                  *percentiles(placed)))
    adds, reads = await learning_times(100)
    timings.append(Timing("Postgres: learn one example (tool full: merge or insert and drop)",
                          *percentiles(adds)))
    timings.append(Timing("Postgres: read one tool's learned examples back", *percentiles(reads)))
    return timings, memory


def report(timings: Sequence[Timing], memory: dict[str, float], count: int, command: str,
           seconds: float) -> str:
    lines = [
        f"Command: `{command}` ({seconds:.0f} s). Machine: 2 cores, CPU only "
        f"({platform.machine()}, Python {platform.python_version()}). Date: "
        f"{date.today().isoformat()}. {count:,} tools; 200 queries; k = 10.",
        "",
        "| what | p50 ms | p99 ms |",
        "|---|---|---|",
        *[f"| {t.what} | {t.p50_ms:.2f} | {t.p99_ms:.2f} |" for t in timings],
        "",
        "Index memory (Python allocations while building): "
        + ", ".join(f"{mib:.0f} MiB with {n} learned per tool" for n, mib in memory.items())
        + ".",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--quick", action="store_true", help="1,000 tools; prints only")
    args = parser.parse_args(argv)
    count = 1_000 if args.quick else 10_000
    random.seed(0)
    started = time.monotonic()
    timings, memory = asyncio.run(measure(args.data, count))
    command = ".venv/bin/python -m bench.learned_cost --data ../shared/data" + (
        " --quick" if args.quick else "")
    publish(_marked(report(timings, memory, count, command, time.monotonic() - started)),
            quick=args.quick, heading=SECTION, markers=MARKERS)


def _marked(block: str) -> str:
    """The block between its markers, so the next full run finds it."""
    return f"{MARKERS[0]}\n{block}\n{MARKERS[1]}"


if __name__ == "__main__":
    main()
