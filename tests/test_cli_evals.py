"""`switchboard evals`: a BFCL import makes a set and registers what is missing; a run's report
and chart are written; two runs are compared case by case."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner.evals.bfcl import bfcl_cases
from tests.conftest import SECRET_KEY
from tests.eval_models import ANSWERS, QUESTIONS, case_model
from tests.scripted_model import scripted_model

ROOT = Path(__file__).resolve().parents[1]


def evals_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1",
           "SECRET_KEY": SECRET_KEY}
    return subprocess.run([sys.executable, "-m", "app", "evals", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def write_lines(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


async def test_import_bfcl_makes_a_set_and_registers_only_missing_functions(
    tmp_path: Path, database_url: str, start_app: Callable[..., Any]
) -> None:
    questions = write_lines(tmp_path / "q.json", QUESTIONS)
    answers = write_lines(tmp_path / "a.json", ANSWERS)
    first = await asyncio.to_thread(evals_cli, database_url, "import-bfcl", str(questions),
                                    str(answers), "--set", "slice")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("eval set 'slice' (evset_")
    assert first.stdout.rstrip().endswith(": 8 cases; tools: 3 registered, 0 already there")
    assert "embedding" in first.stderr  # the progress bar

    folder = tmp_path / "bfcl"
    write_lines(folder / "question" / "BFCL_v4_parallel.json", QUESTIONS[4:6])
    write_lines(folder / "possible_answer" / "BFCL_v4_parallel.json", ANSWERS[4:6])
    again = await asyncio.to_thread(evals_cli, database_url, "import-bfcl", str(folder),
                                    "--set", "parallel")
    assert again.returncode == 0, again.stderr
    assert again.stdout.rstrip().endswith(": 2 cases; tools: 0 registered, 3 already there")

    app = await start_app(database_url)
    sets = (await app.client.get("/v1/evals/sets")).json()["items"]
    assert sorted((s["name"], s["cases"]) for s in sets) == [("parallel", 2), ("slice", 8)]
    parallel = next(s for s in sets if s["name"] == "parallel")
    read = (await app.client.get(f"/v1/evals/sets/{parallel['id']}")).json()
    assert [(c["id"], c["tags"]) for c in read["cases"]] == [
        ("parallel_0", ["parallel"]), ("parallel_1", ["parallel"])]
    tools = (await app.client.get("/v1/tools")).json()["items"]
    assert sorted(t["name"] for t in tools) == ["currency_convert", "time_in_zone",
                                                 "weather_current"]

    taken = await asyncio.to_thread(evals_cli, database_url, "import-bfcl", str(folder),
                                    "--set", "parallel")
    assert taken.returncode == 1
    assert "an eval set named 'parallel' already exists" in taken.stderr


async def test_report_writes_a_table_and_a_chart_and_compare_lists_changes(
    tmp_path: Path, database_url: str, start_app: Callable[..., Any]
) -> None:
    specs, cases = bfcl_cases(QUESTIONS, ANSWERS)
    async with scripted_model(responder=case_model(cases, one_at_a_time=False)) as model:
        app = await start_app(database_url, model_url=model.url)
        client = app.client
        await client.post("/v1/tools/bulk", json={"tools": specs})
        set_id = (await client.post("/v1/evals/sets", json={
            "name": "s", "cases": [json.loads(json.dumps(c, default=_builtins)) for c in cases]}
        )).json()["id"]
        runs = []
        for k in (16, 1):  # all tools offered, then one: retrieval misses some
            run_id = (await client.post("/v1/evals/runs", json={
                "set": set_id, "configs": [{"name": "c", "candidate_k": k}]})).json()["id"]
            while (await client.get(f"/v1/evals/runs/{run_id}")).json()["status"] == "running":
                await asyncio.sleep(0.05)
            runs.append(run_id)

    report = await asyncio.to_thread(evals_cli, database_url, "report", runs[1], "--out",
                                     str(tmp_path))
    assert report.returncode == 0, report.stderr
    markdown = (tmp_path / f"{runs[1]}.md").read_text()
    assert "| c (frontier) | 8 |" in markdown
    assert "## Failing cases" in markdown and "/viewer#trace=" in markdown
    assert (tmp_path / f"{runs[1]}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    compare = await asyncio.to_thread(evals_cli, database_url, "compare", runs[0], runs[1])
    assert compare.returncode == 0, compare.stderr
    lines = compare.stdout.splitlines()
    assert lines[0].startswith("8 cases in both runs: ")
    assert lines[0].endswith(" improved") and "0 improved" in lines[0]
    assert "regressed:" in lines and "improved:" in lines
    regressed = int(lines[0].split(": ")[1].split()[0])
    assert regressed > 0
    assert len([line for line in lines if line.startswith("  c ")]) == regressed

    missing = await asyncio.to_thread(evals_cli, database_url, "report", "evrun_nope")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "switchboard: eval run 'evrun_nope' not found"


def _builtins(value: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(value)
