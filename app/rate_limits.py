"""Requests per minute per API key, counted in Postgres, so the limit holds however many replicas
share the traffic (a per-process count would let N replicas allow N times the limit).

A key's count for the current minute is one upsert per request. Over the limit, the request is
refused with a 429 problem and `Retry-After` (the seconds to the next minute); every answer
carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
"""

from __future__ import annotations

import math
from typing import Any

import asyncpg
from litestar.connection import ASGIConnection
from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import TooManyRequestsException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.auth import key_of

_COUNT = """
INSERT INTO rate_windows (key, window_start, count)
VALUES ($1, date_trunc('minute', now()), 1)
ON CONFLICT (key, window_start) DO UPDATE SET count = rate_windows.count + 1
RETURNING count, extract(epoch FROM date_trunc('minute', now()) + interval '1 minute' - now())
"""


async def count_request(pool: asyncpg.Pool, key: str) -> tuple[int, float]:
    """The key's requests this minute, this one counted, and the seconds until the next."""
    count, reset_s = await pool.fetchrow(_COUNT, key)
    return int(count), float(reset_s)


class SharedRateLimit(ASGIMiddleware):
    """At most `per_minute` requests per key per minute, across replicas."""

    def __init__(self, per_minute: int, exclude: list[str]) -> None:
        self.per_minute = per_minute
        self.exclude_path_pattern = tuple(exclude)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp
                     ) -> None:
        connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
        pool: asyncpg.Pool = connection.app.state.pool
        count, reset_s = await count_request(pool, key_of(connection))
        reset = max(1, math.ceil(reset_s))
        headers = {"RateLimit-Limit": str(self.per_minute),
                   "RateLimit-Remaining": str(max(0, self.per_minute - count)),
                   "RateLimit-Reset": str(reset)}
        if count > self.per_minute:
            raise TooManyRequestsException(
                f"this key made {self.per_minute} requests this minute, its limit "
                f"(RATE_LIMIT_PER_MINUTE, counted across replicas); retry in {reset} s",
                headers={**headers, "Retry-After": str(reset)})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                scoped = MutableScopeHeaders.from_message(message)
                for name, value in headers.items():
                    scoped.add(name, value)
            await send(message)

        await next_app(scope, receive, send_with_headers)
