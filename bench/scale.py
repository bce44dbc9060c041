"""Retrieval at scale: the in-memory index at 1k, 10k and 50k tools and across 100 tenants,
against pgvector's HNSW index on the same vectors.

    .venv/bin/python -m bench.scale [--data ../shared/data] [--quick]

Tools are the 3,200 distinct real tools of BFCL, MetaTool and APIBench, then copies of them in
namespaces `copy-1`, `copy-2`, ... (a copy's embedded text starts with its namespace, so no two
vectors are the same), embedded by the real embedder. Embedding 50,000 tool texts takes about
20 minutes here, so the vectors are kept in `--cache` (default ~/.cache/switchboard-bench),
keyed by the model and the texts; later runs load them. Queries are 200 real user requests
(half BFCL, half MetaTool), embedded once; what is timed is the index, the query's embedding
excluded on both sides, plus one row per size with it (the registry's whole search).

- In memory: `ToolIndex.search` as the registry calls it (dense and BM25 fused, with the clause
  rows of long descriptions, k = 10), and dense alone over the tools' own vectors (`keyword=0`,
  `clauses=0`), which finds the exact cosine top 10.
- pgvector: the same vectors in a `vector(384)` column of the embedded Postgres with an HNSW
  index (`vector_cosine_ops`, m 16, ef_construction 64: pgvector's defaults), queried over
  asyncpg with `ORDER BY embedding <=> $1 LIMIT 10`, with ef_search 40 (the default) and 200;
  the round trip is counted, as a service using it would pay it. Recall@10 is against the
  exact dense top 10.
- 100 tenants of 500 tools: one index per tenant in memory; one table with a tenant column and
  the HNSW index in Postgres, filtered by tenant (pgvector filters after the graph search, so
  an HNSW query may return fewer than 10), also with `hnsw.iterative_scan = relaxed_order`,
  which keeps searching the graph until enough rows pass the filter.

A full run rewrites the generated block of the "Retrieval at scale" section of
bench/BENCHMARKS.md; `--quick` (1k and 2k tools, 10 tenants) only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import asyncpg
import msgspec
import numpy as np

from bench._markdown import publish
from bench._stack import embedded_postgres, fresh_database
from bench.search_latency import load_corpus
from tools.embed import BUNDLED_MODEL, SentenceTransformerEmbedder, Vectors
from tools.index import IndexedTool, RankingWeights, SearchData, ToolIndex
from tools.spec import ToolSpec
from tools.text import description_clauses, keyword_text, tool_text

BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
SECTION = "## Retrieval at scale"
K = 10
QUERIES = 200
DIM = 384
EXACT = RankingWeights(keyword=0.0, clauses=0.0)
"""Cosine to each tool's vector alone: the exact top 10 of the vectors pgvector is given."""


class Plan(msgspec.Struct, frozen=True):
    sizes: list[int]
    tenants: int
    per_tenant: int


FULL = Plan(sizes=[1_000, 10_000, 50_000], tenants=100, per_tenant=500)
QUICK = Plan(sizes=[1_000, 2_000], tenants=10, per_tenant=200)


class Row(msgspec.Struct, frozen=True):
    what: str
    tools: int
    p50_ms: float
    p99_ms: float
    recall: float | None = None
    """Share of the exact dense top 10 found (pgvector rows)."""
    build_s: float | None = None
    memory_mib: float | None = None


def cached_vectors(embedder: SentenceTransformerEmbedder, texts: list[str], cache: Path) -> Vectors:
    digest = hashlib.sha256("\n\x00".join([BUNDLED_MODEL, *texts]).encode()).hexdigest()[:24]
    path = cache / f"{BUNDLED_MODEL}-{len(texts)}-{digest}.npy"
    if path.exists():
        return np.load(path)
    started = time.monotonic()
    parts = []
    for start in range(0, len(texts), 2_000):
        parts.append(embedder.embed_sync(texts[start : start + 2_000]))
        done = start + len(parts[-1])
        rate = done / (time.monotonic() - started)
        print(f"embedded {done:,}/{len(texts):,} ({rate:.0f}/s)", file=sys.stderr, flush=True)
    vectors = np.concatenate(parts).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def clause_vectors(
    embedder: SentenceTransformerEmbedder, specs: Sequence[ToolSpec], cache: Path
) -> list[Vectors]:
    """Each tool's clause vectors (none for a short description), as the registry embeds them."""
    texts = [description_clauses(s.namespace, s.name, s.description) for s in specs]
    flat = cached_vectors(embedder, [c for clauses in texts for c in clauses], cache)
    ends = np.cumsum([len(clauses) for clauses in texts])
    return [flat[end - len(clauses):end] for clauses, end in zip(texts, ends, strict=True)]


