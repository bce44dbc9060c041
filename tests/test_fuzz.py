"""Schemathesis against the service's own OpenAPI document, every check in every phase (the
stateful one follows the document's links): no 5xx, no response or status the document does
not declare, no invalid request accepted, no valid one refused but for the rules
tests/schemathesis.toml names. Bounded in examples; the app runs on loopback with a scripted
model."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import ADMIN_KEY
from tests.scripted_model import ScriptedReply, scripted_model

MAX_EXAMPLES = 30
CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 20261122


def st_command() -> list[str]:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    assert found, "schemathesis is not installed (it is in the dev extra: pip install -e '.[dev]')"
    return [found]


async def test_fuzzing_every_check_finds_no_fault(
    start_app: Callable[..., Any], database_url: str
) -> None:
    async with scripted_model(responder=lambda _body: ScriptedReply(content="ok")) as model:
        app = await start_app(database_url, model_url=model.url, register_builtins=True)
        process = await asyncio.create_subprocess_exec(
            *st_command(), "--config-file", str(CONFIG), "run", f"{app.url}/openapi.json",
            "-H", f"Authorization: Bearer {ADMIN_KEY}",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--no-color",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=600)
    report = output.decode()
    generated = re.search(r"(\d+) generated", report)
    assert process.returncode == 0, report[-6000:]
    assert generated and int(generated.group(1)) > 2000, report[-2000:]
