"""OpenAPI 3.0 and 3.1 documents as tool sources: each operation becomes a tool whose http
executor puts the arguments back where the operation takes them."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from typing import Any, cast, get_args

import msgspec

from tools.errors import DocumentInvalid, FieldError, SpecInvalid
from tools.executors import is_json_type
from tools.openapi_refs import RefResolver
from tools.spec import (
    ArgumentMap,
    HttpExecutor,
    HttpMethod,
    ToolPolicy,
    ToolSpec,
    function_name,
)
from tools.validation import URL_TEMPLATE, parse_spec, pointer

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_SUPPORTED = frozenset(m.lower() for m in get_args(HttpMethod))
# RFC 9110: these methods may be repeated without changing the outcome.
_IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})
# OpenAPI: header parameters by these names "SHALL be ignored"; the executor sets them.
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
_LOCATIONS = ("path", "query", "header")
_NAME_PART = re.compile(r"[A-Za-z0-9_-]+")
_MAX_NAME = 64
_MAX_DESCRIPTION = 8192
BODY_ARGUMENT = "body"


class ImportOptions(msgspec.Struct, frozen=True, kw_only=True):
    namespace: str
    base_url: str | None = None
    operations: list[str] = []
    """Only these operationIds (all when empty)."""
    tags: list[str] = []
    """Only operations with one of these tags (all when empty)."""
    headers: dict[str, str] = {}
    """Sent on every call; write-only, like a signing secret."""


class Skipped(msgspec.Struct, frozen=True, kw_only=True):
    """An operation that did not become a tool, and why."""

    operation: str
    pointer: str
    reason: str


class Converted(msgspec.Struct, frozen=True, kw_only=True):
    specs: list[ToolSpec]
    skipped: list[Skipped]


class _Operation(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    method: str
    node: dict[str, Any]
    path_item: dict[str, Any]
    at: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.path}"

    @property
    def operation_id(self) -> str | None:
        value = self.node.get("operationId")
        return value if isinstance(value, str) else None


class _Skip(Exception):
    """This operation cannot be a tool; the message says why."""


def is_openapi(document: Any) -> bool:
    return isinstance(document, dict) and "openapi" in document


def tools_from_openapi(
    document: Any, options: ImportOptions, *, document_url: str | None = None
) -> Converted:
    """One spec per operation the filters select; raises `DocumentInvalid` naming the JSON
    pointer of the first structural problem, `SpecInvalid` for a filter that matches nothing."""
    version = _version(document)
    resolver = RefResolver(document, openapi_30=version.startswith("3.0"))
    operations = list(_operations(document))
    chosen = _chosen(operations, options)
    specs: list[ToolSpec] = []
    skipped: list[Skipped] = []
    for op in chosen:
        try:
            specs.append(_spec(op, document, resolver, options, document_url))
        except _Skip as why:
            skipped.append(Skipped(operation=op.label, pointer=op.at, reason=str(why)))
    return Converted(specs=specs, skipped=skipped)


def _version(document: Any) -> str:
    if not isinstance(document, dict):
        raise DocumentInvalid("", "expected an OpenAPI document: a JSON object")
    version = document.get("openapi")
    if version is None and "swagger" in document:
        raise DocumentInvalid(
            "/swagger", f"this is a Swagger {document['swagger']} document; OpenAPI 3.0 or 3.1 "
            "is needed: convert it first (e.g. with swagger2openapi, or editor.swagger.io's "
            "Edit > Convert to OpenAPI 3)",
        )
    if not isinstance(version, str) or not re.match(r"^3\.[01]\.\d+", version):
        found = "has no `openapi` field" if version is None else f"is version {version!r}"
        raise DocumentInvalid(
            "/openapi", f"the document {found}; OpenAPI 3.0.x or 3.1.x is needed",
        )
    if not isinstance(document.get("paths", {}), dict):
        raise DocumentInvalid("/paths", "must be an object mapping paths to path items")
    return version


def _operations(document: dict[str, Any]) -> Iterator[_Operation]:
    """Every operation in document order, named before any filter so names do not depend on
    what else was imported."""
    taken: set[str] = set()
    for path, item in document.get("paths", {}).items():
        at = pointer("paths", path)
        if not isinstance(item, dict):
            raise DocumentInvalid(at, "a path item must be an object")
        for method in (k for k in item if k in _METHODS):
            node = item[method]
            if not isinstance(node, dict):
                raise DocumentInvalid(f"{at}/{method}", "an operation must be an object")
            name = _unique(_base_name(node.get("operationId"), method, path), taken)
            yield _Operation(path=path, method=method, node=node, path_item=item,
                             at=f"{at}/{method}", name=name)


def _base_name(operation_id: Any, method: str, path: str) -> str:
    """`listPets` as it is, `list pets` as `list_pets`; without one, `/pets/{id}` under GET
    is `get_pets_id`."""
    if isinstance(operation_id, str) and operation_id.strip():
        name = function_name(operation_id).strip("_")
    else:
        name = "_".join([method, *_NAME_PART.findall(path)])
    return (name or method)[:_MAX_NAME]


def _unique(name: str, taken: set[str]) -> str:
    """The first operation keeps its name; later ones with the same name get _2, _3 ..."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        suffix = f"_{n}"
        candidate = name[: _MAX_NAME - len(suffix)] + suffix
    taken.add(candidate)
    return candidate


