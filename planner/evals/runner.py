"""Eval runs: every case, under every configuration, as real turns of conversations of their
own (the same engine, retrieval and tracing as any turn), scored as each finishes. A run
belongs to the replica that renews it; one whose replica stopped is taken up by another,
which runs the cases that have no outcome yet."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from planner.conversations import Conversations
from planner.evals.cases import CaseTurn, EvalCase
from planner.evals.outcomes import CaseOutcome, Tokens, TurnOutcome
from planner.evals.requests import EvalConfig, RunIn
from planner.evals.scoring import MadeCall, Reason, score_turn
from planner.evals.store import EvalStore, RunRow
from planner.events import RetrievedTool, ToolCallRecord, ToolsRetrieved, TurnEvent, TurnResult
from planner.messages import Usage
from planner.model_client import ModelBackend
from planner.prompt import SEARCH_TOOLS
from planner.records import TurnRequest
from planner.tracing import detached
from planner.turn import StandIn
from tools.executors import ExecutableTool
from tools.registry import ToolRegistry
from tools.spec import ClientExecutor

log = logging.getLogger(__name__)

Job = tuple[EvalConfig, EvalCase, int]


class CaseResults(StandIn):
    """Answers a case's calls from its `tool_results` ({"ok": true} for a tool it does not
    name). `live` leaves to the tool every call that cannot change anything."""

    def __init__(self, results: dict[str, Any], *, live: bool) -> None:
        self.results, self.live = results, live
        self.label = "live" if live else "mocked"

    def answers(self, tool: ExecutableTool) -> bool:
        if not self.live:
            return True
        policy = tool.record.policy
        return (not policy.idempotent or policy.requires_approval
                or isinstance(tool.record.executor, ClientExecutor))

    def answer(self, tool: ExecutableTool) -> Any:
        return self.results.get(tool.record.name, {"ok": True})


class EvalRunner:
    def __init__(
        self, store: EvalStore, conversations: Conversations, registry: ToolRegistry, *,
        owner: str, lease_s: float,
    ) -> None:
        self.store, self.conversations, self.registry = store, conversations, registry
        self.owner, self.lease_s = owner, lease_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take up runs other replicas left, and keep this replica's runs renewed."""
        await self._adopt()
        self._watch = asyncio.create_task(self._keep_alive())

    async def stop(self) -> None:
        """Stop this replica's runs where they are: they stay `running`, so whichever replica
        next sees their lease lapse finishes them."""
        tasks = [t for t in (self._watch, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def launch(self, run: RunRow, cases: list[EvalCase]) -> None:
        with detached():  # its turns are traces of their own, not the launching request's
            task = asyncio.create_task(self._run(run, cases))
        self._tasks[run.id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run.id, None))

    def cancel(self, run_id: str) -> None:
        """Stop a run of this replica's at once (another replica's stops when it next renews
        its lease and finds the run cancelled)."""
        task = self._tasks.get(run_id)
        if task is not None:
            task.cancel()

    async def _adopt(self) -> None:
        for run in await self.store.claim_orphans(self.owner, self.lease_s):
            log.warning("eval run %s lost its replica; taking it up", run.id)
            found = await self.store.get_set(run.tenant, run.set_id)
            self.launch(run, found.cases)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(max(self.lease_s / 3, 0.05))
            try:
                running = await self.store.heartbeat(list(self._tasks), self.owner)
                for run_id, task in list(self._tasks.items()):
                    if run_id not in running:  # cancelled, from this replica or another
                        task.cancel()
                await self._adopt()
            except Exception:  # the database is away: say so, and try again next time
                log.exception("renewing this replica's eval runs failed")

    async def _run(self, run: RunRow, cases: list[EvalCase]) -> None:
        request = run.request
        done = await self.store.finished_keys(run.id)
        jobs = [(config, case, r) for config in request.configs for case in cases
                for r in range(request.repeats) if (config.name, case.id, r) not in done]
        parameters = await self._parameters(run.tenant, cases)
        waiting = iter(jobs)  # shared by the workers: each job is taken once

        async def worker() -> None:
            for job in waiting:
                outcome = await self._case(run.tenant, run.id, request, job, parameters)
                await self.store.add_outcome(run.tenant, run.id, outcome)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(request.concurrency, len(jobs))):
                    group.create_task(worker())
        except Exception as exc:  # a fault of the store or the engine: the run says so
            error = _first_error(exc)
            log.exception("eval run %s failed", run.id, exc_info=error)
            await self.store.finish_run(run.id, "failed", f"{type(error).__name__}: {error}")
            return
        await self.store.finish_run(run.id, "completed")

    async def _parameters(self, tenant: str, cases: list[EvalCase]) -> dict[str, Any]:
        """Each expected tool's parameters schema, as the registry holds it now."""
        wanted = {c.name for case in cases for turn in case.turns for c in turn.expected_calls}
        keys = [key for key in self.registry.keys(tenant) if key[1] in wanted]
        found = await self.registry.executables(tenant, keys)
        return {name: tool.record.parameters for (_ns, name), tool in found.items()}

    async def _case(
        self, tenant: str, run_id: str, request: RunIn, job: Job, parameters: dict[str, Any]
    ) -> CaseOutcome:
        config, case, repeat = job
        stand_in = CaseResults(case.tool_results, live=request.executor == "live")
        conversation = await self.conversations.create(
            tenant, {"eval_case": case.id, "eval_config": config.name, "eval_repeat": repeat},
            eval_run=run_id)
        turns: list[TurnOutcome] = []
        for turn in case.turns:
            outcome = await self._turn(tenant, conversation.id, config, turn, stand_in,
                                       parameters)
            turns.append(outcome)
            if outcome.status != "completed":
                break  # later turns would build on one that did not finish
        passed = len(turns) == len(case.turns) and all(t.passed for t in turns)
        return CaseOutcome(config=config.name, case_id=case.id, repeat=repeat, passed=passed,
                           conversation_id=conversation.id, turns=turns, tags=case.tags)

    async def _turn(
        self, tenant: str, conversation_id: str, config: EvalConfig, turn: CaseTurn,
        stand_in: CaseResults, parameters: dict[str, Any],
    ) -> TurnOutcome:
        offered: list[RetrievedTool] = []

        async def note(event: TurnEvent) -> None:
            if isinstance(event, ToolsRetrieved):
                offered.extend(event.tools)

        request = TurnRequest(message=turn.user, mode=config.mode, model=config.model,
                              max_steps=config.max_steps, candidate_k=config.candidate_k,
                              temperature=config.temperature, thinking=config.thinking)
        started = time.perf_counter()
        result = await self.conversations.run(tenant, conversation_id, request, emit=note,
                                              stand_in=stand_in)
        latency_ms = (time.perf_counter() - started) * 1000
        trace_id = await self.conversations.trace_id(tenant, result.id)
        return _scored(turn, result, offered, parameters, latency_ms, trace_id,
                       _cost_of(self.conversations.backend))


