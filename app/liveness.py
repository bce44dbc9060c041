"""Liveness on a port of its own, answered from a thread: fast however much work the event loop
has queued, and truthful, because it says how long ago the loop last ran.

`/health` on the service's port is readiness. It is served by the same event loop as every
request (and asks the database), so a burst of a thousand requests delays it by as long as the
loop takes to work through them (bench/BENCHMARKS.md, "Liveness under load"): the right answer
for "send me traffic?", the wrong one for "restart me?". `GET /live` on LIVENESS_PORT answers
the second: 200 while the loop has run within `max_lag_s`, 503 once it has not (a handler that
holds the loop, a deadlock), which is when a supervisor should restart the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

BEAT_S = 0.1
"""How often the event loop marks that it ran."""


class LoopWatch:
    """When the event loop last ran, marked every BEAT_S by a task on it."""

    def __init__(self, max_lag_s: float) -> None:
        self.max_lag_s = max_lag_s
        self._beat = time.monotonic()

    async def run(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(BEAT_S)

    def lag_s(self) -> float:
        """How much later than due the loop's last mark is (0 while it keeps time)."""
        return max(0.0, time.monotonic() - self._beat - BEAT_S)

    def answer(self) -> tuple[int, dict[str, Any]]:
        lag = self.lag_s()
        if lag > self.max_lag_s:
            return 503, {"status": "stalled", "loop_lag_ms": round(lag * 1000, 1),
                         "detail": f"the event loop has not run for {lag:.1f} s; at most "
                                   f"{self.max_lag_s:g} s is live"}
        return 200, {"status": "ok", "loop_lag_ms": round(lag * 1000, 1)}


def _handler(watch: LoopWatch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # a client that sends nothing holds its own thread only, and not for long
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else the body waits 40 ms on the headers' ACK

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] == "/live":
                self._send(*watch.answer())
            else:
                self._send(404, {"status": "not found",
                                 "detail": "this port answers GET /live only"})

        def do_HEAD(self) -> None:
            self.do_GET()

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a probe every few seconds is not worth a log line

    return Handler


@contextlib.asynccontextmanager
async def liveness(host: str, port: int, max_lag_s: float) -> AsyncIterator[LoopWatch]:
    """Watch the running loop and answer `GET /live` on (host, port) from a thread, until the
    block ends."""
    watch = LoopWatch(max_lag_s)
    server = ThreadingHTTPServer((host, port), _handler(watch))
    server.daemon_threads = True
    beating = asyncio.create_task(watch.run(), name="liveness-beat")
    threading.Thread(target=server.serve_forever, name="liveness", daemon=True).start()
    log.info("liveness on http://%s:%d/live", host, port)
    try:
        yield watch
    finally:
        beating.cancel()
        await asyncio.to_thread(server.shutdown)
        server.server_close()
