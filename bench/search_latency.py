"""Search latency and bulk-registration throughput of ToolRegistry, on public tool sets.

    .venv/bin/python -m bench.search_latency [--data ../shared/data] [--quick] [--profile]
        [--runtime auto|onnx|torch]

Searches go through `ToolRegistry.search`, so every query is embedded as in the service; writes
go through `ToolRegistry.write` into an embedded Postgres started for the run and stopped after.
A full run rewrites the generated part of the "Search latency and bulk registration" section of
bench/BENCHMARKS.md; `--quick` only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import gc
import io
import json
import os
import platform
import pstats
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psutil

from app.database import database
from app.tenancy import DEFAULT_TENANT
from bench._markdown import publish
from tools.embed import BUNDLED_MODEL, RUNTIMES, Runtime, SentenceTransformerEmbedder, Vectors
from tools.importing import deduplicate, read_tool_file
from tools.registry import ToolRegistry, WriteResult
from tools.spec import ToolPolicy, ToolSpec, function_name
from tools.validation import parse_specs

SECTION = "## Search latency and bulk registration"
BEGIN, END = "<!-- search-latency:begin -->", "<!-- search-latency:end -->"
SEED = 20250101
TENANT = DEFAULT_TENANT  # the tenant every request acts for today
K = 10
WARMUP = 20
TARGET_P50_MS = 25.0
MEMORY_SITES = 8
QUIET_CORES, QUIET_WAIT_S = 0.25, 300.0
# A change that makes a new version of every tool but leaves the embedded text alone.
CHANGED_POLICY = ToolPolicy(timeout_s=12.0, max_retries=1)


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    batch: int
    """Tools per `ToolRegistry.write` call."""
    sizes: tuple[int, ...]
    """Index sizes at which search is measured; each a multiple of `batch`."""
    queries: int
    """Measured queries per size; WARMUP more run first and are not counted."""


FULL = Plan(batch=1_000, sizes=(1_000, 10_000), queries=400)
QUICK = Plan(batch=500, sizes=(500, 1_000), queries=100)


# -- corpus ----------------------------------------------------------------------------------


class Corpus(msgspec.Struct, frozen=True, kw_only=True):
    tools: list[ToolSpec]
    """Real tools first (shuffled across sources), then namespace copies of them."""
    real: dict[str, int]
    """Distinct real tools by source."""
    queries: list[str]


def load_corpus(data: Path, size: int, queries: int) -> Corpus:
    sources = {
        "BFCL (non-live + live)": bfcl_tools(data),
        "MetaTool": metatool_tools(data),
        "APIBench": apibench_tools(data),
    }
    real: dict[str, ToolSpec] = {}
    for tools in sources.values():
        for spec in tools:
            real.setdefault(spec.name, spec)  # first source wins a name both use
    counts = {name: sum(1 for s in tools if real[s.name] is s) for name, tools in sources.items()}
    shuffled = list(real.values())
    random.Random(SEED).shuffle(shuffled)
    return Corpus(
        tools=with_namespace_copies(shuffled, size),
        real=counts,
        queries=sample_queries(data, WARMUP + queries),
    )


def _bfcl_files(data: Path) -> list[Path]:
    folders = [data / "bfcl" / "question", data / "bfcl" / "live" / "question"]
    return [path for folder in folders for path in sorted(folder.glob("*.json"))]


def bfcl_tools(data: Path) -> list[ToolSpec]:
    """Imported as `switchboard tools import --on-duplicate first` would import them."""
    items = [item for path in _bfcl_files(data) for item in read_tool_file(path)]
    return parse_specs(deduplicate(items, on_duplicate="first"))


def metatool_tools(data: Path) -> list[ToolSpec]:
    path = data / "metatool" / "plugin_des.json"
    descriptions: dict[str, str] = json.loads(path.read_text("utf-8"))
    return [ToolSpec(name=function_name(n), description=d) for n, d in descriptions.items()]


def apibench_tools(data: Path) -> list[ToolSpec]:
    """One tool per distinct API record; a repeated api_name gets a numbered suffix."""
    seen: set[str] = set()
    items: list[dict[str, Any]] = []
    names: set[str] = set()
    for path in sorted((data / "apibench" / "api").glob("*.jsonl")):
        for record in _json_lines(path):
            identity = json.dumps(record, sort_keys=True)
            if identity in seen:
                continue
            seen.add(identity)
            name = function_name(record["api_name"])
            if name in names:
                suffix = f"_{len(items)}"
                name = name[: 64 - len(suffix)] + suffix
            names.add(name)
            items.append(_api_spec(name, record))
    return parse_specs(items)


def _api_spec(name: str, record: dict[str, Any]) -> dict[str, Any]:
    description = (
        f"{record['functionality']}: {record['description']}\n"
        f"Domain: {record['domain']}. Call: {record['api_call']}"
    )
    properties = _api_arguments(record.get("api_arguments"))
    return {
        "name": name,
        "description": description.strip(),
        "parameters": {"type": "object", "properties": properties},
    }


def _api_arguments(arguments: Any) -> dict[str, Any]:
    """APIBench writes arguments as a dict, a list of names or dicts, or a comma-separated
    string; each becomes a property, described by whatever value the record gives it."""
    if isinstance(arguments, dict):
        return {str(k): {"description": str(v)} for k, v in arguments.items()}
    if isinstance(arguments, str):
        arguments = arguments.split(",")
    if not isinstance(arguments, list):
        return {}
    properties: dict[str, Any] = {}
    for item in arguments:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            properties[item["name"]] = {"description": str(item.get("description", ""))}
        elif isinstance(item, dict):
            properties.update(_api_arguments(item))
        elif isinstance(item, str):
            key = item.split("=", 1)[0].strip(" '\"")
            if key and key.casefold() not in ("n/a", "none"):
                properties[key] = {}
    return properties


def with_namespace_copies(real: list[ToolSpec], size: int) -> list[ToolSpec]:
    """The real tools, then copies in namespaces `copy-1`, `copy-2`, ... up to `size`.

    A copy's embedded text starts with its namespace, so no two vectors are the same."""
    tools = real[:size]
    copy = 0
    while len(tools) < size:
        copy += 1
        more = [msgspec.structs.replace(s, namespace=f"copy-{copy}") for s in real]
        tools += more[: size - len(tools)]
    return tools


