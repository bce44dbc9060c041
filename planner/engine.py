"""The turn engine: retrieve candidate tools, ask the model, run the calls, answer.

Streaming and non-streaming turns run the same code: `run_turn` reports every step to an event
sink; the SSE route forwards the events, the JSON route ignores them and returns the result.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import msgspec
from opentelemetry import trace
from opentelemetry.trace import Span, format_span_id, format_trace_id

from planner.calls import CallRunner, WaitLimits
from planner.candidates import Candidates
from planner.errors import (
    CallNotWaiting,
    DecisionInvalid,
    ModelResponseError,
    PlannerError,
    UnknownModel,
)
from planner.events import (
    PendingCall,
    PlanCreated,
    Problem,
    Takeover,
    TurnCompleted,
    TurnFailed,
    TurnPaused,
    TurnResult,
    TurnResumed,
    TurnStarted,
    TurnTakenOver,
    answer_message,
    usage_by_backend,
)
from planner.learning import TurnLearning
from planner.messages import (
    ChatMessage,
    ModelReply,
    ToolChoice,
)
from planner.model_calls import ModelCalls
from planner.model_client import ChatModel
from planner.plan import Plan, PlanProblem, loose_plan_schema, parse_plan, plan_schema
from planner.plan_dispatch import PlanDispatch
from planner.prompt import (
    READ_RESULT,
    REPLAN,
    SEARCH_TOOLS,
    SYSTEM_AUTO,
    SYSTEM_PLAN,
    close_dangling_calls,
    fit_history,
)
from planner.quotas import TokenQuotas
from planner.records import (
    Approved,
    ClientOutput,
    Decision,
    SavedTurn,
    StoredMessage,
    TurnRequest,
    Waiting,
)
from planner.recovery import finish_unfinished
from planner.request_tools import check_request, offered, reply_choice
from planner.routing import AUTO_MODEL, Route
from planner.statuses import TurnStatus
from planner.tracing import TurnTracer
from planner.transcripts import NOTE_PREFIX
from planner.turn import EventSink, StandIn, TurnState, ignore
from planner.turn_store import TurnStore
from tools.errors import FieldError
from tools.executors import ToolRunner
from tools.registry import ToolRegistry
from tools.spec import ToolRecord

log = logging.getLogger(__name__)
_T = TypeVar("_T")

CONTEXT_REQUESTS = 2
"""Earlier user messages that weigh in on a turn's retrieval, the last at the most."""

__all__ = ["EngineSettings", "TurnEngine", "TurnRequest"]


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True):
    candidate_k: int = 8
    max_steps: int = 8
    max_replans: int = 2
    max_plan_steps: int = 16
    max_parallel_calls: int = 16
    history_token_budget: int = 8000
    tool_output_chars_in_history: int = 2000
    eager_plans: bool = True
    """A streamed plan's steps start as their JSON objects complete, before the plan does."""
    join_model: str | None = None
    """The backend of plan turns' joins and answers, when not the plan's own (JOIN_MODEL)."""
    turn_lease_s: float = 10.0
    """How long a running turn outlives its last heartbeat (renewed every third of it) before
    another replica takes it over; see README, "Running several replicas"."""
    approval_timeout_s: float = 86_400.0
    client_tool_timeout_s: float = 600.0


class Auto(enum.Enum):
    AUTO = "auto"


AUTO = Auto.AUTO
"""What `_make_plan` returns when the turn goes on in auto mode."""

ProblemOf = Callable[[Exception], Problem]
"""How the error that ended a turn reads to its clients (the service's app/problems.py)."""


