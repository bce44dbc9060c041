"""The overhead benchmark's workload on LangGraph: its prebuilt tool-calling agent, a chat model
that answers at once by the same script as `bench._instant_model`, and no-op tools.

Needs the `bench` extra (langgraph, langgraph-checkpoint-postgres, psycopg, langchain-core).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.graph.state import CompiledStateGraph
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict

from bench._instant_model import FINAL_ANSWER, TOOL_NAMES, StepClock, scripted_call

SYSTEM_PROMPT = "You answer by calling the tools you are given."


class Query(BaseModel):
    query: str


async def _noop(query: str) -> dict[str, bool]:
    return {"ok": True}


def noop_tools() -> list[BaseTool]:
    return [
        StructuredTool.from_function(coroutine=_noop, name=name, args_schema=Query,
                                     description=f"{name.replace('_', ' ').capitalize()}.")
        for name in TOOL_NAMES
    ]


class InstantChatModel(BaseChatModel):
    """A chat model that follows `scripted_call`, deciding from the messages alone."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    clock: StepClock
    steps: int

    @property
    def _llm_type(self) -> str:
        return "instant"

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: Any = None, **kwargs: Any,
    ) -> ChatResult:
        self.clock.mark()
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: list[str] | None = None,
        run_manager: Any = None, **kwargs: Any,
    ) -> ChatResult:
        # The base class would run `_generate` on a thread; an instant model needs none.
        return self._generate(messages, stop, None, **kwargs)

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        asked = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        done = sum(1 for m in messages[asked + 1:] if isinstance(m, ToolMessage))
        call = scripted_call(done, self.steps)
        if call is None:
            return AIMessage(content=FINAL_ANSWER)
        name, arguments = call
        return AIMessage(content="", tool_calls=[
            {"name": name, "args": arguments, "id": f"call_{done}", "type": "tool_call"}
        ])


def build_agent(
    clock: StepClock, steps: int, checkpointer: AsyncPostgresSaver | None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """`create_react_agent` with a ToolNode of no-op tools (deprecated in LangGraph 1.x in
    favour of `langchain.agents.create_agent`, which needs the `langchain` package too)."""
    from langgraph.prebuilt import create_react_agent

    model = InstantChatModel(clock=clock, steps=steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return create_react_agent(model, noop_tools(), prompt=SYSTEM_PROMPT,
                                  checkpointer=checkpointer)


@contextlib.asynccontextmanager
async def postgres_checkpointer(url: str) -> AsyncIterator[AsyncPostgresSaver]:
    """The saver over a connection pool, set up as LangGraph's documentation shows."""
    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    async with AsyncConnectionPool(url, min_size=2, max_size=10, kwargs=kwargs,
                                   open=False) as pool:
        saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        await saver.setup()
        yield saver


async def run_agent(agent: CompiledStateGraph[Any, Any, Any, Any], message: str,
                    thread_id: str) -> list[BaseMessage]:
    config: Any = {"configurable": {"thread_id": thread_id}}
    state = await agent.ainvoke({"messages": [HumanMessage(content=message)]}, config)
    messages: list[BaseMessage] = state["messages"]
    return messages
