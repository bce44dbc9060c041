"""Turn untrusted JSON into `ToolSpec`s, collecting every problem with a JSON pointer to it."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Sequence
from typing import Any

import httpx
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
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")
_BAD_TAG = re.compile(r"^Invalid value (?P<value>.+)$")
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
        raise SpecInvalid([field_error(str(exc), ToolSpec, prefix=prefix, index=index)]) from exc
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
    try:
        httpx.URL(executor.url)
    except httpx.InvalidURL as exc:
        yield FieldError(pointer(*prefix, "executor", "url"), f"not a usable URL: {exc}",
                         index=index)
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
}
SERVICE_SET = frozenset({"id", "version", "created_at", "has_secret"})
"""Fields responses carry and requests may not: the service sets them."""


def explain(message: str) -> str:
    """msgspec's message plus how to fix it, where the message alone does not say. A pattern
    is shown as people write it, without the guard that makes Python match it whole."""
    message = message.replace(_FULL_MATCH_SHOWN, "")
    for needle, hint in _HINTS.items():
        if needle in message:
            return f"{message}: {hint}"
    return message


def field_error(
    message: str, root: Any, *, prefix: Sequence[str | int] = (), index: int | None = None
) -> FieldError:
    """msgspec's "... - at `$.a[0].b`", raised decoding `root`, as a field error at the JSON
    pointer /a/0/b (after `prefix`), saying how to fix it: the missing field's own pointer, the
    known name nearest an unknown one, the kinds a tagged union takes."""
    found = _MSGSPEC_PATH.search(message)
    parts: list[str | int] = []
    if found:
        message = message[: found.start()]
        parts = [int(n) if n else name for name, n in _PATH_PART.findall(found.group("path"))]
    if missing := _MISSING_FIELD.match(message):
        parts.append(missing["field"])
        message = f"required field `{missing['field']}` is missing"
    elif unknown := _UNKNOWN_FIELD.match(message):
        message = unknown_field(unknown["field"], _Shape.of(root).fields_at(parts))
        parts.append(unknown["field"])
    elif message.startswith("Invalid enum value") and parts:
        allowed = _Shape.of(root).literals_at(parts)
        if allowed:
            message = f"{message}: use one of {', '.join(allowed)}"
    elif (bad := _BAD_TAG.match(message)) and parts:
        kinds = _Shape.of(root).tags_at(parts[:-1], str(parts[-1]))
        if kinds:
            message = f"unknown {parts[-1]} {bad['value']}: use one of {', '.join(kinds)}"
    return FieldError(pointer(*prefix, *parts), explain(message), index=index)


def unknown_field(name: str, known: Sequence[str]) -> str:
    """What to say of a field the object does not take: the known one it is likely a typo of."""
    if name in SERVICE_SET and name not in known:
        return f"unknown field `{name}`: the service sets it; leave it out of requests"
    nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if nearest:
        return f"unknown field `{name}`: did you mean `{nearest[0]}`?"
    if not known:
        return f"unknown field `{name}`"
    return f"unknown field `{name}`; the fields here are: {', '.join(known)}"


class _Shape:
    """The objects a type decodes, walked along a path: which fields and which tags each place
    takes (for every variant of a union, since the value that failed is not at hand)."""

    def __init__(self, root: Any) -> None:
        self.root = msgspec.inspect.type_info(root)

    @staticmethod
    @functools.cache
    def of(root: Any) -> _Shape:
        return _Shape(root)

    def fields_at(self, parts: Sequence[str | int]) -> list[str]:
        names: dict[str, None] = {}
        for struct in self._structs(self._at(parts)):
            if struct.tag_field is not None:
                names[struct.tag_field] = None
            names.update((f.encode_name, None) for f in struct.fields)
        return list(names)

    def literals_at(self, parts: Sequence[str | int]) -> list[str]:
        """The values a Literal (or Enum) at `parts` takes."""
        values: list[str] = []
        for t in self._at(parts):
            for inner in t.types if isinstance(t, msgspec.inspect.UnionType) else [t]:
                if isinstance(inner, msgspec.inspect.LiteralType):
                    values += [str(v) for v in inner.values]
                elif isinstance(inner, msgspec.inspect.EnumType):
                    values += [str(m.value) for m in inner.cls]
        return values

    def tags_at(self, parts: Sequence[str | int], field: str) -> list[str]:
        return [str(s.tag) for s in self._structs(self._at(parts)) if s.tag_field == field]

    def _at(self, parts: Sequence[str | int]) -> list[msgspec.inspect.Type]:
        here = [self.root]
        for part in parts:
            here = [inner for t in here for inner in _step(t, part)]
        return here

    @staticmethod
    def _structs(types: list[msgspec.inspect.Type]) -> list[msgspec.inspect.StructType]:
        found: list[msgspec.inspect.StructType] = []
        for t in types:
            if isinstance(t, msgspec.inspect.StructType):
                found.append(t)
            elif isinstance(t, msgspec.inspect.UnionType):
                found += _Shape._structs(list(t.types))
        return found


def _step(t: msgspec.inspect.Type, part: str | int) -> list[msgspec.inspect.Type]:
    """The types one path part below `t` can be."""
    match t:
        case msgspec.inspect.UnionType(types=types):
            return [inner for u in types for inner in _step(u, part)]
        case msgspec.inspect.StructType(fields=fields):
            return [f.type for f in fields if f.encode_name == part]
        case msgspec.inspect.DictType(value_type=value):
            return [value]
        case msgspec.inspect.ListType(item_type=item) | msgspec.inspect.SetType(item_type=item) \
                | msgspec.inspect.FrozenSetType(item_type=item) \
                | msgspec.inspect.VarTupleType(item_type=item):
            return [item] if isinstance(part, int) else []
        case msgspec.inspect.TupleType(item_types=items):
            return [items[part]] if isinstance(part, int) and part < len(items) else []
        case msgspec.inspect.Metadata(type=inner):
            return _step(inner, part)
    return []
