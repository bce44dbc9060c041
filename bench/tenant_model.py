"""A tenant's own embedder, on APIBench HuggingFace: learnt from half of its requests (and from
MetaTool usage), trained through `POST /v1/retrieval/train`, scored on the other half.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.tenant_model [--data ../shared/data]
                                     [--metatool N] [--epochs N] [--quick]

The service runs in this process as in production (create_app under uvicorn, an embedded
Postgres, the bundled MiniLM). One tenant holds the 936 APIBench HuggingFace tools and the 199
MetaTool tools, registered with no examples. Usage goes through the real path, as in
bench/learning.py: each HuggingFace request of the dev half (a hash of its id) is a turn whose
scripted model calls the right tool, and so are --metatool (500) MetaTool requests that are
not scored. Then the tenant's embedder is trained (`POST /v1/retrieval/train`, --epochs) and
swapped in only if it beats the general one on the held-out fifth of the tenant's examples.
For the first 90 s of training, turns keep running beside it (unscored MetaTool requests, 2
at a time, with learning off): their latency is compared with the same turns before
training. Reported: R@1/R@5/R@10 of the held-out HuggingFace requests and the MetaTool
held-out queries over `GET /v1/tools/search` with the general model and nothing learnt, after
the usage, and with the tenant's model; the training time, the training process's peak
memory, and the job's own comparison. A full run rewrites the generated block of the "A
tenant's own embedder" section of bench/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench._markdown import publish
from bench._stack import embedded_postgres, fresh_database
from bench.learning import (
    CUTOFFS,
    Scores,
    recall,
    service,
    usage_model,
    usage_requests,
    use,
)
from bench.retrieval_pools import Query, apibench_pools, metatool_pools
from tests.scripted_model import scripted_model
from tests.tool_server import http_tool, tool_server
from tools.spec import ToolSpec

SECTION = "## A tenant's own embedder"
PROBE_S = 90
"""How long turns keep running beside the training (it trains alone after)."""
MARKERS = ("<!-- tenant-model:begin -->", "<!-- tenant-model:end -->")


def _spec(spec: ToolSpec, url: str) -> dict[str, Any]:
    return http_tool(f"{url}/sleep", spec.name, spec.description, {"ms": {"type": "number"}},
                     [])


async def turns_latency(client: httpx.AsyncClient, texts: Sequence[str],
                        until: asyncio.Event | None = None) -> list[float]:
    """Turn latencies of these requests, 2 at a time (round and round until `until` is set,
    when given)."""
    times: list[float] = []
    queue = list(texts)

    async def worker() -> None:
        while queue and (until is None or not until.is_set()):
            text = queue.pop()
            if until is not None:
                queue.insert(0, text)
            conversation = (await client.post("/v1/conversations", json={})).json()["id"]
            started = time.perf_counter()
            response = await client.post(f"/v1/conversations/{conversation}/turns",
                                         json={"message": text})
            if response.status_code == 200:
                times.append(time.perf_counter() - started)

    await asyncio.gather(worker(), worker())
    return times


async def measure(data: Path, metatool: int, epochs: int, quick: bool) -> dict[str, Any]:
    hf = apibench_pools(data)[0]
    plain, _ = metatool_pools(data)
    hf_dev = [q for q in hf.queries if not q.held_out]
    hf_held = [q for q in hf.queries if q.held_out]
    mt_held = [q for q in plain.queries if q.held_out]
    if quick:
        hf_held, mt_held = hf_held[:100], mt_held[:100]
    requests = [(q.text, next(iter(q.relevant))) for q in hf_dev]
    taught = {tool for _, tool in requests}
    drawn = usage_requests(data, plain.queries, metatool + 40)
    requests += drawn[:metatool]
    wanted: dict[str, str] = {}
    for text, tool in requests:
        wanted.setdefault(text, tool)
    # The latency probe: other unscored MetaTool requests, run with learning off, so they
    # teach nothing.
    probe = [text for text, _ in drawn[metatool:] if text not in wanted]
    result: dict[str, Any] = {"pairs": len(requests)}
    wanted.update((text, tool) for text, tool in drawn[metatool:] if text in probe)
    async with tool_server() as tools, scripted_model(responder=usage_model(wanted)) as model:
        tools.keep = False
        with embedded_postgres() as postgres, tempfile.TemporaryDirectory() as folder:
            database = await fresh_database(postgres, "bench_tenant_model")
            async with service(database, folder, model.url) as (client, learner, _):
                specs = [_spec(s, tools.url) for s in [*hf.tools, *plain.tools]]
                (await client.post("/v1/tools/bulk", json={"tools": specs})).raise_for_status()
                result["general"] = await _scores(client, hf_held, mt_held, taught)
                await use(client, [(t, w) for t, w in wanted.items() if t not in probe], 6)
                await learner.settle()
                result["learnt"] = await _scores(client, hf_held, mt_held, taught)
                await client.put("/v1/retrieval/settings", json={"learning": False})
                result["latency_before"] = await turns_latency(client, probe)
                started = time.monotonic()
                job = (await client.post("/v1/retrieval/train",
                                         json={"epochs": epochs})).json()
                done = asyncio.Event()
                probing = asyncio.create_task(turns_latency(client, probe, done))
                while job["status"] == "running":
                    await asyncio.sleep(1)
                    job = (await client.get(f"/v1/retrieval/jobs/{job['id']}")).json()
                    if job["stage"] == "training" and job["progress"] > 0.06 and \
                            time.monotonic() - started > PROBE_S:
                        done.set()  # measured while it trained; the rest trains undisturbed
                done.set()
                result["latency_during"] = await probing
                result["train_s"] = time.monotonic() - started
                result["job"] = job
                result["child_rss_mib"] = resource.getrusage(
                    resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                result["tenant"] = await _scores(client, hf_held, mt_held, taught)
    return result


TAUGHT = "APIBench HuggingFace, tool learnt from"
UNTAUGHT = "APIBench HuggingFace, tool learnt nothing"
POOLS = ("APIBench HuggingFace", TAUGHT, UNTAUGHT, "MetaTool")


async def _scores(client: httpx.AsyncClient, hf: Sequence[Query], mt: Sequence[Query],
                  taught: set[str]) -> dict[str, Scores]:
    """Held-out recall, the HuggingFace requests also split by whether their tool was the
    answer of a dev request (and so has learned examples) or not."""
    return {"APIBench HuggingFace": await recall(client, hf),
            TAUGHT: await recall(client, [q for q in hf if q.relevant <= taught]),
            UNTAUGHT: await recall(client, [q for q in hf if not q.relevant <= taught]),
            "MetaTool": await recall(client, mt)}


def _ms(times: Sequence[float]) -> str:
    if not times:
        return "none"
    ordered = sorted(times)
    return (f"p50 {statistics.median(ordered) * 1000:.0f} ms, "
            f"p95 {ordered[int(0.95 * (len(ordered) - 1))] * 1000:.0f} ms ({len(times)} turns)")


def report(result: dict[str, Any], command: str) -> str:
    job = result["job"]
    comparison = job.get("comparison") or {}
    lines = [
        f"Command: `{command}`. Machine: 2 cores, CPU only ({platform.machine()}, Python "
        f"{platform.python_version()}). Date: {date.today().isoformat()}.",
        "",
        f"Usage: {result['pairs']:,} requests learnt from (the HuggingFace dev half and "
        "MetaTool usage). Training job: "
        f"{job['status']} after {result['train_s']:.0f} s (options {job['options']}); peak "
        f"memory of the training process {result['child_rss_mib']:.0f} MiB.",
        "",
        "The job's comparison on the held-out fifth of the tenant's examples: "
        + (f"{comparison['held_out']} examples, general R@1/R@5 "
           f"{comparison['current']['r1']:.3f}/{comparison['current']['r5']:.3f}, tenant model "
           f"{comparison['candidate']['r1']:.3f}/{comparison['candidate']['r5']:.3f}."
           if comparison else f"none ({job.get('error')})."),
        "",
        f"Turns while it trained: {_ms(result['latency_during'])}; the same turns before: "
        f"{_ms(result['latency_before'])}.",
        "",
        "| pool (held-out) | queries | general, nothing learnt | general, learnt | tenant model, "
        "learnt |",
        "|---|---|---|---|---|",
    ]
    for pool in POOLS:
        cells = []
        for when in ("general", "learnt", "tenant"):
            s: Scores = result[when][pool]
            cells.append("/".join(f"{s.recall[k]:.3f}" for k in CUTOFFS))
        lines.append(f"| {pool} | {result['general'][pool].queries:,} | " + " | ".join(cells)
                     + " |")
    lines += ["", "Cells are R@1/R@5/R@10."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--metatool", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="100 scored queries a pool")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.data, args.metatool, args.epochs, args.quick))
    command = (f".venv/bin/python -m bench.tenant_model --data ../shared/data --metatool "
               f"{args.metatool} --epochs {args.epochs}" + (" --quick" if args.quick else ""))
    publish(_marked(report(result, command)), quick=args.quick, heading=SECTION, markers=MARKERS)
    print(msgspec.json.encode(result["job"]).decode())


def _marked(block: str) -> str:
    """The block between its markers, so the next full run finds it."""
    return f"{MARKERS[0]}\n{block}\n{MARKERS[1]}"


if __name__ == "__main__":
    main()
