"""Routing between a strong, expensive backend and a cheap one: accuracy and cost on held-out
BFCL cases of strong-only, cheap-only and routed (`"model": "auto"`), as the router's objective
moves, and what a routing decision costs.

    .venv/bin/python -m bench.routing [--data ../shared/data] [--quick]

The service runs in this process (create_app under uvicorn, an embedded Postgres, the real
embedder) with two scripted backends of known skill by kind of request: `strong` writes the
BFCL ground truth for every case (priced 3.00 / 15.00 per million input / output tokens);
`cheap` does too on single-call cases but drops an argument of the first call on multi-call
ones, so it fails them (priced 0.10 / 0.40). The cases are the first --cases BFCL questions,
a quarter from each of simple_python, multiple (single-call), parallel and parallel_multiple
(multi-call); a hash of each case's id puts it in the training half or the held-out half.

An eval run of the training half on both backends trains a router (POST /v1/routers) for each
objective; each is scored by an eval run of the held-out half with `"model": "auto"`, next to
one of strong and cheap alone. The router sees only the training run; the held-out cases are
never part of it. Decision time: `Routers.route` for each held-out message after the runs
(the message's embedding is the one its turn's retrieval already made).

A full run rewrites the generated block of the "Routing" section of bench/BENCHMARKS.md;
`--quick` only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import statistics
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import msgspec

from app.main import create_app
from app.settings import Settings
from bench._markdown import publish
from bench._stack import embedded_postgres, fresh_database
from bench.evals import bfcl_slice
from planner.evals.cases import EvalCase
from planner.routers import Routers
from tests.eval_models import case_model
from tests.loopback import serving
from tests.scripted_model import scripted_model
from tools.embed import SentenceTransformerEmbedder

SECTION = "## Routing"
BEGIN, END = "<!-- routing:begin -->", "<!-- routing:end -->"
ADMIN_KEY = "sbk_bench_routing_admin_key"
PRICES = {"strong": {"input": 3.0, "output": 15.0}, "cheap": {"input": 0.1, "output": 0.4}}
GOALS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
FULL_CASES, QUICK_CASES = 400, 120
TARGET_ACCURACY, TARGET_COST = 0.95, 0.50


def held_out(case: EvalCase) -> bool:
    return zlib.crc32(case.id.encode()) % 2 == 1


class Score(msgspec.Struct, frozen=True):
    accuracy: float
    cost: float
    """Per case, on average (as an eval run's results give it)."""


@contextlib.asynccontextmanager
async def service(database: str, data_dir: str, backends: dict[str, str]
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, Routers]]:
    listed = [{"name": n, "base_url": u, "price": PRICES[n]} for n, u in backends.items()]
    settings = Settings(database_url=database, model_url=backends["strong"],
                        data_dir_path=data_dir, register_builtins=False, admin_key=ADMIN_KEY,
                        egress_allowlist="127.0.0.0/8", model_backends=json.dumps(listed),
                        rate_limit_per_minute=0)
    app = create_app(settings, embedder=SentenceTransformerEmbedder())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    async with serving(app, lifespan="on") as server:
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, timeout=120, headers=auth) as client:
            yield client, app.state["routers"]


async def evaluate(client: httpx.AsyncClient, set_id: str, configs: list[dict[str, Any]]
                   ) -> tuple[str, dict[str, Score]]:
    started = await client.post("/v1/evals/runs", json={"set": set_id, "configs": configs,
                                                       "concurrency": 8})
    if started.status_code != 202:
        raise RuntimeError(f"starting a run: HTTP {started.status_code}: {started.text[:300]}")
    run_id = started.json()["id"]
    while True:
        report = (await client.get(f"/v1/evals/runs/{run_id}")).json()
        if report["status"] != "running":
            break
        await asyncio.sleep(0.5)
    if report["status"] != "completed":
        raise RuntimeError(f"run {run_id} ended {report['status']}: {report.get('error')}")
    return run_id, {r["config"]: Score(r["accuracy"], r["cost"]) for r in report["results"]}


async def measure(data: Path, count: int) -> dict[str, Any]:
    specs, cases = bfcl_slice(data, count)
    train = [c for c in cases if not held_out(c)]
    test = [c for c in cases if held_out(c)]
    multi = {i for i, c in enumerate(cases) if len(c.turns[0].expected_calls) > 1}
    started = time.monotonic()
    async with scripted_model(responder=case_model(cases, one_at_a_time=False)) as strong, \
            scripted_model(responder=case_model(cases, one_at_a_time=False,
                                                drops=lambda i: i in multi)) as cheap:
        with embedded_postgres() as postgres, tempfile.TemporaryDirectory() as folder:
            database = await fresh_database(postgres, "bench_routing")
            async with service(database, folder,
                               {"strong": strong.url, "cheap": cheap.url}) as (client, routers):
                # Catalogue-only tools: a mocked eval run answers their calls itself.
                await _post(client, "/v1/tools/bulk", {"tools": specs}, 200)
                sets = {}
                for name, chosen in (("train", train), ("held-out", test)):
                    made = await _post(client, "/v1/evals/sets", {
                        "name": name, "cases": msgspec.to_builtins(chosen)}, 201)
                    sets[name] = made["id"]
                both = [{"name": n, "model": n, "candidate_k": 16} for n in ("strong", "cheap")]
                train_run, trained_on = await evaluate(client, sets["train"], both)
                alone_run, alone = await evaluate(client, sets["held-out"], both)
                ideal = await _ideal(client, alone_run)
                curve = {}
                for goal in GOALS:
                    await _post(client, "/v1/routers", {
                        "name": "main", "eval_run": train_run,
                        "objective": {"min_accuracy": goal}}, 201)
                    _run, scored = await evaluate(client, sets["held-out"], [
                        {"name": "routed", "model": "auto", "candidate_k": 16}])
                    curve[goal] = scored["routed"]
                decisions = await _decision_times(routers, [c.turns[0].user for c in test])
    return {"cases": (len(train), len(test), len(specs)), "trained_on": trained_on,
            "alone": alone, "ideal": ideal, "curve": curve, "decisions": decisions,
            "seconds": time.monotonic() - started}