def sample_queries(data: Path, count: int) -> list[str]:
    """Real user requests, half from BFCL (non-live and live) and half from MetaTool."""
    rng = random.Random(SEED)
    bfcl = sorted(set(_bfcl_questions(data)))
    with (data / "metatool" / "all_clean_data.csv").open(encoding="utf-8", newline="") as rows:
        metatool = sorted({row["Query"].strip() for row in csv.DictReader(rows)})
    half = count // 2
    mixed = rng.sample(bfcl, half) + rng.sample(metatool, count - half)
    rng.shuffle(mixed)
    return mixed


def _bfcl_questions(data: Path) -> Iterator[str]:
    for path in _bfcl_files(data):
        for entry in _json_lines(path):
            turns = entry["question"]
            text = "\n".join(m["content"] for t in turns for m in t if m["role"] == "user")
            if text.strip():
                yield text


def _json_lines(path: Path) -> Iterator[Any]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


# -- measuring -------------------------------------------------------------------------------


class TimedEmbedder:
    """The registry's embedder seam, timing every call (the hop to the worker thread included)."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.last = 0.0
        self.total = 0.0
        self.texts = 0

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def runtime(self) -> str:
        return self.inner.runtime

    async def embed(self, texts: list[str]) -> Vectors:
        started = time.perf_counter()
        vectors = await self.inner.embed(texts)
        self.last = time.perf_counter() - started
        self.total += self.last
        self.texts += len(texts)
        return vectors


class CpuMark(msgspec.Struct, frozen=True):
    wall: float
    machine: float
    """CPU seconds the whole machine has been busy."""
    own: float
    """CPU seconds of this process, all its threads."""

    @classmethod
    def now(cls) -> CpuMark:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq + t.steal
        own = psutil.Process().cpu_times()
        return cls(time.perf_counter(), busy, own.user + own.system)

    def others(self) -> float:
        """Cores kept busy outside this process since this mark (Postgres included).

        Other load matters: on 2 cores a second busy process can slow this one many times."""
        end = CpuMark.now()
        elsewhere = (end.machine - self.machine) - (end.own - self.own)
        return max(0.0, elsewhere) / (end.wall - self.wall)


async def until_quiet(limit: float = QUIET_WAIT_S) -> None:
    """Wait (up to `limit` seconds) until other processes leave the CPU nearly idle.

    The machine is shared; the wait makes a quiet measurement likely, the table still says."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        mark = CpuMark.now()
        await asyncio.sleep(2.0)
        load = mark.others()
        if load < QUIET_CORES:
            return
        _progress(f"  waiting for a quiet machine: other load {load:.2f} cores")


