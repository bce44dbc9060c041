"""A turn's own tools and tool choice, as its caller sends them: checked, offered beside the
registered tools, and run by the caller (a call of one pauses the turn, as a client tool's does).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from planner.errors import TurnRequestInvalid
from planner.messages import ToolChoice, ToolChoiceFunction
from planner.model_client import ModelBackend
from planner.prompt import READ_RESULT, REPLAN, SEARCH_TOOLS
from planner.records import ClientTool, FunctionName, NamedToolChoice, TurnRequest
from tools.errors import FieldError
from tools.executors import ExecutableTool
from tools.spec import ClientExecutor, ToolRecord, ToolSpec
from tools.validation import pointer, schema_errors

REQUEST_NAMESPACE = "(request)"
"""The namespace of a turn's own tools. No registered namespace can be written so (tools/spec's
NAME_PATTERN), so a registered tool of the same name is another tool: it is offered qualified by
its namespace (`default_get_weather`), and the caller's keeps the name the caller gave it."""
_ENGINE_TOOLS = (SEARCH_TOOLS, REPLAN, READ_RESULT)
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)


def check_request(request: TurnRequest, backend: ModelBackend | None) -> None:
    """Refuse the turn's own tools or tool choice when they cannot be honoured, naming each
    field; `backend` is None while it is not known yet (a turn its router places)."""
    errors = [*_tool_errors(request.tools), *_choice_errors(request, backend)]
    if errors:
        raise TurnRequestInvalid(errors)


def offered(request: TurnRequest, tenant: str) -> dict[str, ExecutableTool]:
    """The turn's own tools by function name, ready to offer and to pause on."""
    return {t.function.name: ExecutableTool(record=_record(t), tenant=tenant)
            for t in request.tools}


def is_request_tool(tool: ExecutableTool) -> bool:
    return tool.record.namespace == REQUEST_NAMESPACE


def reply_choice(request: TurnRequest, step: int) -> ToolChoice:
    """The tool choice of an auto-mode reply after `step` steps. A forced choice holds for the
    first reply only: held on, the model could never answer from the results."""
    match request.tool_choice:
        case NamedToolChoice(function=FunctionName(name=name)) if step == 0:
            return ToolChoiceFunction(name)
        case "required" if step == 0:
            return "required"
    return "auto"


def _tool_errors(tools: list[ClientTool]) -> Iterator[FieldError]:
    """Each function as a registered tool is checked (its parameters a JSON Schema object),
    with a name of its own."""
    first: dict[str, int] = {}
    for i, tool in enumerate(tools):
        at, name = ("tools", i, "function"), tool.function.name
        if name in _ENGINE_TOOLS:
            yield FieldError(pointer(*at, "name"), f"{name!r} is the name of one of "
                             "Switchboard's own tools; give the function another name")
        elif name in first:
            yield FieldError(pointer(*at, "name"), f"{name!r} is also the name of "
                             f"/tools/{first[name]}; each function needs a name of its own")
        first.setdefault(name, i)
        yield from schema_errors(_spec(tool), prefix=at)


def _choice_errors(request: TurnRequest, backend: ModelBackend | None) -> Iterator[FieldError]:
    choice = request.tool_choice
    if not (choice == "required" or isinstance(choice, NamedToolChoice)):
        return
    if request.mode == "plan":
        yield FieldError("/tool_choice", "a plan turn's first reply is its plan, so no call "
                         "can be forced in it; use mode 'auto', or tool_choice 'auto'")
    if backend is not None and backend.text_tool_calls:
        yield FieldError("/tool_choice", f"model backend {backend.name!r} writes its tool "
                         "calls as text (no tool-call parser), so the server cannot force one; "
                         "use tool_choice 'auto', or a backend whose server parses tool calls")
    if isinstance(choice, NamedToolChoice):
        names = [t.function.name for t in request.tools]
        if choice.function.name not in names:
            yield FieldError(
                "/tool_choice/function/name", f"{choice.function.name!r} is not one of the "
                f"request's tools ({', '.join(names) or 'it sends none'}); name one of them, "
                "since registered tools are found by search, not by name")


def _spec(tool: ClientTool) -> ToolSpec:
    function = tool.function
    return ToolSpec(name=function.name, namespace=REQUEST_NAMESPACE,
                    description=function.description, parameters=function.parameters,
                    executor=ClientExecutor(), learn_from_use=False)


def _record(tool: ClientTool) -> ToolRecord:
    return ToolRecord.of(_spec(tool), version=0, created_at=_NEVER, has_secret=False)
