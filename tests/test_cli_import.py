"""`switchboard tools import FILE` goes through the same write path as the bulk route."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRET_KEY

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SWITCHBOARD_BENCH_DATA", ROOT.parent / "shared" / "data"))
BFCL_SIMPLE = SHARED_DATA / "bfcl" / "question" / "BFCL_v4_simple_python.json"

FACTORIAL = {
    "name": "math.factorial",
    "description": "Calculate the factorial of a given number.",
    "parameters": {
        "type": "dict",
        "properties": {
            "number": {"type": "integer", "description": "The number."},
            "scale": {"type": "float", "description": "A factor."},
            "pair": {"type": "tuple", "items": {"type": "integer"}},
            "anything": {"type": "any", "description": "Any value."},
        },
        "required": ["number"],
    },
}


def run_import(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "HF_HUB_OFFLINE": "1",
           "SECRET_KEY": SECRET_KEY}
    return subprocess.run(
        [sys.executable, "-m", "app", "tools", "import", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_import_of_bfcl_functions_maps_types_and_names(
    tmp_path: Path, database_url: str, start_app: Callable[..., Any]
) -> None:
    path = tmp_path / "bfcl.jsonl"
    question = {
        "id": "q0",
        "question": [[{"role": "user", "content": "5!"}]],
        "function": [FACTORIAL],
    }
    path.write_text(json.dumps(question) + "\n" + json.dumps(question) + "\n")
    result = run_import(database_url, str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: 1 created, 0 updated, 0 unchanged"
    assert "embedding" in result.stderr  # the progress bar
    app = await start_app(database_url)
    tool = (await app.client.get("/v1/tools/math_factorial")).json()
    assert tool["parameters"] == {
        "type": "object",
        "properties": {
            "number": {"type": "integer", "description": "The number."},
            "scale": {"type": "number", "description": "A factor."},
            "pair": {"type": "array", "items": {"type": "integer"}},
            "anything": {"description": "Any value."},
        },
        "required": ["number"],
    }


async def test_import_with_a_bad_item_writes_nothing_and_lists_it(
    tmp_path: Path, database_url: str, start_app: Callable[..., Any]
) -> None:
    path = tmp_path / "tools.json"
    good = {"name": "ok_tool", "description": "fine"}
    bad = {"name": "broken", "description": "x", "parameters": {"type": "object", "required": 3}}
    path.write_text(json.dumps([good, bad]))
    result = run_import(database_url, str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{path}: nothing imported; 1 problem(s):",
        "  item 1 at /parameters/required: not a valid JSON Schema (2020-12): "
        "3 is not of type 'array'",
    ]
    app = await start_app(database_url)
    assert (await app.client.get("/v1/tools")).json()["items"] == []


def test_import_of_a_file_that_is_not_json_says_which_line(tmp_path: Path) -> None:
    path = tmp_path / "tools.jsonl"
    path.write_text('{"name": "a", "description": "b"}\n{oops\n')
    result = run_import("postgresql://unused@127.0.0.1:1/none", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"switchboard: {path}:2: not valid JSON: Expecting property name enclosed in double quotes"
    )


@pytest.mark.skipif(not BFCL_SIMPLE.exists(), reason=f"benchmark data not at {SHARED_DATA}")
async def test_with_bfcl_functions_registered_a_triangle_question_finds_the_triangle_tool(
    database_url: str, start_app: Callable[..., Any]
) -> None:
    result = run_import(database_url, str(BFCL_SIMPLE), "--on-duplicate", "first")
    assert result.returncode == 0, result.stderr
    app = await start_app(database_url)
    response = await app.client.get(
        "/v1/tools/search",
        params={"q": "Find the area of a triangle with a base of 10 units and height of 5 units."},
    )
    # simple_python holds three tools that all compute a triangle's area; they must lead.
    top3 = {hit["name"] for hit in response.json()["results"][:3]}
    assert top3 == {"calculate_triangle_area", "calc_area_triangle", "geometry_area_triangle"}
    assert (await app.client.get("/health")).json()["tools_indexed"] == 370
