"""The API document as the routes generate it, finished with what the generator cannot know,
so that the document and the code agree in both directions:

- the bearer key every operation needs but the public ones (app/auth.py), so "try it" sends
  it;
- the problem responses (`application/problem+json`) each operation can give: 401 where a key
  is needed, 403 where a role guard may refuse it;
- both answers of a turn: the finished turn as JSON, or its events as `text/event-stream`;
- a turn's stored events, read back as `text/event-stream`;
- `201` where a PUT creates; the OpenAI-compatible route's completion and chunks;
- links from what an operation creates to the operations that read, change or delete it (not
  to a tool's versions, which outlive the tool by design);
- patterns as JSON Schema reads them (without the guard that makes Python match them whole).
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from app.auth import needs_key
from app.openai_wire import ChatCompletion, ChatCompletionChunk
from app.problems import PROBLEM_JSON
from tools.spec import FULL_MATCH_GUARD

_REF = "#/components/schemas/{name}"
_PROBLEM = {"$ref": _REF.format(name="Problem")}
_METHODS = ("get", "put", "post", "delete", "patch")
_SECURITY_SCHEMES = {"bearer": {
    "type": "http", "scheme": "bearer",
    "description": "An API key (`sbk_...`): the first start writes one to DATA_DIR/admin.key; "
                   "an admin creates more with POST /v1/keys."}}
_EVENT = {"type": "object", "required": ["data"], "properties": {
    "event": {"type": "string"}, "id": {"type": "string"}, "data": {"type": "string"}}}
"""One server-sent event: its type (`turn.started` ...), its number, its JSON as text."""
_TURN_ROUTES = ("/v1/conversations/{conversation_id}/turns", "/v1/turns/{turn_id}/approvals",
                "/v1/turns/{turn_id}/outputs")
_DESCRIBED = {
    400: "The request cannot be read (a body that is not JSON, a malformed header)",
    401: "No API key, or an unknown one",
    403: "The key's role may not do this", 404: "Nothing by that name or id",
    405: "The path does not take this method", 409: "A conflict with what exists or runs",
    413: "The body is larger than MAX_BODY_BYTES",
    422: "A field of the body, or a query or path parameter, is invalid",
    429: "Too many requests from this key", 502: "An upstream server failed",
    503: "A dependency (the database, the model server, the embedder) is busy or down",
}
_LINKS: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {
    ("/v1/tools", "post", "201"): {
        "GetTool": {"operationId": "V1ToolsNameGetTool",
                    "parameters": {"name": "$response.body#/name",
                                   "namespace": "$response.body#/namespace"}},
        "DeleteTool": {"operationId": "V1ToolsNameDeleteTool",
                       "parameters": {"name": "$response.body#/name",
                                      "namespace": "$response.body#/namespace"}},
    },
    ("/v1/conversations", "post", "201"): {
        "GetConversation": {"operationId": "V1ConversationsConversationIdGetConversation",
                            "parameters": {"conversation_id": "$response.body#/id"}},
        "ListMessages": {"operationId": "V1ConversationsConversationIdMessagesListMessages",
                         "parameters": {"conversation_id": "$response.body#/id"}},
        "CreateTurn": {"operationId": "V1ConversationsConversationIdTurnsCreateTurn",
                       "parameters": {"conversation_id": "$response.body#/id"}},
    },
    ("/v1/conversations/{conversation_id}/turns", "post", "200"): {
        "GetTurn": {"operationId": "V1TurnsTurnIdGetTurn",
                    "parameters": {"turn_id": "$response.body#/id"}},
        "GetTurnTrace": {"operationId": "V1TurnsTurnIdTraceTurnTrace",
                         "parameters": {"turn_id": "$response.body#/id"}},
        "Approve": {"operationId": "V1TurnsTurnIdApprovalsDecideApproval",
                    "parameters": {"turn_id": "$response.body#/id"}},
        "SendOutput": {"operationId": "V1TurnsTurnIdOutputsSendOutput",
                       "parameters": {"turn_id": "$response.body#/id"}},
    },
    ("/v1/keys", "post", "201"): {
        "RevokeKey": {"operationId": "V1KeysKeyIdRevoke",
                      "parameters": {"key_id": "$response.body#/id"}},
    },
    ("/v1/mcp/servers", "post", "201"): {
        "GetServer": {"operationId": "V1McpServersNameGetServer",
                      "parameters": {"name": "$response.body#/server/name"}},
        "RefreshServer": {"operationId": "V1McpServersNameRefreshRefreshServer",
                          "parameters": {"name": "$response.body#/server/name"}},
        "DeleteServer": {"operationId": "V1McpServersNameDeleteServer",
                         "parameters": {"name": "$response.body#/server/name"}},
    },
}


def finish_document(app: Litestar) -> None:
    """Complete the app's generated document in place (it is built once, here)."""
    document = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    guarded = _from_handlers(app, document)
    components = document.setdefault("components", {})
    components["securitySchemes"] = _SECURITY_SCHEMES
    schemas = components.setdefault("schemas", {})
    _add_schemas(schemas, [ChatCompletion, ChatCompletionChunk])
    _plain_patterns(document)
    for path, item in document["paths"].items():
        for method in _METHODS:
            if method in item:
                _security(path, item[method])
                _problem_responses(path, method, item[method],
                                   guarded=(path, method) in guarded)
    for path in _TURN_ROUTES:
        _turn_answers(document["paths"][path]["post"]["responses"], "TurnResult",
                      waits="conversations" not in path)
    _turn_answers(document["paths"]["/v1/chat/completions"]["post"]["responses"],
                  "ChatCompletion", waits=False)
    _event_log_answers(document["paths"]["/v1/turns/{turn_id}/events"]["get"]["responses"])
    put = document["paths"]["/v1/tools/{name}"]["put"]["responses"]
    put["201"] = {**copy.deepcopy(put["200"]), "description": "Created: no tool had the name"}
    for (path, method, status), links in _LINKS.items():
        document["paths"][path][method]["responses"][status]["links"] = links