class SearchRow(msgspec.Struct, frozen=True, kw_only=True):
    tools: int
    queries: int
    total_ms: tuple[float, float]
    """p50, p99 of the whole `ToolRegistry.search` call."""
    embed_ms: tuple[float, float]
    index_ms: tuple[float, float]
    """The rest of the call: `ToolIndex.search` (and a dict look-up)."""
    rss_mib: float
    other_cores: float


class WriteRow(msgspec.Struct, frozen=True, kw_only=True):
    case: str
    tools: int
    seconds: float
    embed_seconds: float
    texts_embedded: int
    other_cores: float

    @property
    def rate(self) -> float:
        return self.tools / self.seconds


class Reload(msgspec.Struct, frozen=True, kw_only=True):
    """A second registry on the same database, as a replica starting up: `ToolRegistry.load`."""

    tools: int
    seconds: float
    retained_mib: float
    """Heap the loaded indexes keep (tracemalloc, which sees numpy's buffers too)."""
    peak_mib: float
    """Most heap in use while loading: rows from Postgres and the indexes built from them."""
    sites: list[tuple[str, float]]
    """The lines that allocated most of what is kept, with MiB."""


class Results(msgspec.Struct, frozen=True, kw_only=True):
    searches: list[SearchRow]
    new_batches: list[WriteRow]
    rewrites: list[WriteRow]
    rss_start_mib: float
    query_chars: int
    """Median length of the measured queries."""
    runtime: str
    """Where the embedder ran its transformer (onnx or torch)."""
    reload: Reload


