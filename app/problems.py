"""RFC 9457 problem details: the one place where errors become HTTP responses, and where a
failed turn's error becomes the problem it keeps."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import asyncpg
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler

from app.errors import (
    BodyNotJson,
    DatabaseError,
    IdempotencyConflict,
    NotFound,
    RequestFieldInvalid,
)
from planner.errors import (
    CallNotWaiting,
    ContextOverflow,
    ConversationNotFound,
    DecisionInvalid,
    ModelResponseError,
    ModelUnavailable,
    PlannerError,
    QuotaExceeded,
    ReplicaStopping,
    StoreUnsupported,
    TurnConflict,
    TurnNotFound,
    TurnNotPaused,
    TurnRequestInvalid,
    UnknownModel,
)
from planner.evals.errors import (
    EvalConfigUnknown,
    EvalInvalid,
    EvalRunNotFound,
    EvalSetBusy,
    EvalSetExists,
    EvalSetNotFound,
)
from planner.events import Problem
from planner.routers import NoRouter, RouterUntrainable
from tools.errors import (
    DocumentInvalid,
    DocumentUnreachable,
    EmbeddingError,
    ExampleNotFound,
    FieldError,
    JobConflict,
    JobNotFound,
    McpCallFailed,
    McpListingInvalid,
    McpServerExists,
    McpServerNotFound,
    McpUnreachable,
    NothingToRollBack,
    NothingToTrain,
    SearchBusy,
    SpecInvalid,
    ToolExists,
    ToolNotFound,
)
from tools.validation import explain, pointer

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"

_PROBLEMS: dict[type[Exception], tuple[int, str, str]] = {
    ToolNotFound: (404, "not-found", "Not found"),
    ExampleNotFound: (404, "not-found", "Not found"),
    JobNotFound: (404, "not-found", "Not found"),
    JobConflict: (409, "conflict", "A training job is running"),
    NothingToTrain: (422, "nothing-to-train", "Too few examples to train on"),
    NothingToRollBack: (409, "conflict", "Nothing to roll back"),
    McpServerNotFound: (404, "not-found", "Not found"),
    NotFound: (404, "not-found", "Not found"),
    ToolExists: (409, "conflict", "Already exists"),
    McpServerExists: (409, "conflict", "Already exists"),
    McpListingInvalid: (502, "mcp-server-error", "MCP server error"),
    McpCallFailed: (502, "mcp-server-error", "MCP server error"),
    ModelUnavailable: (503, "model-unavailable", "Model unavailable"),
    ModelResponseError: (502, "model-error", "Bad response from the model"),
    ConversationNotFound: (404, "not-found", "Not found"),
    TurnNotFound: (404, "not-found", "Not found"),
    UnknownModel: (422, "invalid-request", "Unknown model backend"),
    NoRouter: (422, "no-router", "No router for model 'auto'"),
    RouterUntrainable: (422, "invalid-request", "Nothing to train a router on"),
    TurnConflict: (409, "turn-in-progress", "A turn is already running"),
    TurnNotPaused: (409, "turn-not-paused", "The turn waits on nothing"),
    CallNotWaiting: (409, "call-not-waiting", "The call waits on nothing"),
    DecisionInvalid: (422, "invalid-request", "Request body is invalid"),
    TurnRequestInvalid: (422, "invalid-request", "Request body is invalid"),
    StoreUnsupported: (501, "store-unsupported", "Not supported by this turn store"),
    ContextOverflow: (422, "context-overflow", "Too large for the model's context window"),
    ReplicaStopping: (503, "replica-stopping", "Replica shutting down"),
    QuotaExceeded: (429, "quota-exceeded", "Token quota spent"),
    EvalInvalid: (422, "invalid-request", "Request body is invalid"),
    EvalSetNotFound: (404, "not-found", "Not found"),
    EvalRunNotFound: (404, "not-found", "Not found"),
    EvalSetExists: (409, "conflict", "Already exists"),
    EvalSetBusy: (409, "conflict", "Runs of the set are running"),
    EvalConfigUnknown: (422, "invalid-request", "Request is invalid"),
}
"""Each error's status, problem type and title, where its message is the whole detail (planner
errors may add a route to it: `planner_detail`)."""
_STATUS_SLUGS = {401: "unauthorized", 403: "forbidden", 404: "not-found",
                 405: "method-not-allowed", 409: "conflict", 413: "too-large",
                 422: "invalid-request", 429: "rate-limited"}


def planner_detail(exc: PlannerError) -> str:
    """The error's message with what a client does next, where that is another route."""
    match exc:
        case ConversationNotFound():
            return f"{exc}; create one with POST /v1/conversations"
        case UnknownModel():
            return f"{exc} (GET /v1/models lists them)"
        case TurnConflict(turn_id=turn_id, waiting=waiting) if exc.turn_status != "running" \
                and waiting:
            return (f"{exc}; answer those (POST /v1/turns/{turn_id}/approvals or "
                    f"/v1/turns/{turn_id}/outputs) and the turn goes on")
        case CallNotWaiting(turn_id=turn_id, waits_for=waits_for) if waits_for is not None:
            route = "outputs" if waits_for == "output" else "approvals"
            return f"{exc}; POST /v1/turns/{turn_id}/{route} instead"
    return str(exc)