_CONSTRAINTS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum",
                "le": "maximum", "min_length": "minLength", "max_length": "maxLength",
                "pattern": "pattern"}


def _from_handlers(app: Litestar, document: dict[str, Any]) -> set[tuple[str, str]]:
    """Completes each operation from its handler's signature; returns the operations (path,
    method) whose handler has a guard, which may refuse a key its role."""
    guarded: set[tuple[str, str]] = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods:
                operation = document["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                _from_signature(handler, operation)
                if handler.resolve_guards():
                    guarded.add((route.path_format, method.lower()))
    return guarded


def _from_signature(handler: HTTPRouteHandler, operation: dict[str, Any]) -> None:
    """An optional query parameter is absent, never null; and its constraints (which the
    generator drops from an optional one, though they are enforced) are stated."""
    fields = handler.parsed_fn_signature.parameters
    data = fields.get("data")
    if data is not None and data.is_optional and "requestBody" in operation:
        operation["requestBody"]["required"] = False
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "query" or parameter["name"] not in fields:
            continue
        schema = parameter["schema"]
        variants = [v for v in schema.pop("oneOf", []) if v.get("type") != "null"]
        if len(variants) == 1:
            schema.update(variants[0])
        if isinstance(schema.get("type"), list):
            schema["type"] = [t for t in schema["type"] if t != "null"]
        if isinstance(schema.get("enum"), list):
            schema["enum"] = [v for v in schema["enum"] if v is not None]
        definition = fields[parameter["name"]].kwarg_definition
        for ours, theirs in _CONSTRAINTS.items():
            value = getattr(definition, ours, None)
            if value is not None:
                schema[theirs] = value


def _add_schemas(schemas: dict[str, Any], types: list[type]) -> None:
    """Components for types no route returns by annotation; those already there are kept."""
    _, found = msgspec.json.schema_components(types, ref_template=_REF)
    for name, schema in found.items():
        schemas.setdefault(name, schema)


def _plain_patterns(node: Any) -> None:
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            node["pattern"] = pattern.replace(FULL_MATCH_GUARD, "")
        for value in node.values():
            _plain_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _plain_patterns(value)


def _security(path: str, operation: dict[str, Any]) -> None:
    if needs_key(path):
        operation["security"] = [{"bearer": []}]


def _problem_responses(path: str, method: str, operation: dict[str, Any], *,
                       guarded: bool) -> None:
    if not path.startswith("/v1/"):
        return
    statuses = {400, 405, 429, 503}
    if "security" in operation:
        statuses.add(401)
    if guarded:
        statuses.add(403)
    if "{" in path:
        statuses.add(404)
    if "requestBody" in operation:
        statuses |= {413, 422}
    if operation.get("parameters"):
        statuses.add(422)
    if method != "get":
        statuses.add(409)
    if path.startswith(("/v1/mcp", "/v1/chat", "/v1/conversations", "/v1/turns")):
        statuses.add(502)
    responses = operation.setdefault("responses", {})
    for status in sorted(statuses):
        responses[str(status)] = {
            "description": _DESCRIBED[status],
            "content": {PROBLEM_JSON: {"schema": _PROBLEM}},
        }


def _event_log_answers(responses: dict[str, Any]) -> None:
    """A turn's stored events: a stream, or nothing left to send; an id that is not one is
    refused."""
    responses["200"] = {"description": "The events after the one named, then the live ones",
                        "content": {"text/event-stream": {"schema": _EVENT}}}
    responses["204"] = {"description": "The turn is over and nothing is left to send"}
    responses["422"] = {"description": "Last-Event-ID (or `after`) is not an event id",
                        "content": {PROBLEM_JSON: {"schema": _PROBLEM}}}


def _turn_answers(responses: dict[str, Any], schema: str, *, waits: bool) -> None:
    """200: the finished turn as JSON, or with `stream: true` its events; the answer to one of
    several calls a paused turn `waits` on is 202."""
    body = {"$ref": _REF.format(name=schema)}
    responses["200"] = {
        "description": "The finished (or paused) turn; with `stream: true`, its events as "
                       "they happen",
        "content": {"application/json": {"schema": body},
                    "text/event-stream": {"schema": _EVENT}},
    }
    if waits:
        responses["202"] = {
            "description": "Recorded; the turn still waits on other calls",
            "content": {"application/json": {"schema": body}},
        }
