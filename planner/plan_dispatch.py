"""A plan's steps run as a graph: each starts once its call is known and the steps it refers to
have finished.

Steps come from a whole plan, or one by one from a plan still streaming in (eager dispatch):
then a step starts the moment its JSON object is complete and its inputs are there, so the
first calls run while the model still writes the rest, as LLMCompiler's task fetching unit does.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json

import msgspec

from planner.call_batch import CallBatch
from planner.calls import Call, CallRunner, running_row
from planner.messages import AssistantToolCall, ChatMessage, FunctionCall
from planner.plan import Plan, PlanProblem, PlanStep, checked_step, resolve
from planner.plan_stream import StepScanner
from planner.turn import TurnState
from tools.outcome import CallOutcome


class PlanDispatch:
    """The steps of one plan (attempt `attempt` of the turn), started as they become known.

    Rows: a whole plan is written with the running rows of its first steps in one statement;
    a streamed step writes its own row as it starts, and the plan's message follows once the
    plan is complete and checked. Nothing runs before its row exists either way."""

    def __init__(self, calls: CallRunner, turn: TurnState, attempt: int, max_steps: int) -> None:
        self.calls, self.turn, self.attempt, self.max_steps = calls, turn, attempt, max_steps
        self.steps: list[PlanStep] = []
        """The steps started so far (running, or waiting for the steps they refer to)."""
        self._scanner = StepScanner()
        self._stopped = False
        self._step_number = 0
        self._batch: CallBatch | None = None
        self._done: dict[str, asyncio.Future[CallOutcome | None]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._began: set[str] = set()
        # Each step's task runs in a copy of the context the dispatch was made in (the turn's
        # span), not in the plan's `chat` span that is open while the plan streams.
        self._context = contextvars.copy_context()

    @property
    def began(self) -> bool:
        """Whether any step has begun: made, or refused with a record."""
        return bool(self._began)

    def feed(self, text: str) -> None:
        """A piece of the plan's text as it streams in. Each step it completes starts at once,
        unless that step (or one before it) fails the checks a single step can have; the
        whole plan's checks decide about those."""
        for raw in self._scanner.feed(text):
            if self._stopped or len(self.steps) >= self.max_steps:
                self._stopped = True
                return
            try:
                step = msgspec.json.decode(raw, type=PlanStep)
                step = checked_step(step, [s.id for s in self.steps], set(self.turn.tools))
            except (msgspec.DecodeError, PlanProblem):
                self._stopped = True
                return
            self._start(step, begun=False)

    async def finish(self, plan: Plan) -> None:
        """Run the checked plan to its end; steps not started yet start now. `plan` begins
        with the steps already started, as the same text was read twice."""
        whole = not self.steps
        rest = plan.steps[len(self.steps):]
        calls = [self._call(s, begun=whole and not s.depends_on, position=len(self.steps) + i)
                 for i, s in enumerate(rest)]
        rows = [running_row(c, self.turn.tools.get(c.name)) for c in calls if c.begun]
        await self.turn.add_reply(self._message(plan.steps), None, rows)
        for step, call in zip(rest, calls, strict=True):
            self._run(step, call)
        await self._collect(plan.steps)

    async def keep_began(self) -> Plan:
        """The plan cut to the steps that began, for a plan rejected once complete: the steps
        still waiting are dropped, and those that began run to their end."""
        self.drop()
        began = [s for s in self.steps if self._id(s) in self._began]
        await self.turn.add_reply(self._message(began), None, [])
        await self._collect(began)
        return Plan(steps=began)

    def drop(self) -> None:
        """Cancel the steps that have not begun; they leave no record."""
        for step in list(self.steps):
            if self._id(step) not in self._began:
                self._tasks.pop(step.id).cancel()
                self.steps.remove(step)

    async def abort(self, fault: BaseException) -> None:
        """The plan's model call failed while steps ran. Cancelled: every step is cancelled.
        Otherwise the steps that began run to their end and are written with their message,
        so the turn's record shows them."""
        if not self._tasks:
            return
        if not isinstance(fault, asyncio.CancelledError):
            await self.keep_began()
            return
        for task in self._tasks.values():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._collect(self.steps)

    def _start(self, step: PlanStep, *, begun: bool) -> None:
        self._run(step, self._call(step, begun=begun, position=len(self.steps)))

    def _run(self, step: PlanStep, call: Call) -> None:
        if self._batch is None:
            self._batch = self.calls.open_batch(self.turn, None)
        self.steps.append(step)
        self._future(step.id)
        task = asyncio.get_running_loop().create_task(self._step(step, call),
                                                      context=self._context.copy())
        self._tasks[step.id] = task

    async def _collect(self, steps: list[PlanStep]) -> None:
        assert self._batch is not None, "a plan has at least one step"
        self._batch.size = len(steps)
        tasks = [self._tasks[s.id] for s in steps]
        await self.calls.collect(self.turn, self._batch, asyncio.gather(*tasks),
                                 [self._id(s) for s in steps])

    async def _step(self, step: PlanStep, call: Call) -> None:
        outcome: CallOutcome | None = None
        try:
            outcome = await self._outcome(call)
        finally:
            if not (future := self._future(step.id)).done():
                future.set_result(outcome)

    async def _outcome(self, call: Call) -> CallOutcome | None:
        """Wait for the steps this one refers to, then make it with their outputs, or refuse
        it saying which input it lacks."""
        inputs = [(dep, await self._future(dep)) for dep in call.depends_on]
        self._began.add(call.id)
        turn, outputs = self.turn, {}
        for (dep, outcome), dep_call in zip(inputs, call.waits_for, strict=True):
            if outcome is None and any(p.id == dep_call for p in turn.pending):
                await self.calls.refuse(turn, call, f"skipped: step {dep} waits for an answer "
                                        "(its approval or its client's output); call this "
                                        "again once it has one, if it is still needed")
                return None
            if outcome is None or not outcome.ok:
                await self.calls.refuse(turn, call, f"skipped: step {dep} did not succeed")
                return None
            outputs[dep] = outcome.result
        try:
            arguments = resolve(call.arguments, outputs)
        except LookupError as exc:
            await self.calls.refuse(turn, call, str(exc))
            return None
        return await self.calls.execute(turn, msgspec.structs.replace(call, arguments=arguments))

    def _call(self, step: PlanStep, *, begun: bool, position: int) -> Call:
        if not self._step_number:
            self._step_number = self.turn.next_step()
        return Call(id=self._id(step), name=step.tool, arguments=step.arguments,
                    step=self._step_number, position=position, depends_on=step.depends_on,
                    waits_for=[f"p{self.attempt}_{d}" for d in step.depends_on], begun=begun)

    def _future(self, step_id: str) -> asyncio.Future[CallOutcome | None]:
        if step_id not in self._done:
            self._done[step_id] = asyncio.get_running_loop().create_future()
        return self._done[step_id]

    def _id(self, step: PlanStep) -> str:
        return f"p{self.attempt}_{step.id}"

    def _message(self, steps: list[PlanStep]) -> ChatMessage:
        calls = [AssistantToolCall(id=self._id(s),
                                   function=FunctionCall(s.tool, json.dumps(s.arguments,
                                                                            sort_keys=True)))
                 for s in steps]
        return ChatMessage(role="assistant", content="", tool_calls=calls)