async def _ideal(client: httpx.AsyncClient, run_id: str) -> Score:
    """A router that knew each held-out case's outcomes: cheap wherever cheap was right, else
    strong. What no router can beat on these cases."""
    items = (await client.get(f"/v1/evals/runs/{run_id}/cases")).json()["items"]
    by_case: dict[str, dict[str, tuple[bool, float]]] = {}
    for item in items:
        cost = sum(t["cost"] for t in item["turns"])
        by_case.setdefault(item["case_id"], {})[item["config"]] = (item["passed"], cost)
    chosen = [tried["cheap"] if tried["cheap"][0] else tried["strong"]
              for tried in by_case.values()]
    return Score(accuracy=sum(p for p, _ in chosen) / len(chosen),
                 cost=sum(c for _, c in chosen) / len(chosen))


async def _decision_times(routers: Routers, messages: list[str]) -> list[float]:
    usable = {"strong", "cheap"}
    taken = []
    for message in messages:
        begun = time.perf_counter()
        await routers.route("default", message, usable)
        taken.append((time.perf_counter() - begun) * 1000)
    return taken


async def _post(client: httpx.AsyncClient, path: str, body: Any, status: int) -> Any:
    response = await client.post(path, json=body, timeout=900)
    if response.status_code != status:
        raise RuntimeError(f"POST {path}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


def report(found: dict[str, Any], quick: bool) -> str:
    train, test, tools = found["cases"]
    strong, cheap = found["alone"]["strong"], found["alone"]["cheap"]
    lines = [
        BEGIN,
        f"<!-- generated by bench/routing.py on {date.today()}; do not edit by hand -->",
        f"`.venv/bin/python -m bench.routing{' --quick' if quick else ''}`: {train} training "
        f"cases, {test} held-out, {tools} tools; {found['seconds']:.0f} s on {os.cpu_count()} "
        f"cores, Python {platform.python_version()}. Training run: strong "
        f"{found['trained_on']['strong'].accuracy:.3f}, cheap "
        f"{found['trained_on']['cheap'].accuracy:.3f} accuracy.",
        "",
        "| held-out | objective | accuracy | of strong's | cost a case | of strong's |",
        "|---|---|---|---|---|---|",
        f"| strong only | | {strong.accuracy:.3f} | 100% | {strong.cost:.4f} | 100% |",
        f"| cheap only | | {cheap.accuracy:.3f} | {cheap.accuracy / strong.accuracy:.0%} "
        f"| {cheap.cost:.4f} | {cheap.cost / strong.cost:.0%} |",
        f"| a router that knew the outcomes | | {found['ideal'].accuracy:.3f} "
        f"| {found['ideal'].accuracy / strong.accuracy:.0%} | {found['ideal'].cost:.4f} "
        f"| {found['ideal'].cost / strong.cost:.0%} |",
    ]
    met = []
    for goal, routed in found["curve"].items():
        share, spent = routed.accuracy / strong.accuracy, routed.cost / strong.cost
        if share >= TARGET_ACCURACY and spent <= TARGET_COST:
            met.append(goal)
        lines.append(f"| routed | min_accuracy {goal:g} | {routed.accuracy:.3f} | {share:.0%} "
                     f"| {routed.cost:.4f} | {spent:.0%} |")
    times = sorted(found["decisions"])
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    lines += [
        "",
        f"- Target (routed keeps >= {TARGET_ACCURACY:.0%} of strong-only accuracy at <= "
        f"{TARGET_COST:.0%} of its cost): "
        + (f"met at min_accuracy {', '.join(f'{g:g}' for g in met)}." if met else "not met."),
        f"- A routing decision takes {statistics.median(times):.3f} ms at the median, "
        f"{p99:.3f} ms at p99, over {len(times)} held-out messages (their embeddings made by "
        "their turns' retrieval).",
        END,
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--quick", action="store_true", help="fewer cases; print only")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    found = asyncio.run(measure(args.data, QUICK_CASES if args.quick else FULL_CASES))
    publish(report(found, args.quick), quick=args.quick, heading=SECTION, markers=(BEGIN, END))


if __name__ == "__main__":
    main()
