"""Turn untrusted JSON into `ToolSpec`s, collecting every problem with a JSON pointer to it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from jsonschema import Draft202012Validator

from tools.errors import FieldError, SpecInvalid
from tools.http_request import header_problems
from tools.json_schema import problems
from tools.spec import (
    FULL_MATCH_GUARD,
    NAME_PATTERN,
    ArgumentMap,
    HttpExecutor,
    ModelExecutor,
    ToolSpec,
)
from tools.storable import nul_escape_at

_META = Draft202012Validator(Draft202012Validator.META_SCHEMA)
_MSGSPEC_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
URL_TEMPLATE = re.compile(r"\{([^{}/]+)\}")


def pointer(*parts: str | int) -> str:
    """RFC 6901 JSON pointer from path parts."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def parse_spec(raw: Any, *, prefix: Sequence[str | int] = (), index: int | None = None) -> ToolSpec:
    """Decode one spec from builtins; raise `SpecInvalid` listing what is wrong and where."""
    try:
        spec = msgspec.convert(raw, ToolSpec, strict=True)
    except msgspec.ValidationError as exc:
        raise SpecInvalid([_from_msgspec(str(exc), prefix, index)]) from exc
    if nul_escape_at(msgspec.json.encode(raw)) is not None:
        raise SpecInvalid([FieldError(pointer(*prefix), "holds a NUL character (\\u0000); "
                                      "strings may not contain it", index=index)])
    errors = list(schema_errors(spec, prefix=prefix, index=index))
    if errors:
        raise SpecInvalid(errors)
    return spec


def parse_specs(items: Iterable[Any], *, prefix: Sequence[str | int] = ()) -> list[ToolSpec]:
    """Decode many specs; raise one `SpecInvalid` naming every bad item by index and pointer."""
    specs: list[ToolSpec] = []
    errors: list[FieldError] = []
    seen: dict[tuple[str, str], int] = {}
    for i, raw in enumerate(items):
        try:
            spec = parse_spec(raw, prefix=(*prefix, i), index=i)
        except SpecInvalid as exc:
            errors.extend(exc.errors)
            continue
        key = (spec.namespace, spec.name)
        if key in seen:
            errors.append(
                FieldError(
                    pointer(*prefix, i, "name"),
                    f"duplicate tool {spec.name!r} in namespace {spec.namespace!r}: "
                    f"item {seen[key]} has the same name; each name may appear once per request",
                    index=i,
                )
            )
        seen.setdefault(key, i)
        specs.append(spec)
    if errors:
        raise SpecInvalid(errors)
    return specs


def schema_errors(
    spec: ToolSpec, *, prefix: Sequence[str | int] = (), index: int | None = None
) -> Iterable[FieldError]:
    """What the types alone cannot check: `parameters` and `output_schema` against the JSON
    Schema 2020-12 meta-schema and against what calls can be checked with
    (`tools.json_schema.problems`), the executor's headers, and its argument map."""
    model = spec.executor.output_schema if isinstance(spec.executor, ModelExecutor) else None
    for field, schema in (("parameters", spec.parameters), ("output_schema", spec.output_schema),
                          ("executor/output_schema", model)):
        if schema is None:
            continue
        found = problems(schema)
        for path, message in found:
            yield FieldError(pointer(*prefix, *field.split("/"), *path), message, index=index)
        if found:
            continue  # fix these first: the meta-schema check may not even finish on them
        for err in sorted(_META.iter_errors(schema), key=lambda e: list(map(str, e.absolute_path))):
            yield FieldError(
                pointer(*prefix, *field.split("/"), *err.absolute_path),
                f"not a valid JSON Schema (2020-12): {err.message}",
                index=index,
            )
    if spec.parameters.get("type") != "object":
        yield FieldError(
            pointer(*prefix, "parameters", "type"),
            'the root of parameters must be {"type": "object", "properties": {...}}: '
            "tool arguments are always a JSON object",
            index=index,
        )
    executor = spec.executor
    if not isinstance(executor, HttpExecutor):
        return
    for field, headers in (("headers", executor.headers),
                           ("secret_headers", spec.secret_headers)):
        for name, value in headers.items():
            for message in header_problems(name, value):
                yield FieldError(pointer(*prefix, "executor", field, name), message, index=index)
    if isinstance(executor.arguments, ArgumentMap):
        at = (*prefix, "executor", "arguments")
        for where, message in _argument_map_problems(executor.url, executor.arguments, spec):
            yield FieldError(pointer(*at, *where), message, index=index)


def _argument_map_problems(
    url: str, where: ArgumentMap, spec: ToolSpec
) -> Iterable[tuple[tuple[str | int, ...], str]]:
    """An argument map must place each argument once, fill every `{name}` of the URL with a
    required argument, and name only arguments that `parameters` declares."""
    properties = spec.parameters.get("properties", {})
    required = spec.parameters.get("required", [])
    placeholders = URL_TEMPLATE.findall(url)
    seen: set[str] = set()
    located: list[tuple[tuple[str | int, ...], str]] = [
        ((k, i), n) for k in ("path", "query", "header", "body")
        for i, n in enumerate(getattr(where, k))
    ]
    if where.body_argument is not None:
        located.append((("body_argument",), where.body_argument))
    for at, name in located:
        key = at[0]
        if key == "header":
            yield from ((at, f"argument {name!r} goes in a header: {m}")
                        for m in header_problems(name))
        if name in seen:
            yield at, f"argument {name!r} is placed twice; each argument goes to one place"
        seen.add(name)
        if not isinstance(properties, dict) or name not in properties:
            yield at, f"argument {name!r} is not a property of parameters; declare it there"
        if key == "path" and name not in placeholders:
            yield at, f"the URL has no {{{name}}} to fill; add it to the URL or drop it here"
        if key == "path" and name not in required:
            yield at, f"path argument {name!r} must be listed in parameters.required"
    for name in placeholders:
        if name not in where.path:
            yield ("path",), f"the URL's {{{name}}} is filled by no argument; list {name!r} here"
    if where.body and where.body_argument is not None:
        yield ("body_argument",), "give body properties or one body argument, not both"


_FULL_MATCH_SHOWN = FULL_MATCH_GUARD.replace("\\", "\\\\")
"""`tools.spec.full_match`'s guard as msgspec prints a pattern in its messages."""
_HINTS = {
    NAME_PATTERN.removesuffix(FULL_MATCH_GUARD):
        "use 1-64 letters, digits, '_' or '-' (e.g. math_factorial)",
    "Invalid value": "executor.kind must be one of: http, builtin",
}


def explain(message: str) -> str:
    """msgspec's message plus how to fix it, where the message alone does not say. A pattern
    is shown as people write it, without the guard that makes Python match it whole."""
    message = message.replace(_FULL_MATCH_SHOWN, "")
    for needle, hint in _HINTS.items():
        if needle in message:
            return f"{message}: {hint}"
    return message


def _from_msgspec(message: str, prefix: Sequence[str | int], index: int | None) -> FieldError:
    """Map msgspec's "... - at `$.a[0].b`" to a JSON pointer such as /a/0/b."""
    parts: list[str | int] = list(prefix)
    match = _MSGSPEC_PATH.search(message)
    if match:
        message = message[: match.start()]
        for name, number in _PATH_PART.findall(match.group("path")):
            parts.append(int(number) if number else name)
    missing = _MISSING_FIELD.match(message)
    if missing:
        parts.append(missing.group("field"))
        message = f"required field `{missing.group('field')}` is missing"
    return FieldError(pointer(*parts), explain(message), index=index)
