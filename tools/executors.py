"""Run one tool call under the tool's policy: check arguments, time out, retry, cap concurrency
and output, and describe every failure so the model can read it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import msgspec
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from tools.builtins import BuiltinFunction, BuiltinFunctions, default_builtins
from tools.egress import EgressRefused
from tools.error_pages import looks_like_html, plain_excerpt
from tools.errors import McpCallFailed, McpServerNotFound, McpUnreachable, SlotUnavailable
from tools.experts import ExpertFailure, Experts
from tools.http_request import build_request, misplacement, public_url
from tools.json_schema import ArgumentValidator, RegexInvalid
from tools.mcp.results import tool_output
from tools.mcp.sessions import McpSessions
from tools.outcome import CallOutcome, ModelUsage
from tools.redaction import Redactor, header_credentials
from tools.retry import backoff_delay, retryable_status
from tools.slots import SharedSlots
from tools.spec import (
    BuiltinExecutor,
    ClientExecutor,
    HttpExecutor,
    McpExecutor,
    ModelExecutor,
    ToolRecord,
)
from tools.validation import pointer

log = logging.getLogger(__name__)

# The error types the runner itself reports; callers may record others (a refused call, say).
ErrorType = Literal[
    "invalid_arguments",
    "timeout",
    "http_status",
    "bad_output",
    "unreachable",
    "egress_refused",
    "no_executor",
    "unknown_function",
    "tool_error",
]

_MAX_LISTED_PROBLEMS = 10
_ERROR_BODY_CHARS = 500
_HTML_EXCERPT_CHARS = 200
_ERROR_HEAD_BYTES = 16_384
"""Read of an error body: enough to get past an HTML page's styles to its text."""
_SNIPPET_CHARS = 200


class ExecutableTool(msgspec.Struct, frozen=True, kw_only=True):
    """A stored tool version plus its write-only secret and headers, and its tenant (an MCP
    tool's server is found by tenant and name), as the runner needs it."""

    record: ToolRecord
    tenant: str
    secret: str | None = None
    secret_headers: dict[str, str] = {}

    def secrets(self) -> list[str]:
        """What must never reach the model, the store or a trace: the signing secret, the
        write-only headers, and credentials in the executor's plain headers."""
        found = [self.secret] if self.secret else []
        found += [v for v in self.secret_headers.values() if v]
        if isinstance(self.record.executor, HttpExecutor):
            found += header_credentials(self.record.executor.headers)
        return found


