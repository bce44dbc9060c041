"""Evals as the routes and the CLI use them: sets, runs, their numbers and the frontier. Each
is one call here."""

from __future__ import annotations

from collections import defaultdict

import msgspec

from planner.conversations import Conversations
from planner.evals.cases import EvalSetIn, case_errors
from planner.evals.errors import EvalConfigUnknown, EvalInvalid, EvalSetNotFound
from planner.evals.frontier import Frontier, Objectives, recommend
from planner.evals.outcomes import CaseOutcome, ConfigResult, summarise
from planner.evals.requests import RunIn, run_errors
from planner.evals.runner import EvalRunner
from planner.evals.store import (
    EvalSet,
    EvalSetSummary,
    EvalStore,
    RunRow,
    RunStatus,
    RunSummary,
)
from tools.errors import FieldError


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    done: int
    total: int


class RunReport(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    set: str
    status: RunStatus
    progress: Progress
    results: list[ConfigResult]
    error: str | None = None


class Evals:
    def __init__(self, store: EvalStore, runner: EvalRunner, conversations: Conversations
                 ) -> None:
        self.store, self.runner, self.conversations = store, runner, conversations

    async def create_set(self, tenant: str, body: EvalSetIn) -> EvalSetSummary:
        errors = case_errors(body.cases)
        if errors:
            raise EvalInvalid("eval set", errors)
        return await self.store.create_set(tenant, body)

    async def sets(self, tenant: str) -> list[EvalSetSummary]:
        return await self.store.list_sets(tenant)

    async def get_set(self, tenant: str, set_id: str) -> EvalSet:
        return await self.store.get_set(tenant, set_id)

    async def delete_set(self, tenant: str, set_id: str) -> None:
        await self.store.delete_set(tenant, set_id)

    async def start_run(self, tenant: str, request: RunIn) -> str:
        """Check the request, write the run, and start it on this replica."""
        backends = [b.name for b in self.conversations.backends()]
        errors = run_errors(request, backends)
        if errors:
            raise EvalInvalid("eval run", errors)
        try:
            found = await self.store.get_set(tenant, request.set)
        except EvalSetNotFound as exc:
            raise EvalInvalid("eval run", [FieldError(
                "/set", f"{exc}; GET /v1/evals/sets lists this tenant's sets")]) from exc
        total = len(found.cases) * len(request.configs) * request.repeats
        run_id = await self.store.create_run(tenant, request, total, self.runner.owner)
        self.runner.launch(await self.store.get_run(tenant, run_id), found.cases)
        return run_id

    async def runs(self, tenant: str) -> list[RunSummary]:
        return await self.store.list_runs(tenant)

    async def report(self, tenant: str, run_id: str) -> RunReport:
        return await run_report(self.store, tenant, run_id)

    async def cancel(self, tenant: str, run_id: str) -> RunReport:
        run = await self.store.cancel_run(tenant, run_id)
        if run.status == "cancelled":
            self.runner.cancel(run_id)
        return await self.report(tenant, run_id)

    async def cases(
        self, tenant: str, run_id: str, *, config: str | None, passed: bool | None
    ) -> list[CaseOutcome]:
        run = await self.store.get_run(tenant, run_id)
        if config is not None:
            _check_config(run, config)
        return await self.store.outcomes(tenant, run_id, config=config, passed=passed)

    async def frontier(self, tenant: str, run_id: str, objectives: Objectives) -> Frontier:
        return recommend((await self.report(tenant, run_id)).results, objectives)


async def run_report(store: EvalStore, tenant: str, run_id: str) -> RunReport:
    """The run's progress and each configuration's numbers, from the outcomes stored."""
    run = await store.get_run(tenant, run_id)
    outcomes = await store.outcomes(tenant, run_id)
    return RunReport(id=run.id, set=run.set_id, status=run.status,
                     progress=Progress(done=run.done, total=run.total),
                     results=_results(run, outcomes), error=run.error)


def _results(run: RunRow, outcomes: list[CaseOutcome]) -> list[ConfigResult]:
    """Each configuration's numbers, in the order the run named them."""
    by_config: dict[str, list[CaseOutcome]] = defaultdict(list)
    for outcome in outcomes:
        by_config[outcome.config].append(outcome)
    return [summarise(c.name, by_config[c.name]) for c in run.request.configs]


def _check_config(run: RunRow, name: str) -> None:
    names = [c.name for c in run.request.configs]
    if name not in names:
        raise EvalConfigUnknown(run.id, name, names)