class TurnEngine:
    def __init__(
        self, store: TurnStore, registry: ToolRegistry, runner: ToolRunner,
        models: dict[str, ChatModel], *, default_model: str, settings: EngineSettings,
        owner: str, problem_of: ProblemOf, tracer: TurnTracer | None = None,
        quotas: TokenQuotas | None = None, learner: TurnLearning | None = None,
    ) -> None:
        self.store, self.registry = store, registry
        self.learner = learner
        """Learns retrieval examples from each completed turn; None: nothing is learnt."""
        """`store` is where turns are written as they run."""
        self.problem_of = problem_of
        self.quotas = quotas
        """Token quotas per tenant and backend; None: none."""
        self.models, self.default_model = models, default_model
        self.settings, self.owner = settings, owner
        self.running: dict[str, asyncio.Task[Any]] = {}
        """The turns this engine is running now, by id; the supervisor renews their leases."""
        self.tracer = tracer or TurnTracer()
        self.runner = runner
        waits = WaitLimits(approval_s=settings.approval_timeout_s,
                           output_s=settings.client_tool_timeout_s)
        self.candidates = Candidates(registry, store, self.tracer, settings.candidate_k)
        self.model_calls = ModelCalls(models, store, self.tracer)

        self.calls = CallRunner(runner, self.candidates.more, self.tracer,
                                max_parallel=settings.max_parallel_calls, waits=waits)

    def model_for(self, name: str | None) -> ChatModel:
        key = name or self.default_model
        if key not in self.models:
            raise UnknownModel(key, sorted(self.models))
        return self.models[key]

    def check_request(self, request: TurnRequest) -> None:
        """Refuse a turn whose own tools or tool choice cannot be honoured, before anything of
        it is written (planner/request_tools.py)."""
        auto = request.model == AUTO_MODEL
        check_request(request, None if auto else self.model_for(request.model).backend)

    async def open_conversation(
        self, tenant: str, metadata: dict[str, Any], history: list[ChatMessage],
        model: str | None = None,
    ) -> str:
        """A new conversation that already holds `history` (user and assistant messages a
        client had before), written together: both or neither."""
        backend = self.model_for(model).backend.name
        return await self.store.open_conversation(tenant, metadata, history, model=backend,
                                                  owner=self.owner)

    async def start_turn(self, tenant: str, conversation_id: str, request: TurnRequest,
                         route: Route | None = None) -> str:
        """Write the running turn (with the router's decision that chose its backend, if one
        did) and its user message; raises TurnConflict if one runs."""
        model = self.model_for(request.model)
        join = self._join_model(request)  # an unknown one is refused before the turn is written
        check_request(request, model.backend)
        if self.quotas is not None:
            for backend in {model.backend.name, *([join.backend.name] if join else [])}:
                await self.quotas.check(tenant, backend)
        if self.candidates.ranks(tenant, request.candidate_k):
            # The message is the turn's first search: it is embedded while the turn is written.
            self.registry.prefetch(tenant, request.message)
        return await self.store.begin_turn(tenant, conversation_id, request,
                                           model=model.backend.name, owner=self.owner,
                                           route=route)

    async def run_turn(
        self, tenant: str, conversation_id: str, turn_id: str, request: TurnRequest,
        emit: EventSink = ignore, stand_in: StandIn | None = None, *,
        route: Route | None = None,
    ) -> TurnResult:
        """Run a started turn to its end; failures are recorded and reported, never raised.
        `stand_in` answers the calls it takes in place of their tools (eval runs); `route` is
        the router's decision that chose its backend."""
        turn = self._turn_state(tenant, conversation_id, turn_id, request, emit)
        turn.stand_in, turn.route = stand_in, route
        await emit(TurnStarted(turn_id=turn_id, conversation_id=conversation_id,
                               mode=request.mode, model=turn.model.backend.name))
        return await self._traced(turn, self._run, None)

    async def resume_turn(self, tenant: str, turn_id: str, emit: EventSink = ignore
                          ) -> TurnResult:
        """Take up a turn whose waiting calls all have answers (`decide` returned none left,
        or their deadlines passed): finish its paused step and go on to its end."""
        saved = await self.store.load_paused(tenant, turn_id)
        turn = self._turn_state(tenant, saved.conversation_id, turn_id, saved.request, emit)
        turn.usage, turn.step, turn.plans = saved.usage, saved.step, list(saved.plans)
        await emit(TurnResumed(turn_id=turn_id, conversation_id=saved.conversation_id))

        async def resume(turn: TurnState) -> str | None:
            await self._restore(turn, saved)
            await self.calls.settle(turn, saved.calls)
            return await self._loop(turn, resumed=True)

        return await self._traced(turn, resume, saved.traceparent)

    async def take_over(self, tenant: str, turn_id: str, takeover: Takeover,
                        emit: EventSink = ignore) -> TurnResult:
        """Finish a turn this replica took over from one that is gone, from what it had
        stored: the calls of its last reply end first (planner/recovery.py), then it goes on
        to its end as any turn does."""
        saved = await self.store.load_taken(tenant, turn_id)
        turn = self._turn_state(tenant, saved.conversation_id, turn_id, saved.request, emit)
        turn.usage, turn.step, turn.plans = saved.usage, saved.step, list(saved.plans)
        turn.takeovers = saved.takeovers
        await emit(TurnTakenOver(turn_id=turn_id, conversation_id=saved.conversation_id,
                                 takeover=takeover))
        if saved.traceparent is not None and not saved.root_ended:
            self.tracer.lost_root(
                traceparent=saved.traceparent, started_at=saved.started_at, tenant=tenant,
                conversation_id=saved.conversation_id, turn_id=turn_id,
                mode=saved.request.mode, model=turn.model.backend.model,
                replica=takeover.previous)

        async def go_on(turn: TurnState) -> str | None:
            await self._restore(turn, saved)
            if not saved.candidates and turn.request.tool_choice != "none":
                await self.candidates.first(turn, await self.store.last_candidates(
                    tenant, turn.conversation_id, turn_id))
            await finish_unfinished(self.calls, turn, saved.calls)
            return await self._loop(turn, resumed=bool(turn.plans))

        return await self._traced(turn, go_on, saved.traceparent, taken_from=takeover.previous)

    async def decide(self, tenant: str, turn_id: str, call_id: str, decision: Decision
                     ) -> list[PendingCall]:
        """Record a person's decision or a client tool's output for a waiting call. Edited
        arguments must fit the tool's schema. Returns the calls still waiting; when none are
        left, the turn is this replica's to resume (`resume_turn`)."""
        waiting = await self.store.waiting_call(tenant, turn_id, call_id)
        _check_answer_kind(turn_id, waiting.call, decision)
        if isinstance(decision, Approved) and decision.arguments is not None:
            await self._check_edited(tenant, turn_id, waiting, decision.arguments)
        return await self.store.decide(tenant, turn_id, call_id, decision, self.owner)

    async def _check_edited(self, tenant: str, turn_id: str, waiting: Waiting,
                            arguments: dict[str, Any]) -> None:
        if waiting.namespace is None or waiting.version is None:
            return
        found = await self.registry.executables_at(
            tenant, [(waiting.namespace, waiting.call.name, waiting.version)])
        tool = found.get((waiting.namespace, waiting.call.name))
        problem = None if tool is None else self.runner.argument_problem(tool, arguments)
        if problem is not None:
            raise DecisionInvalid(
                f"the edited arguments of call {waiting.call.id!r} of turn {turn_id!r} do not "
                f"fit tool {waiting.call.name!r}: {problem}; send arguments its parameters "
                "schema accepts",
                [FieldError(pointer="/arguments", message=problem)],
            )

    def _turn_state(self, tenant: str, conversation_id: str, turn_id: str,
                    request: TurnRequest, emit: EventSink) -> TurnState:
        max_steps = min(request.max_steps or self.settings.max_steps, self.settings.max_steps)
        turn = TurnState(self.store, tenant, conversation_id, turn_id, request,
                         self.model_for(request.model), emit, max_steps)
        turn.join = self._join_model(request)
        turn.tools.update(offered(request, tenant))  # first: the same bytes on every step
        return turn

    def _join_model(self, request: TurnRequest) -> ChatModel | None:
        """The backend of a plan turn's joins (and so of its answer), when it is not the
        plan's: the request's `join_model`, else JOIN_MODEL."""
        name = request.join_model or self.settings.join_model
        return None if request.mode != "plan" or name is None else self.model_for(name)

    async def _traced(
        self, turn: TurnState, work: Callable[[TurnState], Awaitable[str | None]],
        traceparent: str | None, taken_from: str | None = None,
    ) -> TurnResult:
        with self.tracer.turn(tenant=turn.tenant, conversation_id=turn.conversation_id,
                              turn_id=turn.id, mode=turn.request.mode,
                              model=turn.model.backend.model, message=turn.request.message,
                              redact=turn.redactor(), traceparent=traceparent,
                              taken_from=taken_from) as span:
            if traceparent is None:
                turn.traceparent = _traceparent(span)
            if turn.route is not None:
                self.tracer.route(span, turn.route)
            task = asyncio.current_task()
            assert task is not None, "a turn runs in a task"
            self.running[turn.id] = task
            try:
                result = await self._run_guarded(turn, work)
            finally:
                self.running.pop(turn.id, None)
                if self.quotas is not None:
                    await self._charge(turn)
            self.tracer.turn_result(span, result, turn.redactor())
            return result

    async def _charge(self, turn: TurnState) -> None:
        """What this run spent counts against the tenant's quotas (however the run ended)."""
        assert self.quotas is not None
        try:
            await asyncio.shield(self.quotas.spend(turn.tenant, turn.charged))
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("could not count the tokens turn %s spent against its quota: %s",
                        turn.id, exc)

    async def _run_guarded(
        self, turn: TurnState, work: Callable[[TurnState], Awaitable[str | None]]
    ) -> TurnResult:
        try:
            answer = await work(turn)
        except (PlannerError, asyncpg.PostgresError, OSError) as exc:
            return await self._fail(turn, exc)
        except Exception as exc:  # a bug must still end the turn, reported, not leave it running
            log.exception("turn %s failed unexpectedly", turn.id)
            return await self._fail(turn, exc)
        if answer is None:
            return await self._pause(turn)
        reply, reasoning = turn.answer
        result = _result(turn, "completed", answer, reasoning=reasoning)
        try:
            await self.store.complete_turn(turn.tenant, turn.conversation_id, turn.id,
                                           reply=reply, reasoning=reasoning, usage=turn.usage)
        except (asyncpg.PostgresError, OSError) as exc:
            return await self._fail(turn, exc)
        await turn.emit(TurnCompleted(turn=result))
        if self.learner is not None:
            self.learner.after(turn.tenant, turn.id)
        return result

    async def _run(self, turn: TurnState) -> str | None:
        """A new turn to its answer, or to None when it pauses."""
        turn.messages, _, previous = await asyncio.gather(
            self._history(turn), self._set_trace(turn),
            self.store.last_candidates(turn.tenant, turn.conversation_id, turn.id))
        if turn.request.tool_choice != "none":
            await self.candidates.first(turn, previous)
        return await self._loop(turn, resumed=False)

    async def _loop(self, turn: TurnState, *, resumed: bool) -> str | None:
        if turn.request.tool_choice == "none":
            return (await self._ask(turn, SYSTEM_AUTO, "none", "step")).content
        if turn.request.mode == "plan":
            return await self._plan_loop(turn, resumed)
        return await self._auto_loop(turn)

    async def _set_trace(self, turn: TurnState) -> None:
        if turn.traceparent is not None:
            trace_id = turn.traceparent.split("-")[1]
            await self.store.set_turn_trace(turn.id, trace_id, turn.traceparent)

    async def _restore(self, turn: TurnState, saved: SavedTurn) -> None:
        """A taken-up turn's candidates (the versions it was using), messages and finished
        calls, as they were when it paused (or its replica died). Calls about to be settled
        or ended are left out: they are recorded as they end."""
        keys = [(c.namespace, c.name, c.version) for c in saved.candidates]
        found = await self.registry.executables_at(turn.tenant, keys)
        for c in saved.candidates:
            if (c.namespace, c.name) in found:
                turn.tools[c.function] = found[(c.namespace, c.name)]
        turn.messages = await self._history(turn)
        settled = {c.id for c in saved.calls if c.decision is not None or c.status == "running"}
        turn.calls = [c for c in await self.store.call_records(turn.id)
                      if c.id not in settled]

    async def _pause(self, turn: TurnState) -> TurnResult:
        status = turn.paused_status
        await self.store.pause_turn(turn.id, status, turn.usage)
        result = _result(turn, status, None)
        await turn.emit(TurnPaused(turn=result))
        return result

    async def _auto_loop(self, turn: TurnState) -> str | None:
        """Native tool calls in a loop; every call of one reply runs at the same time."""
        while turn.step < turn.max_steps:
            choice = reply_choice(turn.request, turn.step)
            reply = await self._ask(turn, SYSTEM_AUTO, choice, "step")
            if not reply.tool_calls:
                if await self._nudged(turn, reply):
                    continue
                return reply.content
            await self.calls.run_reply(turn, reply)
            if turn.pending:
                return None
            if turn.conduct.looping:
                break  # the loop was refused: the answer comes next, without tools
        return (await self._ask(turn, SYSTEM_AUTO, "none", "step")).content

    async def _nudged(self, turn: TurnState, reply: ModelReply) -> bool:
        """An empty answer after tool results goes back once, asking for the answer."""
        if reply.content.strip() or not turn.calls or turn.nudged:
            return False
        turn.nudged = True
        turn.messages.pop()  # the empty answer `_ask` kept
        await turn.note("Your reply was empty. Answer the user from the tool results above.")
        return True

    async def _plan_loop(self, turn: TurnState, resumed: bool) -> str | None:
        """One plan run as a graph, then a join that answers, calls more, or asks to replan.
        A plan with a failed step is replaced at once while replans are left. A resumed turn
        goes on with the join of the plan it paused in; a backend that takes no plan schema
        runs the turn in auto mode."""
        first = max(len(turn.plans) - 1, 0) if resumed else 0
        for attempt in range(first, self.settings.max_replans + 1):
            if not (resumed and attempt == first):
                plan = await self._plan_and_run(turn, attempt)
                if plan is AUTO:
                    return await self._auto_loop(turn)
                if turn.pending:
                    return None
                if isinstance(plan, Plan) and attempt < self.settings.max_replans \
                        and await self._replanned(turn, attempt):
                    continue
            for _ in range(turn.max_steps):
                reply = await self._ask(turn, SYSTEM_PLAN, "auto", "join")
                if not reply.tool_calls:
                    if await self._nudged(turn, reply):
                        continue
                    return reply.content
                if any(c.name == REPLAN for c in reply.tool_calls):
                    await self.calls.answer(turn, reply, "replanning")
                    break
                await self.calls.run_reply(turn, reply)
                if turn.pending:
                    return None
                if turn.conduct.looping:
                    return (await self._ask(turn, SYSTEM_PLAN, "none", "join")).content
            else:
                break
        return (await self._ask(turn, SYSTEM_PLAN, "none", "join")).content

    async def _replanned(self, turn: TurnState, attempt: int) -> bool:
        """Whether a step of plan `attempt` failed: the model is told which, and plans anew."""
        failed = [c for c in turn.calls if c.id.startswith(f"p{attempt}_") and c.error]
        if not failed:
            return False
        said = "; ".join(f"{c.id.removeprefix(f'p{attempt}_')} ({c.name}): {c.error}"
                         for c in failed)
        await turn.note(f"Steps of the plan failed: {said}. Write a new plan for what is left.")
        return True

    async def _plan_and_run(self, turn: TurnState, attempt: int) -> Plan | Auto | None:
        """The model's plan, checked and run; a plan that fails the checks goes back once with
        why. In a streamed turn its steps start while the plan is still being written
        (planner/plan_dispatch.py). None when no valid plan came (the join goes on without
        one); AUTO when the backend takes no plan schema at all."""
        records = [(name, t.record) for name, t in turn.tools.items()]
        if not records:
            await self._fall_back(turn, "the turn has no tools to plan with", "auto mode")
            return AUTO
        dispatch = self._dispatch(turn, attempt)
        asked = await self._planning(dispatch, self._plan_reply(turn, records, dispatch))
        if asked is None:
            return AUTO
        reply, response_format = asked
        for repair in (False, True):
            try:
                plan = parse_plan(reply.content, set(turn.tools), self.settings.max_plan_steps)
            except PlanProblem as exc:
                if dispatch.began:
                    return await self._keep_began(turn, dispatch, exc)
                dispatch.drop()
                if repair:
                    await turn.note(f"The corrected plan was rejected too and nothing ran: {exc}")
                    return None
                await turn.note(f"The plan was rejected and nothing ran: {exc}. Write the plan "
                                "again, corrected.")
                dispatch = self._dispatch(turn, attempt)
                eager = self._eager(turn, dispatch)
                reply = await self._planning(dispatch, self.model_calls.call(
                    turn, SYSTEM_PLAN, "none", "plan", response_format, eager))
                continue
            break
        await self._record_plan(turn, attempt, plan)
        await dispatch.finish(plan)
        return plan

    def _dispatch(self, turn: TurnState, attempt: int) -> PlanDispatch:
        return PlanDispatch(self.calls, turn, attempt, self.settings.max_plan_steps)

    def _eager(self, turn: TurnState, dispatch: PlanDispatch) -> Callable[[str], None] | None:
        """Where the plan's text goes as it streams: to its dispatch, which starts each step
        as it completes, unless that is off or the text is not plain JSON (inline thinking)."""
        if not (self.settings.eager_plans and turn.request.stream) \
                or turn.model.backend.inline_thinking:
            return None
        return dispatch.feed

    @staticmethod
    async def _planning(dispatch: PlanDispatch, call: Awaitable[_T]) -> _T:
        """A plan's model call; the steps it started are seen to if it fails."""
        try:
            return await call
        except BaseException as exc:
            await dispatch.abort(exc)
            raise

    async def _record_plan(self, turn: TurnState, attempt: int, plan: Plan) -> None:
        await turn.emit(PlanCreated(plan=attempt, steps=plan.steps))
        turn.plans.append(plan)
        await self.store.set_turn_json(turn.id, "plans", turn.plans)

    async def _keep_began(self, turn: TurnState, dispatch: PlanDispatch, problem: PlanProblem
                          ) -> Plan:
        """A streamed plan rejected once complete, after some steps had started: those steps
        are the plan that ran, and the model is told the rest did not."""
        plan = await dispatch.keep_began()
        await self._record_plan(turn, attempt=dispatch.attempt, plan=plan)
        if not turn.pending:  # a note would come between the calls and their results
            await turn.note(f"The rest of the plan was rejected and did not run: {problem}. "
                            "Only the steps above ran.")
        return plan

    async def _plan_reply(
        self, turn: TurnState, records: list[tuple[str, ToolRecord]], dispatch: PlanDispatch
    ) -> tuple[ModelReply, dict[str, Any]] | None:
        """The plan under the full schema, else (the server refused it: a 400 from its grammar
        compiler) under the looser one; None when it takes neither."""
        for schema_of, name in ((plan_schema, "plan"), (loose_plan_schema, "looser plan")):
            schema = schema_of(records, self.settings.max_plan_steps)
            response_format = {"type": "json_schema",
                               "json_schema": {"name": "plan", "schema": schema, "strict": True}}
            try:
                reply = await self.model_calls.call(turn, SYSTEM_PLAN, "none", "plan",
                                               response_format, self._eager(turn, dispatch))
            except ModelResponseError as exc:
                if exc.status != 400:
                    raise
                to = "a looser plan schema" if name == "plan" else "auto mode"
                await self._fall_back(turn, f"the model server refused the {name} schema "
                                            f"({exc.reason})", to)
                continue
            return reply, response_format
        return None

    async def _fall_back(self, turn: TurnState, why: str, fallback: str) -> None:
        """A step down from the plan the turn asked for, said in the turn and its trace."""
        trace.get_current_span().add_event("switchboard.plan.fallback",
                                           {"reason": why, "to": fallback})
        await turn.note(f"Plan mode fell back to {fallback}: {why}.")
        if fallback == "auto mode":
            turn.planless = True

    async def _ask(self, turn: TurnState, system: str, tool_choice: ToolChoice, phase: str
                   ) -> ModelReply:
        """One model call. A reply with tool calls is written by CallRunner with the rows of its
        calls; an answer is written with the turn's end (`complete_turn`)."""
        reply = await self.model_calls.call(turn, system, tool_choice, phase)
        if not reply.tool_calls:  # the answer: written with the turn's end
            turn.answer = (ChatMessage(role="assistant", content=reply.content), reply.reasoning)
            turn.messages.append(turn.answer[0])
        return reply

    async def _history(self, turn: TurnState) -> list[ChatMessage]:
        """Earlier turns within the token budget, then what this turn has so far."""
        stored = await self.store.list_messages(turn.tenant, turn.conversation_id)
        earlier = [m for m in stored if m.turn_id != turn.id]
        fitted = fit_history(
            close_dangling_calls([m.chat() for m in earlier]), [m.turn_id for m in earlier],
            self.settings.history_token_budget, self.settings.tool_output_chars_in_history,
        )
        turn.earlier = len(fitted)
        turn.recent_tools = _succeeded_last(earlier)
        turn.recent_requests = _requests(earlier)[-CONTEXT_REQUESTS:][::-1]
        return [*fitted, *(m.chat() for m in stored if m.turn_id == turn.id)]

    async def _fail(self, turn: TurnState, exc: Exception) -> TurnResult:
        problem = self.problem_of(exc)
        log.warning("turn %s failed: %s", turn.id, exc)
        result = _result(turn, "failed", None, problem)
        await self.store.fail_turn(turn.id, error=problem, usage=turn.usage)
        await turn.emit(TurnFailed(turn=result))
        return result


