"""The turn engine: retrieve candidate tools, ask the model, run the calls, answer.

Streaming and non-streaming turns run the same code: `run_turn` reports every step to an event
sink; the SSE route forwards the events, the JSON route ignores them and returns the result.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import msgspec

from planner import store
from planner.errors import ModelResponseError, ModelUnavailable, PlannerError, UnknownModel
from planner.events import (
    AssistantMessage,
    MessageDelta,
    PlanCreated,
    Problem,
    ReasoningDelta,
    RetrievedTool,
    ToolCallFinished,
    ToolCallRecord,
    ToolCallStarted,
    ToolsRetrieved,
    TurnCompleted,
    TurnEvent,
    TurnFailed,
    TurnResult,
    TurnStarted,
)
from planner.messages import (
    AssistantToolCall,
    ChatMessage,
    ContentDelta,
    Delta,
    FunctionCall,
    ModelReply,
    ModelRequest,
    ToolCallRequest,
    Usage,
)
from planner.model_client import ModelClient
from planner.plan import Plan, PlanProblem, parse_plan, plan_schema, resolve
from planner.prompt import (
    REPLAN,
    REPLAN_ENTRY,
    SEARCH_TOOLS,
    SEARCH_TOOLS_ENTRY,
    SYSTEM_AUTO,
    SYSTEM_PLAN,
    close_dangling_calls,
    fit_history,
    tool_entry,
)
from tools.executors import CallOutcome, ExecutableTool, ToolRunner
from tools.registry import ToolRegistry

log = logging.getLogger(__name__)

EventSink = Callable[[TurnEvent], Awaitable[None]]
Mode = Literal["auto", "plan"]


async def ignore(_event: TurnEvent) -> None:
    return None


class EngineSettings(msgspec.Struct, frozen=True, kw_only=True):
    candidate_k: int = 8
    max_steps: int = 8
    max_replans: int = 2
    max_plan_steps: int = 16
    max_parallel_calls: int = 16
    history_token_budget: int = 8000
    tool_output_chars_in_history: int = 2000
    turn_lease_s: float = 30.0


class TurnRequest(msgspec.Struct, frozen=True, kw_only=True):
    message: str
    mode: Mode = "auto"
    stream: bool = False
    model: str | None = None
    max_steps: int | None = None


class _Turn:
    """Mutable state of one running turn."""

    def __init__(
        self,
        tenant: str,
        conversation_id: str,
        turn_id: str,
        request: TurnRequest,
        model: ModelClient,
        emit: EventSink,
        max_steps: int,
    ) -> None:
        self.tenant, self.conversation_id, self.id = tenant, conversation_id, turn_id
        self.request, self.model, self.emit, self.max_steps = request, model, emit, max_steps
        self.tools: dict[str, ExecutableTool] = {}
        self.messages: list[ChatMessage] = []
        self.calls: list[ToolCallRecord] = []
        self.plans: list[Plan] = []
        self.observations: dict[str, ChatMessage] = {}
        self.usage = Usage()
        self.step = 0

    @property
    def entries(self) -> list[dict[str, Any]]:
        extra = [REPLAN_ENTRY] if self.request.mode == "plan" else []
        return [
            SEARCH_TOOLS_ENTRY,
            *extra,
            *(
                tool_entry(name, t.record.description, t.record.parameters)
                for name, t in self.tools.items()
            ),
        ]


class TurnEngine:
    def __init__(
        self,
        pool: asyncpg.Pool,
        registry: ToolRegistry,
        runner: ToolRunner,
        models: dict[str, ModelClient],
        *,
        default_model: str,
        settings: EngineSettings,
        owner: str,
    ) -> None:
        self.pool, self.registry, self.runner = pool, registry, runner
        self.models, self.default_model = models, default_model
        self.settings, self.owner = settings, owner

    def model_for(self, name: str | None) -> ModelClient:
        key = name or self.default_model
        if key not in self.models:
            raise UnknownModel(key, sorted(self.models))
        return self.models[key]

    async def start_turn(self, tenant: str, conversation_id: str, request: TurnRequest) -> str:
        model = self.model_for(request.model)
        return await store.begin_turn(
            self.pool,
            tenant,
            conversation_id,
            mode=request.mode,
            model=model.backend.name,
            request=msgspec.to_builtins(request),
            owner=self.owner,
            message=request.message,
        )

    async def run_turn(
        self,
        tenant: str,
        conversation_id: str,
        turn_id: str,
        request: TurnRequest,
        emit: EventSink = ignore,
    ) -> TurnResult:
        """Run a started turn to its end; failures are recorded and reported, never raised."""
        max_steps = min(request.max_steps or self.settings.max_steps, self.settings.max_steps)
        turn = _Turn(
            tenant,
            conversation_id,
            turn_id,
            request,
            self.model_for(request.model),
            emit,
            max_steps,
        )
        await emit(
            TurnStarted(
                turn_id=turn_id,
                conversation_id=conversation_id,
                mode=request.mode,
                model=turn.model.backend.name,
            )
        )
        try:
            answer = await self._run(turn)
        except (PlannerError, asyncpg.PostgresError, OSError) as exc:
            return await self._fail(turn, exc)
        except Exception as exc:  # a bug must still end the turn, reported, not leave it running
            log.exception("turn %s failed unexpectedly", turn_id)
            return await self._fail(turn, exc)
        result = self._result(turn, "completed", answer)
        await store.finish_turn(
            self.pool, turn_id, status="completed", answer=answer, error=None, usage=turn.usage
        )
        await emit(TurnCompleted(turn=result))
        return result

    async def _run(self, turn: _Turn) -> str:
        turn.messages = await self._history(turn)
        await self._retrieve(turn, turn.request.message)
        if turn.request.mode == "plan":
            return await self._plan_loop(turn)
        return await self._auto_loop(turn)

    # -- retrieval ---------------------------------------------------------------------------

    async def _retrieve(self, turn: _Turn, query: str) -> list[str]:
        hits = await self.registry.search(turn.tenant, query, self.settings.candidate_k)
        found = await self.registry.executables(turn.tenant, [(h.namespace, h.name) for h in hits])
        added = []
        # Candidates are kept sorted by name so the tool block is byte-stable for the same set;
        # tools found later are appended, so earlier prompt bytes never change within a turn.
        for key in sorted(found):
            name = self._function_name(turn, key)
            if name not in turn.tools:
                turn.tools[name] = found[key]
                added.append(name)
        await turn.emit(
            ToolsRetrieved(tools=[RetrievedTool(h.name, h.namespace, h.score) for h in hits])
        )
        await store.set_turn_json(self.pool, turn.id, "candidates", sorted(turn.tools))
        return added

    def _function_name(self, turn: _Turn, key: tuple[str, str]) -> str:
        namespace, name = key
        held = turn.tools.get(name)
        if held is None or (held.record.namespace, held.record.name) == key:
            return name
        return f"{namespace}_{name}"[:64]

    # -- auto mode: native tool calls in a loop ----------------------------------------------

    async def _auto_loop(self, turn: _Turn) -> str:
        for _ in range(turn.max_steps):
            reply = await self._ask(turn, SYSTEM_AUTO, "auto")
            if not reply.tool_calls:
                return reply.content
            await self._run_calls(turn, reply.tool_calls)
        return (await self._ask(turn, SYSTEM_AUTO, "none")).content

    # -- plan mode: one plan, run as a graph, then a join ------------------------------------

    async def _plan_loop(self, turn: _Turn) -> str:
        for attempt in range(self.settings.max_replans + 1):
            plan = await self._make_plan(turn, attempt)
            if plan is not None:
                await self._run_plan(turn, plan, attempt)
            for _ in range(turn.max_steps):
                reply = await self._ask(turn, SYSTEM_PLAN, "auto")
                if not reply.tool_calls:
                    return reply.content
                if any(c.name == REPLAN for c in reply.tool_calls):
                    await self._answer_calls(turn, reply.tool_calls, "replanning")
                    break
                await self._run_calls(turn, reply.tool_calls)
            else:
                break
        return (await self._ask(turn, SYSTEM_PLAN, "none")).content

    async def _make_plan(self, turn: _Turn, attempt: int) -> Plan | None:
        records = [(name, t.record) for name, t in turn.tools.items()]
        schema = plan_schema(records, self.settings.max_plan_steps)
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": "plan", "schema": schema, "strict": True},
        }
        reply = await self._call_model(turn, SYSTEM_PLAN, "none", response_format, echo=False)
        try:
            plan = parse_plan(reply.content, set(turn.tools), self.settings.max_plan_steps)
        except PlanProblem as exc:
            await self._note(turn, f"The plan was rejected and nothing ran: {exc}")
            return None
        await turn.emit(PlanCreated(plan=attempt, steps=plan.steps))
        turn.plans.append(plan)
        await store.set_turn_json(self.pool, turn.id, "plans", msgspec.to_builtins(turn.plans))
        return plan

    async def _run_plan(self, turn: _Turn, plan: Plan, attempt: int) -> None:
        """Start each step as soon as the steps it refers to have finished."""
        ids = {s.id: f"p{attempt}_{s.id}" for s in plan.steps}
        calls = [
            AssistantToolCall(
                id=ids[s.id], function=FunctionCall(s.tool, json.dumps(s.arguments, sort_keys=True))
            )
            for s in plan.steps
        ]
        await self._add(turn, ChatMessage(role="assistant", content="", tool_calls=calls))
        done: dict[str, asyncio.Future[CallOutcome | None]] = {
            s.id: asyncio.get_running_loop().create_future() for s in plan.steps
        }
        step = turn.step = turn.step + 1

        async def run(s: Any) -> None:
            outputs: dict[str, Any] = {}
            for dep in s.depends_on:
                outcome = await done[dep]
                if outcome is None or not outcome.ok:
                    await self._refuse(
                        turn,
                        ids[s.id],
                        s.tool,
                        s.arguments,
                        step,
                        f"skipped: step {dep} did not succeed",
                    )
                    done[s.id].set_result(None)
                    return
                outputs[dep] = outcome.result
            try:
                arguments = resolve(s.arguments, outputs)
            except LookupError as exc:
                await self._refuse(turn, ids[s.id], s.tool, s.arguments, step, str(exc))
                done[s.id].set_result(None)
                return
            outcome = await self._execute(turn, ids[s.id], s.tool, arguments, step, s.depends_on)
            done[s.id].set_result(outcome)

        await asyncio.gather(*(run(s) for s in plan.steps))
        await self._observe(turn, [ids[s.id] for s in plan.steps])

    # -- model calls -------------------------------------------------------------------------

    async def _ask(self, turn: _Turn, system: str, tool_choice: str) -> ModelReply:
        reply = await self._call_model(turn, system, tool_choice, None, echo=True)
        calls = [
            AssistantToolCall(id=c.id, function=FunctionCall(c.name, c.arguments))
            for c in reply.tool_calls
        ]
        await self._add(
            turn,
            ChatMessage(role="assistant", content=reply.content, tool_calls=calls or None),
            reasoning=reply.reasoning,
        )
        return reply

    async def _call_model(
        self,
        turn: _Turn,
        system: str,
        tool_choice: str,
        response_format: dict[str, Any] | None,
        *,
        echo: bool,
    ) -> ModelReply:
        request = ModelRequest(
            messages=[ChatMessage(role="system", content=system), *turn.messages],
            tools=turn.entries,
            tool_choice=tool_choice,  # type: ignore[arg-type]
            response_format=response_format,
        )

        async def on_delta(delta: Delta) -> None:
            if isinstance(delta, ContentDelta):
                if echo:
                    await turn.emit(MessageDelta(text=delta.text))
            else:
                await turn.emit(ReasoningDelta(text=delta.text))

        reply = await turn.model.complete(request, stream=turn.request.stream, on_delta=on_delta)
        turn.usage = turn.usage + reply.usage
        return reply

    # -- tool calls --------------------------------------------------------------------------

    async def _run_calls(self, turn: _Turn, calls: Sequence[ToolCallRequest]) -> None:
        """All calls of one model reply run at the same time."""
        step = turn.step = turn.step + 1
        allowed = self.settings.max_parallel_calls
        jobs = []
        for i, call in enumerate(calls):
            if i >= allowed:
                jobs.append(
                    self._refuse(
                        turn,
                        call.id,
                        call.name,
                        call.arguments,
                        step,
                        f"refused: at most {allowed} calls run per step",
                    )
                )
            else:
                jobs.append(self._start(turn, call, step))
        await asyncio.gather(*jobs)
        await self._observe(turn, [c.id for c in calls])

    async def _observe(self, turn: _Turn, call_ids: list[str]) -> None:
        """Results go back to the model in call order, whatever order they finished in."""
        for call_id in call_ids:
            await self._add(turn, turn.observations.pop(call_id))

    async def _start(self, turn: _Turn, call: ToolCallRequest, step: int) -> None:
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            await self._refuse(
                turn,
                call.id,
                call.name,
                call.arguments,
                step,
                f"arguments are not valid JSON ({exc.msg} at position {exc.pos}); "
                "send a JSON object",
                "invalid_arguments",
            )
            return
        if call.name == SEARCH_TOOLS:
            await self._search_tools(turn, call.id, arguments, step)
            return
        await self._execute(turn, call.id, call.name, arguments, step, [])

    async def _search_tools(self, turn: _Turn, call_id: str, arguments: Any, step: int) -> None:
        query = arguments.get("query") if isinstance(arguments, dict) else None
        if not isinstance(query, str) or not query.strip():
            await self._refuse(
                turn,
                call_id,
                SEARCH_TOOLS,
                arguments,
                step,
                'search_tools needs {"query": "what the tool should do"}',
                "invalid_arguments",
            )
            return
        started = _now()
        added = await self._retrieve(turn, query)
        result = {
            "found": [{"name": n, "description": turn.tools[n].record.description} for n in added]
        }
        outcome = CallOutcome(ok=True, result=result, started_at=started, finished_at=_now())
        await self._record(turn, call_id, SEARCH_TOOLS, arguments, step, [], outcome, None)

    async def _execute(
        self, turn: _Turn, call_id: str, name: str, arguments: Any, step: int, depends_on: list[str]
    ) -> CallOutcome | None:
        tool = turn.tools.get(name)
        if tool is None:
            await self._refuse(
                turn,
                call_id,
                name,
                arguments,
                step,
                f"unknown tool {name!r}: only this turn's tools can be called "
                f"({', '.join(sorted(turn.tools))})",
                "unknown_tool",
            )
            return None
        record = tool.record
        await store.start_tool_call(
            self.pool,
            turn.tenant,
            turn.conversation_id,
            turn.id,
            call_id=call_id,
            step=step,
            name=name,
            namespace=record.namespace,
            version=record.version,
            raw_arguments=json.dumps(arguments),
            arguments=arguments,
            depends_on=depends_on,
        )
        await turn.emit(
            ToolCallStarted(
                id=call_id, name=name, arguments=arguments, step=step, depends_on=depends_on
            )
        )
        outcome = await self.runner.execute_call(tool, arguments)
        await self._record(
            turn, call_id, name, arguments, step, depends_on, outcome, tool, started=True
        )
        return outcome

    async def _refuse(
        self,
        turn: _Turn,
        call_id: str,
        name: str,
        arguments: Any,
        step: int,
        error: str,
        error_type: str = "refused",
    ) -> None:
        now = _now()
        outcome = CallOutcome(
            ok=False,
            error=error,
            error_type=error_type,
            started_at=now,
            finished_at=now,
            attempts=0,
        )
        await self._record(turn, call_id, name, arguments, step, [], outcome, None)

    async def _answer_calls(self, turn: _Turn, calls: Sequence[ToolCallRequest], text: str) -> None:
        for call in calls:
            await self._add(
                turn,
                ChatMessage(
                    role="tool", tool_call_id=call.id, content=json.dumps({"result": text})
                ),
            )

    async def _record(
        self,
        turn: _Turn,
        call_id: str,
        name: str,
        arguments: Any,
        step: int,
        depends_on: list[str],
        outcome: CallOutcome,
        tool: ExecutableTool | None,
        *,
        started: bool = False,
    ) -> None:
        if not started:
            await store.start_tool_call(
                self.pool,
                turn.tenant,
                turn.conversation_id,
                turn.id,
                call_id=call_id,
                step=step,
                name=name,
                namespace=tool.record.namespace if tool else None,
                version=tool.record.version if tool else None,
                raw_arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
                arguments=None if isinstance(arguments, str) else arguments,
                depends_on=depends_on,
            )
        await store.finish_tool_call(
            self.pool,
            turn.id,
            call_id,
            ok=outcome.ok,
            result=outcome.result,
            error=outcome.error,
            error_type=outcome.error_type,
            attempts=outcome.attempts,
            truncated=outcome.truncated,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            arguments=None,
        )
        record = ToolCallRecord(
            id=call_id,
            name=name,
            arguments=arguments,
            result=outcome.result,
            error=outcome.error,
            error_type=outcome.error_type,
            started_at=outcome.started_at,
            finished_at=outcome.finished_at,
            attempts=outcome.attempts,
            truncated=outcome.truncated,
            step=step,
            depends_on=depends_on,
        )
        turn.calls.append(record)
        duration = (outcome.finished_at - outcome.started_at).total_seconds() * 1000
        await turn.emit(ToolCallFinished(call=record, duration_ms=round(duration, 3)))
        turn.observations[call_id] = ChatMessage(
            role="tool", tool_call_id=call_id, content=observation(outcome)
        )

    # -- messages and history ----------------------------------------------------------------

    async def _add(self, turn: _Turn, message: ChatMessage, reasoning: str | None = None) -> None:
        turn.messages.append(message)
        await store.add_message(
            self.pool, turn.tenant, turn.conversation_id, turn.id, message, reasoning
        )

    async def _note(self, turn: _Turn, text: str) -> None:
        """Tell the model something about the run itself (not tool output)."""
        await self._add(turn, ChatMessage(role="user", content=f"[switchboard] {text}"))

    async def _history(self, turn: _Turn) -> list[ChatMessage]:
        stored = await store.list_messages(self.pool, turn.tenant, turn.conversation_id)
        earlier = [m for m in stored if m.turn_id != turn.id]
        current = [m.chat() for m in stored if m.turn_id == turn.id]
        fitted = fit_history(
            close_dangling_calls([m.chat() for m in earlier]),
            _turn_ids(earlier),
            self.settings.history_token_budget,
            self.settings.tool_output_chars_in_history,
        )
        return [*fitted, *current]

    # -- endings -----------------------------------------------------------------------------

    def _result(
        self, turn: _Turn, status: str, answer: str | None, error: Problem | None = None
    ) -> TurnResult:
        return TurnResult(
            id=turn.id,
            conversation_id=turn.conversation_id,
            status=status,
            message=AssistantMessage(answer) if answer is not None else None,
            tool_calls=list(turn.calls),
            usage=turn.usage,
            error=error,
        )

    async def _fail(self, turn: _Turn, exc: Exception) -> TurnResult:
        problem = problem_of(exc)
        log.warning("turn %s failed: %s", turn.id, exc)
        result = self._result(turn, "failed", None, problem)
        await store.finish_turn(
            self.pool,
            turn.id,
            status="failed",
            answer=None,
            error=msgspec.to_builtins(problem),
            usage=turn.usage,
        )
        await turn.emit(TurnFailed(turn=result))
        return result


def observation(outcome: CallOutcome) -> str:
    """What the model reads of a call: its result, or its error, as JSON data."""
    if outcome.ok:
        body: dict[str, Any] = {"result": outcome.result}
        if outcome.truncated:
            body["truncated"] = True
    else:
        body = {"error": outcome.error, "error_type": outcome.error_type}
    return json.dumps(body, ensure_ascii=False, default=str)


def problem_of(exc: Exception) -> Problem:
    if isinstance(exc, ModelUnavailable):
        return Problem(
            type="/problems/model-unavailable",
            title="Model unavailable",
            status=503,
            detail=str(exc),
        )
    if isinstance(exc, ModelResponseError):
        return Problem(
            type="/problems/model-error",
            title="Bad response from the model",
            status=502,
            detail=str(exc),
        )
    if isinstance(exc, asyncpg.PostgresError | OSError):
        return Problem(
            type="/problems/database-unavailable",
            title="Database unavailable",
            status=503,
            detail=f"{type(exc).__name__}: {exc}",
        )
    return Problem(type="/problems/turn-failed", title="Turn failed", status=500, detail=str(exc))


def _turn_ids(messages: Sequence[store.StoredMessage]) -> list[str]:
    return [m.turn_id for m in messages]


def _now() -> datetime:
    return datetime.now(UTC)
