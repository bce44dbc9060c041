"""What a client is told when a request is wrong: a typo is named with the field it likely
meant, a missing field points at itself, and every message says what to do."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.params import BodyKwarg

from app.main import create_app
from tests.conftest import ADMIN_KEY


def invalid(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/invalid-request"
    errors: list[dict[str, Any]] = response.json()["errors"]
    return errors


async def test_a_misspelt_spec_field_is_refused_naming_the_field_it_meant(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/tools", json={
        "name": "get_weather", "description": "Weather", "paramters": {"type": "object"}})
    assert invalid(response) == [{"pointer": "/paramters",
                                  "message": "unknown field `paramters`: did you mean "
                                             "`parameters`?"}]
    assert response.json()["detail"] == ("/paramters: unknown field `paramters`: did you mean "
                                         "`parameters`?")
    assert (await api.get("/v1/tools/get_weather")).status_code == 404


async def test_a_misspelt_nested_field_is_named_at_its_place(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/tools", json={
        "name": "t", "description": "x",
        "executor": {"kind": "http", "ulr": "https://api.example.com/t"}})
    assert invalid(response) == [{"pointer": "/executor/ulr",
                                  "message": "unknown field `ulr`: did you mean `url`?"}]


async def test_a_bulk_item_typo_names_the_item(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/tools/bulk", json={"tools": [
        {"name": "a", "description": "x"},
        {"name": "b", "description": "x", "policy": {"timeout": 5}}]})
    assert invalid(response) == [{"pointer": "/tools/1/policy/timeout", "index": 1,
                                  "message": "unknown field `timeout`: did you mean "
                                             "`timeout_s`?"}]


async def test_an_unknown_field_with_no_near_name_lists_the_fields(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/keys", json={"role": "developer", "colour": "blue"})
    assert invalid(response) == [{"pointer": "/colour",
                                  "message": "unknown field `colour`; the fields here are: "
                                             "role, tenant, name"}]


async def test_a_field_the_service_sets_is_named_as_such(api: httpx.AsyncClient) -> None:
    created = (await api.post("/v1/tools", json={"name": "t", "description": "x"})).json()
    response = await api.put("/v1/tools/t", json={**_spec_of(created), "version": 1})
    assert invalid(response) == [{"pointer": "/version",
                                  "message": "unknown field `version`: the service sets it; "
                                             "leave it out of requests"}]


async def test_a_typo_in_a_turn_is_refused_before_the_turn_runs(
    api: httpx.AsyncClient,
) -> None:
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    response = await api.post(f"/v1/conversations/{conversation}/turns",
                              json={"message": "hi", "stream_": True})
    assert invalid(response) == [{"pointer": "/stream_",
                                  "message": "unknown field `stream_`: did you mean `stream`?"}]
    turns = (await api.get(f"/v1/conversations/{conversation}")).json()["turns"]
    assert turns == []


async def test_an_empty_body_says_it_is_empty(api: httpx.AsyncClient) -> None:
    conversation = (await api.post("/v1/conversations")).json()["id"]
    response = await api.post(f"/v1/conversations/{conversation}/turns")
    assert invalid(response) == [{"pointer": "", "message": "the body is empty: send a JSON "
                                  "object (Content-Type: application/json)"}]


async def test_a_missing_field_points_at_the_field(api: httpx.AsyncClient) -> None:
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    response = await api.post(f"/v1/conversations/{conversation}/turns", json={})
    assert invalid(response) == [{"pointer": "/message",
                                  "message": "required field `message` is missing"}]


async def test_a_bad_key_field_is_not_called_a_tool_spec(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/keys", json={"role": "boss"})
    assert invalid(response)[0]["pointer"] == "/role"
    assert "tool spec" not in response.json()["detail"]
    assert response.json()["detail"] == (
        "/role: Invalid enum value 'boss': use one of admin, chat, developer, viewer")


async def test_an_unknown_executor_kind_lists_every_kind(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/tools", json={
        "name": "t", "description": "x", "executor": {"kind": "ftp"}})
    assert invalid(response) == [{"pointer": "/executor/kind",
                                  "message": "unknown kind 'ftp': use one of http, builtin, "
                                             "client, mcp, model"}]


async def test_malformed_json_says_where_it_breaks(api: httpx.AsyncClient) -> None:
    truncated = await api.post("/v1/tools", content=b'{"name": "t', headers={
        "content-type": "application/json"})
    assert truncated.status_code == 400
    assert truncated.json()["type"] == "/problems/malformed-json"
    assert truncated.json()["detail"] == (
        "the body is not valid JSON: it ends before the JSON does (a closing quote, bracket or "
        "brace is missing)")
    garbled = await api.post("/v1/tools", content=b'{"name": "t",}', headers={
        "content-type": "application/json"})
    assert garbled.json()["detail"] == ("the body is not valid JSON: trailing comma in object "
                                         "(byte 13)")


async def test_a_body_over_the_limit_names_the_limit_and_its_setting(
    start_app: Any, database_url: str,
) -> None:
    app = await start_app(database_url, max_body_bytes=1000)
    response = await app.client.post("/v1/tools", json={"name": "t", "description": "x" * 2000})
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "the body is larger than 1,000 bytes, the limit MAX_BODY_BYTES sets; send less (split "
        "a bulk request), or raise MAX_BODY_BYTES")


async def test_a_bad_query_parameter_is_the_same_422_as_a_bad_field(
    api: httpx.AsyncClient,
) -> None:
    response = await api.get("/v1/tools", params={"limit": "abc"})
    assert invalid(response) == [{"pointer": "", "parameter": "query parameter 'limit'",
                                  "message": "'abc' is not a whole number such as 10"}]


def test_every_request_body_refuses_unknown_fields(tmp_path: Any) -> None:
    """Checked over the app's own routes, so a body added later cannot forget it. The
    OpenAI-compatible route's body is held to the same rule."""
    from app.settings import Settings

    app = create_app(Settings(database_url="postgresql://unused", data_dir_path=str(tmp_path),
                              admin_key=ADMIN_KEY))
    lenient = sorted({f"{cls.__module__}.{cls.__name__}" for cls in _body_structs(app)
                      if not cls.__struct_config__.forbid_unknown_fields})
    assert lenient == []


def _body_structs(app: Litestar) -> set[type[msgspec.Struct]]:
    found: set[type[msgspec.Struct]] = set()

    def visit(kind: msgspec.inspect.Type) -> None:
        match kind:
            case msgspec.inspect.StructType(cls=cls) if cls not in found:
                found.add(cls)
                for field in kind.fields:
                    visit(field.type)
            case msgspec.inspect.UnionType(types=types):
                for inner in types:
                    visit(inner)
            case msgspec.inspect.ListType(item_type=inner) | msgspec.inspect.DictType(
                    value_type=inner) | msgspec.inspect.Metadata(type=inner):
                visit(inner)

    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler):
                continue
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is not None and isinstance(data.kwarg_definition, BodyKwarg):
                visit(msgspec.inspect.type_info(data.annotation))
    return found


def _spec_of(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in ("name", "namespace", "description", "parameters")}


async def test_a_turns_own_tool_that_is_invalid_is_refused_before_the_turn_is_written(
    api: httpx.AsyncClient,
) -> None:
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    response = await api.post(f"/v1/conversations/{conversation}/turns", json={
        "message": "hi",
        "tools": [{"type": "function", "function": {"name": "get weather"}}]})
    [error] = invalid(response)
    assert error["pointer"] == "/tools/0/function/name"
    assert (await api.get(f"/v1/conversations/{conversation}")).json()["turns"] == []