def build(
    specs: Sequence[ToolSpec], vectors: Vectors, clauses: Sequence[Vectors],
    weights: RankingWeights,
) -> ToolIndex:
    """As the registry indexes a write (tools without examples)."""
    index = ToolIndex(DIM, weights)
    empty = np.zeros((0, DIM), dtype=np.float32)
    for spec, vector, rows in zip(specs, vectors, clauses, strict=True):
        index.upsert(IndexedTool(
            namespace=spec.namespace, name=spec.name, version=1, description=spec.description,
            tags=frozenset(spec.tags), search=SearchData(
                model="scale", text=tool_text(spec), vector=vector, examples=[],
                example_vectors=empty, clauses=description_clauses(
                    spec.namespace, spec.name, spec.description),
                clause_vectors=rows, keywords=keyword_text(spec)),
        ))
    return index


def timed(
    calls: Sequence[tuple[Vectors, str]], search: object
) -> tuple[list[float], list[list[str]]]:
    times, found = [], []
    for vector, text in calls:
        started = time.perf_counter()
        hits = search(vector, text)  # type: ignore[operator]
        times.append(time.perf_counter() - started)
        found.append(hits)
    return times, found


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(what: str, tools: int, times: Sequence[float], **extra: float | None) -> Row:
    return Row(what, tools, statistics.median(times) * 1000, percentile(times, 0.99) * 1000,
               **extra)


def recall(found: Sequence[Sequence[str]], exact: Sequence[Sequence[str]]) -> float:
    hits = sum(len(set(f) & set(e)) for f, e in zip(found, exact, strict=True))
    return hits / sum(len(e) for e in exact)


def in_memory(
    specs: Sequence[ToolSpec], vectors: Vectors, clauses: Sequence[Vectors],
    queries: list[tuple[Vectors, str]], embedder: SentenceTransformerEmbedder,
) -> tuple[list[Row], list[list[str]]]:
    gc.collect()
    tracemalloc.start()
    started = time.monotonic()
    fused = build(specs, vectors, clauses, RankingWeights())
    build_s = time.monotonic() - started
    memory = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    dense = build(specs, vectors, clauses, EXACT)

    def names(index: ToolIndex) -> object:
        return lambda v, t: [f"{h.namespace}/{h.name}" for h in index.search(v, t, K)]

    fused_times, _ = timed(queries, names(fused))
    dense_times, exact = timed(queries, names(dense))
    served = names(fused)
    whole_times, _ = timed(queries, lambda _v, t: served(embedder.embed_sync([t])[0], t))  # type: ignore[operator]
    n = len(specs)
    return [
        row("in memory, fused (as served)", n, fused_times, build_s=build_s, memory_mib=memory),
        row("in memory, dense only (exact)", n, dense_times),
        row("in memory, fused, query embedding included", n, whole_times),
    ], exact


def literal(vector: Vectors) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


VARIANTS: list[tuple[str, list[str]]] = [
    ("defaults", []),
    ("ef_search 200", ["SET hnsw.ef_search = 200"]),
]
TENANT_VARIANTS: list[tuple[str, list[str]]] = [
    *VARIANTS,
    ("iterative scan", ["SET hnsw.iterative_scan = relaxed_order"]),
]


