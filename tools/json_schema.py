"""JSON Schema for tool arguments: the 2020-12 validator calls are checked with, whose regular
expressions run on RE2 (linear time: no `pattern` can stall the service), and the checks a
schema must pass before a tool is registered, so that every call of a registered tool can be
checked at all.

A schema is refused, naming the pointer, when it is nested deeper than MAX_NESTING, declares
more than MAX_PROPERTIES properties, has a regular expression RE2 cannot run, a `$ref` that
does not resolve within the schema, or `$ref`s that lead back to where they started without
descending into the arguments (validating any call would never end).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

import re2
from jsonschema import Draft202012Validator, ValidationError, validators

MAX_NESTING = 64
"""Levels of arrays and objects in a request body or a schema; past it, checking them would
exhaust the interpreter's recursion, and no real tool needs it."""
MAX_PROPERTIES = 1000
"""Properties a tool's parameters may declare, at every level together."""

Path = tuple[str | int, ...]

# Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
_SCHEMA_VALUES = frozenset({
    "not", "if", "then", "else", "items", "contains", "additionalProperties",
    "unevaluatedProperties", "unevaluatedItems", "propertyNames", "contentSchema",
})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions",
                         "dependentSchemas"})
VALUE_KEYWORDS = frozenset({"example", "examples", "default", "enum", "const"})
"""Keywords whose value is data, not a schema: what is inside them is never a keyword."""
# Keywords that apply a subschema to the same instance, not to a part of it: a cycle through
# only these never ends.
_IN_PLACE = frozenset({"allOf", "anyOf", "oneOf", "not", "if", "then", "else",
                       "dependentSchemas"})


class RegexInvalid(ValueError):
    """A pattern RE2 cannot compile; the message says why."""


@functools.lru_cache(maxsize=4096)
def compiled(pattern: str) -> Any:
    """The pattern compiled by RE2 (cached); RegexInvalid when RE2 cannot run it."""
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise RegexInvalid(str(reason)) from exc


