"""Service replicas as real processes (`python -m app serve`) on one database, for tests that
kill or stop them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.conftest import ADMIN_KEY, AUTH, SECRET_KEY
from tests.loopback import free_port

ROOT = Path(__file__).resolve().parents[1]


class Replica:
    """One service process; `client` talks to it with the admin key."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str) -> None:
        self.proc, self.url = proc, url
        self.client = httpx.AsyncClient(base_url=url, timeout=120, headers=AUTH)

    async def healthy(self, timeout_s: float = 120) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            assert self.proc.poll() is None, "the service exited during start-up"
            with contextlib.suppress(httpx.TransportError):
                if (await self.client.get("/health")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the service at {self.url} did not become healthy")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def exited(self, timeout_s: float = 60) -> int:
        """Wait for the process to end; its exit code."""
        return await asyncio.to_thread(self.proc.wait, timeout_s)

    async def close(self) -> None:
        await self.client.aclose()
        if self.proc.poll() is None:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)


@contextlib.asynccontextmanager
async def replicas(
    count: int, database_url: str, model_url: str, data_dir: Path, **env: str
) -> AsyncIterator[list[Replica]]:
    """`count` replicas on one database, healthy, stopped (killed if need be) at the end."""
    started: list[Replica] = []
    try:
        for n in range(count):
            port = free_port()
            values = {
                **os.environ, "DATABASE_URL": database_url, "MODEL_URL": model_url,
                "PORT": str(port), "REGISTER_BUILTINS": "false", "DATA_DIR": str(data_dir),
                "HF_HUB_OFFLINE": "1", "ADMIN_KEY": ADMIN_KEY, "EGRESS_ALLOWLIST": "127.0.0.1",
                "LOG_LEVEL": "WARNING", "SECRET_KEY": SECRET_KEY, **env,
            }
            log = (data_dir / f"replica-{n}.log").open("wb")
            proc = subprocess.Popen([sys.executable, "-m", "app", "serve"], cwd=ROOT, env=values,
                                    stdout=log, stderr=subprocess.STDOUT)
            started.append(Replica(proc, f"http://127.0.0.1:{port}"))
        await asyncio.gather(*(r.healthy() for r in started))
        yield started
    finally:
        for replica in started:
            await replica.close()


def sigkill(replica: Replica) -> None:
    replica.signal(signal.SIGKILL)


def sigterm(replica: Replica) -> None:
    replica.signal(signal.SIGTERM)