async def pgvector(
    url: str, table: str, specs: Sequence[ToolSpec], vectors: Vectors, tenants: Sequence[str],
    queries: list[tuple[Vectors, str, str]], exact: list[list[str]],
) -> list[Row]:
    """One table and HNSW index, queried under each of its variants' settings."""
    many_tenants = len(set(tenants)) > 1
    connection = await asyncpg.connect(url)
    try:
        # Postgres would JIT-compile this query on every run (about 20 ms) once its estimated
        # cost passes jit_above_cost; a service querying vectors would turn that off.
        await connection.execute("SET jit = off")
        # Vectors go as parameters of type vector (text on the wire): a `$1::text::vector` cast
        # would be parsed again for every row a sequential scan visits.
        await connection.set_type_codec("vector", schema="public", encoder=str, decoder=str,
                                        format="text")
        await connection.execute(f"""CREATE TABLE {table} (tenant text NOT NULL, key text NOT NULL,
                                     embedding vector({DIM}) NOT NULL)""")
        await connection.executemany(
            f"INSERT INTO {table} (tenant, key, embedding) VALUES ($1, $2, $3)",
            [(t, f"{s.namespace}/{s.name}", literal(v))
             for t, s, v in zip(tenants, specs, vectors, strict=True)],
        )
        started = time.monotonic()
        await connection.execute(
            f"CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops)"
        )
        build_s = time.monotonic() - started
        size = await connection.fetchval(
            f"SELECT pg_relation_size(indexrelid) FROM pg_index "
            f"WHERE indrelid = '{table}'::regclass"
        )
        await connection.execute(f"ANALYZE {table}")
        order = f"ORDER BY embedding <=> $1 LIMIT {K}"
        sql = (f"SELECT key FROM {table} WHERE tenant = $2 {order}" if many_tenants
               else f"SELECT key FROM {table} {order}")

        def args(vector: Vectors, tenant: str) -> list[str]:
            return [literal(vector), tenant] if many_tenants else [literal(vector)]

        rows = []
        for label, settings in TENANT_VARIANTS if many_tenants else VARIANTS:
            await connection.execute("RESET hnsw.ef_search")
            for setting in settings:
                try:
                    await connection.execute(setting)
                except asyncpg.PostgresError as exc:
                    print(f"{table}: {setting} refused: {exc}", file=sys.stderr)
                    continue
            plan = await connection.fetchval(f"EXPLAIN (FORMAT JSON) {sql}",
                                             *args(queries[0][0], queries[0][2]))
            statement = await connection.prepare(sql)
            for vector, _, tenant in queries[:20]:  # warm the index's pages and the plan
                await statement.fetch(*args(vector, tenant))
            times, found = [], []
            for vector, _, tenant in queries:
                began = time.perf_counter()
                result = await statement.fetch(*args(vector, tenant))
                times.append(time.perf_counter() - began)
                found.append([r["key"] for r in result])
            what = "pgvector HNSW" + (", filtered by tenant" if many_tenants else "")
            rows.append(row(f"{what}, {label} ({_scan_of(plan)})", len(specs), times,
                            recall=recall(found, exact), build_s=build_s,
                            memory_mib=size / 2**20))
    finally:
        await connection.close()
    return rows


def _scan_of(plan: object) -> str:
    """The plan's scan node: an index scan on the HNSW index, or a sequential scan and sort."""
    text = plan if isinstance(plan, str) else str(plan)
    if "Index Scan" in text:
        return "index scan"
    return "sequential scan" if "Seq Scan" in text else "other plan"


async def run(data: Path, plan: Plan, cache: Path) -> tuple[list[Row], float]:
    started = time.monotonic()
    largest = max(plan.sizes[-1], plan.tenants * plan.per_tenant)
    corpus = load_corpus(data, largest, QUERIES)
    specs = corpus.tools[:largest]
    embedder = SentenceTransformerEmbedder()
    try:
        return await _measure(plan, specs, corpus.queries[-QUERIES:], embedder, cache, started)
    finally:
        embedder.close()


async def _measure(
    plan: Plan, specs: Sequence[ToolSpec], query_texts: list[str],
    embedder: SentenceTransformerEmbedder, cache: Path, started: float,
) -> tuple[list[Row], float]:
    vectors = cached_vectors(embedder, [tool_text(s) for s in specs], cache)
    clauses = clause_vectors(embedder, specs, cache)
    query_vectors = embedder.embed_sync(query_texts)
    rows: list[Row] = []
    with embedded_postgres() as postgres:
        url = await fresh_database(postgres, "bench_scale")
        admin = await asyncpg.connect(url)
        await admin.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await admin.close()
        single = [(v, t) for v, t in zip(query_vectors, query_texts, strict=True)]
        for size in plan.sizes:
            memory_rows, exact = in_memory(
                specs[:size], vectors[:size], clauses[:size], single, embedder
            )
            rows += memory_rows
            rows += await pgvector(
                url, f"one_{size}", specs[:size], vectors[:size], ["t"] * size,
                [(v, t, "t") for v, t in single], exact,
            )
            print(f"{size:,} tools done", file=sys.stderr, flush=True)
        rows += await many_tenants(url, plan, specs, vectors, clauses, single)
    return rows, time.monotonic() - started


