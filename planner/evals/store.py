"""Eval sets, runs and each case's outcome in Postgres, per tenant. A run's numbers are always
computed from the outcomes stored, so whatever finished before a restart is kept."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec

from planner._db import jsonb_text, new_id
from planner.evals.cases import EvalCase, EvalSetIn
from planner.evals.errors import EvalRunNotFound, EvalSetBusy, EvalSetExists, EvalSetNotFound
from planner.evals.outcomes import CaseOutcome
from planner.evals.requests import RunIn

RunStatus = Literal["running", "completed", "failed", "cancelled", "interrupted"]
FINISHED: tuple[RunStatus, ...] = ("completed", "failed", "cancelled", "interrupted")

_cases = msgspec.json.Decoder(list[EvalCase])
_run_in = msgspec.json.Decoder(RunIn)
_outcome = msgspec.json.Decoder(CaseOutcome)


class EvalSetSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    cases: int
    created_at: datetime


class EvalSet(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    cases: list[EvalCase]
    created_at: datetime


class RunRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant: str
    set_id: str
    request: RunIn
    status: RunStatus
    total: int
    done: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    set: str
    set_name: str
    status: RunStatus
    done: int
    total: int
    configs: list[str]
    created_at: datetime
    finished_at: datetime | None


class EvalStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- sets ------------------------------------------------------------------------------

    async def create_set(self, tenant: str, body: EvalSetIn) -> EvalSetSummary:
        try:
            row = await self.pool.fetchrow(
                """INSERT INTO eval_sets (tenant_id, id, name, cases, case_count)
                   VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING id, name, case_count, created_at""",
                tenant, new_id("evset"), body.name, jsonb_text(body.cases),
                len(body.cases))
        except asyncpg.UniqueViolationError as exc:
            raise EvalSetExists(body.name) from exc
        return _summary(row)

    async def list_sets(self, tenant: str) -> list[EvalSetSummary]:
        rows = await self.pool.fetch(
            """SELECT id, name, case_count, created_at FROM eval_sets WHERE tenant_id = $1
               ORDER BY created_at DESC, id""", tenant)
        return [_summary(r) for r in rows]

    async def get_set(self, tenant: str, set_id: str) -> EvalSet:
        row = await self.pool.fetchrow(
            """SELECT id, name, cases::text, created_at FROM eval_sets
               WHERE tenant_id = $1 AND id = $2""",
            tenant, set_id)
        if row is None:
            raise EvalSetNotFound(set_id)
        return EvalSet(id=row["id"], name=row["name"], cases=_cases.decode(row["cases"]),
                       created_at=row["created_at"])

    async def delete_set(self, tenant: str, set_id: str) -> None:
        """The set and its runs with their outcomes (the turns they ran stay)."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, status FROM eval_runs WHERE tenant_id = $1 AND set_id = $2
                   FOR UPDATE""", tenant, set_id)
            running = [r["id"] for r in rows if r["status"] == "running"]
            if running:
                raise EvalSetBusy(set_id, running)
            runs = [r["id"] for r in rows]
            await conn.execute("DELETE FROM eval_outcomes WHERE run_id = ANY($1::text[])", runs)
            await conn.execute("DELETE FROM eval_runs WHERE id = ANY($1::text[])", runs)
            done = await conn.execute(
                "DELETE FROM eval_sets WHERE tenant_id = $1 AND id = $2", tenant, set_id)
        if done == "DELETE 0":
            raise EvalSetNotFound(set_id)

    # -- runs ------------------------------------------------------------------------------

    async def create_run(self, tenant: str, request: RunIn, total: int, owner: str) -> str:
        run_id = new_id("evrun")
        await self.pool.execute(
            """INSERT INTO eval_runs (tenant_id, id, set_id, request, status, total, owner)
               VALUES ($1, $2, $3, $4::jsonb, 'running', $5, $6)""",
            tenant, run_id, request.set, jsonb_text(request), total, owner)
        return run_id

    async def get_run(self, tenant: str, run_id: str) -> RunRow:
        row = await self.pool.fetchrow(
            f"{_RUN_SELECT} WHERE r.tenant_id = $1 AND r.id = $2", tenant, run_id)
        if row is None:
            raise EvalRunNotFound(run_id)
        return _run(row)

    async def list_runs(self, tenant: str, limit: int = 100) -> list[RunSummary]:
        """The tenant's runs, newest first."""
        rows = await self.pool.fetch(
            f"""{_RUN_COLUMNS}, s.name AS set_name FROM eval_runs r
                JOIN eval_sets s ON s.id = r.set_id
                WHERE r.tenant_id = $1 ORDER BY r.created_at DESC, r.id LIMIT $2""",
            tenant, limit)
        return [RunSummary(id=row["id"], set=row["set_id"], set_name=row["set_name"],
                           status=row["status"], done=row["done"], total=row["total"],
                           configs=[c.name for c in _run_in.decode(row["request"]).configs],
                           created_at=row["created_at"], finished_at=row["finished_at"])
                for row in rows]

    async def add_outcome(self, tenant: str, run_id: str, outcome: CaseOutcome) -> None:
        await self.pool.execute(
            """INSERT INTO eval_outcomes (tenant_id, run_id, config, case_id, repeat, passed,
                                          outcome)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
               ON CONFLICT (run_id, config, case_id, repeat) DO NOTHING""",
            tenant, run_id, outcome.config, outcome.case_id, outcome.repeat, outcome.passed,
            jsonb_text(outcome))

    async def outcomes(
        self, tenant: str, run_id: str, *, config: str | None = None, passed: bool | None = None
    ) -> list[CaseOutcome]:
        rows = await self.pool.fetch(
            """SELECT outcome::text FROM eval_outcomes
               WHERE tenant_id = $1 AND run_id = $2 AND ($3::text IS NULL OR config = $3)
                 AND ($4::bool IS NULL OR passed = $4)
               ORDER BY config, case_id, repeat""", tenant, run_id, config, passed)
        return [_outcome.decode(r["outcome"]) for r in rows]

    async def finished_keys(self, run_id: str) -> set[tuple[str, str, int]]:
        rows = await self.pool.fetch(
            "SELECT config, case_id, repeat FROM eval_outcomes WHERE run_id = $1", run_id)
        return {(r["config"], r["case_id"], r["repeat"]) for r in rows}

    async def finish_run(self, run_id: str, status: RunStatus, error: str | None = None) -> None:
        """End a running run; one already ended (cancelled meanwhile) keeps its status."""
        await self.pool.execute(
            """UPDATE eval_runs SET status = $2, error = $3, finished_at = now()
               WHERE id = $1 AND status = 'running'""", run_id, status, error)

    async def cancel_run(self, tenant: str, run_id: str) -> RunRow:
        await self.pool.execute(
            """UPDATE eval_runs SET status = 'cancelled', finished_at = now()
               WHERE tenant_id = $1 AND id = $2 AND status = 'running'""", tenant, run_id)
        return await self.get_run(tenant, run_id)

    async def heartbeat(self, run_ids: list[str], owner: str) -> set[str]:
        """Renew this replica's runs; returns those still running (a run cancelled from any
        replica is not)."""
        rows = await self.pool.fetch(
            """UPDATE eval_runs SET heartbeat_at = now()
               WHERE id = ANY($1::text[]) AND owner = $2 AND status = 'running' RETURNING id""",
            run_ids, owner)
        return {r["id"] for r in rows}

    async def claim_orphans(self, owner: str, lease_s: float) -> list[RunRow]:
        """Runs whose replica stopped renewing them, now this replica's to finish."""
        rows = await self.pool.fetch(
            f"""WITH taken AS (
                  UPDATE eval_runs SET owner = $1, heartbeat_at = now()
                  WHERE status = 'running'
                    AND heartbeat_at < now() - make_interval(secs => $2)
                  RETURNING id)
                {_RUN_SELECT} WHERE r.id IN (SELECT id FROM taken)""", owner, lease_s)
        return [_run(r) for r in rows]


_RUN_COLUMNS = """SELECT r.id, r.tenant_id, r.set_id, r.request::text, r.status, r.total,
                         (SELECT count(*) FROM eval_outcomes o WHERE o.run_id = r.id) AS done,
                         r.error, r.created_at, r.finished_at"""
_RUN_SELECT = f"{_RUN_COLUMNS} FROM eval_runs r"


def _summary(row: Any) -> EvalSetSummary:
    return EvalSetSummary(id=row["id"], name=row["name"], cases=row["case_count"],
                          created_at=row["created_at"])


def _run(row: Any) -> RunRow:
    return RunRow(id=row["id"], tenant=row["tenant_id"], set_id=row["set_id"],
                  request=_run_in.decode(row["request"]), status=row["status"],
                  total=row["total"], done=row["done"], error=row["error"],
                  created_at=row["created_at"], finished_at=row["finished_at"])