class Backoff(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff between attempts of an idempotent call, half fixed and half random
    so that calls failing together do not come back together."""

    base_s: float = 0.1
    max_s: float = 2.0

    def delay(self, retry: int) -> float:
        return backoff_delay(retry, self.base_s, self.max_s)


class _Output(msgspec.Struct, frozen=True):
    value: Any
    truncated: bool = False
    usage: ModelUsage | None = None


class _Fault(msgspec.Struct, frozen=True):
    error_type: ErrorType
    message: str
    retryable: bool = False
    usage: ModelUsage | None = None


_Attempt = Callable[[], Awaitable[_Output | _Fault]]
_ToolKey = tuple[str, str, int]


class ToolRunner:
    """Runs tool calls. A tool's concurrency cap counts across replicas when `slots` is given
    (tools/slots.py), else in this runner."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        builtins: BuiltinFunctions | None = None,
        *,
        max_output_bytes: int = 65_536,
        backoff: Backoff | None = None,
        mcp: McpSessions | None = None,
        experts: Experts | None = None,
        slots: SharedSlots | None = None,
    ) -> None:
        self._http = http
        self._shared_slots = slots
        """Where capped tools' calls are counted across replicas; None: in this process."""
        self._mcp = mcp
        self.experts = experts
        self._builtins = builtins if builtins is not None else default_builtins()
        self._max_output_bytes = max_output_bytes
        self._backoff = backoff or Backoff()
        self._validators: dict[_ToolKey, Validator] = {}
        self._semaphores: dict[tuple[str, _ToolKey], asyncio.Semaphore] = {}

    def argument_problem(self, tool: ExecutableTool, arguments: Any) -> str | None:
        """Why these arguments do not fit the tool's parameters schema, or None when they do."""
        fault = _argument_problem(tool.record, self._validator(tool.record), arguments)
        return None if fault is None else fault.message

    async def execute_call(self, tool: ExecutableTool, arguments: Any) -> CallOutcome:
        started_at = _now()
        prepared = self._prepare(tool, arguments)
        if isinstance(prepared, _Fault):
            return _outcome(prepared, started_at, attempts=0, secrets=tool.secrets())
        started_at = _now()
        result, attempts = await self._run(tool, prepared)
        if isinstance(result, _Output):
            result = _cap(result, self._max_output_bytes)
        return _outcome(result, started_at, attempts=attempts, secrets=tool.secrets())

    def _prepare(self, tool: ExecutableTool, arguments: Any) -> _Attempt | _Fault:
        """Check the arguments and find the executor; nothing runs yet."""
        record = tool.record
        problem = _argument_problem(record, self._validator(record), arguments)
        if problem is not None:
            return problem
        match record.executor:
            case HttpExecutor() as executor:
                misplaced = misplacement(executor, arguments)
                if misplaced is not None:
                    return _Fault("invalid_arguments", misplaced)
                return functools.partial(self._call_http, executor, arguments, tool)
            case BuiltinExecutor(function=name):
                return self._builtin_attempt(name, arguments)
            case ClientExecutor():
                return _Fault(
                    "no_executor",
                    f"tool {record.name!r} runs in the client: its output comes from the "
                    "frontend that holds the conversation, not from this service",
                )
            case McpExecutor() as executor:
                return self._mcp_attempt(tool.tenant, executor, arguments)
            case ModelExecutor() as executor:
                return self._model_attempt(tool.tenant, executor, arguments)
            case None:
                return _Fault(
                    "no_executor",
                    f"tool {record.name!r} is catalogue-only: it has no executor, so it cannot "
                    "be called; answer without it or use another tool",
                )

    async def _run(self, tool: ExecutableTool, attempt: _Attempt
                   ) -> tuple[_Output | _Fault, int]:
        """Attempt once, and again after a backoff only for idempotent tools' retryable faults."""
        record = tool.record
        policy = record.policy
        # Asking a model changes nothing anywhere, so a model tool is retried as an idempotent
        # one is.
        safe = policy.idempotent or isinstance(record.executor, ModelExecutor)
        budget = policy.max_retries if safe else 0
        attempts, used = 0, None
        while True:
            attempts += 1
            result = await self._attempt(tool, attempt)
            used = _added(used, result.usage)
            if isinstance(result, _Output) or not result.retryable or attempts > budget:
                return msgspec.structs.replace(result, usage=used), attempts
            await asyncio.sleep(self._backoff.delay(attempts))

    async def _attempt(self, tool: ExecutableTool, attempt: _Attempt) -> _Output | _Fault:
        try:
            return await self._in_slot(tool, attempt)
        except SlotUnavailable as exc:
            return _Fault("tool_error", str(exc), retryable=True)

    async def _in_slot(self, tool: ExecutableTool, attempt: _Attempt) -> _Output | _Fault:
        record = tool.record
        # The timeout covers running, not waiting for a concurrency slot.
        async with self._slot(tool):
            try:
                async with asyncio.timeout(record.policy.timeout_s):
                    return await attempt()
            except TimeoutError:
                return _Fault(
                    "timeout",
                    f"{_target(record)} did not finish within {record.policy.timeout_s:g} s "
                    "(the tool's timeout) and was abandoned",
                    retryable=True,
                )
            except Exception as exc:  # whatever else breaks is this call's failure, not the turn's
                log.exception("calling %s failed unexpectedly", _target(record))
                return _Fault("tool_error", f"{_target(record)} could not be called: "
                                            f"{type(exc).__name__}: {exc}")

    def _slot(self, tool: ExecutableTool) -> contextlib.AbstractAsyncContextManager[Any]:
        """A slot of the tenant's tool, when its policy caps its concurrency: across replicas
        when slots are shared, else in this process."""
        record = tool.record
        limit = record.policy.max_concurrency
        if limit is None:
            return contextlib.nullcontext()
        if self._shared_slots is not None:
            return self._shared_slots.hold(tool.tenant, f"{record.namespace}/{record.name}",
                                           limit, record.policy.timeout_s)
        key = (tool.tenant, (record.namespace, record.name, record.version))
        if key not in self._semaphores:
            self._semaphores[key] = asyncio.Semaphore(limit)
        return self._semaphores[key]

    def _validator(self, record: ToolRecord) -> Validator:
        key = (record.namespace, record.name, record.version)
        cached = self._validators.get(key)
        # Records carry no tenant, so two tenants' same-named tools share a key: the schema
        # comparison keeps one from being checked against the other's parameters.
        if cached is None or cached.schema != record.parameters:
            cached = self._validators[key] = ArgumentValidator(record.parameters)
        return cached

    # --- builtin --------------------------------------------------------------------------

    def _builtin_attempt(self, name: str, arguments: dict[str, Any]) -> _Attempt | _Fault:
        fn = self._builtins.get(name)
        if fn is None:
            available = ", ".join(self._builtins.names()) or "none"
            return _Fault(
                "unknown_function",
                f"builtin function {name!r} is not available in this service; "
                f"available: {available}",
            )
        return functools.partial(_call_builtin, name, fn, arguments)

    # --- mcp ------------------------------------------------------------------------------

    def _mcp_attempt(
        self, tenant: str, executor: McpExecutor, arguments: dict[str, Any]
    ) -> _Attempt | _Fault:
        if self._mcp is None:
            return _Fault(
                "no_executor",
                f"MCP server {executor.server!r} cannot be reached from here: this runner has "
                "no MCP sessions",
            )
        return functools.partial(_call_mcp, self._mcp, tenant, executor, arguments)

    # --- model ----------------------------------------------------------------------------

    def _model_attempt(
        self, tenant: str, executor: ModelExecutor, arguments: dict[str, Any]
    ) -> _Attempt | _Fault:
        experts = self.experts
        if experts is None or executor.backend not in experts.backends():
            configured = ", ".join(experts.backends()) if experts else "none"
            return _Fault("no_executor", f"model backend {executor.backend!r} is not configured "
                                         f"in this service (configured: {configured})")
        return functools.partial(_call_model, experts, tenant, executor, arguments)

    # --- http -----------------------------------------------------------------------------

    async def _call_http(
        self, executor: HttpExecutor, arguments: dict[str, Any], tool: ExecutableTool
    ) -> _Output | _Fault:
        target = f"{executor.method} {public_url(executor.url)}"
        request = build_request(self._http, executor, arguments, tool.secret, tool.secret_headers)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            return _unreachable(executor.url, exc)
        try:
            return await self._read_response(response, target)
        except httpx.TransportError as exc:
            return _unreachable(executor.url, exc)
        finally:
            await response.aclose()

    async def _read_response(self, response: httpx.Response, target: str) -> _Output | _Fault:
        if not response.is_success:
            head, _ = await _read_head(response, _ERROR_HEAD_BYTES)
            return _status_fault(response.status_code, head, target,
                                 response.headers.get("content-type"))
        head, total = await _read_head(response, self._max_output_bytes)
        return _decode_body(head, total, response.headers.get("content-type"), target)