def _chosen(operations: list[_Operation], options: ImportOptions) -> list[_Operation]:
    ids = {op.operation_id for op in operations}
    missing = [
        FieldError(pointer("operations", i), f"no operation has operationId {wanted!r}")
        for i, wanted in enumerate(options.operations)
        if wanted not in ids
    ]
    if missing:
        raise SpecInvalid(missing)
    wanted_ids, wanted_tags = set(options.operations), set(options.tags)
    return [
        op for op in operations
        if (not wanted_ids or op.operation_id in wanted_ids)
        and (not wanted_tags or wanted_tags & set(_tags(op)))
    ]


def _spec(
    op: _Operation,
    document: dict[str, Any],
    resolver: RefResolver,
    options: ImportOptions,
    document_url: str | None,
) -> ToolSpec:
    method = op.method.upper()
    if op.method not in _SUPPORTED:
        raise _Skip(f"method {method} is not supported; tools call GET, POST, PUT, PATCH or DELETE")
    schema, where = _Arguments(op, resolver).build()
    executor = HttpExecutor(
        url=_server_url(op, document, options.base_url, document_url) + _url_path(op.path),
        method=cast(HttpMethod, method),
        arguments=where,
        secret_headers=dict(options.headers) if options.headers else msgspec.UNSET,
    )
    raw = {
        "name": op.name,
        "namespace": options.namespace,
        "description": _description(op),
        "parameters": schema,
        "tags": _tags(op),
        "executor": msgspec.to_builtins(executor),
        "policy": msgspec.to_builtins(ToolPolicy(idempotent=method in _IDEMPOTENT)),
    }
    try:
        return parse_spec(raw)
    except SpecInvalid as exc:
        problem = exc.errors[0]
        raise DocumentInvalid(
            op.at, f"{op.label} makes an invalid tool: {problem.pointer}: {problem.message}"
        ) from exc


def _url_path(path: str) -> str:
    """The path as a URL: characters a URL cannot hold (spaces, say) percent-encoded, the
    `{name}` templates kept for the executor to fill."""
    return urllib.parse.quote(path, safe="/{}%:@!$&'()*+,;=")


def _description(op: _Operation) -> str:
    parts = [op.node.get(k) for k in ("summary", "description")]
    text = "\n\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
    return (text or op.label)[:_MAX_DESCRIPTION]


def _tags(op: _Operation) -> list[str]:
    tags = op.node.get("tags", [])
    if not isinstance(tags, list):
        return []
    return list(dict.fromkeys(t.strip()[:64] for t in tags if isinstance(t, str) and t.strip()))


def _server_url(
    op: _Operation, document: dict[str, Any], base_url: str | None, document_url: str | None
) -> str:
    """`base_url`, else the first server of the operation, its path item or the document
    (OpenAPI's order), relative ones resolved against the document's own URL."""
    if base_url is not None:
        return base_url.rstrip("/")
    for node, at in ((op.node, op.at), (op.path_item, pointer("paths", op.path)), (document, "")):
        servers = node.get("servers")
        if isinstance(servers, list) and servers:
            return _absolute(servers[0], f"{at}/servers/0", document_url)
    return _absolute({"url": "/"}, "/servers", document_url)


def _absolute(server: Any, at: str, document_url: str | None) -> str:
    if not isinstance(server, dict) or not isinstance(server.get("url"), str):
        raise DocumentInvalid(at, "a server must be an object with a string `url`")
    url = server["url"]
    variables = server.get("variables")
    for name, variable in (variables if isinstance(variables, dict) else {}).items():
        if isinstance(variable, dict) and isinstance(variable.get("default"), str):
            url = url.replace("{" + name + "}", variable["default"])
    if re.match(r"^https?://", url):
        return url.rstrip("/")
    if document_url is None or not re.match(r"^https?://", document_url):
        raise DocumentInvalid(
            f"{at}/url" if at != "/servers" else at,
            f"server URL {url!r} is relative and the document has no http(s) URL to resolve it "
            "against; give base_url (the API's root URL) with the import",
        )
    return urllib.parse.urljoin(document_url, url).rstrip("/")