def _scored(
    turn: CaseTurn, result: TurnResult, offered: list[RetrievedTool],
    parameters: dict[str, Any], latency_ms: float, trace_id: str | None,
    cost_of: Callable[[dict[str, Usage]], float | None],
) -> TurnOutcome:
    # A call of a tool the turn did not offer was refused, not made: it does not count.
    calls = [c for c in result.tool_calls
             if c.name != SEARCH_TOOLS and c.error_type != "unknown_tool"]
    answer = result.message.content if result.message is not None else None
    score = score_turn(turn, [MadeCall(name=c.name, arguments=c.arguments) for c in calls],
                       parameters, answer)
    reasons = list(score.reasons)
    together = _together(calls) if len(turn.expected_calls) > 1 else None
    if turn.order == "parallel" and together is False:
        reasons.append(Reason(kind="not_parallel", detail="the calls were made one after "
                              "another; the case wants them dispatched together"))
    if result.status != "completed":
        title = result.error.detail if result.error is not None else result.status
        reasons.insert(0, Reason(kind="turn_failed", detail=f"the turn ended {result.status}: "
                                                            f"{title}"))
    names = list(dict.fromkeys(t.name for t in offered))
    expected = {c.name for c in turn.expected_calls}
    usage = result.usage
    return TurnOutcome(
        turn_id=result.id, trace_id=trace_id, status=result.status,
        passed=not reasons, expected=score.expected, matched=score.matched, reasons=reasons,
        candidates=names,
        retrieval_recall=len(expected & set(names)) / len(expected) if expected else None,
        parallel=together,
        latency_ms=round(latency_ms, 3),
        tokens=Tokens(prompt=usage.prompt_tokens, completion=usage.completion_tokens,
                      cached=usage.cached_tokens or 0),
        cost=cost_of(result.usage_by_backend or {"default": usage}),
    )


def _together(calls: list[ToolCallRecord]) -> bool:
    """Whether the calls were dispatched together: all in one step (one reply, or one plan),
    none waiting on another's output."""
    ids = {c.id for c in calls}
    return (len(calls) > 1 and len({c.step for c in calls}) == 1
            and not any(set(c.depends_on) & ids for c in calls))


def _cost_of(backend: Callable[[str], ModelBackend]
             ) -> Callable[[dict[str, Usage]], float | None]:
    """A turn's cost: each backend's tokens (the turn's own, its expert tools') at that
    backend's price; None when one of them has no price."""

    def cost(spent: dict[str, Usage]) -> float | None:
        total = 0.0
        for name, usage in spent.items():
            price = backend(name).price
            if price is None:
                return None
            cached = usage.cached_tokens or 0
            total += ((usage.prompt_tokens - cached) * price.input
                      + cached * price.cached_input_or_input
                      + usage.completion_tokens * price.output) / 1_000_000
        return total

    return cost


def _first_error(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
