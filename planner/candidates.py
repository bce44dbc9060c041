"""Which tools a turn offers the model: retrieval for its message, read in the conversation's
context; the conversation's tool block, kept or started afresh (planner/tool_block.py); and
what `search_tools` finds, appended."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace

from planner.events import RetrievedTool, ToolsRetrieved
from planner.records import Candidate
from planner.request_tools import is_request_tool
from planner.span_content import Document
from planner.tool_block import Found, Key, compose
from planner.tracing import TurnTracer
from planner.turn import TurnState
from planner.turn_store import TurnStore
from tools.registry import ToolRegistry


class Candidates:
    def __init__(self, registry: ToolRegistry, store: TurnStore, tracer: TurnTracer,
                 candidate_k: int) -> None:
        self.registry, self.store, self.tracer = registry, store, tracer
        self.candidate_k = candidate_k

    def ranks(self, tenant: str, k: int | None = None) -> bool:
        """Whether retrieval has to choose: a tenant with no more tools than a turn offers gets
        all of them, and ranking them (embedding the query) would change nothing offered."""
        return self.registry.index_size(tenant) > (k or self.candidate_k)

    async def first(self, turn: TurnState, previous: list[Candidate]) -> None:
        """The turn's candidates. Retrieval reads the conversation: its earlier requests weigh
        in, and the tools its last turn used stay, since a follow-up ("and in metres?") names
        none of the words retrieval needs. The last turn's tool block (`previous`) is kept
        while the conversation stays on its topic."""
        k = turn.request.candidate_k or self.candidate_k
        found = await self._search(turn, turn.request.message, k, turn.recent_requests)
        block = compose([(c.namespace, c.name) for c in previous], found,
                        self._recent_keys(turn, previous), k=k)
        span = trace.get_current_span()
        span.set_attribute("switchboard.tool_block.kept", block.kept)
        span.set_attribute("switchboard.tool_block.why", block.why)
        await self.offer(turn, block.keys)

    async def more(self, turn: TurnState, query: str) -> list[tuple[str, bool]]:
        """Add the best matches for `query` to the turn's candidates (`search_tools`); returns
        each match, best first, by the name the model calls it, and whether it was new to the
        turn."""
        k = turn.request.candidate_k or self.candidate_k
        found = await self._search(turn, query, k)
        added = await self.offer(turn, sorted(f.key for f in found))
        called = {(t.record.namespace, t.record.name): name for name, t in turn.tools.items()}
        return [(called[f.key], called[f.key] in added) for f in found if f.key in called]

    async def offer(self, turn: TurnState, keys: list[Key]) -> list[str]:
        """Make these tools callable in the turn, in this order after those it offers already
        (and store them as its candidates); returns the names of those it did not offer yet.
        Tools are only ever appended, so earlier prompt bytes never change within a turn."""
        found = await self.registry.executables(turn.tenant, keys)
        added = []
        for key in keys:
            if key not in found:
                continue  # deleted since it was last offered
            name = _function_name(turn, key)
            if name not in turn.tools:
                turn.tools[name] = found[key]
                added.append(name)
        if added:
            await self.store.set_turn_json(turn.id, "candidates", [
                Candidate(function=function, namespace=t.record.namespace, name=t.record.name,
                          version=t.record.version)
                for function, t in turn.tools.items() if not is_request_tool(t)
            ])  # the turn's own tools are in its request
        return added

    async def _search(self, turn: TurnState, query: str, k: int, context: Sequence[str] = ()
                      ) -> list[Found]:
        """Retrieval's best k for `query`, in a conversation whose earlier requests, the last
        first, are `context`; said in the trace and to the turn's events."""
        with self.tracer.retrieval(tenant=turn.tenant, query=query, k=k,
                                   redact=turn.redactor()) as span:
            if self.ranks(turn.tenant, k):
                span.set_attribute("switchboard.retrieval.context_messages", len(context))
                hits = await self.registry.search(turn.tenant, query, k, context=context)
                found = [Found((h.namespace, h.name), h.score, by_context=h.by_context,
                               dense=h.dense) for h in hits]
                span.set_attribute("switchboard.retrieval.scores", [h.score for h in hits])
                documents = [Document(id=f"{h.namespace}/{h.name}", score=h.score,
                                      content=h.description) for h in hits]
            else:
                found = [Found(key, None) for key in self.registry.keys(turn.tenant)]
                span.set_attribute("switchboard.retrieval.ranked", False)
                documents = [Document(id=f"{ns}/{name}", score=None) for ns, name in
                             (f.key for f in found)]
            span.set_attribute("switchboard.retrieval.tools", [f.key[1] for f in found])
            self.tracer.retrieved(span, documents)
        await turn.emit(ToolsRetrieved(tools=[RetrievedTool(f.key[1], f.key[0], f.score)
                                              for f in found]))
        return found

    def _recent_keys(self, turn: TurnState, previous: list[Candidate]) -> list[Key]:
        """The tools the last turn called with success, as the keys it offered them by (a
        conversation opened with a history has no such turn: its tools go by their names)."""
        offered = {c.function: (c.namespace, c.name) for c in previous}
        by_name = {name: (namespace, name) for namespace, name in self.registry.keys(turn.tenant)}
        return [key for f in turn.recent_tools if (key := offered.get(f) or by_name.get(f))]


def _function_name(turn: TurnState, key: Key) -> str:
    """The tool's name, qualified by its namespace only when another candidate has it."""
    namespace, name = key
    held = turn.tools.get(name)
    if held is None or (held.record.namespace, held.record.name) == key:
        return name
    return f"{namespace}_{name}"[:64]