# --- attempts ----------------------------------------------------------------------------------


async def _call_builtin(
    name: str, fn: BuiltinFunction, arguments: dict[str, Any]
) -> _Output | _Fault:
    # A sync function keeps its thread after a timeout; the call is abandoned, not stopped.
    try:
        if inspect.iscoroutinefunction(fn):
            value = await fn(**arguments)
        else:
            value = await asyncio.to_thread(fn, **arguments)
    except Exception as exc:
        return _Fault(
            "tool_error", f"builtin function {name!r} failed: {type(exc).__name__}: {exc}"
        )
    try:
        return _Output(msgspec.to_builtins(value))
    except TypeError:
        return _Fault(
            "bad_output",
            f"builtin function {name!r} returned a {type(value).__name__}, which is not JSON",
        )


async def _call_mcp(
    sessions: McpSessions, tenant: str, executor: McpExecutor, arguments: dict[str, Any]
) -> _Output | _Fault:
    try:
        result = await sessions.call_tool(tenant, executor.server, executor.tool, arguments)
    except McpUnreachable as exc:
        return _Fault("unreachable", str(exc), retryable=True)
    except McpCallFailed as exc:
        return _Fault("bad_output" if exc.error_type == "bad_output" else "tool_error", str(exc))
    except McpServerNotFound as exc:
        return _Fault("no_executor", str(exc))
    output = tool_output(result)
    if output.error is not None:
        return _Fault(
            "tool_error",
            f"MCP tool {executor.tool!r} of server {executor.server!r} failed: {output.error}",
        )
    return _Output(output.value)


