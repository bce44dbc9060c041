"""MCP tools as Switchboard tool specs: valid function names, schemas and policies."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import mcp_types as types

from tools.errors import McpListingInvalid, SpecInvalid
from tools.spec import NAME_PATTERN, ToolSpec, function_name
from tools.validation import parse_spec

_VALID_NAME = re.compile(NAME_PATTERN)
_MAX_NAME = 64
_HASH_CHARS = 8
_MAX_DESCRIPTION = 8192
# Read-only and idempotent MCP tools may be retried; this many times, like a careful client.
IDEMPOTENT_RETRIES = 2


def function_names(mcp_names: Iterable[str]) -> dict[str, str]:
    """A valid, unique function name for each MCP tool name.

    A name that is already valid is kept. Another has each character a function name cannot
    hold replaced by `_` and is cut to 64; where that clashes with another tool's name, it ends
    in a hash of the MCP name instead. The result depends only on the set of names, not on
    their order, so a refresh gives a tool the same name again.
    """
    names = sorted(set(mcp_names))
    kept = {n for n in names if _VALID_NAME.fullmatch(n)}
    cleaned = {n: function_name(n) or "_" for n in names if n not in kept}
    clashes = Counter(cleaned.values())
    out = {n: n for n in kept}
    for name, clean in cleaned.items():
        unique = clashes[clean] == 1 and clean not in kept
        out[name] = clean if unique else _hashed(name, clean)
    return out


def _hashed(name: str, clean: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()[:_HASH_CHARS]
    return f"{clean[: _MAX_NAME - _HASH_CHARS - 1]}_{digest}"


def tool_specs(server: str, tools: list[types.Tool]) -> list[ToolSpec]:
    """The specs of a server's tools, in the namespace named like the server."""
    names = function_names(t.name for t in tools)
    return [tool_spec(server, tool, names[tool.name]) for tool in tools]


def tool_spec(server: str, tool: types.Tool, name: str) -> ToolSpec:
    """One MCP tool as a spec; raise `McpListingInvalid` naming the tool when it cannot be."""
    raw = {
        "name": name,
        "namespace": server,
        "description": _description(server, tool),
        "parameters": _parameters(server, tool),
        "output_schema": tool.output_schema,
        "executor": {"kind": "mcp", "server": server, "tool": tool.name},
        "policy": _policy(tool.annotations),
    }
    try:
        return parse_spec(raw)
    except SpecInvalid as exc:
        problems = "; ".join(f"{e.pointer or '/'}: {e.message}" for e in exc.errors)
        raise McpListingInvalid(server, tool.name, problems) from exc


def _description(server: str, tool: types.Tool) -> str:
    text = (tool.description or "").strip() or (tool.title or "").strip()
    return (text or f"Tool {tool.name!r} of MCP server {server!r}.")[:_MAX_DESCRIPTION]


def _parameters(server: str, tool: types.Tool) -> dict[str, Any]:
    schema = dict(tool.input_schema or {})
    # The MCP schema is an object schema by definition, and some servers leave `type` out.
    schema.setdefault("type", "object")
    if schema["type"] != "object":
        raise McpListingInvalid(
            server, tool.name, f"its inputSchema has type {schema['type']!r}; it must be 'object'"
        )
    return schema


def _policy(annotations: types.ToolAnnotations | None) -> dict[str, Any]:
    repeatable = annotations is not None and bool(
        annotations.read_only_hint or annotations.idempotent_hint
    )
    if not repeatable:
        return {}
    return {"idempotent": True, "max_retries": IDEMPOTENT_RETRIES}
