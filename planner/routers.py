"""The routers of each tenant: trained from an eval run and stored in Postgres; the latest one
decides where a `"model": "auto"` turn goes (planner/routing.py), and replaces the one before
it on every replica without a restart."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from planner._db import new_id
from planner.errors import PlannerError
from planner.evals.errors import EvalInvalid, EvalRunNotFound
from planner.evals.store import EvalStore
from planner.routing import (
    AUTO_MODEL,
    Objective,
    ReadyRouter,
    Route,
    Router,
    RouterIn,
    Trained,
    train,
)
from tools.errors import FieldError
from tools.registry import ToolRegistry

RECHECK_S = 5.0
"""How long a replica goes on with the router it holds before it asks whether a newer one
was made (on another replica)."""
_trained = msgspec.json.Decoder(Trained)
_objective = msgspec.json.Encoder()


class NoRouter(PlannerError):
    def __init__(self, tenant: str, stale: str | None = None) -> None:
        self.tenant = tenant
        if stale is None:
            super().__init__("model 'auto' needs a router, and this tenant has none: train one "
                             "from an eval run with POST /v1/routers")
        else:
            super().__init__(f"model 'auto' needs a router, and router {stale!r} knows none of "
                             "the backends configured now: train one from an eval run of "
                             "them with POST /v1/routers")


class RouterUntrainable(PlannerError):
    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"eval run {run_id!r} has no finished case to learn from; wait for it "
                         "to finish, or run the eval set again")


class RouterSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    eval_run: str
    objective: dict[str, Any]
    backends: list[str]
    cases: int
    created_at: datetime


class Routers:
    def __init__(self, pool: asyncpg.Pool, registry: ToolRegistry, evals: EvalStore) -> None:
        self.pool, self.registry, self.evals = pool, registry, evals
        self._ready: dict[str, tuple[ReadyRouter, float]] = {}

    async def create(self, tenant: str, body: RouterIn) -> RouterSummary:
        """Train a router from the eval run, store it (a router of the same name is
        replaced), and route the tenant's `auto` turns with it from now on."""
        objective = body.objective
        if (objective.min_accuracy is None) == (objective.max_cost is None):
            raise EvalInvalid("router", [FieldError(
                "/objective", 'give one goal: {"min_accuracy": 0.9} or {"max_cost": 0.002}')])
        try:
            run = await self.evals.get_run(tenant, body.eval_run)
        except EvalRunNotFound as exc:
            raise EvalInvalid("router", [FieldError(
                "/eval_run", f"{exc}; GET /v1/evals/runs lists this tenant's runs")]) from exc
        cases = (await self.evals.get_set(tenant, run.set_id)).cases
        # A configuration that was routed itself ("auto") says nothing of one backend.
        backend_of = {c.name: c.model or "default" for c in run.request.configs
                      if c.model != AUTO_MODEL}
        outcomes = [(backend_of[o.config], o.case_id, o.passed, _cost(o.turns))
                    for o in await self.evals.outcomes(tenant, body.eval_run)
                    if o.config in backend_of]
        tried = {case for _, case, *_ in outcomes}
        texts = {c.id: c.turns[0].user for c in cases if c.id in tried}
        if not texts:
            raise RouterUntrainable(body.eval_run)
        embedded = await self.registry.embedder.embed(list(texts.values()))
        vectors = dict(zip(texts, embedded, strict=True))
        trained = await asyncio.to_thread(train, texts, vectors, outcomes)
        router = Router(id=new_id("rtr"), name=body.name, eval_run=body.eval_run,
                        objective=body.objective, trained=trained)
        created = await self.pool.fetchval(
            """INSERT INTO routers (tenant_id, id, name, eval_run, objective, trained)
               VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)
               ON CONFLICT (tenant_id, name) DO UPDATE SET id = EXCLUDED.id,
                   eval_run = EXCLUDED.eval_run, objective = EXCLUDED.objective,
                   trained = EXCLUDED.trained, created_at = clock_timestamp()
               RETURNING created_at""",
            tenant, router.id, router.name, router.eval_run,
            _objective.encode(router.objective).decode(), msgspec.json.encode(trained).decode(),
        )
        self._ready[tenant] = (ReadyRouter(router), time.monotonic())
        return _summary(router, created)

    async def list(self, tenant: str) -> list[RouterSummary]:
        rows = await self.pool.fetch(
            f"{_SELECT} WHERE tenant_id = $1 ORDER BY created_at DESC", tenant)
        return [_summary(_router(r), r["created_at"]) for r in rows]

    async def route(self, tenant: str, message: str, usable: set[str]) -> Route:
        """Where a turn with this message goes, among the `usable` backends."""
        ready = await self._latest(tenant)
        if not usable & set(ready.router.trained.backends):
            raise NoRouter(tenant, ready.router.name)
        vector = await self.registry.vector_of(message)
        return ready.decide(vector, usable)

    async def _latest(self, tenant: str) -> ReadyRouter:
        held = self._ready.get(tenant)
        if held is not None and time.monotonic() - held[1] < RECHECK_S:
            return held[0]
        row = await self.pool.fetchrow(
            f"{_SELECT} WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 1", tenant)
        if row is None:
            self._ready.pop(tenant, None)
            raise NoRouter(tenant)
        if held is not None and held[0].router.id == row["id"]:
            ready = held[0]
        else:
            ready = ReadyRouter(_router(row))
        self._ready[tenant] = (ready, time.monotonic())
        return ready


_SELECT = """SELECT id, name, eval_run, objective::text, trained::text, created_at
             FROM routers"""


def _router(row: asyncpg.Record) -> Router:
    return Router(id=row["id"], name=row["name"], eval_run=row["eval_run"],
                  objective=msgspec.json.decode(row["objective"], type=Objective),
                  trained=_trained.decode(row["trained"]))


def _summary(router: Router, created_at: datetime) -> RouterSummary:
    return RouterSummary(id=router.id, name=router.name, eval_run=router.eval_run,
                         objective=msgspec.to_builtins(router.objective),
                         backends=router.trained.backends, cases=router.trained.cases,
                         created_at=created_at)


def _cost(turns: list[Any]) -> float | None:
    costs = [t.cost for t in turns]
    return None if any(c is None for c in costs) else float(sum(costs))