def planner_problem(exc: PlannerError) -> Problem:
    status, slug, title = _kind(exc) or (500, "turn-failed", "Turn failed")
    if isinstance(exc, CallNotWaiting) and not exc.exists:
        status = 404
    errors = (exc.errors if isinstance(exc, DecisionInvalid | EvalInvalid | TurnRequestInvalid)
              else [])
    if isinstance(exc, EvalConfigUnknown):
        errors = [FieldError("", str(exc), parameter="query parameter 'config'")]
    return Problem(type=f"/problems/{slug}", title=title, status=status,
                   detail=planner_detail(exc), errors=errors)


def database_unavailable(exc: Exception) -> Problem:
    """A lost or refused database connection, on a route or in a turn: a 503, to retry."""
    return Problem(type="/problems/database-unavailable", title="Database unavailable",
                   status=503, detail=f"{type(exc).__name__}: {exc}")


def turn_problem(exc: Exception) -> Problem:
    """What a failed turn keeps of the error that ended it (the engine's `problem_of`)."""
    if isinstance(exc, PlannerError):
        return planner_problem(exc)
    if isinstance(exc, asyncpg.PostgresError | OSError):
        return database_unavailable(exc)
    return Problem(type="/problems/turn-failed", title="Turn failed", status=500,
                   detail=f"{type(exc).__name__}: {exc}")


def respond(
    request: Request[Any, Any, Any], found: Problem, headers: dict[str, str] | None = None
) -> Response[Problem]:
    """The problem as the response to `request`."""
    body = Problem(type=found.type, title=found.title, status=found.status, detail=found.detail,
                   instance=request.url.path, errors=found.errors)
    return Response(body, status_code=found.status, media_type=PROBLEM_JSON, headers=headers)


def problem(
    request: Request[Any, Any, Any],
    status: int,
    slug: str,
    title: str,
    detail: str,
    errors: list[FieldError] | None = None,
) -> Response[Problem]:
    return respond(request, Problem(type=f"/problems/{slug}", title=title, status=status,
                                    detail=detail, errors=errors or []))


def on_spec_invalid(request: Request[Any, Any, Any], exc: SpecInvalid) -> Response[Problem]:
    # A bad value is a 422 wherever it came (a field, a query or path parameter): one problem
    # type, one status. 400 is kept for a request that cannot be read at all.
    title = ("Request is invalid" if all(e.parameter is not None for e in exc.errors)
             else "Request body is invalid")
    return problem(request, 422, "invalid-request", title, str(exc), exc.errors)


def on_body_not_json(request: Request[Any, Any, Any], exc: BodyNotJson) -> Response[Problem]:
    return problem(request, 400, "malformed-json", "Body is not JSON", str(exc))


def on_request_field(
    request: Request[Any, Any, Any], exc: RequestFieldInvalid
) -> Response[Problem]:
    errors = [FieldError(exc.pointer, exc.message, parameter=exc.parameter)]
    title = "Request body is invalid" if exc.parameter is None else "Request is invalid"
    return problem(request, 422, "invalid-request", title, str(exc), errors)


def on_document_invalid(
    request: Request[Any, Any, Any], exc: DocumentInvalid
) -> Response[Problem]:
    # The pointer is into the OpenAPI document, which may have come from a URL.
    return problem(request, 422, "invalid-openapi", "OpenAPI document cannot be imported",
                   str(exc), [FieldError(exc.pointer, exc.message)])


def on_document_unreachable(
    request: Request[Any, Any, Any], exc: DocumentUnreachable
) -> Response[Problem]:
    # The caller's `url` cannot be used (refused by the egress guard, down, not found): a
    # fault of the request, like a bad field, not of this service.
    return problem(request, 422, "openapi-unreachable", "OpenAPI document unreachable", str(exc),
                   [FieldError("/url", str(exc))])


def _kind(exc: Exception) -> tuple[int, str, str] | None:
    return next((_PROBLEMS[k] for k in type(exc).__mro__ if k in _PROBLEMS), None)