class _Arguments:
    """Folds an operation's path, query and header parameters and its JSON body into one
    parameters schema, remembering where each argument goes."""

    def __init__(self, op: _Operation, resolver: RefResolver) -> None:
        self.op = op
        self.resolver = resolver
        self.properties: dict[str, Any] = {}
        self.required: list[str] = []
        self.placed: dict[str, list[str]] = {k: [] for k in (*_LOCATIONS, "body")}
        self.body_argument: str | None = None
        self.defs: dict[str, Any] = {}
        self.def_names: dict[str, str] = {}

    def build(self) -> tuple[dict[str, Any], ArgumentMap]:
        for parameter, at in self._parameters():
            self._parameter(parameter, at)
        self._request_body()
        templates = URL_TEMPLATE.findall(self.op.path)
        for name in templates:
            if name not in self.placed["path"]:
                raise _Skip(f"the path's {{{name}}} is declared by no path parameter")
        for name in self.placed["path"]:
            if name not in templates:
                raise _Skip(f"path parameter {name!r} has no {{{name}}} in the path")
        schema: dict[str, Any] = {"type": "object", "properties": self.properties}
        if self.required:
            schema["required"] = self.required
        if self.defs:
            schema["$defs"] = self.defs
        where = ArgumentMap(**self.placed, body_argument=self.body_argument)
        return schema, where

    def _parameters(self) -> Iterator[tuple[dict[str, Any], str]]:
        """Path-item parameters, overridden by the operation's own of the same name and place."""
        found: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        sources = ((self.op.path_item, pointer("paths", self.op.path)), (self.op.node, self.op.at))
        for node, at in sources:
            listed = node.get("parameters", [])
            if not isinstance(listed, list):
                raise DocumentInvalid(f"{at}/parameters", "must be an array of parameters")
            for i, raw in enumerate(listed):
                parameter, where = self.resolver.follow(raw, f"{at}/parameters/{i}")
                if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str) \
                        or parameter.get("in") not in (*_LOCATIONS, "cookie"):
                    raise DocumentInvalid(
                        where, "a parameter needs a string `name` and `in` set to one of "
                        "path, query, header or cookie",
                    )
                found[(parameter["in"], parameter["name"])] = (parameter, where)
        yield from found.values()

    def _parameter(self, parameter: dict[str, Any], at: str) -> None:
        name, location = parameter["name"], parameter["in"]
        required = location == "path" or parameter.get("required") is True
        if location == "cookie":
            if required:
                raise _Skip(f"cookie parameter {name!r} is required; cookies cannot be sent")
            return
        if location == "header" and name.lower() in _IGNORED_HEADERS:
            return
        if name in self.properties:
            raise _Skip(
                f"parameter {name!r} appears in more than one place ({location} and another); "
                "a tool's argument names must be unique"
            )
        self.properties[name] = self._parameter_schema(parameter, at)
        self.placed[location].append(name)
        if required:
            self.required.append(name)

    def _parameter_schema(self, parameter: dict[str, Any], at: str) -> dict[str, Any]:
        if "schema" in parameter:
            schema = self._schema(parameter["schema"], f"{at}/schema")
        else:
            # A parameter given by `content` has exactly one media type.
            content = parameter.get("content")
            entries = list(content.items()) if isinstance(content, dict) else []
            schema = {}
            if entries and isinstance(entries[0][1], dict):
                media, entry = entries[0]
                schema = self._schema(
                    entry.get("schema", {}), f"{at}/content{pointer(media)}/schema"
                )
        description = parameter.get("description")
        if isinstance(description, str) and description.strip() and "description" not in schema:
            schema = {**schema, "description": description.strip()}
        return schema

    def _request_body(self) -> None:
        if "requestBody" not in self.op.node:
            return
        body, at = self.resolver.follow(self.op.node["requestBody"], f"{self.op.at}/requestBody")
        content = body.get("content") if isinstance(body, dict) else None
        if not isinstance(content, dict):
            raise DocumentInvalid(at, "a request body needs `content`: an object of media types")
        media = next((m for m in content if is_json_type(m)), None)
        if media is None:
            kinds = ", ".join(content) or "no media type"
            raise _Skip(f"its request body is {kinds}; only JSON request bodies are supported")
        entry = content[media] if isinstance(content[media], dict) else {}
        schema = self._schema(entry.get("schema", {}), f"{at}/content{pointer(media)}/schema")
        properties = schema.get("properties")
        foldable = (
            schema.get("type", "object") == "object"
            and isinstance(properties, dict) and properties
            and not set(properties) & set(self.properties)
            and not {"allOf", "anyOf", "oneOf", "not", "$ref"} & set(schema)
        )
        if foldable:
            assert isinstance(properties, dict)
            self.properties.update(properties)
            self.placed["body"] = list(properties)
            self.required += [n for n in schema.get("required", []) if n in properties]
        elif BODY_ARGUMENT in self.properties:
            raise _Skip(
                f"its JSON body must be one argument named {BODY_ARGUMENT!r}, but a parameter "
                "already has that name"
            )
        else:
            self.properties[BODY_ARGUMENT] = schema
            self.body_argument = BODY_ARGUMENT
            if body.get("required") is True:
                self.required.append(BODY_ARGUMENT)

    def _schema(self, schema: Any, at: str) -> dict[str, Any]:
        if not isinstance(schema, dict | bool):
            raise DocumentInvalid(at, "a schema must be an object")
        if isinstance(schema, bool):
            return {} if schema else {"not": {}}
        inlined = self.resolver.schema(schema, at, self.def_names)
        self.defs.update(inlined.pop("$defs", {}))
        return inlined
