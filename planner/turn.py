"""The state of one running turn, and how it records what happens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from opentelemetry.trace import SpanContext

from planner.conduct import CallConduct
from planner.events import PendingCall, Takeover, ToolCallRecord, TurnEvent
from planner.messages import ChatMessage, ToolEntry, Usage
from planner.model_client import ChatModel
from planner.plan import Plan
from planner.prompt import READ_RESULT_ENTRY, REPLAN_ENTRY, SEARCH_TOOLS_ENTRY, tool_entry
from planner.records import FinishedCall, StartedCall, TurnRequest
from planner.routing import Route
from planner.statuses import PausedStatus
from planner.transcripts import NOTE_PREFIX
from planner.turn_store import TurnStore
from tools.executors import ExecutableTool
from tools.redaction import Redactor

EventSink = Callable[[TurnEvent], Awaitable[None]]


async def ignore(_event: TurnEvent) -> None:
    return None


class StandIn(Protocol):
    """Answers some of a turn's calls in place of their tools (an eval run's recorded results):
    the call is checked against the tool's schema, traced and stored as any other, but the
    tool is never reached."""

    label: str
    """How the trace names who answered: `mocked`, `live`."""

    def answers(self, tool: ExecutableTool) -> bool:
        """Whether a call of `tool` is answered here."""
        ...

    def answer(self, tool: ExecutableTool) -> Any:
        """The result a call of `tool` returns."""
        ...


class TurnState:
    """What one running turn holds: its candidate tools, its messages so far, its calls."""

    def __init__(
        self,
        store: TurnStore,
        tenant: str,
        conversation_id: str,
        turn_id: str,
        request: TurnRequest,
        model: ChatModel,
        emit: EventSink,
        max_steps: int,
        stand_in: StandIn | None = None,
    ) -> None:
        self.store, self.tenant = store, tenant
        self.conversation_id, self.id = conversation_id, turn_id
        self.request, self.model, self.emit, self.max_steps = request, model, emit, max_steps
        self.stand_in = stand_in
        self.takeovers: list[Takeover] = []
        """Each time a replica took the turn over from one that was gone."""
        self.route: Route | None = None
        """The router's decision that chose this turn's backend, if one did."""
        self.current: ChatModel = model
        """The backend of the model call under way: `model`, or `join` for a plan's join."""
        self.join: ChatModel | None = None
        """The backend of a plan turn's joins and answer, when not the plan's own."""
        self.spent: dict[str, Usage] = {}
        """What this run of the turn's own model calls spent, by backend."""
        self.charged: dict[str, Usage] = {}
        """What this run spent, by backend: its own model calls and its expert tools' (what
        token quotas count)."""
        self.recent_tools: list[str] = []
        """The tools the conversation's last turn called with success."""
        self.recent_requests: list[str] = []
        """The conversation's latest earlier user messages, the last first (retrieval's
        context)."""
        self.earlier = 0
        """How many of `messages` (at their start) are earlier turns'."""
        self.conduct = CallConduct()
        """What this turn tolerates of the model's calls (corrections, loops)."""
        self.nudged = False
        """Whether an empty answer has been sent back once already."""
        self.planless = False
        """A plan turn fell back to auto mode: no `replan` tool, no plan schema."""
        self.reads_results = False
        """Whether a result was cut to fit the context window: `read_result` is offered."""
        self.tools: dict[str, ExecutableTool] = {}
        """Candidates by function name, in the order they were found (the tool block's order)."""
        self.messages: list[ChatMessage] = []
        self.calls: list[ToolCallRecord] = []
        self.plans: list[Plan] = []
        self.observations: dict[str, ChatMessage] = {}
        self.answer: tuple[ChatMessage, str | None] = (ChatMessage(role="assistant", content=""),
                                                       None)
        """The model's final reply and its reasoning, once it has answered."""
        self.pending: list[PendingCall] = []
        """Calls that wait on a person's approval or a client tool's output: the turn pauses."""
        self.usage = Usage()
        self.step = 0
        self.traceparent: str | None = None
        """The turn's span (W3C traceparent), so that a resumed turn continues its trace."""
        self.span_contexts: dict[str, SpanContext] = {}
        """Each finished call's span, so calls that waited for it can link to it."""
        self._redactor: Redactor | None = None
        self._redactor_for = -1

    def redactor(self) -> Redactor:
        """Secrets this turn knows of: its tools' (`ExecutableTool.secrets`) and the model's API
        key (rebuilt only when the candidates change)."""
        if self._redactor is None or self._redactor_for != len(self.tools):
            secrets = [s for tool in self.tools.values() for s in tool.secrets()]
            keys = [m.backend.api_key for m in (self.model, self.join) if m is not None]
            self._redactor = Redactor([*secrets, *keys])
            self._redactor_for = len(self.tools)
        return self._redactor

    @property
    def entries(self) -> list[ToolEntry]:
        """The tool block: the same bytes for the same candidates; new ones are appended."""
        extra = [REPLAN_ENTRY] if self.request.mode == "plan" and not self.planless else []
        if self.reads_results:
            extra.append(READ_RESULT_ENTRY)
        found = [
            tool_entry(n, t.record.description, t.record.parameters) for n, t in self.tools.items()
        ]
        return [SEARCH_TOOLS_ENTRY, *extra, *found]

    @property
    def paused_status(self) -> PausedStatus:
        """The status of the turn while it waits: approval comes first when it waits on both."""
        if any(p.waits_for == "approval" for p in self.pending):
            return "awaiting_approval"
        return "requires_action"

    def charge(self, backend: str, usage: Usage) -> None:
        self.charged[backend] = self.charged.get(backend, Usage()) + usage

    def next_step(self) -> int:
        self.step += 1
        return self.step

    async def add(self, message: ChatMessage, reasoning: str | None = None) -> None:
        """Append to the model's view of the turn and write it to the store at once."""
        self.messages.append(message)
        await self.store.add_messages(self.tenant, self.conversation_id, self.id, [message],
                                      reasoning)

    async def add_all(self, messages: list[ChatMessage]) -> None:
        self.messages.extend(messages)
        await self.store.add_messages(self.tenant, self.conversation_id, self.id, messages)

    async def add_reply(
        self, message: ChatMessage, reasoning: str | None, calls: list[StartedCall]
    ) -> None:
        """The model's reply and its calls' running rows, written in one statement."""
        self.messages.append(message)
        await self.store.start_reply(
            self.tenant, self.conversation_id, self.id, message, reasoning, calls
        )

    async def add_results(self, ends: list[FinishedCall], messages: list[ChatMessage]) -> None:
        """A batch's call ends not yet written and its tool messages, in one statement."""
        self.messages.extend(messages)
        await self.store.finish_and_observe(
            self.tenant, self.conversation_id, self.id, ends, messages
        )

    async def note(self, text: str) -> None:
        """Tell the model something about the run itself (never tool output)."""
        await self.add(ChatMessage(role="user", content=f"{NOTE_PREFIX} {text}"))
