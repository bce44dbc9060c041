"""`GET /ready` for load balancers: Postgres and every model backend asked, the answer kept a
few seconds so that balancers polling every replica do not hammer the model server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Mapping
from typing import Literal

import asyncpg
import httpx
import msgspec

from app.database import redact_url
from planner.model_client import ModelBackend, model_cards

READY_CACHE_S = 3.0
"""How long an answer is reused: a balancer polling each replica every second asks each model
server about once every three seconds per replica."""
CHECK_TIMEOUT_S = 2.0


class Check(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    status: Literal["ok", "down"]
    latency_ms: float
    detail: str | None = None
    """What failed, when down."""


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["ready", "unready"]
    detail: str
    """What is down, or that nothing is."""
    database: Check
    models: dict[str, Check]
    """Each model backend by name (GET /v1/models lists them)."""


class ReadinessProbe:
    """Asks the database and each backend's server at once, at most every `cache_s`; requests
    that arrive while it asks share the one answer."""

    def __init__(self, db: asyncpg.Pool, backends: Mapping[str, ModelBackend],
                 http: httpx.AsyncClient, *, cache_s: float = READY_CACHE_S) -> None:
        self.db, self.backends, self.http, self.cache_s = db, dict(backends), http, cache_s
        self._answer: tuple[float, Readiness] | None = None
        self._asking: asyncio.Task[Readiness] | None = None

    async def check(self) -> Readiness:
        if self._answer is not None and self._answer[0] > time.monotonic():
            return self._answer[1]
        if self._asking is None or self._asking.done():
            self._asking = asyncio.create_task(self._ask(), name="readiness")
        return await asyncio.shield(self._asking)

    async def _ask(self) -> Readiness:
        database, *models = await asyncio.gather(
            _timed(self.db.fetchval("SELECT 1")),
            *(_timed(self._model(b)) for b in self.backends.values()))
        answer = _readiness(database, dict(zip(self.backends, models, strict=True)), self.backends)
        self._answer = (time.monotonic() + self.cache_s, answer)
        return answer

    async def _model(self, backend: ModelBackend) -> None:
        response = await model_cards(backend, self.http, timeout_s=CHECK_TIMEOUT_S)
        if response.status_code != 200:
            raise ModelServerRefused(f"GET /models answered {response.status_code}")


class ModelServerRefused(Exception):
    """The model server answered, but not with its model list."""


async def _timed(asked: Awaitable[object]) -> Check:
    """Any failure to answer within CHECK_TIMEOUT_S is the check's answer, not an error of the
    request that asked."""
    start = time.perf_counter()
    detail: str | None = None
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await asked
    except TimeoutError:
        detail = f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # what went wrong is reported, whatever it was
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    latency = round((time.perf_counter() - start) * 1000, 1)
    return Check(status="ok" if detail is None else "down", latency_ms=latency, detail=detail)


def _readiness(database: Check, models: dict[str, Check],
               backends: Mapping[str, ModelBackend]) -> Readiness:
    down = [f"the database ({database.detail})"] if database.detail else []
    down += [f"model backend {name!r} at {redact_url(backends[name].base_url)} ({check.detail})"
             for name, check in models.items() if check.detail]
    if not down:
        return Readiness(status="ready", detail="every check is ok", database=database,
                         models=models)
    return Readiness(status="unready", detail=f"down: {'; '.join(down)}", database=database,
                     models=models)
