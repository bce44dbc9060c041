"""NUL characters, which Postgres cannot store: refused in requests, neutralised in tool and
model output, so a turn never fails on them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.scripted_model import ScriptedReply, scripted_model
from tests.tool_server import http_tool, tool_server
from tools.errors import SpecInvalid
from tools.validation import parse_specs


async def test_a_nul_in_a_request_body_is_refused_saying_where(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app = await start_app(database_url)
    response = await app.client.post("/v1/conversations",
                                      content=b'{"metadata": {"a": "x\\u0000y"}}',
                                      headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"] == [{
        "pointer": "",
        "message": "the body holds a NUL character (\\u0000) at byte 21; strings may not "
                   "contain it",
    }]
    literal = await app.client.post("/v1/conversations",
                                     content=b'{"metadata": {"a": "x\\\\u0000y"}}',
                                     headers={"content-type": "application/json"})
    assert literal.status_code == 201
    assert literal.json()["metadata"] == {"a": "x\\u0000y"}


def test_an_imported_spec_with_a_nul_is_refused() -> None:
    try:
        parse_specs([{"name": "t", "description": "bad\x00"}])
    except SpecInvalid as exc:
        assert [(e.index, e.pointer) for e in exc.errors] == [(0, "/0")]
    else:
        raise AssertionError("a NUL character was accepted")


async def test_nul_in_tool_and_model_output_is_stored_as_a_replacement_character(
    start_app: Callable[..., Any], database_url: str
) -> None:
    async with scripted_model() as model, tool_server() as tools:
        app = await start_app(database_url, model_url=model.url)
        await app.client.post("/v1/tools", json=http_tool(
            f"{tools.url}/sleep", "echo_label", "Echo a label",
            {"ms": {"type": "number"}, "label": {"type": "string"}}, ["ms"]))
        model.push(ScriptedReply(tool_calls=[("echo_label", {"ms": 1, "label": "a\x00b"})]),
                   ScriptedReply(content="done\x00."))
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        turn = await app.client.post(f"/v1/conversations/{conversation}/turns",
                                     json={"message": "echo"})
        assert turn.status_code == 200, turn.text
        assert turn.json()["status"] == "completed"
        stored = (await app.client.get(f"/v1/turns/{turn.json()['id']}")).json()
    assert stored["tool_calls"][0]["result"] == {"slept_ms": 1, "label": "a\ufffdb"}
    assert stored["message"]["content"] == "done\ufffd."
