"""The HTTP request of a call to an http tool: its arguments placed in the path, query, headers
and body as the tool's argument map says (or as the JSON body), and signed over what is sent."""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from typing import Any

import httpx
import msgspec

from tools.spec import ArgumentMap, HttpExecutor

SIGNATURE_HEADER = "X-Switchboard-Signature"


class BadArgument(ValueError):
    """An argument that cannot be put where the tool's argument map says it goes."""


class _Wire(msgspec.Struct, frozen=True, kw_only=True):
    """The arguments placed in the request: a filled URL, query pairs, headers and a body."""

    url: str
    query: list[tuple[str, str]] = []
    headers: dict[str, str] = {}
    body: bytes | None = None


def build_request(
    client: httpx.AsyncClient,
    executor: HttpExecutor,
    arguments: dict[str, Any],
    secret: str | None,
    secret_headers: dict[str, str] | None = None,
) -> httpx.Request:
    """The request, signed over the exact bytes sent: the body when there is one, else the
    query string. Raises `BadArgument` for a value no header can carry."""
    wire = _placed(executor, arguments)
    headers = httpx.Headers(executor.headers)
    headers.update(secret_headers or {})
    headers.update(wire.headers)
    headers["Accept"] = "application/json"
    url = wire.url
    if wire.query:
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode(wire.query)
    if wire.body is not None:
        headers["Content-Type"] = "application/json"
    request = client.build_request(
        executor.method, url, content=wire.body, headers=headers, timeout=None
    )
    if secret is not None:
        signed = wire.body if wire.body is not None else request.url.query
        digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        request.headers[SIGNATURE_HEADER] = f"sha256={digest}"
    return request


def misplacement(executor: HttpExecutor, arguments: dict[str, Any]) -> str | None:
    """Why the request cannot carry an argument where the map puts it, or None; checked
    before running."""
    try:
        _placed(executor, arguments)
    except BadArgument as exc:
        target = f"{executor.method} {public_url(executor.url)}"
        return f"arguments invalid for {target}: {exc}"
    return None


def _placed(executor: HttpExecutor, arguments: dict[str, Any]) -> _Wire:
    """Without an argument map the arguments are the JSON body, or for GET the query."""
    where = executor.arguments
    if isinstance(where, msgspec.UnsetType):
        if executor.method == "GET":
            return _Wire(url=executor.url, query=_query_pairs(arguments))
        return _Wire(url=executor.url, body=msgspec.json.encode(arguments))
    given = {k: arguments[k] for k in where.names() if k in arguments}
    url = executor.url
    for name in where.path:
        if name in given:
            url = url.replace("{" + name + "}", urllib.parse.quote(_text(given[name]), safe=""))
    return _Wire(
        url=url,
        query=_query_pairs({k: given[k] for k in where.query if k in given}),
        headers={k: _header_value(k, given[k]) for k in where.header if k in given},
        body=_body(where, given),
    )


def _body(where: ArgumentMap, given: dict[str, Any]) -> bytes | None:
    if where.body_argument is not None:
        if where.body_argument not in given:
            return None
        return msgspec.json.encode(given[where.body_argument])
    if not where.body:
        return None
    return msgspec.json.encode({k: given[k] for k in where.body if k in given})


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""RFC 9110's token: what a header's name may be made of."""


def header_problems(name: str, value: str | None = None) -> list[str]:
    """Why a header cannot be sent as given (its name, then its value); none when it can."""
    found = []
    if not _HEADER_NAME.fullmatch(name):
        found.append(f"{name!r} is not a header name: use letters, digits and !#$%&'*+-.^_`|~ "
                     "only, no spaces")
    if value is not None and not _header_text(value):
        found.append("a header value holds ASCII text on one line only (no line breaks, "
                     "control characters or non-ASCII characters)")
    return found


def _header_text(value: str) -> bool:
    return value.isascii() and all(c == "\t" or " " <= c <= "~" for c in value)


def _header_value(name: str, value: Any) -> str:
    text = _text(value)
    if not _header_text(text):
        raise BadArgument(
            f"/{name}: goes in an HTTP header, which holds ASCII text on one line only"
        )
    return text


def _text(value: Any) -> str:
    """Strings as they are, anything else as its JSON text."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _query_pairs(arguments: dict[str, Any]) -> list[tuple[str, str]]:
    """Strings as they are, arrays as repeated keys, anything else as its JSON text."""
    pairs: list[tuple[str, str]] = []
    for key, value in arguments.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, _text(item)))
    return pairs


def public_url(url: str) -> str:
    """The URL without credentials or query, which may carry keys."""
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode()}{parsed.path}"
