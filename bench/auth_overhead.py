"""What API-key authentication costs per request: the key's hash and its indexed lookup in
Postgres, measured against the same request path without a key (401 before any lookup).

    .venv/bin/python -m bench.auth_overhead [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app.auth import ApiKeys
from app.main import create_app
from app.settings import Settings
from tests.loopback import LoopbackServer

KEY = "sbk_bench_admin_key_0123456789"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def timed(client: httpx.AsyncClient, path: str, headers: dict[str, str], n: int,
                expect: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = await client.get(path, headers=headers)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == expect, response.text
    return times


async def main(requests: int) -> None:
    import pgserver

    with tempfile.TemporaryDirectory() as tmp:
        server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
        try:
            settings = Settings(database_url=server.get_uri(), data_dir_path=tmp, admin_key=KEY,
                                register_builtins=False, rate_limit_per_minute=0)
            app = LoopbackServer(create_app(settings), lifespan="on")
            url = await app.start()
            async with httpx.AsyncClient(base_url=url) as client:
                auth = {"Authorization": f"Bearer {KEY}"}
                await timed(client, "/v1/models", auth, 50, 200)  # warm-up
                with_key, without = [], []
                for _ in range(requests // 100):  # interleaved, to cancel drift
                    with_key += await timed(client, "/v1/models", auth, 100, 200)
                    without += await timed(client, "/v1/models", {}, 100, 401)
                pool = app.server.config.app.state.pool
                lookups = []
                for _ in range(requests):
                    start = time.perf_counter()
                    assert await ApiKeys(pool).find(KEY) is not None
                    lookups.append((time.perf_counter() - start) * 1000)
            await app.stop()
        finally:
            server.cleanup()
    print(f"GET /v1/models, {len(with_key)} requests each, sequential, loopback:")
    print(f"  with a valid key: p50 {statistics.median(with_key):.3f} ms, "
          f"p99 {percentile(with_key, 0.99):.3f} ms")
    print(f"  without a key (401 before any lookup): p50 {statistics.median(without):.3f} ms, "
          f"p99 {percentile(without, 0.99):.3f} ms")
    print(f"  key lookup alone (hash + indexed SELECT): p50 {statistics.median(lookups):.3f} ms, "
          f"p99 {percentile(lookups, 0.99):.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="200 requests per way")
    args = parser.parse_args()
    asyncio.run(main(200 if args.quick else args.requests))
