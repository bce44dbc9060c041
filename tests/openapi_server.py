"""A small HTTP API on loopback that publishes its OpenAPI document and records exactly what
each call sent: method, raw path, query string, headers and body."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import yaml

from tests.loopback import serving

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PETS_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Pet shop", "version": "1"},
    "servers": [{"url": "/api"}],
    "paths": {
        "/shops/{shop_id}/pets/{pet_name}": {
            "parameters": [
                {"name": "shop_id", "in": "path", "required": True, "schema": {"type": "integer"}}
            ],
            "patch": {
                "operationId": "updatePet",
                "summary": "Update a pet",
                "description": "Changes a pet's name or owner.",
                "tags": ["pets"],
                "parameters": [
                    {"name": "pet_name", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "colors", "in": "query",
                     "schema": {"type": "array", "items": {"type": "string"}}},
                    {"$ref": "#/components/parameters/RequestTag"},
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/PetUpdate"}
                        }
                    },
                },
            }
        },
    },
    "components": {
        "parameters": {
            "RequestTag": {"name": "X-Request-Tag", "in": "header", "required": True,
                           "description": "Echoed in logs", "schema": {"type": "string"}},
        },
        "schemas": {
            "PetUpdate": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "owner": {"$ref": "#/components/schemas/Person"},
                },
                "required": ["name"],
            },
            "Person": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    },
}


class Captured(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    raw_path: str
    query: str
    headers: dict[str, str]
    body: Any


class ApiServer:
    """Serves the document at /openapi.json and /openapi.yaml; every other request is a call,
    recorded and answered with {"ok": true}."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.received: list[Captured] = []
        self.url = ""

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        path = scope["path"]
        if path == "/openapi.json":
            await _reply(send, json.dumps(self.document).encode(), "application/json")
            return
        if path == "/openapi.yaml":
            await _reply(send, yaml.safe_dump(self.document).encode(), "application/yaml")
            return
        self.received.append(Captured(
            method=scope["method"],
            raw_path=scope["raw_path"].decode(),
            query=scope["query_string"].decode(),
            headers={k.decode(): v.decode() for k, v in scope["headers"]},
            body=json.loads(body) if body else None,
        ))
        await _reply(send, b'{"ok": true}', "application/json")


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _reply(send: Send, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", content_type.encode())]})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def api_server(document: dict[str, Any] = PETS_DOCUMENT) -> AsyncIterator[ApiServer]:
    api = ApiServer(document)
    async with serving(api) as server:
        api.url = server.url
        yield api
