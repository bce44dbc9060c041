"""BFCL's four non-live sets through the whole service against a real SGLang server, scored by
the eval runner, printed beside the served model's published BFCL scores. Run with
`make eval-live SGLANG_URL=http://host:30000/v1` (SGLANG_MODEL when the served model is not
"default"; EVAL_LIVE_CASES to cap the cases per set). Skipped without SGLANG_URL."""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from planner.evals.bfcl import bfcl_cases, read_lines
from planner.evals.cases import EvalCase

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not os.environ.get("SGLANG_URL"),
        reason="live eval suite: set SGLANG_URL (e.g. http://localhost:30000/v1) to run it",
    ),
]

DATA = Path(os.environ.get("SWITCHBOARD_BENCH_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data"))
SETS = ("simple_python", "multiple", "parallel", "parallel_multiple")
PUBLISHED = {"simple_python": 95.5, "multiple": 96.5, "parallel": 92.0,
             "parallel_multiple": 89.0}
"""Qwen3-8B (FC) on BFCL v4's leaderboard (2025-12-16), AST accuracy in percent."""


def bfcl() -> tuple[list[dict[str, Any]], list[EvalCase]]:
    limit = int(os.environ.get("EVAL_LIVE_CASES", "0")) or None
    taken: dict[str, dict[str, Any]] = {}
    cases: list[EvalCase] = []
    for name in SETS:
        questions = read_lines(DATA / "bfcl" / "question" / f"BFCL_v4_{name}.json")
        answers = read_lines(DATA / "bfcl" / "possible_answer" / f"BFCL_v4_{name}.json")
        cases += bfcl_cases(questions, answers, tag=name, taken=taken)[1][:limit]
    return list(taken.values()), cases


async def test_bfcl_through_the_service_beside_the_published_scores(
    start_app: Callable[..., Any], database_url: str
) -> None:
    if not (DATA / "bfcl").is_dir():
        pytest.skip(f"BFCL data not found under {DATA}; set SWITCHBOARD_BENCH_DATA")
    app = await start_app(database_url, model_url=os.environ["SGLANG_URL"],
                          model_name=os.environ.get("SGLANG_MODEL", "default"),
                          model_api_key=os.environ.get("SGLANG_API_KEY"))
    specs, cases = bfcl()
    client = app.client
    registered = await client.post("/v1/tools/bulk", json={"tools": specs}, timeout=1800)
    assert registered.status_code == 200, registered.text
    set_id = (await client.post("/v1/evals/sets", json={
        "name": "bfcl", "cases": msgspec.to_builtins(cases)})).json()["id"]
    run_id = (await client.post("/v1/evals/runs", json={
        "set": set_id, "concurrency": 16,
        "configs": [{"name": "auto", "temperature": 0.0}]})).json()["id"]
    while (report := (await client.get(f"/v1/evals/runs/{run_id}")).json())["status"] == \
            "running":
        await asyncio.sleep(2)
    assert report["status"] == "completed", report
    outcomes = (await client.get(f"/v1/evals/runs/{run_id}/cases")).json()["items"]
    by_set: dict[str, list[bool]] = defaultdict(list)
    for outcome in outcomes:
        by_set[outcome["tags"][0]].append(outcome["passed"])
    [result] = report["results"]
    print(f"\nBFCL through Switchboard ({len(outcomes)} cases; retrieval recall "
          f"{result['retrieval_recall']:.3f}, p95 {result['latency_ms']['p95']:.0f} ms):")
    for name in SETS:
        passed = by_set[name]
        print(f"  {name:18} {100 * sum(passed) / len(passed):5.1f}  "
              f"(published, all tools in the prompt: {PUBLISHED[name]})")
    assert result["failed_turns"] < len(outcomes) / 10
