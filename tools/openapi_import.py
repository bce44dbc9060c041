"""Import an OpenAPI document, given inline, read from a file or fetched from a URL, into the
registry in one all-or-nothing write."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import msgspec
import yaml

from tools.errors import DocumentInvalid, DocumentUnreachable, ImportFormatError
from tools.json_schema import MAX_NESTING, nesting
from tools.openapi import ImportOptions, Skipped, is_openapi, tools_from_openapi
from tools.registry import Progress, ToolRegistry

_FETCH_TIMEOUT_S = 30.0


class ImportedTools(msgspec.Struct, frozen=True, kw_only=True):
    """What an import did, by tool name; `skipped` says why an operation is not a tool."""

    namespace: str
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    skipped: list[Skipped]


async def import_openapi(
    registry: ToolRegistry,
    tenant: str,
    document: Any,
    options: ImportOptions,
    *,
    document_url: str | None = None,
    progress: Progress | None = None,
) -> ImportedTools:
    """Write a tool for every selected operation, or nothing: raises `DocumentInvalid` (with
    the pointer into the document) or `SpecInvalid` (a filter that matches nothing)."""
    source = document_url or "the document"
    depth = nesting(document)
    if depth > MAX_NESTING:
        raise DocumentInvalid("", f"is nested {depth} levels deep; at most {MAX_NESTING} are "
                                  "allowed", source)
    try:
        # A large document takes a while to convert: off the event loop.
        converted = await asyncio.to_thread(
            tools_from_openapi, document, options, document_url=document_url)
    except DocumentInvalid as exc:
        raise exc.of(source) from None
    result = await registry.write(tenant, converted.specs, progress=progress)
    written = {(r.namespace, r.name) for r in result.records}
    names = [s.name for s in converted.specs]
    return ImportedTools(
        namespace=options.namespace,
        created=[n for n in names if (options.namespace, n) in result.created_keys],
        updated=[n for n in names if (options.namespace, n) in written - result.created_keys],
        unchanged=[n for n in names if (options.namespace, n) not in written],
        skipped=converted.skipped,
    )


async def fetch_document(http: httpx.AsyncClient, url: str, max_bytes: int) -> Any:
    """The document at `url`, JSON or YAML, read up to `max_bytes`. `http` should be the
    egress-guarded client: the URL comes from the caller, like a tool's."""
    headers = {"Accept": "application/json, application/yaml;q=0.9, */*;q=0.1"}
    try:
        async with http.stream("GET", url, headers=headers, timeout=_FETCH_TIMEOUT_S) as response:
            if not response.is_success:
                raise DocumentUnreachable(url, f"the server answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise DocumentInvalid(
                        "", f"the document is larger than {max_bytes} bytes, the most this "
                        "service reads (MAX_BODY_BYTES)", url,
                    )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL: not a URL httpx can send
        raise DocumentUnreachable(url, str(exc) or type(exc).__name__) from exc
    return await asyncio.to_thread(
        parse_document, bytes(body).decode("utf-8", errors="replace"), url)


def parse_document(text: str, source: str) -> Any:
    """JSON, or else YAML (a superset of JSON that OpenAPI documents are often written in)."""
    try:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
        try:
            loaded = yaml.load(text, Loader=_Loader)  # a SafeLoader: builds plain data only
        except yaml.YAMLError as exc:
            raise DocumentInvalid("", f"neither JSON nor YAML: {exc}", source) from exc
        if _expanded_values(loaded, {}) > MAX_EXPANDED_VALUES:
            raise DocumentInvalid("", f"its YAML aliases expand to more than "
                                      f"{MAX_EXPANDED_VALUES:,} values; write it without "
                                      "aliases that repeat other aliases", source)
        # Through JSON: YAML's integer keys (response codes) become the strings JSON would have.
        try:
            return json.loads(json.dumps(loaded, default=str))
        except ValueError as exc:  # an alias inside the node it names
            raise DocumentInvalid("", f"a YAML alias contains itself ({exc})", source) from exc
    except RecursionError:
        raise DocumentInvalid("", f"is nested too deeply to read; at most {MAX_NESTING} levels "
                                  "are allowed", source) from None


MAX_EXPANDED_VALUES = 1_000_000
"""The most values a YAML document may hold once its aliases are expanded: a few hundred bytes
of aliases of aliases can stand for billions ("billion laughs")."""


def _expanded_values(node: Any, seen: dict[int, int]) -> int:
    """How many values `node` holds with every alias written out, counted once per distinct
    object (so counting costs what the document's text does, not its expansion)."""
    if not isinstance(node, dict | list):
        return 1
    if id(node) not in seen:
        seen[id(node)] = 0  # a node that contains itself counts once; JSON then refuses it
        items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        seen[id(node)] = 1 + sum(_expanded_values(item, seen) for item in items)
    return seen[id(node)]


def read_openapi_file(path: Path) -> Any | None:
    """The OpenAPI document in a file (JSON or YAML), or None when the file holds no such
    document (tool specs, say)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ImportFormatError(str(path), None, f"cannot read file: {exc.strerror}") from exc
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError:
            return None  # JSON Lines, read as tool specs
        return document if is_openapi(document) else None
    if path.suffix.lower() in (".yaml", ".yml"):
        document = parse_document(text, str(path))
        if not is_openapi(document):
            raise ImportFormatError(str(path), None, "a YAML file must be an OpenAPI document")
        return document
    return None


class _Loader(yaml.SafeLoader):
    """Safe YAML where dates stay strings, as they are in JSON."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
