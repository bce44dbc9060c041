"""Eval routes: sets of a tenant's own cases, runs of them under several configurations, each
case's outcome, and the configuration to deploy (the frontier)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT

from app.auth import require
from app.pages import Cursor, Limit, page_of
from app.tenancy import tenant_of
from planner.evals.cases import EvalSetIn
from planner.evals.frontier import Frontier, Objectives
from planner.evals.outcomes import CaseOutcome
from planner.evals.requests import RunIn
from planner.evals.service import Evals, RunReport
from planner.evals.store import FINISHED, EvalSet, EvalSetSummary, RunSummary

EvalsDep = NamedDependency[Evals]
PROGRESS_EVERY_S = 0.5
"""How often a run's SSE stream looks at its progress (read from Postgres, so any replica can
serve it)."""


class SetList(msgspec.Struct, frozen=True):
    items: list[EvalSetSummary]
    next_cursor: str | None = None


class RunList(msgspec.Struct, frozen=True):
    items: list[RunSummary]
    next_cursor: str | None = None
    """The newest 100."""


class RunStarted(msgspec.Struct, frozen=True):
    id: str


class CaseList(msgspec.Struct, frozen=True):
    items: list[CaseOutcome]
    next_cursor: str | None = None


_encoder = msgspec.json.Encoder()


class EvalController(Controller):
    path = "/v1/evals"
    tags = ["evals"]

    @post("/sets", status_code=HTTP_201_CREATED, guards=[require("evals:write")],
          summary="Create an eval set of cases")
    async def create_set(
        self, request: Request[Any, Any, Any], evals: EvalsDep, data: JSONBody[EvalSetIn]
    ) -> EvalSetSummary:
        return await evals.create_set(tenant_of(request), data)

    @get("/sets", guards=[require("evals:read")], summary="The tenant's eval sets, newest first")
    async def list_sets(self, request: Request[Any, Any, Any], evals: EvalsDep,
                        cursor: Cursor = None, limit: Limit = 50) -> SetList:
        return SetList(*page_of(await evals.sets(tenant_of(request)), _id, cursor, limit))

    @get("/sets/{set_id:str}", guards=[require("evals:read")], summary="An eval set's cases")
    async def get_set(
        self, request: Request[Any, Any, Any], evals: EvalsDep, set_id: FromPath[str]
    ) -> EvalSet:
        return await evals.get_set(tenant_of(request), set_id)

    @delete("/sets/{set_id:str}", status_code=HTTP_204_NO_CONTENT,
            guards=[require("evals:write")], summary="Delete an eval set and its runs")
    async def delete_set(
        self, request: Request[Any, Any, Any], evals: EvalsDep, set_id: FromPath[str]
    ) -> None:
        await evals.delete_set(tenant_of(request), set_id)

    @post("/runs", status_code=HTTP_202_ACCEPTED, guards=[require("evals:write")],
          summary="Run a set under several configurations")
    async def start_run(
        self, request: Request[Any, Any, Any], evals: EvalsDep, data: JSONBody[RunIn]
    ) -> RunStarted:
        return RunStarted(await evals.start_run(tenant_of(request), data))

    @get("/runs", guards=[require("evals:read")], summary="The tenant's runs, newest first")
    async def list_runs(self, request: Request[Any, Any, Any], evals: EvalsDep,
                        cursor: Cursor = None, limit: Limit = 50) -> RunList:
        return RunList(*page_of(await evals.runs(tenant_of(request)), _id, cursor, limit))

    @get("/runs/{run_id:str}", guards=[require("evals:read")],
         summary="A run's progress and each configuration's numbers (SSE with "
                 "Accept: text/event-stream)")
    async def get_run(
        self, request: Request[Any, Any, Any], evals: EvalsDep, run_id: FromPath[str]
    ) -> Response[Any]:
        tenant = tenant_of(request)
        report = await evals.report(tenant, run_id)
        if "text/event-stream" not in request.headers.get("accept", ""):
            return Response(report)
        return ServerSentEvent(_progress(evals, tenant, report))

    @post("/runs/{run_id:str}/cancel", status_code=200, guards=[require("evals:write")],
          summary="Cancel a run; what finished is kept")
    async def cancel_run(
        self, request: Request[Any, Any, Any], evals: EvalsDep, run_id: FromPath[str]
    ) -> RunReport:
        return await evals.cancel(tenant_of(request), run_id)

    @get("/runs/{run_id:str}/cases", guards=[require("evals:read")],
         summary="Each case's outcome, with why it failed and its turns and traces")
    async def list_cases(
        self, request: Request[Any, Any, Any], evals: EvalsDep, run_id: FromPath[str],
        config: Annotated[str | None, QueryParameter()] = None,
        passed: Annotated[bool | None, QueryParameter()] = None,
        cursor: Cursor = None, limit: Limit = 100,
    ) -> CaseList:
        found = await evals.cases(tenant_of(request), run_id, config=config, passed=passed)
        return CaseList(*page_of(found, _case_key, cursor, limit))

    @get("/runs/{run_id:str}/frontier", guards=[require("evals:read")],
         summary="The configurations no other beats, and the one to deploy")
    async def frontier(
        self, request: Request[Any, Any, Any], evals: EvalsDep, run_id: FromPath[str],
        min_accuracy: Annotated[float | None, QueryParameter(ge=0, le=1)] = None,
        max_p95_ms: Annotated[float | None, QueryParameter(ge=0)] = None,
        max_cost: Annotated[float | None, QueryParameter(ge=0)] = None,
    ) -> Frontier:
        objectives = Objectives(min_accuracy=min_accuracy, max_p95_ms=max_p95_ms,
                                max_cost=max_cost)
        return await evals.frontier(tenant_of(request), run_id, objectives)


async def _progress(
    evals: Evals, tenant: str, report: RunReport
) -> AsyncIterator[ServerSentEventMessage]:
    """A `progress` event each time more cases have finished, then `run.finished` with the
    numbers once the run has ended."""
    number, done = 1, -1
    while True:
        if report.status in FINISHED:
            yield ServerSentEventMessage(data=_encoder.encode(report).decode(),
                                         event="run.finished", id=str(number))
            return
        if report.progress.done != done:
            done = report.progress.done
            yield ServerSentEventMessage(data=_encoder.encode(report.progress).decode(),
                                         event="progress", id=str(number))
            number += 1
        await asyncio.sleep(PROGRESS_EVERY_S)
        report = await evals.report(tenant, report.id)


def _id(item: EvalSetSummary | RunSummary) -> str:
    return item.id


def _case_key(outcome: CaseOutcome) -> str:
    return f"{outcome.config}/{outcome.case_id}/{outcome.repeat}"