def on_known(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    status, slug, title = _kind(exc) or (500, "internal-error", "Internal error")
    return problem(request, status, slug, title, str(exc))


def on_mcp_unreachable(request: Request[Any, Any, Any], exc: McpUnreachable) -> Response[Problem]:
    # A URL or command that may not be used is a fault of the request, named by its field.
    if exc.field is not None:
        error = FieldError(exc.field, exc.reason)
        return problem(request, 422, "invalid-request", "Request body is invalid", str(exc),
                       [error])
    return problem(request, 502, "mcp-unreachable", "MCP server unreachable", str(exc))


def on_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    """Litestar's own request parsing (query parameters, body JSON) mapped to field errors."""
    errors = [_field_error(e) for e in exc.extra or [] if isinstance(e, dict)]
    detail = "; ".join(f"{e.parameter or e.pointer or '/'}: {e.message}" for e in errors)
    return problem(
        request, 422, "invalid-request", "Request is invalid", detail or str(exc.detail), errors
    )


def _field_error(item: dict[str, Any]) -> FieldError:
    key = str(item.get("key") or "")
    source = getattr(item.get("source"), "value", item.get("source"))
    message = explain(str(item.get("message", "invalid value")))
    if source in ("query", "path", "header", "cookie"):
        return FieldError("", message, parameter=f"{source} parameter {key!r}")
    parts = [p for p in key.replace("[", ".").replace("]", "").split(".") if p]
    return FieldError(pointer(*parts), message)


def on_planner(request: Request[Any, Any, Any], exc: PlannerError) -> Response[Problem]:
    if isinstance(exc, QuotaExceeded):
        return respond(request, planner_problem(exc),
                       headers={"Retry-After": str(exc.retry_after_s())})
    if isinstance(exc, ReplicaStopping):  # the client retries on a new connection
        return respond(request, planner_problem(exc),
                       headers={"Retry-After": "1", "Connection": "close"})
    return respond(request, planner_problem(exc))


def on_idempotency(
    request: Request[Any, Any, Any], exc: IdempotencyConflict
) -> Response[Problem]:
    return problem(request, exc.status, _STATUS_SLUGS[exc.status], _title(exc.status),
                   exc.message)


def on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    """Litestar's own errors, keeping their headers (a 405's Allow, a 429's Retry-After)."""
    slug = _STATUS_SLUGS.get(exc.status_code, "http-error")
    detail = str(exc.detail)
    handler = request.scope.get("route_handler")  # none when no route matched (404, 405)
    limit = (handler.resolve_request_max_body_size()
             if isinstance(handler, HTTPRouteHandler) else None)
    if exc.status_code == 413 and limit is not None:
        detail = (f"the body is larger than {limit:,} bytes, the limit MAX_BODY_BYTES sets; "
                  "send less (split a bulk request), or raise MAX_BODY_BYTES")
    found = Problem(type=f"/problems/{slug}", title=_title(exc.status_code),
                    status=exc.status_code, detail=detail)
    return respond(request, found, headers=dict(exc.headers or {}))


def on_database(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.error("database error on %s: %s", request.url.path, exc)
    return respond(request, database_unavailable(exc))


def on_search_busy(request: Request[Any, Any, Any], exc: SearchBusy) -> Response[Problem]:
    found = Problem(type="/problems/search-busy", title="Search busy", status=503,
                    detail=str(exc))
    return respond(request, found, headers={"Retry-After": str(exc.retry_after_s)})


def on_embedding(request: Request[Any, Any, Any], exc: EmbeddingError) -> Response[Problem]:
    log.error("embedding failed on %s: %s", request.url.path, exc)
    return problem(request, 500, "embedding-failed", "Embedding failed", str(exc))


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(
        request,
        500,
        "internal-error",
        "Internal error",
        f"{type(exc).__name__} while handling {request.method} {request.url.path}; see the log",
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    **{kind: on_known for kind in _PROBLEMS if not issubclass(kind, PlannerError)},
    SpecInvalid: on_spec_invalid,
    RequestFieldInvalid: on_request_field,
    BodyNotJson: on_body_not_json,
    DocumentInvalid: on_document_invalid,
    DocumentUnreachable: on_document_unreachable,
    McpUnreachable: on_mcp_unreachable,
    EmbeddingError: on_embedding,
    SearchBusy: on_search_busy,
    PlannerError: on_planner,
    IdempotencyConflict: on_idempotency,
    ValidationException: on_validation,
    HTTPException: on_http,
    # Lost or refused connections; other Postgres errors are bugs, reported as 500 below.
    asyncpg.PostgresConnectionError: on_database,
    asyncpg.CannotConnectNowError: on_database,
    asyncpg.TooManyConnectionsError: on_database,
    asyncpg.InterfaceError: on_database,
    OSError: on_database,
    DatabaseError: on_database,
    Exception: on_unexpected,
}