def _requests(earlier: list[StoredMessage]) -> list[str]:
    """The user's own messages, in order (the engine's notes to the model left out)."""
    return [m.content for m in earlier
            if m.role == "user" and m.content and not m.content.startswith(NOTE_PREFIX)]


def _succeeded_last(earlier: list[StoredMessage]) -> list[str]:
    """The tools the last of the earlier turns called with success, by the name it called
    them (the engine's own tools left out)."""
    if not earlier:
        return []
    last = [m for m in earlier if m.turn_id == earlier[-1].turn_id]
    ok = {m.tool_call_id for m in last
          if m.role == "tool" and (m.content or "").startswith('{"result"')}
    return sorted({call.function.name for m in last for call in m.tool_calls or []
                   if call.id in ok and call.function.name not in (SEARCH_TOOLS, READ_RESULT)})


def _traceparent(span: Span) -> str | None:
    """The span as a W3C traceparent, so the turn can be taken up later in the same trace."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return (f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}-"
            f"{int(context.trace_flags):02x}")


def _check_answer_kind(turn_id: str, call: PendingCall, decision: Decision) -> None:
    wants_output = call.waits_for == "output"
    if isinstance(decision, ClientOutput) != wants_output:
        raise CallNotWaiting(
            turn_id, call.id, f"waits for {'its client output' if wants_output else 'approval'}",
            waits_for=call.waits_for,
        )


def _result(
    turn: TurnState, status: TurnStatus, answer: str | None, error: Problem | None = None, *,
    reasoning: str | None = None,
) -> TurnResult:
    return TurnResult(
        id=turn.id,
        conversation_id=turn.conversation_id,
        status=status,
        message=None if answer is None else answer_message(answer, reasoning),
        tool_calls=list(turn.calls),
        usage=turn.usage,
        error=error,
        pending=list(turn.pending),
        takeovers=turn.takeovers,
        usage_by_backend=usage_by_backend(turn.model.backend.name, turn.usage, turn.calls,
                                          turn.spent),
        route=turn.route,
    )

