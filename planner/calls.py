"""Running a turn's tool calls: all calls of one reply at once (a plan's steps: plan_dispatch).

Each call is checked, recorded as it starts and ends, and its outcome becomes an observation
that goes back to the model in call order.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from opentelemetry import trace
from opentelemetry.trace import Span

from planner.call_batch import CallBatch
from planner.events import (
    ActionRequired,
    ApprovalRequired,
    PendingCall,
    ToolCallFinished,
    ToolCallRecord,
    ToolCallStarted,
)
from planner.messages import AssistantToolCall, ChatMessage, FunctionCall, ModelReply, Usage
from planner.prompt import READ_RESULT, SEARCH_TOOLS
from planner.records import (
    Approved,
    ClientOutput,
    Expired,
    FinishedCall,
    Rejected,
    SavedCall,
    StartedCall,
)
from planner.request_tools import is_request_tool
from planner.statuses import WaitsFor
from planner.tracing import TurnTracer
from planner.turn import StandIn, TurnState
from tools.executors import ExecutableTool, ToolRunner
from tools.outcome import CallOutcome
from tools.spec import ClientExecutor, HttpExecutor, McpExecutor, ModelExecutor

Search = Callable[[TurnState, str], Awaitable[list[tuple[str, bool]]]]
"""Retrieval for a turn: each match, best first, and whether it was new to the turn."""


class Call(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    arguments: Any
    step: int
    position: int = 0
    """Its place among the calls of its step, as the model wrote them."""
    depends_on: list[str] = []
    """Plan step ids whose outputs this call takes."""
    waits_for: list[str] = []
    """The call ids of those steps."""
    begun: bool = False
    """Its running row is already written (with the reply that asked for it)."""
    approved: bool = False
    """A person approved it: it runs even though its tool requires approval."""


def assistant_message(reply: ModelReply) -> ChatMessage:
    calls = [AssistantToolCall(id=c.id, function=FunctionCall(c.name, c.arguments))
             for c in reply.tool_calls]
    return ChatMessage(role="assistant", content=reply.content, tool_calls=calls or None)


class WaitLimits(msgspec.Struct, frozen=True, kw_only=True):
    """How long a paused call waits for its answer."""

    approval_s: float
    output_s: float


class CallRunner:
    def __init__(
        self, runner: ToolRunner, search: Search, tracer: TurnTracer, *, max_parallel: int,
        waits: WaitLimits,
    ) -> None:
        self.runner, self.search, self.tracer = runner, search, tracer
        self.max_parallel = max_parallel
        self.waits = waits
        self._batches: dict[str, CallBatch] = {}

    async def run_reply(self, turn: TurnState, reply: ModelReply) -> None:
        """All calls of one model reply run at the same time.

        The reply and a running row for each of its calls are written first, in one statement;
        no call is made before its row exists."""
        step = turn.next_step()
        calls = [
            Call(id=r.id, name=r.name, arguments=r.arguments, step=step, position=i, begun=True)
            for i, r in enumerate(reply.tool_calls)
        ]
        started = [self._started(turn, call) for call in calls]
        await turn.add_reply(assistant_message(reply), reply.reasoning, started)
        jobs = []
        for call in calls:
            if call.position >= self.max_parallel:
                reason = f"refused: at most {self.max_parallel} calls run per step"
                jobs.append(self.refuse(turn, call, reason))
            else:
                jobs.append(self.start(turn, call))
        await self._gather(turn, jobs, [c.id for c in calls])

    async def answer(self, turn: TurnState, reply: ModelReply, text: str) -> None:
        """Close calls the engine handles itself (such as `replan`) with a plain result."""
        await turn.add(assistant_message(reply), reasoning=reply.reasoning)
        await turn.add_all([
            ChatMessage(role="tool", tool_call_id=c.id, content=json.dumps({"result": text}))
            for c in reply.tool_calls
        ])

    async def _gather(
        self, turn: TurnState, jobs: Sequence[Awaitable[None]], call_ids: list[str]
    ) -> None:
        batch = self.open_batch(turn, len(call_ids))
        await self.collect(turn, batch, asyncio.gather(*jobs), call_ids)

    def open_batch(self, turn: TurnState, size: int | None) -> CallBatch:
        """The turn's calls from here to `collect` form one batch (planner/call_batch.py)."""
        batch = CallBatch(size, functools.partial(turn.store.finish_tool_calls, turn.id))
        self._batches[turn.id] = batch
        return batch

    async def collect(
        self, turn: TurnState, batch: CallBatch, jobs: Awaitable[Any], call_ids: list[str]
    ) -> None:
        """Wait for a batch's calls; their results go back to the model in call order,
        whatever order they finished in."""
        try:
            await jobs
        except BaseException:
            batch.abandon()
            raise
        finally:
            self._batches.pop(turn.id, None)
        ends = await batch.close()
        if any(call_id not in turn.observations for call_id in call_ids):
            # Some calls wait: the step's results go to the model together, once they have
            # answers (`settle`); until then they live in the calls' rows.
            if ends:
                await turn.store.finish_tool_calls(turn.id, ends)
            turn.pending.sort(key=lambda p: call_ids.index(p.id))
            for call_id in call_ids:
                turn.observations.pop(call_id, None)
            return
        messages = [turn.observations.pop(call_id) for call_id in call_ids]
        if ends:
            await turn.add_results(ends, messages)
        else:
            await turn.add_all(messages)

    async def start(self, turn: TurnState, call: Call) -> None:
        """A call from a model reply: its arguments are JSON text, parsed now it is complete.
        A loop, or a tool the model failed to call twice, is refused first (planner/conduct)."""
        refusal = turn.conduct.refusal(call.name, call.arguments, call.step)
        if refusal is not None:
            await self.refuse(turn, call, *refusal)
            return
        try:
            arguments = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            await self.refuse(
                turn,
                call,
                f"arguments are not valid JSON ({exc.msg} at position "
                f"{exc.pos}); send a JSON object",
                "invalid_arguments",
            )
            return
        except RecursionError:
            await self.refuse(turn, call, "arguments are nested too deeply to read; send a "
                               "flatter JSON object", "invalid_arguments")
            return
        parsed = msgspec.structs.replace(call, arguments=arguments)
        if call.name == SEARCH_TOOLS:
            await self._search_tools(turn, parsed)
        elif call.name == READ_RESULT and turn.reads_results:
            await self._read_result(turn, parsed)
        else:
            await self.execute(turn, parsed)

    async def _search_tools(self, turn: TurnState, call: Call) -> None:
        query = call.arguments.get("query") if isinstance(call.arguments, dict) else None
        if not isinstance(query, str) or not query.strip():
            await self.refuse(
                turn,
                call,
                'search_tools needs {"query": "what the tool should do"}',
                "invalid_arguments",
            )
            return
        started = _now()
        matches = await self.search(turn, query)
        # The best matches, whether or not the turn already offers them: a tool the model
        # overlooked is pointed out again rather than left out.
        found = [{"name": n, "description": turn.tools[n].record.description,
                  **({} if new else {"already_offered": True})} for n, new in matches]
        outcome = CallOutcome(result={"found": found}, started_at=started, finished_at=_now(),
                              attempts=1)
        await self._record(turn, call, outcome, None)

    async def _read_result(self, turn: TurnState, call: Call) -> None:
        """A part of a result that was cut to fit the context window, from the whole one the
        turn holds."""
        arguments = call.arguments if isinstance(call.arguments, dict) else {}
        wanted, offset = arguments.get("call_id"), arguments.get("offset", 0)
        length = arguments.get("length", READ_LENGTH)
        whole = next((m.content for m in turn.messages
                      if m.role == "tool" and m.tool_call_id == wanted), None)
        problem = _read_problem(wanted, offset, length, whole)
        if problem is not None:
            await self.refuse(turn, call, problem, "invalid_arguments")
            return
        assert whole is not None and isinstance(offset, int) and isinstance(length, int)
        started = _now()
        part = whole[offset:offset + min(length, MAX_READ_LENGTH)]
        result = {"call_id": wanted, "offset": offset, "length": len(part), "total": len(whole),
                  "content": part}
        await self._record(turn, call, CallOutcome(result=result, started_at=started,
                                                   finished_at=_now(), attempts=1), None)

    async def execute(self, turn: TurnState, call: Call) -> CallOutcome | None:
        tool = turn.tools.get(call.name)
        if tool is None:
            await self.refuse(turn, call, _unknown(call.name, turn), "unknown_tool")
            return None
        stand_in = turn.stand_in if turn.stand_in and turn.stand_in.answers(tool) else None
        waits_for = None if stand_in else self._waits_for(tool, call)
        if waits_for == "output":
            # The client runs what it is handed: arguments are checked here, as a server-side
            # call's are before it runs, so the model is told, not the client given them.
            problem = self.runner.argument_problem(tool, call.arguments)
            if problem is not None:
                await self.refuse(turn, call, problem, "invalid_arguments")
                return None
        if waits_for is not None:
            await self._wait(turn, call, tool, waits_for)
            return None
        with self._span(turn, call, tool) as span:
            call = await self._begin(turn, call, tool)
            await turn.emit(
                ToolCallStarted(
                    id=call.id,
                    name=call.name,
                    arguments=call.arguments,
                    step=call.step,
                    depends_on=call.depends_on,
                )
            )
            if stand_in is None:
                outcome = await self._made(tool, call.arguments, span)
            else:
                span.set_attribute("switchboard.tool.answered_by", stand_in.label)
                outcome = self._stood_in(stand_in, tool, call.arguments)
            self._trace_outcome(turn, call, span, outcome)
            await self._record(turn, call, outcome, tool)
        return outcome

    async def _made(self, tool: ExecutableTool, arguments: Any, span: Span) -> CallOutcome:
        if not isinstance(tool.record.executor, ModelExecutor):
            return await self.runner.execute_call(tool, arguments)
        # The expert's own `chat` span goes under this call's span, which is made current for
        # it alone (the other calls' spans have no children).
        with trace.use_span(span, end_on_exit=False):
            return await self.runner.execute_call(tool, arguments)

    def _stood_in(self, stand_in: StandIn, tool: ExecutableTool, arguments: Any) -> CallOutcome:
        """The stand-in's answer, once the arguments fit the tool's schema as a real call's
        must."""
        started = _now()
        problem = self.runner.argument_problem(tool, arguments)
        if problem is not None:
            return CallOutcome(error=problem, error_type="invalid_arguments", started_at=started,
                               finished_at=_now(), attempts=0)
        return CallOutcome(result=stand_in.answer(tool), started_at=started, finished_at=_now(),
                           attempts=1)

    @staticmethod
    def _waits_for(tool: ExecutableTool, call: Call) -> WaitsFor | None:
        if isinstance(tool.record.executor, ClientExecutor):
            return "output"
        if tool.record.policy.requires_approval and not call.approved:
            return "approval"
        return None

    async def _wait(
        self, turn: TurnState, call: Call, tool: ExecutableTool, waits_for: WaitsFor
    ) -> None:
        """Park the call until a person or the frontend answers it; the turn pauses after this
        step, and the step's other calls still run."""
        limit = self.waits.approval_s if waits_for == "approval" else self.waits.output_s
        deadline = _now() + timedelta(seconds=limit)
        with self._span(turn, call, tool) as span:
            span.set_attribute("switchboard.tool.waits_for", waits_for)
            await self._begin(turn, call, tool)
            await turn.store.wait_for(turn.id, call.id, waits_for, deadline)
        pending = PendingCall(id=call.id, name=call.name, arguments=call.arguments,
                              waits_for=waits_for, deadline=deadline)
        turn.pending.append(pending)
        if waits_for == "approval":
            await turn.emit(ApprovalRequired(turn_id=turn.id, call=pending))
        else:
            await turn.emit(ActionRequired(turn_id=turn.id, call=pending))

    async def settle(self, turn: TurnState, calls: list[SavedCall]) -> None:
        """Finish the step a turn paused in, now every waiting call has its answer: run what
        was approved, record the rest, and send the step's results to the model in order."""
        await asyncio.gather(*(self._settle(turn, c) for c in calls))
        await turn.add_all([turn.observations.pop(c.id) for c in calls])

    async def _settle(self, turn: TurnState, saved: SavedCall) -> None:
        call = Call(id=saved.id, name=saved.name, arguments=saved.arguments, step=turn.step,
                    position=saved.position, begun=True)
        match saved.decision:
            case None:  # it had finished before the turn paused
                turn.observations[call.id] = _observed(call, saved)
            case Approved(arguments=edited):
                if edited is not None:
                    await turn.store.edit_arguments(turn.id, call.id, edited)
                    call = msgspec.structs.replace(call, arguments=edited)
                await self.execute(turn, msgspec.structs.replace(call, approved=True))
            case Rejected(reason=reason):
                because = f": {reason}" if reason else ""
                await self.refuse(turn, call, f"a person rejected this call{because}; it was "
                                   "not made", "rejected")
            case ClientOutput(output=output, error=None):
                await self._record(turn, call, _answered(saved, result=output), None)
            case ClientOutput(error=error):
                await self._record(turn, call, _answered(saved, error=error,
                                                         error_type="client_error"), None)
            case Expired(waited_s=waited):
                approval = saved.status == "awaiting_approval"
                error = (f"no one approved this call within {waited:.0f} s; it was not made"
                         if approval else
                         f"the client sent no output for this call within {waited:.0f} s")
                await self.refuse(turn, call, error,
                                   "approval_timeout" if approval else "client_timeout")

    async def refuse(
        self, turn: TurnState, call: Call, error: str, error_type: str = "refused", *,
        started_at: datetime | None = None, attempts: int = 0,
    ) -> None:
        """A call that is not made (or not made here); it still gets a record, a span and an
        observation."""
        now = _now()
        outcome = CallOutcome(error=error, error_type=error_type, started_at=started_at or now,
                              finished_at=now, attempts=attempts)
        with self._span(turn, call, None) as span:
            self._trace_outcome(turn, call, span, outcome)
            await self._record(turn, call, outcome, None)

    def _span(
        self, turn: TurnState, call: Call, tool: ExecutableTool | None
    ) -> contextlib.AbstractContextManager[Span]:
        links = [turn.span_contexts[c] for c in call.waits_for if c in turn.span_contexts]
        # GenAI conventions: "extension" runs elsewhere (an HTTP service, an MCP server),
        # "function" in-process.
        remote = tool is not None and isinstance(tool.record.executor,
                                                 HttpExecutor | McpExecutor | ModelExecutor)
        kind = "extension" if remote else "function"
        return self.tracer.tool(
            tenant=turn.tenant,
            name=call.name,
            call_id=call.id,
            kind=kind,
            step=call.step,
            depends_on=call.waits_for,
            links=links,
            arguments=call.arguments,
            redact=turn.redactor(),
        )

    def _trace_outcome(self, turn: TurnState, call: Call, span: Span, outcome: CallOutcome) -> None:
        turn.span_contexts[call.id] = span.get_span_context()
        self.tracer.tool_result(span, outcome, turn.redactor())

    @staticmethod
    def _started(turn: TurnState, call: Call) -> StartedCall:
        """The running row of a reply's call, its arguments parsed if they are JSON."""
        arguments: Any = None
        with contextlib.suppress(ValueError, RecursionError):
            arguments = json.loads(call.arguments or "{}")
        return _row(call, turn.tools.get(call.name), call.arguments, arguments)

    async def _begin(self, turn: TurnState, call: Call, tool: ExecutableTool | None) -> Call:
        """Write the call's running row unless it is written; the call, marked as begun."""
        if call.begun:
            return call
        row = running_row(call, tool)
        await turn.store.start_tool_calls(turn.tenant, turn.conversation_id, turn.id, [row])
        return msgspec.structs.replace(call, begun=True)

    async def _record(
        self,
        turn: TurnState,
        call: Call,
        outcome: CallOutcome,
        tool: ExecutableTool | None,
    ) -> None:
        await self._begin(turn, call, tool)
        outcome = turn.conduct.judged(call.name, outcome)
        if outcome.usage is not None:  # an expert model's tokens count as the turn's own do
            turn.usage = turn.usage + Usage.spent_by(outcome.usage)
            turn.charge(outcome.usage.backend, Usage.spent_by(outcome.usage))
        ended = msgspec.structs.asdict(outcome)
        finished = FinishedCall(id=call.id, **ended)
        batch = self._batches.get(turn.id)
        if batch is not None:
            batch.finish(finished)  # written with the batch's other ends, or its messages
        else:
            await turn.store.finish_tool_calls(turn.id, [finished])
        record = ToolCallRecord(id=call.id, name=call.name, arguments=call.arguments,
                                step=call.step, position=call.position,
                                depends_on=call.depends_on, **ended)
        turn.calls.append(record)
        turn.calls.sort(key=lambda r: (r.step, r.position))
        await turn.emit(ToolCallFinished(call=record, duration_ms=outcome.duration_ms))
        turn.observations[call.id] = _observed(call, outcome)