def _matches(pattern: str, text: str) -> bool:
    return compiled(pattern).search(text) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _matches(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for name, value in instance.items():
            if _matches(pattern, name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[Any]:
    """As jsonschema's own, with `patternProperties` matched by RE2; the same messages."""
    if not validator.is_type(instance, "object"):
        return
    declared = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = sorted({name for name in instance
                     if name not in declared and not any(_matches(p, name) for p in patterns)})
    if validator.is_type(additional, "object"):
        for name in extras:
            yield from validator.descend(instance[name], additional, path=name)
    elif not additional and extras:
        listed = ", ".join(repr(name) for name in extras)
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            regexes = ", ".join(repr(p) for p in sorted(patterns))
            yield ValidationError(f"{listed} {verb} not match any of the regexes: {regexes}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({listed} {verb} "
                                  "unexpected)")


ArgumentValidator = validators.extend(
    Draft202012Validator,
    {"pattern": _pattern, "patternProperties": _pattern_properties,
     "additionalProperties": _additional_properties},
)
"""Draft 2020-12 with `pattern`, `patternProperties` and `additionalProperties` on RE2.
`unevaluatedProperties` would still match `patternProperties` with Python's `re`, so
registration refuses a schema that has both."""


def problems(schema: Any) -> list[tuple[Path, str]]:
    """What keeps `schema` from being registered: (path within it, message), empty when
    nothing does. Every check here walks the schema without recursion."""
    depth = nesting(schema)
    if depth > MAX_NESTING:
        return [((), f"is nested {depth} levels deep; at most {MAX_NESTING} are allowed")]
    found: list[tuple[Path, str]] = []
    nodes = list(_subschemas(schema))
    declared = sum(len(n["properties"]) for _, n in nodes
                   if isinstance(n.get("properties"), dict))
    if declared > MAX_PROPERTIES:
        found.append(((), f"declares {declared} properties; at most {MAX_PROPERTIES} are "
                          "allowed per tool"))
    for path, node in nodes:
        found += _regex_problems(path, node)
    uses = {keyword: [p for p, n in nodes if keyword in n]
            for keyword in ("patternProperties", "unevaluatedProperties")}
    if all(uses.values()):
        found.append(((*uses["unevaluatedProperties"][0], "unevaluatedProperties"),
                      "cannot be used in a schema that also has patternProperties; use "
                      "additionalProperties"))
    found += _ref_problems(schema, nodes)
    return found


def nesting(value: Any) -> int:
    """Levels of arrays and objects in a JSON value (0 for a scalar)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _subschemas(schema: Any) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every schema object within `schema` with its path, the root first."""
    stack: list[tuple[Path, Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield path, node
        for keyword, value in node.items():
            if keyword in VALUE_KEYWORDS:
                continue
            if keyword in _SCHEMA_VALUES:
                stack.append(((*path, keyword), value))
            elif keyword in _SCHEMA_LISTS and isinstance(value, list):
                stack += [((*path, keyword, i), item) for i, item in enumerate(value)]
            elif keyword in SCHEMA_MAPS and isinstance(value, dict):
                stack += [((*path, keyword, name), item) for name, item in value.items()]


def _regex_problems(path: Path, node: dict[str, Any]) -> Iterable[tuple[Path, str]]:
    located = [((*path, "pattern"), node["pattern"])] if isinstance(node.get("pattern"),
                                                                    str) else []
    if isinstance(node.get("patternProperties"), dict):
        located += [((*path, "patternProperties", p), p) for p in node["patternProperties"]]
    for at, pattern in located:
        try:
            compiled(pattern)
        except RegexInvalid as exc:
            yield at, (f"is not a regular expression this service can run ({exc}); patterns "
                       "run on RE2: no lookaround and no backreferences")


def _ref_problems(schema: Any, nodes: list[tuple[Path, dict[str, Any]]]) -> list[tuple[Path, str]]:
    """Refs that do not resolve within the schema, and cycles of refs and in-place keywords
    (allOf, anyOf, not ...) that never descend into the instance."""
    found: list[tuple[Path, str]] = []
    edges: dict[Path, list[tuple[Path, Path | None]]] = {}
    for path, node in nodes:
        out = edges.setdefault(path, [])
        ref = node.get("$ref")
        if ref is not None:
            target = _resolve(schema, nodes, ref)
            if target is None:
                found.append(((*path, "$ref"), f"{ref!r} does not resolve within this schema; "
                                               "refer to '#' or '#/$defs/...' here"))
            else:
                out.append((target, (*path, "$ref")))
        for keyword in _IN_PLACE & node.keys():
            value = node[keyword]
            if isinstance(value, list):
                out += [((*path, keyword, i), None) for i in range(len(value))]
            elif isinstance(value, dict) and keyword == "dependentSchemas":
                out += [((*path, keyword, name), None) for name in value]
            elif isinstance(value, dict):
                out.append(((*path, keyword), None))
    cycle = _first_cycle(edges)
    if cycle is not None:
        found.append((cycle, "makes the schema refer back to itself without descending into "
                             "the arguments, so checking a call would never end"))
    return found


def _resolve(schema: Any, nodes: list[tuple[Path, dict[str, Any]]], ref: Any) -> Path | None:
    """The path a local `$ref` names: `#`, a JSON pointer `#/...`, or a `$anchor` `#name`."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    fragment = ref[1:]
    if fragment and not fragment.startswith("/"):
        return next((p for p, n in nodes if n.get("$anchor") == fragment), None)
    path: list[str | int] = []
    node = schema
    for raw in fragment.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            path.append(int(part))
        else:
            return None
    return tuple(path) if isinstance(node, dict | bool) else None


def _first_cycle(edges: dict[Path, list[tuple[Path, Path | None]]]) -> Path | None:
    """The `$ref` that closes a cycle of in-place edges, if there is one."""
    done: set[Path] = set()
    for start in edges:
        if start in done:
            continue
        on_path: set[Path] = {start}
        stack: list[tuple[Path, Iterator[tuple[Path, Path | None]], Path | None]] = [
            (start, iter(edges.get(start, [])), None)]
        while stack:
            node, todo, _ = stack[-1]
            step = next(todo, None)
            if step is None:
                stack.pop()
                on_path.discard(node)
                done.add(node)
                continue
            target, via = step
            if target in on_path:
                refs = [v for _, _, v in stack[1:] if v is not None]
                return via or (refs[-1] if refs else node)
            if target not in done:
                on_path.add(target)
                stack.append((target, iter(edges.get(target, [])), via))
    return None
