"""The pieces benchmarks stand the service up with: an embedded Postgres, fresh databases, and
the service (or a stand-in) as a process of its own on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx


class SetUpError(RuntimeError):
    """A process of the stack did not start, or a set-up request failed."""


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    import pgserver

    with tempfile.TemporaryDirectory(prefix="switchboard-bench-pg-") as tmp:
        server = pgserver.get_server(Path(tmp), cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


async def fresh_database(url: str, name: str) -> str:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, query = url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in `log`; interrupted (then killed) on the way out."""
    with log.open("wb") as out:
        child = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield child
        finally:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


async def wait_ready(
    url: str, child: subprocess.Popen[bytes], log: Path, within: float, status: int = 200
) -> None:
    """Until `url` answers with `status` (a server with no GET route: 404 means it is up)."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise SetUpError(f"{url} exited with {child.returncode}: "
                                 f"{log.read_text()[-800:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == status:
                    return
            await asyncio.sleep(0.2)
    raise SetUpError(f"{url} not ready after {within:.0f} s: {log.read_text()[-800:]}")


def service_env(
    *, database: str, model_url: str, port: int, data_dir: Path, admin_key: str,
    tracing: bool = True,
) -> dict[str, str]:
    """`python -m app serve` as a deployment runs it, for the tools and model on loopback: the
    given admin key, no rate limit, no builtin tools, warnings only in its log."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DATABASE_URL": database,
        "MODEL_URL": model_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATA_DIR": str(data_dir),
        "ADMIN_KEY": admin_key,
        "EGRESS_ALLOWLIST": "127.0.0.0/8",
        "REGISTER_BUILTINS": "false",
        "RATE_LIMIT_PER_MINUTE": "0",
        "LOG_LEVEL": "WARNING",
        "TRACING": "true" if tracing else "false",
    }


SERVE = [sys.executable, "-m", "app", "serve"]