async def _call_model(
    experts: Experts, tenant: str, executor: ModelExecutor, arguments: dict[str, Any]
) -> _Output | _Fault:
    """The expert's answer: its text, or with an output schema the JSON it wrote, checked."""
    where = f"model backend {executor.backend!r}"
    try:
        reply = await experts.ask(tenant, executor, arguments)
    except ExpertFailure as exc:
        return _Fault("tool_error", f"{where} did not answer: {exc}", retryable=exc.retryable)
    if executor.output_schema is None:
        return _Output(reply.text, usage=reply.usage)
    try:
        value = json.loads(reply.text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return _Fault("bad_output", f"{where} answered with text that is not JSON: {exc}",
                      retryable=True, usage=reply.usage)
    problem = _output_problem(executor.output_schema, value)
    if problem is not None:
        return _Fault("bad_output", f"{where} answered with JSON that does not fit the tool's "
                                    f"output schema: {problem}", retryable=True, usage=reply.usage)
    return _Output(value, usage=reply.usage)


def _output_problem(schema: dict[str, Any], value: Any) -> str | None:
    """Where the value breaks the schema (registration checked the schema itself)."""
    try:
        errors = sorted(ArgumentValidator(schema).iter_errors(value),
                        key=lambda e: list(map(str, e.path)))
    except (RecursionError, RegexInvalid, SchemaError, Unresolvable) as exc:
        return f"the schema cannot be checked ({type(exc).__name__}: {exc})"
    if not errors:
        return None
    return "; ".join(f"{pointer(*e.absolute_path) or '/'}: {e.message}"
                     for e in errors[:_MAX_LISTED_PROBLEMS])


def _added(used: ModelUsage | None, more: ModelUsage | None) -> ModelUsage | None:
    if used is None or more is None:
        return used or more
    cached = None if used.cached_tokens is None and more.cached_tokens is None else (
        (used.cached_tokens or 0) + (more.cached_tokens or 0))
    return ModelUsage(backend=used.backend, prompt_tokens=used.prompt_tokens + more.prompt_tokens,
                      completion_tokens=used.completion_tokens + more.completion_tokens,
                      cached_tokens=cached)


async def _read_head(response: httpx.Response, limit: int) -> tuple[bytes, int]:
    """The first `limit` bytes of the body and its full length; the rest is read and dropped
    (memory stays bounded; time is bounded by the attempt's timeout)."""
    head = bytearray()
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if len(head) < limit:
            head += chunk[: limit - len(head)]
    return bytes(head), total


def _decode_body(
    head: bytes, total: int, content_type: str | None, target: str
) -> _Output | _Fault:
    if total == 0:
        return _Output(None)
    if total > len(head):
        if is_json_type(content_type):
            return _Output(_truncated(head, total), truncated=True)
        return _not_json(head, content_type, target, status=f"a {total}-byte")
    try:
        return _Output(msgspec.json.decode(head))
    except msgspec.DecodeError:
        return _not_json(head, content_type, target, status="a")


def _not_json(head: bytes, content_type: str | None, target: str, status: str) -> _Fault:
    snippet = head[: _SNIPPET_CHARS * 4].decode(errors="replace")[:_SNIPPET_CHARS]
    kind = f"content-type {content_type!r}" if content_type else "no content-type"
    return _Fault(
        "bad_output",
        f"{target} answered with {status} body that is not JSON ({kind}): {snippet}",
    )


def _status_fault(status: int, head: bytes, target: str, content_type: str | None) -> _Fault:
    body = head.decode(errors="replace")
    if looks_like_html(content_type, body):
        body = f"(an HTML page) {plain_excerpt(body, _HTML_EXCERPT_CHARS)}"
    body = body[:_ERROR_BODY_CHARS]
    retryable = retryable_status(status)
    hint = ""
    if retryable:
        hint = " (the tool's server is failing or busy)"
    elif status in (501, 505):
        hint = " (the tool's server does not do this; its owner must fix the tool)"
    elif 400 <= status < 500:
        hint = " (check the arguments against the tool's parameters)"
    return _Fault("http_status", f"{target} answered HTTP {status}{hint}: {body}",
                  retryable=retryable)


def _unreachable(url: str, exc: httpx.TransportError) -> _Fault:
    if isinstance(exc, EgressRefused):
        return _Fault("egress_refused", str(exc))
    if isinstance(exc, httpx.LocalProtocolError):  # never sent: nothing to retry
        return _Fault("tool_error", f"the request to {public_url(url)} could not be sent "
                                    f"({exc}); the tool's owner must fix its headers")
    what = (
        "could not connect to" if isinstance(exc, httpx.ConnectError) else "lost the connection to"
    )
    return _Fault(
        "unreachable",
        f"{what} {public_url(url)} ({type(exc).__name__}); "
        "the tool's server is down or its URL is wrong",
        retryable=True,
    )


# --- outcome -----------------------------------------------------------------------------------


def _argument_problem(
    record: ToolRecord, validator: Validator, arguments: Any
) -> _Fault | None:
    if not isinstance(arguments, dict):
        return _Fault(
            "invalid_arguments",
            "arguments invalid: /: expected a JSON object of named arguments, "
            f"got {_json_type(arguments)}",
        )
    try:
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(map(str, e.path)))
    except Unresolvable as exc:
        return _Fault(
            "tool_error",
            f"tool {record.name!r} cannot be called: its parameters schema has a $ref that "
            f"does not resolve ({exc}); the tool's owner must fix the schema",
        )
    except (RecursionError, RegexInvalid, SchemaError) as exc:
        # Registration refuses such schemas; one stored before those checks still only fails
        # its own calls.
        return _Fault(
            "tool_error",
            f"tool {record.name!r} cannot be called: its parameters schema cannot be checked "
            f"({type(exc).__name__}: {exc}); the tool's owner must fix the schema",
        )
    if not errors:
        return None
    listed = "; ".join(
        f"{pointer(*e.absolute_path) or '/'}: {e.message}" for e in errors[:_MAX_LISTED_PROBLEMS]
    )
    more = len(errors) - _MAX_LISTED_PROBLEMS
    tail = f" (and {more} more)" if more > 0 else ""
    return _Fault("invalid_arguments", f"arguments invalid: {listed}{tail}")


