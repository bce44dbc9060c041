"""RFC 9457 problem details: the one place where errors become HTTP responses."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from app.database import DatabaseError
from app.errors import KeyNotFound, RequestFieldInvalid
from app.span_store import TraceNotFound
from planner.errors import PlannerError
from tools.errors import (
    DocumentInvalid,
    DocumentUnreachable,
    EmbeddingError,
    FieldError,
    McpCallFailed,
    McpListingInvalid,
    McpServerExists,
    McpServerNotFound,
    McpUnreachable,
    SpecInvalid,
    ToolExists,
    ToolNotFound,
)
from tools.storable import nul_escape_at
from tools.validation import explain, pointer

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


class Problem(msgspec.Struct, omit_defaults=True, kw_only=True):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] = []


def problem(
    request: Request[Any, Any, Any],
    status: int,
    slug: str,
    title: str,
    detail: str,
    errors: list[FieldError] | None = None,
) -> Response[Problem]:
    body = Problem(
        type=f"/problems/{slug}",
        title=title,
        status=status,
        detail=detail,
        instance=request.url.path,
        errors=errors or [],
    )
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


async def refuse_nul(request: Request[Any, Any, Any]) -> None:
    """Postgres cannot store NUL characters: refuse them in any JSON body, saying where."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    at = nul_escape_at(await request.body())
    if at is not None:
        raise SpecInvalid([FieldError(
            "", f"the body holds a NUL character (\\u0000) at byte {at}; strings may not "
            "contain it"
        )])


def on_spec_invalid(request: Request[Any, Any, Any], exc: SpecInvalid) -> Response[Problem]:
    # A bad query parameter is a bad request (400); a body that parses but does not fit is
    # unprocessable (422).
    if all(e.parameter is not None for e in exc.errors):
        return problem(request, 400, "invalid-request", "Request is invalid", str(exc), exc.errors)
    return problem(request, 422, "invalid-request", "Request body is invalid", str(exc), exc.errors)


def on_request_field(
    request: Request[Any, Any, Any], exc: RequestFieldInvalid
) -> Response[Problem]:
    errors = [FieldError(exc.pointer, exc.message)]
    return problem(request, 422, "invalid-request", "Request body is invalid", str(exc), errors)


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


def on_not_found(
    request: Request[Any, Any, Any], exc: ToolNotFound | McpServerNotFound
) -> Response[Problem]:
    return problem(request, 404, "not-found", "Not found", str(exc))


def on_exists(
    request: Request[Any, Any, Any], exc: ToolExists | McpServerExists
) -> Response[Problem]:
    return problem(request, 409, "conflict", "Already exists", str(exc))


def on_mcp_unreachable(request: Request[Any, Any, Any], exc: McpUnreachable) -> Response[Problem]:
    # A URL or command that may not be used is a fault of the request, named by its field.
    if exc.field is not None:
        error = FieldError(exc.field, exc.reason)
        return problem(request, 422, "invalid-request", "Request body is invalid", str(exc),
                       [error])
    return problem(request, 502, "mcp-unreachable", "MCP server unreachable", str(exc))


def on_mcp_server_fault(
    request: Request[Any, Any, Any], exc: McpListingInvalid | McpCallFailed
) -> Response[Problem]:
    return problem(request, 502, "mcp-server-error", "MCP server error", str(exc))


def on_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    """Litestar's own request parsing (query parameters, body JSON) mapped to field errors."""
    errors = [_field_error(e) for e in exc.extra or [] if isinstance(e, dict)]
    detail = "; ".join(f"{e.parameter or e.pointer or '/'}: {e.message}" for e in errors)
    # A body that parses but does not fit is unprocessable (422); bad parameters are a 400.
    status = 422 if errors and all(e.parameter is None for e in errors) else 400
    return problem(
        request, status, "invalid-request", "Request is invalid", detail or str(exc.detail), errors
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
    return problem(request, exc.status, exc.slug, exc.title, str(exc), exc.errors)


def on_lookup(request: Request[Any, Any, Any], exc: LookupError) -> Response[Problem]:
    return problem(request, 404, "not-found", "Not found", str(exc))


def on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    slug = {401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
            409: "conflict", 413: "too-large", 422: "invalid-request", 429: "rate-limited"}.get(
        exc.status_code, "http-error"
    )
    return problem(request, exc.status_code, slug, _title(exc.status_code), str(exc.detail))


def on_database(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    log.error("database error on %s: %s", request.url.path, exc)
    return problem(
        request,
        503,
        "database-unavailable",
        "Database unavailable",
        f"the database could not complete the request ({type(exc).__name__}: {exc}); retry later",
    )


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
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {
    SpecInvalid: on_spec_invalid,
    RequestFieldInvalid: on_request_field,
    ToolNotFound: on_not_found,
    ToolExists: on_exists,
    DocumentInvalid: on_document_invalid,
    DocumentUnreachable: on_document_unreachable,
    McpServerNotFound: on_not_found,
    McpServerExists: on_exists,
    McpUnreachable: on_mcp_unreachable,
    McpListingInvalid: on_mcp_server_fault,
    McpCallFailed: on_mcp_server_fault,
    EmbeddingError: on_embedding,
    PlannerError: on_planner,
    TraceNotFound: on_lookup,
    KeyNotFound: on_lookup,
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