def _observed(call: Call, outcome: CallOutcome) -> ChatMessage:
    return ChatMessage(role="tool", tool_call_id=call.id, content=observation(outcome))


def _answered(saved: SavedCall, **outcome: Any) -> CallOutcome:
    """A client tool's call, ended by the output (or error) its frontend posted."""
    return CallOutcome(started_at=saved.started_at, finished_at=_now(), attempts=1, **outcome)


def running_row(call: Call, tool: ExecutableTool | None) -> StartedCall:
    """The running row of a call whose arguments are already parsed (a plan's step, an
    approved call) or kept as text."""
    arguments = call.arguments
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return _row(call, tool, raw, arguments)


def _row(call: Call, tool: ExecutableTool | None, raw: str, arguments: Any) -> StartedCall:
    registered = tool if tool is not None and not is_request_tool(tool) else None
    return StartedCall(
        id=call.id,
        step=call.step,
        position=call.position,
        name=call.name,
        namespace=registered.record.namespace if registered else None,
        version=registered.record.version if registered else None,
        raw_arguments=raw,
        arguments=None if isinstance(arguments, str) else arguments,
        depends_on=call.depends_on,
        side_effects=tool is not None and not tool.record.policy.idempotent,
    )


def observation(outcome: CallOutcome) -> str:
    """What the model reads of a call: its result, or its error, as JSON data."""
    if outcome.ok:
        body: dict[str, Any] = {"result": outcome.result}
        if outcome.truncated:
            body["truncated"] = True
    else:
        body = {"error": outcome.error, "error_type": outcome.error_type}
    return json.dumps(body, ensure_ascii=False, default=str)


def _now() -> datetime:
    return datetime.now(UTC)


READ_LENGTH = 4000
MAX_READ_LENGTH = 16000


def _read_problem(call_id: Any, offset: Any, length: Any, whole: str | None) -> str | None:
    """What is wrong with a read_result call, or None."""
    if not isinstance(call_id, str) or whole is None:
        return (f"read_result needs the call_id of one of this turn's results; {call_id!r} is "
                "not one")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        return "offset must be a whole number from 0"
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        return f"length must be a whole number from 1 to {MAX_READ_LENGTH}"
    return None


def _unknown(name: str, turn: TurnState) -> str:
    """An unknown tool's error: the nearest names first, then every name that can be called."""
    callable_names = sorted(turn.tools)
    near = difflib.get_close_matches(name, [*callable_names, SEARCH_TOOLS], n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""
    return (f"unknown tool {name!r}{hint}: only this turn's tools can be called "
            f"({', '.join(callable_names) or 'none'}); search_tools finds others")