def rss_mib() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def percentiles(seconds: Sequence[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(seconds) * 1000.0, [50, 99])
    return round(float(p50), 1), round(float(p99), 1)


async def measure_search(
    registry: ToolRegistry, embedder: TimedEmbedder, queries: Sequence[str]
) -> SearchRow:
    totals: list[float] = []
    embeds: list[float] = []
    mark = CpuMark.now()
    for number, query in enumerate(queries):
        if number == WARMUP:
            mark = CpuMark.now()
        started = time.perf_counter()
        hits = await registry.search(TENANT, query, K)
        elapsed = time.perf_counter() - started
        if len(hits) != K:
            raise RuntimeError(f"search for {query[:60]!r} returned {len(hits)} hits, not {K}")
        if number >= WARMUP:
            totals.append(elapsed)
            embeds.append(embedder.last)
    return SearchRow(
        tools=registry.index_size(TENANT),
        queries=len(totals),
        total_ms=percentiles(totals),
        embed_ms=percentiles(embeds),
        index_ms=percentiles([t - e for t, e in zip(totals, embeds, strict=True)]),
        rss_mib=rss_mib(),
        other_cores=mark.others(),
    )


async def timed_write(
    registry: ToolRegistry, embedder: TimedEmbedder, case: str, specs: list[ToolSpec]
) -> tuple[WriteRow, WriteResult]:
    embedded, texts = embedder.total, embedder.texts
    mark = CpuMark.now()
    result = await registry.write(TENANT, specs)
    row = WriteRow(
        case=case,
        tools=len(specs),
        seconds=time.perf_counter() - mark.wall,
        embed_seconds=embedder.total - embedded,
        texts_embedded=embedder.texts - texts,
        other_cores=mark.others(),
    )
    return row, result


def expect(result: WriteResult, case: str, **counts: int) -> None:
    """Stop if a write did other than the case says: the numbers would describe something else."""
    actual = {"created": result.created, "updated": result.updated, "unchanged": result.unchanged}
    wrong = {k: v for k, v in counts.items() if actual[k] != v}
    if wrong:
        raise RuntimeError(f"{case}: expected {counts}, the write reported {actual}")


async def measure_reload(registry: ToolRegistry) -> Reload:
    """Timed once, then loaded again under tracemalloc for its memory (tracing slows it).

    RSS cannot show the indexes' size: by now the allocator has free space from the writes."""
    started = time.perf_counter()
    tools = await ToolRegistry(registry.pool, registry.embedder).load()
    seconds = time.perf_counter() - started
    gc.collect()
    tracemalloc.start()
    try:
        replica = ToolRegistry(registry.pool, registry.embedder)
        await replica.load()
        gc.collect()
        retained, peak = tracemalloc.get_traced_memory()
        top = tracemalloc.take_snapshot().statistics("lineno")[:MEMORY_SITES]
    finally:
        tracemalloc.stop()
    sites = [(_site(stat.traceback[0]), stat.size / 2**20) for stat in top]
    return Reload(
        tools=tools,
        seconds=seconds,
        retained_mib=retained / 2**20,
        peak_mib=peak / 2**20,
        sites=sites,
    )


def _site(frame: tracemalloc.Frame) -> str:
    path = Path(frame.filename)
    inside = path.is_relative_to(Path.cwd())
    shown = path.relative_to(Path.cwd()) if inside else Path(path.parent.name, path.name)
    return f"{shown}:{frame.lineno}"


async def measure(
    registry: ToolRegistry, embedder: TimedEmbedder, corpus: Corpus, plan: Plan
) -> Results:
    queries = corpus.queries[: WARMUP + plan.queries]
    start_rss = rss_mib()
    searches: list[SearchRow] = []
    batches: list[WriteRow] = []
    for start in range(0, max(plan.sizes), plan.batch):
        specs = corpus.tools[start : start + plan.batch]
        row, result = await timed_write(registry, embedder, "new", specs)
        expect(result, "new tools", created=plan.batch)
        batches.append(row)
        _progress(f"{start + plan.batch:,} tools: {row.rate:.0f} tools/s")
        if start + plan.batch in plan.sizes:
            await until_quiet()
            searches.append(await measure_search(registry, embedder, queries))
            _progress(f"  search p50, p99: {searches[-1].total_ms} ms")
    last = corpus.tools[max(plan.sizes) - plan.batch : max(plan.sizes)]
    same, result = await timed_write(registry, embedder, "unchanged", last)
    expect(result, "unchanged", unchanged=plan.batch)
    changed = [msgspec.structs.replace(s, policy=CHANGED_POLICY) for s in last]
    policy, result = await timed_write(registry, embedder, "policy change", changed)
    expect(result, "policy change", updated=plan.batch)
    return Results(
        searches=searches,
        new_batches=batches,
        rewrites=[same, policy],
        reload=await measure_reload(registry),
        rss_start_mib=start_rss,
        query_chars=int(np.median([len(q) for q in queries[WARMUP:]])),
        runtime=embedder.runtime,
    )


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def run(corpus: Corpus, plan: Plan, *, profile: bool, runtime: Runtime) -> Results:
    embedder = TimedEmbedder(SentenceTransformerEmbedder(runtime=runtime))
    queries = corpus.queries[: WARMUP + plan.queries]
    try:
        with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp:
            async with database(None, Path(tmp)) as (_, pool):
                registry = ToolRegistry(pool, embedder)
                results = await measure(registry, embedder, corpus, plan)
                if profile:
                    await print_profile(registry, embedder, queries)
                return results
    finally:
        embedder.inner.close()


async def print_profile(
    registry: ToolRegistry, embedder: TimedEmbedder, queries: Sequence[str]
) -> None:
    """Two cProfiles at the largest size: the searches as the registry runs them, where the
    embedding hides in the worker thread cProfile cannot see, then that embedding on its own."""
    profiler = cProfile.Profile()
    profiler.enable()
    await measure_search(registry, embedder, queries)
    profiler.disable()
    _print_stats(profiler, "ToolRegistry.search (main thread; embedding runs elsewhere)")
    profiler = cProfile.Profile()
    profiler.enable()
    for query in queries:
        embedder.inner.embed_sync([query])
    profiler.disable()
    _print_stats(profiler, "SentenceTransformerEmbedder.embed_sync, one query at a time")


def _print_stats(profiler: cProfile.Profile, title: str) -> None:
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    _progress(f"== {title}, by own time ==\n{out.getvalue()}")


# -- report ----------------------------------------------------------------------------------


def search_table(rows: Sequence[SearchRow]) -> str:
    lines = [
        "| tools | queries | p50 ms | p99 ms | embed p50 | embed p99 | index p50 | index p99 "
        "| RSS MiB | other load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{r.tools:,}", str(r.queries), *map(str, r.total_ms)]
        cells += [*map(str, r.embed_ms), *map(str, r.index_ms)]
        cells += [f"{r.rss_mib:.0f}", f"{r.other_cores:.2f} cores"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sites_table(reload: Reload) -> str:
    lines = ["| allocated at | MiB kept |", "|---|---|"]
    lines += [f"| `{site}` | {mib:.1f} |" for site, mib in reload.sites]
    return "\n".join(lines)


def write_table(batch: int, batches: Sequence[WriteRow], rewrites: Sequence[WriteRow]) -> str:
    lines = [
        f"| write of {batch:,} tools | seconds | tools/s | embedding s | texts embedded "
        "| other load |",
        "|---|---|---|---|---|---|",
    ]
    rates = sorted(b.rate for b in batches)
    new = [("new, first batch (empty tenant)", batches[0])]
    if len(batches) > 1:
        median = sorted(batches, key=lambda b: b.rate)[len(batches) // 2]
        label = f"new, median of {len(batches)} batches ({rates[0]:.0f}-{rates[-1]:.0f} tools/s)"
        new.append((label, median))
    for label, row in [*new, *((r.case, r) for r in rewrites)]:
        cells = [label, f"{row.seconds:.2f}", f"{row.rate:,.0f}", f"{row.embed_seconds:.2f}"]
        cells += [f"{row.texts_embedded:,}", f"{row.other_cores:.2f} cores"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(corpus: Corpus, plan: Plan, results: Results, seconds: float, command: str) -> str:
    available = sum(corpus.real.values())
    real = min(available, len(corpus.tools))
    sources = ", ".join(f"{name} {count:,}" for name, count in corpus.real.items())
    first, largest = results.searches[0], results.searches[-1]
    verdict = "meets" if largest.total_ms[0] <= TARGET_P50_MS else "misses"
    grown = largest.rss_mib - first.rss_mib
    per_1k = grown / max((largest.tools - first.tools) / 1000, 1e-9)
    python = f"{platform.machine()}, Python {platform.python_version()}"
    reload = results.reload
    per_tool = reload.retained_mib * 1024 / max(reload.tools, 1)
    return f"""{BEGIN}
- Command: `{command}` ({seconds:.0f} s), {date.today().isoformat()}, code at {code_version()}.
- Machine: {os.cpu_count()} cores, no GPU ({python}),
  embedding on {results.runtime} (one worker thread); model {BUNDLED_MODEL}. The machine is shared:
  "other load" is the CPU kept busy outside this process while a row ran, in cores (for writes
  it includes Postgres). On 2 cores other load changes the numbers a lot; read them with it.
  Each search measurement starts once other load is under {QUIET_CORES} cores (or after
  {QUIET_WAIT_S:.0f} s of waiting); it may rise again while the measurement runs.
- Tools: {len(corpus.tools):,} in one tenant: {real:,} real ones, the other
  {len(corpus.tools) - real:,} copies of real ones in namespaces `copy-1`, `copy-2`, ...
  The real ones are drawn from {available:,} distinct tools: {sources}.
- Queries: {plan.queries} real user requests per size (half BFCL, half MetaTool; median
  {results.query_chars} characters) after {WARMUP} warm-up queries; k = {K}.

Search through `ToolRegistry.search`, query embedding included. Embed = the embedder call as
the registry awaits it (hand-off to its worker thread included); index = the rest of the call,
i.e. `ToolIndex.search`. Milliseconds:

{search_table(results.searches)}

At {largest.tools:,} tools p50 is {largest.total_ms[0]} ms: it {verdict} the {TARGET_P50_MS:.0f} ms
target. Process RSS (model, corpus, indexes, and what the allocator kept from embedding the
writes; Postgres runs in its own processes) was {results.rss_start_mib:.0f} MiB before the first
write, then as in the table: {grown:.0f} MiB more from {first.tools:,} to {largest.tools:,} tools
({per_1k:.1f} MiB per 1,000).

Writes through `ToolRegistry.write` into the embedded Postgres, one call (one transaction) each:

{write_table(plan.batch, results.new_batches, results.rewrites)}

Memory of the indexes themselves: a second `ToolRegistry` on the same database (a replica
starting) loads the {reload.tools:,} tools with `ToolRegistry.load` in {reload.seconds:.1f} s.
Its indexes keep {reload.retained_mib:.1f} MiB of heap ({per_tool:.1f} KiB per tool; tracemalloc,
numpy buffers included); loading peaks at {reload.peak_mib:.1f} MiB. Where it is kept:

{sites_table(reload)}
{END}"""


def code_version() -> str:
    """The commit measured, and whether the search code had uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "tools", "app")
    return f"`{commit}`" + (" with uncommitted changes in tools/ or app/" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.search_latency", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--quick", action="store_true", help="fewer tools and queries; BENCHMARKS.md untouched"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print cProfiles of the largest size to stderr"
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="where the embedding transformer runs, as EMBEDDING_RUNTIME (default auto)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    plan = QUICK if args.quick else FULL
    started = time.monotonic()
    corpus = load_corpus(args.data, max(plan.sizes), plan.queries)
    results = asyncio.run(run(corpus, plan, profile=args.profile, runtime=args.runtime))
    command = " ".join([".venv/bin/python -m bench.search_latency", *(argv or sys.argv[1:])])
    markdown = report(corpus, plan, results, time.monotonic() - started, command)
    publish(markdown, quick=args.quick, heading=SECTION, markers=(BEGIN, END))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
