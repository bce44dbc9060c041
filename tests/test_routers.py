"""Routers over HTTP: trained from an eval run of two backends of known skill, a router sends
each `"model": "auto"` turn where its training says, and the turn and its trace say why."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from planner.evals.bfcl import bfcl_cases
from tests.eval_models import ANSWERS, QUESTIONS, case_model
from tests.scripted_model import ScriptedFailure, ScriptedModel, scripted_model
from tests.test_evals import backends, finished, register, slice_set
from tests.test_tracing import stored_trace
from tests.tool_server import ToolServer

PARSED = bfcl_cases(QUESTIONS, ANSWERS)[1]
SINGLE = "What is the weather in Oslo right now?"
MULTI = "Weather in Paris and in Rome, please."


@pytest.fixture
async def models() -> AsyncIterator[tuple[ScriptedModel, ScriptedModel]]:
    """`oracle` right on every case; `sloppy` (cheap) right only on single-call cases."""
    multi = {i for i, c in enumerate(PARSED) if len(c.turns[0].expected_calls) > 1}
    async with scripted_model(responder=case_model(PARSED, one_at_a_time=False)) as oracle, \
            scripted_model(responder=case_model(PARSED, one_at_a_time=False,
                                                drops=lambda i: i in multi)) as sloppy:
        yield oracle, sloppy


@pytest.fixture
async def api(start_app: Callable[..., Any], database_url: str, tools: ToolServer,
              models: tuple[ScriptedModel, ScriptedModel]) -> httpx.AsyncClient:
    oracle, sloppy = models
    app = await start_app(database_url, model_url=oracle.url,
                          model_backends=backends(oracle=oracle.url, sloppy=sloppy.url))
    specs, _cases = slice_set()
    await register(app.client, specs, f"{tools.url}/weather", idempotent=True)
    client: httpx.AsyncClient = app.client
    return client


async def trained(api: httpx.AsyncClient, **objective: float) -> dict[str, Any]:
    _specs, cases = slice_set()
    set_id = (await api.post("/v1/evals/sets", json={"name": "slice", "cases": cases})
              ).json()["id"]
    run = await api.post("/v1/evals/runs", json={
        "set": set_id, "configs": [{"name": "strong", "model": "oracle", "candidate_k": 16},
                                   {"name": "cheap", "model": "sloppy", "candidate_k": 16}]})
    assert run.status_code == 202, run.text
    report = await finished(api, run.json()["id"])
    assert [(r["config"], r["accuracy"]) for r in report["results"]] == [
        ("strong", 1.0), ("cheap", 0.5)]
    made = await api.post("/v1/routers", json={"name": "main", "eval_run": run.json()["id"],
                                               "objective": objective})
    assert made.status_code == 201, made.text
    router: dict[str, Any] = made.json()
    return router


async def auto_turn(api: httpx.AsyncClient, message: str) -> dict[str, Any]:
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    response = await api.post(f"/v1/conversations/{conversation}/turns",
                              json={"message": message, "model": "auto", "candidate_k": 16})
    assert response.status_code == 200, response.text
    turn: dict[str, Any] = response.json()
    return turn


async def test_a_router_sends_each_turn_where_its_eval_run_says_it_is_answered_cheapest(
    api: httpx.AsyncClient, models: tuple[ScriptedModel, ScriptedModel]
) -> None:
    router = await trained(api, min_accuracy=0.8)
    assert (router["name"], router["backends"], router["cases"]) == (
        "main", ["oracle", "sloppy"], 8)
    oracle, sloppy = models
    asked_before = (len(oracle.requests), len(sloppy.requests))
    single = await auto_turn(api, SINGLE)
    multi = await auto_turn(api, MULTI)
    assert (single["route"]["chosen"], multi["route"]["chosen"]) == ("sloppy", "oracle")
    assert single["status"] == multi["status"] == "completed"
    assert single["usage_by_backend"].keys() == {"sloppy"}
    # Each turn's model calls went to the backend chosen for it.
    assert (len(oracle.requests) - asked_before[0], len(sloppy.requests) - asked_before[1]) \
        == (2, 2)
    assert single["route"]["why"].startswith("the cheapest backend predicted right at least "
                                             "80% of the time")
    oracle_said, sloppy_said = multi["route"]["candidates"]
    assert (oracle_said["backend"], sloppy_said["backend"]) == ("oracle", "sloppy")
    assert sloppy_said["success"] < 0.8 <= oracle_said["success"]
    assert oracle_said["cost"] > 10 * sloppy_said["cost"]
    stored = (await api.get(f"/v1/turns/{multi['id']}")).json()
    assert stored["route"] == multi["route"]
    spans = (await stored_trace(api, multi["id"]))["spans"]
    [root] = [s for s in spans if s["parent_span_id"] is None]
    assert (root["attributes"]["switchboard.route.chosen"],
            root["attributes"]["switchboard.route.router"]) == ("oracle", "main")


async def test_a_cost_ceiling_keeps_every_turn_on_the_cheap_backend(
    api: httpx.AsyncClient,
) -> None:
    await trained(api, max_cost=0.0001)
    multi = await auto_turn(api, MULTI)
    assert multi["route"]["chosen"] == "sloppy"
    assert multi["route"]["why"].startswith("the backend likeliest right (")
    assert multi["route"]["why"].endswith(") at a predicted cost within 0.0001")


async def test_auto_without_a_router_is_a_422_saying_how_to_make_one(
    api: httpx.AsyncClient,
) -> None:
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    response = await api.post(f"/v1/conversations/{conversation}/turns",
                              json={"message": SINGLE, "model": "auto"})
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "model 'auto' needs a router, and this tenant has none: train one from an eval run "
        "with POST /v1/routers")


async def test_a_backend_that_is_down_is_skipped_and_its_routed_turn_goes_on_with_the_next(
    api: httpx.AsyncClient, models: tuple[ScriptedModel, ScriptedModel]
) -> None:
    await trained(api, min_accuracy=0.8)
    _oracle, sloppy = models
    sloppy.push(*[ScriptedFailure(status=503)] * 4)  # every attempt of the model client
    fell_back = await auto_turn(api, SINGLE)
    assert fell_back["status"] == "completed"
    route = fell_back["route"]
    assert (route["chosen"], route["down"]) == ("oracle", ["sloppy"])
    assert route["why"].startswith("sloppy is down (")
    assert fell_back["usage_by_backend"].keys() == {"oracle"}
    assert (await api.get(f"/v1/turns/{fell_back['id']}")).json()["route"] == route
    spans = (await stored_trace(api, fell_back["id"]))["spans"]
    [root] = [s for s in spans if s["parent_span_id"] is None]
    [event] = [e for e in root["events"] if e["name"] == "switchboard.route.fallback"]
    assert (event["attributes"]["from"], event["attributes"]["to"]) == ("sloppy", "oracle")
    # While its breaker is open, routing leaves it out; a turn that names it still tries it,
    # and its answer closes the breaker.
    next_turn = await auto_turn(api, SINGLE)
    assert [c["backend"] for c in next_turn["route"]["candidates"]] == ["oracle"]
    conversation = (await api.post("/v1/conversations", json={})).json()["id"]
    named = await api.post(f"/v1/conversations/{conversation}/turns",
                           json={"message": SINGLE, "model": "sloppy"})
    assert named.json()["status"] == "completed"
    assert (await auto_turn(api, SINGLE))["route"]["chosen"] == "sloppy"


async def test_an_openai_compatible_request_for_model_auto_is_routed(
    api: httpx.AsyncClient,
) -> None:
    await trained(api, min_accuracy=0.8)
    response = await api.post("/v1/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": MULTI}]})
    assert response.status_code == 200, response.text
    conversation = response.headers["x-switchboard-conversation"]
    [turn] = (await api.get(f"/v1/conversations/{conversation}")).json()["turns"]
    routed = (await api.get(f"/v1/turns/{turn['id']}")).json()
    assert (turn["model"], routed["route"]["chosen"]) == ("oracle", "oracle")


async def test_a_router_from_an_eval_run_that_does_not_exist_is_refused_naming_it(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/routers", json={
        "name": "main", "eval_run": "evrun_nope", "objective": {"min_accuracy": 0.9}})
    assert response.status_code == 422
    assert response.json()["errors"] == [{
        "pointer": "/eval_run",
        "message": "eval run 'evrun_nope' not found; GET /v1/evals/runs lists this tenant's "
                   "runs"}]
    typo = await api.post("/v1/routers", json={
        "name": "main", "eval_run": "evrun_nope", "objective": {"min_acuracy": 0.9}})
    assert typo.status_code == 422
    assert (await api.get("/v1/routers")).json() == {"items": [], "next_cursor": None}


async def test_a_router_objective_names_exactly_one_goal(api: httpx.AsyncClient) -> None:
    for objective in ({}, {"min_accuracy": 0.9, "max_cost": 0.01}):
        response = await api.post("/v1/routers", json={
            "name": "main", "eval_run": "evrun_x", "objective": objective})
        assert response.status_code == 422
        assert response.json()["errors"] == [{
            "pointer": "/objective",
            "message": 'give one goal: {"min_accuracy": 0.9} or {"max_cost": 0.002}'}]
