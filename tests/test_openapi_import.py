"""OpenAPI documents as tool sources: the service's own document, a small API on loopback
called in a turn, `$ref`s, bad documents and skipped operations."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.openapi_server import PETS_DOCUMENT, ApiServer, api_server
from tests.scripted_model import ScriptedModel, ScriptedReply
from tests.test_cli_import import run_import

IMPORT = "/v1/tools/import/openapi"


@pytest.fixture
async def pets() -> AsyncIterator[ApiServer]:
    async with api_server() as server:
        yield server


def document(paths: dict[str, Any], schemas: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": "https://api.example.com/v2/"}],
        "paths": paths,
        "components": {"schemas": schemas or {}},
    }


def post_with_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"post": {"operationId": "make", "requestBody": {
        "content": {"application/json": {"schema": schema}}}}}


async def test_the_services_own_document_becomes_tools_with_exact_schemas_and_executors(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app = await start_app(database_url)
    url = f"{app.url}/docs/openapi.json"
    response = await app.client.post(IMPORT, json={"url": url, "namespace": "switchboard"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["skipped"] == []
    assert body["updated"] == body["unchanged"] == []
    assert {"V1ToolsNameGetTool", "V1ToolsBulkBulkTools", "V1ToolsNamePutTool",
            "HealthHealth"} <= set(body["created"])

    get_tool = (await app.client.get(
        "/v1/tools/V1ToolsNameGetTool", params={"namespace": "switchboard"})).json()
    assert get_tool["description"] == "Get a tool's live version"
    assert get_tool["tags"] == ["tools"]
    assert get_tool["parameters"] == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "namespace": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$",
                          "description": "Namespace of the tool.", "default": "default"},
        },
        "required": ["name"],
    }
    assert get_tool["executor"] == {
        "kind": "http", "url": f"{app.url}/v1/tools/{{name}}", "method": "GET", "headers": {},
        "arguments": {"path": ["name"], "query": ["namespace"], "header": [], "body": [],
                      "body_argument": None},
    }
    assert get_tool["policy"]["idempotent"] is True

    # The bulk body is an object whose one property folds in; PUT's body holds `name`, which
    # clashes with the path parameter, so it stays one `body` argument.
    bulk = (await app.client.get(
        "/v1/tools/V1ToolsBulkBulkTools", params={"namespace": "switchboard"})).json()
    assert bulk["parameters"]["required"] == ["tools"]
    assert bulk["executor"]["arguments"]["body"] == ["tools"]
    put = (await app.client.get(
        "/v1/tools/V1ToolsNamePutTool", params={"namespace": "switchboard"})).json()
    assert sorted(put["parameters"]["properties"]) == ["body", "name", "namespace"]
    assert put["parameters"]["required"] == ["name", "body"]
    assert put["executor"]["method"] == "PUT"
    assert put["executor"]["arguments"]["body_argument"] == "body"


async def test_a_turn_calls_an_imported_operation_with_path_query_header_and_body_in_place(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, pets: ApiServer
) -> None:
    app = await start_app(database_url, model_url=model.url)
    response = await app.client.post(IMPORT, json={
        "url": f"{pets.url}/openapi.yaml", "namespace": "pets",
        "headers": {"X-Api-Key": "pet-key-123"},
    })
    assert response.status_code == 200, response.text
    assert response.json() == {"namespace": "pets", "created": ["updatePet"], "updated": [],
                               "unchanged": [], "skipped": []}
    record = await app.client.get("/v1/tools/updatePet", params={"namespace": "pets"})
    assert record.json()["secret_headers"] == ["X-Api-Key"]
    assert "pet-key-123" not in record.text

    arguments = {"shop_id": 7, "pet_name": "Rex/the dog", "dry_run": True,
                 "colors": ["red", "tan"], "X-Request-Tag": "t-1",
                 "name": "Rex", "owner": {"name": "Ann"}}
    model.push(ScriptedReply(tool_calls=[("updatePet", arguments)]),
               ScriptedReply(content="Updated."))
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    turn = await app.client.post(f"/v1/conversations/{conversation}/turns",
                                 json={"message": "rename Rex", "stream": False})
    assert turn.status_code == 200, turn.text
    assert turn.json()["status"] == "completed"
    assert [c["result"] for c in turn.json()["tool_calls"]] == [{"ok": True}]

    [call] = pets.received
    assert (call.method, call.raw_path, call.query, call.body) == (
        "PATCH", "/api/shops/7/pets/Rex%2Fthe%20dog", "dry_run=true&colors=red&colors=tan",
        {"name": "Rex", "owner": {"name": "Ann"}},
    )
    assert {k: call.headers[k] for k in ("x-request-tag", "x-api-key", "content-type")} == {
        "x-request-tag": "t-1", "x-api-key": "pet-key-123", "content-type": "application/json"}


async def test_a_remote_ref_is_refused_with_its_pointer_and_how_to_fix_it(
    api: httpx.AsyncClient,
) -> None:
    doc = document({"/pets": post_with_body({"$ref": "https://example.com/pet.json"})})
    response = await api.post(IMPORT, json={"document": doc, "namespace": "pets"})
    assert response.status_code == 422
    pointer = "/paths/~1pets/post/requestBody/content/application~1json/schema/$ref"
    message = ("$ref 'https://example.com/pet.json' points outside this document; only local "
               "references ('#/components/...') are resolved: bundle the document into one "
               "file first (for example with `redocly bundle`)")
    assert response.json()["errors"] == [{"pointer": pointer, "message": message}]
    assert response.json()["detail"] == f"the document at {pointer}: {message}"
    assert (await api.get("/v1/tools", params={"namespace": "pets"})).json()["items"] == []


async def test_a_bad_parameter_is_a_422_naming_its_pointer_in_the_document(
    api: httpx.AsyncClient,
) -> None:
    doc = document({"/pets/{id}": {"get": {"parameters": [{"name": "id"}]}}})
    response = await api.post(IMPORT, json={"document": doc, "namespace": "pets"})
    assert response.status_code == 422
    assert response.json()["type"] == "/problems/invalid-openapi"
    assert response.json()["errors"] == [{
        "pointer": "/paths/~1pets~1{id}/get/parameters/0",
        "message": "a parameter needs a string `name` and `in` set to one of path, query, "
                   "header or cookie",
    }]


async def test_local_refs_are_inlined_and_a_schema_that_contains_itself_goes_to_defs(
    api: httpx.AsyncClient,
) -> None:
    schemas = {
        "Tree": {"type": "object", "properties": {
            "label": {"$ref": "#/components/schemas/Label"},
            "children": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}},
        }, "required": ["label"]},
        "Label": {"type": "string", "nullable": True, "maxLength": 20},
    }
    doc = document({"/trees": post_with_body({"$ref": "#/components/schemas/Tree"})}, schemas)
    response = await api.post(IMPORT, json={"document": doc, "namespace": "trees"})
    assert response.status_code == 200, response.text
    tool = (await api.get("/v1/tools/make", params={"namespace": "trees"})).json()
    label = {"type": ["string", "null"], "maxLength": 20}
    children = {"type": "array", "items": {"$ref": "#/$defs/Tree"}}
    assert tool["parameters"] == {
        "type": "object",
        "properties": {"label": label, "children": children},
        "required": ["label"],
        "$defs": {"Tree": {"type": "object", "properties": {
            "label": label, "children": children}, "required": ["label"]}},
    }
    assert tool["executor"]["url"] == "https://api.example.com/v2/trees"
    assert tool["executor"]["arguments"]["body"] == ["label", "children"]


async def test_operations_that_cannot_be_tools_are_reported_as_skipped(
    api: httpx.AsyncClient,
) -> None:
    doc = document({
        "/photos": {
            "post": {"operationId": "upload", "requestBody": {
                "content": {"multipart/form-data": {"schema": {"type": "object"}}}}},
            "trace": {"operationId": "tracePhotos"},
            "get": {"parameters": [
                {"name": "session", "in": "cookie", "required": True, "schema": {}}]},
        },
        "/list pets": {"get": {"operationId": "list pets"}},
        "/list-pets": {"get": {"operationId": "list_pets"}},
        "/pets/{petId}": {"get": {"parameters": [
            {"name": "petId", "in": "path", "required": True, "schema": {"type": "string"}}]}},
        "/owners/{ownerId}": {"get": {"operationId": "getOwner"}},
    })
    response = await api.post(IMPORT, json={"document": doc, "namespace": "shop"})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "namespace": "shop",
        "created": ["list_pets", "list_pets_2", "get_pets_petId"],
        "updated": [],
        "unchanged": [],
        "skipped": [
            {"operation": "POST /photos", "pointer": "/paths/~1photos/post",
             "reason": "its request body is multipart/form-data; only JSON request bodies "
                       "are supported"},
            {"operation": "TRACE /photos", "pointer": "/paths/~1photos/trace",
             "reason": "method TRACE is not supported; tools call GET, POST, PUT, PATCH or "
                       "DELETE"},
            {"operation": "GET /photos", "pointer": "/paths/~1photos/get",
             "reason": "cookie parameter 'session' is required; cookies cannot be sent"},
            {"operation": "GET /owners/{ownerId}", "pointer": "/paths/~1owners~1{ownerId}/get",
             "reason": "the path's {ownerId} is declared by no path parameter"},
        ],
    }
    again = await api.post(IMPORT, json={"document": doc, "namespace": "shop"})
    assert again.json()["unchanged"] == ["list_pets", "list_pets_2", "get_pets_petId"]


async def test_filters_select_operations_and_an_unknown_operation_id_is_a_422(
    api: httpx.AsyncClient,
) -> None:
    doc = document({"/a": {"get": {"operationId": "a", "tags": ["x"]}},
                    "/b": {"get": {"operationId": "b", "tags": ["y"]}}})
    picked = await api.post(IMPORT, json={"document": doc, "namespace": "n", "tags": ["y"]})
    assert picked.json()["created"] == ["b"]
    unknown = await api.post(IMPORT, json={"document": doc, "namespace": "n",
                                           "operations": ["a", "c"]})
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [
        {"pointer": "/operations/1", "message": "no operation has operationId 'c'"}]


async def test_a_relative_server_needs_the_document_url_or_base_url(
    api: httpx.AsyncClient,
) -> None:
    doc = copy.deepcopy(PETS_DOCUMENT)
    refused = await api.post(IMPORT, json={"document": doc, "namespace": "pets"})
    assert refused.status_code == 422
    assert refused.json()["errors"] == [{
        "pointer": "/servers/0/url",
        "message": "server URL '/api' is relative and the document has no http(s) URL to "
                   "resolve it against; give base_url (the API's root URL) with the import",
    }]
    given = await api.post(IMPORT, json={"document": doc, "namespace": "pets",
                                         "base_url": "https://pets.example/"})
    assert given.status_code == 200, given.text
    tool = (await api.get("/v1/tools/updatePet", params={"namespace": "pets"})).json()
    assert tool["executor"]["url"] == "https://pets.example/shops/{shop_id}/pets/{pet_name}"


async def test_an_argument_map_that_leaves_a_url_template_unfilled_is_refused(
    api: httpx.AsyncClient,
) -> None:
    spec = {"name": "get_pet", "description": "Get a pet",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
            "executor": {"kind": "http", "url": "https://pets.example/pets/{id}",
                         "method": "GET", "arguments": {"query": ["id"]}}}
    response = await api.post("/v1/tools", json=spec)
    assert response.status_code == 422
    assert response.json()["errors"] == [{
        "pointer": "/executor/arguments/path",
        "message": "the URL's {id} is filled by no argument; list 'id' here",
    }]


async def test_a_document_that_cannot_be_fetched_or_read_is_a_422_saying_why(
    api: httpx.AsyncClient, pets: ApiServer
) -> None:
    pets.document = {}  # served, but a 200 with an object that is no OpenAPI document
    bad = await api.post(IMPORT, json={"url": f"{pets.url}/openapi.json", "namespace": "p"})
    assert bad.status_code == 422
    assert bad.json()["detail"] == (
        f"{pets.url}/openapi.json at /openapi: the document has no `openapi` field; OpenAPI "
        "3.0.x or 3.1.x is needed")
    gone = await api.post(IMPORT, json={"url": "http://127.0.0.1:9/openapi.json",
                                        "namespace": "p"})
    assert gone.status_code == 422
    assert gone.json()["type"] == "/problems/openapi-unreachable"
    assert gone.json()["detail"].startswith(
        "could not fetch the OpenAPI document at http://127.0.0.1:9/openapi.json: ")
    missing = await api.post(IMPORT, json={"url": f"{pets.url}/openapi.json", "namespace": "p",
                                           "document": {"openapi": "3.1.0"}})
    assert missing.status_code == 422
    assert missing.json()["errors"] == [{
        "pointer": "/document", "message": "give the OpenAPI document inline as `document` "
        "or its address as `url`: exactly one of the two"}]


async def test_a_swagger_2_document_is_named_as_such_with_how_to_convert_it(
    api: httpx.AsyncClient,
) -> None:
    swagger = {"swagger": "2.0", "info": {"title": "Pets", "version": "1"}, "paths": {}}
    bad = await api.post(IMPORT, json={"document": swagger, "namespace": "p"})
    assert bad.status_code == 422
    assert bad.json()["errors"] == [{
        "pointer": "/swagger",
        "message": "this is a Swagger 2.0 document; OpenAPI 3.0 or 3.1 is needed: convert it "
                   "first (e.g. with swagger2openapi, or editor.swagger.io's Edit > Convert to "
                   "OpenAPI 3)"}]


async def test_an_inline_yaml_document_imports_as_its_json_would(
    api: httpx.AsyncClient,
) -> None:
    base = "https://pets.example"
    as_yaml = await api.post(IMPORT, json={"document": yaml.safe_dump(PETS_DOCUMENT),
                                           "namespace": "from_yaml", "base_url": base})
    as_json = await api.post(IMPORT, json={"document": PETS_DOCUMENT, "namespace": "from_json",
                                           "base_url": base})
    assert as_yaml.status_code == as_json.status_code == 200, as_yaml.text
    created = as_yaml.json()["created"]
    assert created == as_json.json()["created"]
    assert created != []


async def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(
    api: httpx.AsyncClient,
) -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    bad = await api.post(IMPORT, json={"document": "\n".join(lines), "namespace": "p"})
    assert bad.status_code == 422
    assert bad.json()["detail"] == (
        "the document at /: its YAML aliases expand to more than 1,000,000 values; write it "
        "without aliases that repeat other aliases")


async def test_text_that_is_neither_json_nor_yaml_is_a_422(api: httpx.AsyncClient) -> None:
    bad = await api.post(IMPORT, json={"document": "openapi: [3.1", "namespace": "p"})
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("the document at /: neither JSON nor YAML: ")


async def test_the_cli_imports_a_yaml_document_through_the_same_conversion(
    tmp_path: Path, database_url: str, start_app: Callable[..., Any]
) -> None:
    path = tmp_path / "pets.yaml"
    doc = {**PETS_DOCUMENT, "paths": {**PETS_DOCUMENT["paths"], "/photos": {"post": {
        "operationId": "upload",
        "requestBody": {"content": {"image/png": {"schema": {}}}}}}}}
    path.write_text(yaml.safe_dump(doc))
    result = run_import(database_url, str(path), "--namespace", "pets",
                        "--base-url", "https://pets.example", "--header", "X-Api-Key: k-9")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: 1 created, 0 updated, 0 unchanged, 1 skipped"
    assert ("  skipped POST /photos (/paths/~1photos/post): its request body is image/png; "
            "only JSON request bodies are supported") in result.stderr.splitlines()
    app = await start_app(database_url)
    tool = (await app.client.get("/v1/tools/updatePet", params={"namespace": "pets"})).json()
    assert tool["executor"]["url"] == "https://pets.example/shops/{shop_id}/pets/{pet_name}"
    assert tool["secret_headers"] == ["X-Api-Key"]


async def test_a_url_httpx_cannot_send_is_a_422_naming_the_url(api: httpx.AsyncClient) -> None:
    bad = await api.post(IMPORT, json={"url": "https://\u0018x", "namespace": "p"})
    assert bad.status_code == 422
    assert bad.json()["errors"] == [{
        "pointer": "/url",
        "message": "could not fetch the OpenAPI document at https://\u0018x: Invalid "
        "non-printable ASCII character in URL, '\\x18' at position 8.",
    }]