def _json_type(value: Any) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
    return type(value).__name__


def _cap(output: _Output, limit: int) -> _Output:
    if output.truncated:
        return output
    encoded = msgspec.json.encode(output.value)
    if len(encoded) <= limit:
        return output
    return _Output(_truncated(encoded[:limit], len(encoded)), truncated=True, usage=output.usage)


def _truncated(head: bytes, total: int) -> str:
    # Cutting may split a UTF-8 sequence; the partial character is dropped, not mangled.
    kept = head.decode(errors="ignore")
    return f"{kept}…[truncated: {total} bytes, kept {len(kept.encode())}]"


def is_json_type(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _outcome(
    result: _Output | _Fault, started_at: datetime, *, attempts: int, secrets: list[str]
) -> CallOutcome:
    finished_at = _now()
    match result:
        case _Output(value=value, truncated=truncated, usage=usage):
            return CallOutcome(result=value, truncated=truncated, started_at=started_at,
                               finished_at=finished_at, attempts=attempts, usage=usage)
        case _Fault(error_type=error_type, message=message, usage=usage):
            # A tool's server may echo anything, even the secret it shares with us.
            return CallOutcome(error=Redactor(secrets)(message), error_type=error_type,
                               started_at=started_at, finished_at=finished_at, attempts=attempts,
                               usage=usage)


def _target(record: ToolRecord) -> str:
    match record.executor:
        case HttpExecutor(method=method, url=url):
            return f"{method} {public_url(url)}"
        case BuiltinExecutor(function=name):
            return f"builtin function {name!r}"
        case ClientExecutor():
            return f"client tool {record.name!r}"
        case McpExecutor(server=server, tool=tool):
            return f"MCP tool {tool!r} of server {server!r}"
        case ModelExecutor(backend=backend):
            return f"model backend {backend!r}"
    return f"tool {record.name!r}"


def _now() -> datetime:
    return datetime.now(UTC)