async def many_tenants(
    url: str, plan: Plan, specs: Sequence[ToolSpec], vectors: Vectors,
    clauses: Sequence[Vectors], queries: list[tuple[Vectors, str]],
) -> list[Row]:
    """Tenant i holds tools i*per .. (i+1)*per of the list; each query goes to a tenant drawn
    at random (the same draw for both sides)."""
    per, count = plan.per_tenant, plan.tenants
    names = [f"tenant-{i:03d}" for i in range(count)]
    rng = random.Random(7)
    targets = [rng.randrange(count) for _ in queries]
    gc.collect()
    tracemalloc.start()
    started = time.monotonic()
    fused = [build(specs[i * per:(i + 1) * per], vectors[i * per:(i + 1) * per],
                   clauses[i * per:(i + 1) * per], RankingWeights()) for i in range(count)]
    build_s = time.monotonic() - started
    memory = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    dense = [build(specs[i * per:(i + 1) * per], vectors[i * per:(i + 1) * per],
                   clauses[i * per:(i + 1) * per], EXACT) for i in range(count)]
    calls = [(v, t) for v, t in queries]
    fused_times = []
    dense_times, exact = [], []
    for (vector, text), target in zip(calls, targets, strict=True):
        began = time.perf_counter()
        fused[target].search(vector, text, K)
        fused_times.append(time.perf_counter() - began)
        began = time.perf_counter()
        hits = dense[target].search(vector, text, K)
        dense_times.append(time.perf_counter() - began)
        exact.append([f"{h.namespace}/{h.name}" for h in hits])
    total = per * count
    tenant_of = [names[i // per] for i in range(total)]
    pg = await pgvector(url, "tenants", specs[:total], vectors[:total], tenant_of,
                        [(v, t, names[g]) for (v, t), g in zip(calls, targets, strict=True)],
                        exact)
    label = f"{count} tenants x {per}"
    return [
        row(f"in memory, fused, {label}", total, fused_times, build_s=build_s, memory_mib=memory),
        row(f"in memory, dense only, {label}", total, dense_times),
        *(msgspec.structs.replace(r, what=f"{r.what}, {label}") for r in pg),
    ]


def report(rows: Sequence[Row], seconds: float, command: str) -> str:
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    lines = [
        BEGIN,
        f"`{command}` on {date.today().isoformat()}; {machine}; {seconds:.0f} s; {QUERIES} "
        f"queries per row, k = {K}; the query's embedding is not included unless the row says "
        "so. Milliseconds.",
        "",
        "| index | tools | p50 ms | p99 ms | recall@10 vs exact dense | build s | memory MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.what} | {r.tools:,} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{'' if r.recall is None else f'{r.recall:.3f}'} | "
            f"{'' if r.build_s is None else f'{r.build_s:.1f}'} | "
            f"{'' if r.memory_mib is None else f'{r.memory_mib:.1f}'} |"
        )
    lines += ["", "Memory: in memory, what the fused index holds (tracemalloc, numpy included); "
              "pgvector, the size of the HNSW index on disk (the table not counted).", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.scale",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--quick", action="store_true",
                        help="1k and 2k tools, 10 tenants of 200; BENCHMARKS.md untouched")
    parser.add_argument("--cache", type=Path,
                        default=Path.home() / ".cache" / "switchboard-bench",
                        help="where tool vectors are kept between runs")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    plan = QUICK if args.quick else FULL
    rows, seconds = asyncio.run(run(args.data, plan, args.cache))
    command = " ".join(["python -m bench.scale", *(argv or sys.argv[1:])])
    markdown = report(rows, seconds, command)
    publish(markdown, quick=args.quick, heading=SECTION, markers=(BEGIN, END))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
