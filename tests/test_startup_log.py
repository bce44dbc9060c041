"""What `python -m app serve` says, run as `make run` runs it on an empty DATA_DIR: one line for
each thing a person needs (where the data lives, the admin key on the first start, that the
model server is down, where it listens), and no library chatter."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from app.migrate import discover
from tests.loopback import free_port
from tests.test_readiness import connection_refused
from tools.builtins import builtin_specs

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
START_TIMEOUT_S = 120


@dataclass
class Run:
    stdout: list[str]
    log: list[str]
    """stderr's lines without their timestamps (each must have one)."""
    pid: int
    url: str
    model_url: str
    model_port: int


async def serve_once(data_dir: Path) -> Run:
    """Start the service, wait until it listens, stop it with SIGTERM; what it wrote."""
    port, model_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "ADMIN_KEY", "XDG_RUNTIME_DIR", "LIVENESS_PORT")}
    env.update(DATA_DIR=str(data_dir), HOST="127.0.0.1", PORT=str(port), LOG_LEVEL="INFO",
               MODEL_URL=f"http://127.0.0.1:{model_port}/v1", EMBEDDING_RUNTIME="torch",
               HF_HUB_OFFLINE="1")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "serve", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    stderr: list[str] = []
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            while not stderr or "listening on" not in stderr[-1]:
                line = await process.stderr.readline()
                assert line, f"the service stopped before it listened: {stderr}"
                stderr.append(line.decode().rstrip("\n"))
    finally:
        process.send_signal(signal.SIGTERM)
    out, rest = await asyncio.wait_for(process.communicate(), 60)
    stderr += rest.decode().splitlines()
    for line in stderr:
        assert TIMESTAMP.match(line), f"not a log line: {line!r}"
    return Run(stdout=out.decode().splitlines(), log=[TIMESTAMP.sub("", s) for s in stderr],
               pid=process.pid, url=f"http://127.0.0.1:{port}",
               model_url=f"http://127.0.0.1:{model_port}/v1", model_port=model_port)


def started(run: Run) -> list[str]:
    """The log up to and including the line that says where it listens; what follows (the
    stop, which SIGTERM may cut short) is checked by `stopped`."""
    at = next(i for i, line in enumerate(run.log) if "listening on" in line)
    stopped(run.log[at + 1:], run)
    return run.log[:at + 1]


def stopped(lines: list[str], run: Run) -> None:
    assert lines == ["INFO uvicorn.error: Shutting down",
                     f"INFO uvicorn.error: Finished server process [{run.pid}]"][:len(lines)]
    assert lines, "the stop was not logged"


def lines_after_the_database(run: Run) -> list[str]:
    return [
        f"WARNING switchboard: model backend 'default' at {run.model_url} is down "
        f"({connection_refused(run.model_port)}): chat routes answer 503 until it answers; "
        "GET /ready says when",
        f"INFO switchboard: ready: {len(builtin_specs())} tools indexed",
        f"INFO uvicorn.error: listening on {run.url} (API docs at {run.url}/docs)",
    ]


async def test_the_first_start_says_where_the_data_lives_the_admin_key_and_where_it_listens(
    tmp_path: Path,
) -> None:
    run = await serve_once(tmp_path / "data")
    last = discover()[-1]
    pgdata = (tmp_path / "data" / "postgres").resolve()
    assert started(run) == [
        "INFO tools.embed: embedding model all-MiniLM-L6-v2 (384 dimensions) runs on torch",
        f"INFO app.database: embedded Postgres: data in {pgdata} (created now)",
        f"INFO app.database: database schema: applied {last.number} migrations, now at "
        f"{last.number:04d}_{last.name}",
        *lines_after_the_database(run),
    ]
    key = (tmp_path / "data" / "admin.key").read_text().strip()
    assert run.stdout == [f"switchboard: created the admin key (shown once; also in "
                          f"{tmp_path / 'data' / 'admin.key'}): {key}"]


async def test_a_later_start_says_the_data_was_kept_and_prints_no_key(tmp_path: Path) -> None:
    await serve_once(tmp_path / "data")
    run = await serve_once(tmp_path / "data")
    pgdata = (tmp_path / "data" / "postgres").resolve()
    assert started(run) == [
        "INFO tools.embed: embedding model all-MiniLM-L6-v2 (384 dimensions) runs on torch",
        f"INFO app.database: embedded Postgres: data in {pgdata} (kept from an earlier start)",
        *lines_after_the_database(run),
    ]
    assert run.stdout == []
