"""Where a request's input enters: one guard, run before every handler, that refuses what no
handler should see.

- A NUL character in the path, a query value or the body: Postgres cannot store it.
- A JSON body nested deeper than MAX_NESTING levels: decoding and checking it would exhaust the
  interpreter's recursion.
- A body or query value of the wrong type, which the handlers' own parsing would coerce
  (`"stream": 0` taken as false, `k=100.0` as 100, `until=0.5` as a Unix time): the API takes
  the types its document declares, and no others.
"""

from __future__ import annotations

import datetime
import re
import types
import typing
import weakref
from typing import Any

import msgspec
import numpy as np
from litestar import Request
from litestar.handlers import HTTPRouteHandler
from litestar.params import BodyKwarg, QueryParameter

from app.errors import BodyNotJson, RequestFieldInvalid
from tools.errors import FieldError, SpecInvalid
from tools.json_schema import MAX_NESTING
from tools.storable import nul_escape_at
from tools.validation import field_error

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_QUERY_LITERALS: dict[type, tuple[re.Pattern[str], str]] = {
    int: (re.compile(r"-?[0-9]+"), "a whole number such as 10"),
    float: (re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?"), "a number such as 0.5"),
    bool: (re.compile(r"true|false"), "true or false"),
    datetime.datetime: (re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ].+"),
                        "an RFC 3339 date-time such as 2026-12-03T10:00:00Z"),
}


async def guard_request(request: Request[Any, Any, Any]) -> None:
    """Refuse the request before its handler runs, naming the parameter or field at fault."""
    _refuse_nul_in_path_and_query(request)
    handler = request.route_handler
    _check_query_types(request, handler)
    if request.method in ("POST", "PUT", "PATCH"):
        shape = _body_type(handler)
        body = await request.body()
        if body:
            _check_body(body, shape)
        elif shape is not None and not _optional(shape):
            raise RequestFieldInvalid("", "the body is empty: send a JSON object "
                                          "(Content-Type: application/json)")


def _refuse_nul_in_path_and_query(request: Request[Any, Any, Any]) -> None:
    errors = [
        FieldError("", "holds a NUL character (\\u0000), which no value may contain",
                   parameter=f"path parameter {name!r}")
        for name, value in request.path_params.items()
        if isinstance(value, str) and "\x00" in value
    ]
    if not errors and "\x00" in request.url.path:
        errors.append(FieldError("", "holds a NUL character (\\u0000)", parameter="path"))
    errors += [
        FieldError("", "holds a NUL character (\\u0000), which no value may contain",
                   parameter=f"query parameter {name!r}")
        for name, value in request.query_params.multi_items()
        if "\x00" in name or "\x00" in value
    ]
    if errors:
        raise SpecInvalid(errors)


def _check_query_types(request: Request[Any, Any, Any], handler: HTTPRouteHandler) -> None:
    """Query values whose text is not a literal of their declared type (which lax parsing
    would otherwise convert: "100.0" to 100, "null" to nothing), and single values given more
    than once."""
    declared = _query_types(handler)
    errors = []
    for name in declared.keys() & request.query_params.keys():
        values = request.query_params.getall(name)
        where = f"query parameter {name!r}"
        if len(values) > 1:
            errors.append(FieldError("", "is given more than once; give it once",
                                     parameter=where))
        for value in values:
            problem = _literal_problem(declared[name], value)
            if problem is not None:
                errors.append(FieldError("", problem, parameter=where))
    if errors:
        raise SpecInvalid(errors)


def _literal_problem(kind: Any, value: str) -> str | None:
    if typing.get_origin(kind) is typing.Literal:
        allowed = typing.get_args(kind)
        if value in allowed:
            return None
        return f"{value!r} is not one of {', '.join(map(repr, allowed))}"
    if kind not in _QUERY_LITERALS:
        return None  # text: any value is one
    literal, what = _QUERY_LITERALS[kind]
    return None if literal.fullmatch(value) else f"{value!r} is not {what}"


def _check_body(body: bytes, shape: Any) -> None:
    at = nul_escape_at(body)
    if at is not None:
        raise SpecInvalid([FieldError(
            "", f"the body holds a NUL character (\\u0000) at byte {at}; strings may not "
            "contain it"
        )])
    depth = json_nesting(body)
    if depth > MAX_NESTING:
        raise RequestFieldInvalid("", f"the body is nested {depth} levels deep; at most "
                                      f"{MAX_NESTING} are allowed")
    if shape is None:
        return
    try:
        msgspec.json.decode(body, type=shape, strict=True)
    except msgspec.ValidationError as exc:
        error = field_error(str(exc), shape)
        raise RequestFieldInvalid(error.pointer, error.message) from exc
    except msgspec.DecodeError as exc:
        raise BodyNotJson(str(exc)) from exc


def json_nesting(body: bytes) -> int:
    """Levels of arrays and objects in a JSON document, counted without parsing it (so
    without recursion): brackets outside strings, in one pass of numpy."""
    if body.count(b"[") + body.count(b"{") <= MAX_NESTING:
        return 0  # cannot be deeper than the limit: the usual case, and cheap
    codes = np.frombuffer(_JSON_STRING.sub(b"", body), dtype=np.uint8)
    steps = (np.isin(codes, (0x5B, 0x7B)).astype(np.int32)
             - np.isin(codes, (0x5D, 0x7D)).astype(np.int32))
    return int(np.cumsum(steps).max(initial=0))


# Keyed by the handler's function, held weakly (an id would be reused once a handler is gone).
_BODY_TYPES: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_QUERY_TYPES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _body_type(handler: HTTPRouteHandler) -> Any:
    """The type a handler's JSON body decodes to (None when it reads no body)."""
    if handler.fn not in _BODY_TYPES:
        data = handler.parsed_fn_signature.parameters.get("data")
        body = data is not None and isinstance(data.kwarg_definition, BodyKwarg)
        _BODY_TYPES[handler.fn] = data.annotation if body and data is not None else None
    return _BODY_TYPES[handler.fn]


def _query_types(handler: HTTPRouteHandler) -> dict[str, Any]:
    """The query parameters of a handler that take one value, by their type."""
    if handler.fn not in _QUERY_TYPES:
        _QUERY_TYPES[handler.fn] = {
            name: kind
            for name, field in handler.parsed_fn_signature.parameters.items()
            if isinstance(field.kwarg_definition, QueryParameter)
            and typing.get_origin(kind := _scalar(field.annotation)) is not list
        }
    return _QUERY_TYPES[handler.fn]


def _optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def _scalar(annotation: Any) -> Any:
    """`int | None` -> int; anything that is not one type and None, unchanged."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else annotation
    return annotation
