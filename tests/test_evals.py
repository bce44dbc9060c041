"""Eval sets and runs over HTTP: real turns through the engine against scripted backends of
known behaviour, scored, summed up, and the configuration to deploy chosen from them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest

from planner.evals.bfcl import bfcl_cases
from tests.eval_models import ANSWERS, QUESTIONS, case_model
from tests.scripted_model import ScriptedFailure, ScriptedHang, ScriptedReply, scripted_model
from tests.test_tracing import stored_trace
from tests.tool_server import tool_server

PRICES = {"oracle": {"input": 3.0, "output": 15.0, "cached_input": 0.3},
          "sloppy": {"input": 0.1, "output": 0.4}}


def slice_set() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    specs, cases = bfcl_cases(QUESTIONS, ANSWERS, tag="bfcl")
    return specs, [msgspec.to_builtins(c) for c in cases]


async def register(client: httpx.AsyncClient, specs: list[dict[str, Any]], url: str,
                   **policy: Any) -> None:
    tools = [{**s, "executor": {"kind": "http", "url": url}, "policy": policy} for s in specs]
    response = await client.post("/v1/tools/bulk", json={"tools": tools})
    assert response.status_code == 200, response.text


async def finished(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    for _ in range(600):
        report: dict[str, Any] = (await client.get(f"/v1/evals/runs/{run_id}")).json()
        if report["status"] != "running":
            return report
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish: {report}")


def backends(**urls: str) -> str:
    return json.dumps([{"name": n, "base_url": u, "price": PRICES[n]} for n, u in urls.items()])


async def test_a_set_is_created_listed_read_and_deleted(api: httpx.AsyncClient) -> None:
    _specs, cases = slice_set()
    created = await api.post("/v1/evals/sets", json={"name": "slice", "cases": cases})
    assert created.status_code == 201, created.text
    made = created.json()
    assert (made["name"], made["cases"]) == ("slice", 8)
    listed = (await api.get("/v1/evals/sets")).json()["items"]
    assert [s["id"] for s in listed] == [made["id"]]
    read = (await api.get(f"/v1/evals/sets/{made['id']}")).json()
    assert read["cases"][4]["turns"][0]["expected_calls"] == [
        {"name": "weather_current", "arguments": {"city": ["Paris"]}},
        {"name": "weather_current", "arguments": {"city": ["Rome"]}}]
    again = await api.post("/v1/evals/sets", json={"name": "slice", "cases": cases})
    assert again.status_code == 409
    assert again.json()["detail"] == ("an eval set named 'slice' already exists; choose another "
                                      "name or delete that set first")
    assert (await api.delete(f"/v1/evals/sets/{made['id']}")).status_code == 204
    gone = await api.get(f"/v1/evals/sets/{made['id']}")
    assert gone.status_code == 404
    assert gone.json()["detail"] == f"eval set {made['id']!r} not found"


async def test_a_bad_case_is_a_422_naming_its_index_and_pointer(api: httpx.AsyncClient) -> None:
    _specs, cases = slice_set()
    broken = [*cases[:2], {**cases[2], "turns": [{"user": ""}]}]
    response = await api.post("/v1/evals/sets", json={"name": "bad", "cases": broken})
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "/cases/2/turns/0/user"

    twice = [cases[0], {**cases[1], "id": cases[0]["id"]},
             {**cases[2], "turns": [{"user": "x", "expected_calls": [
                 {"name": "f", "arguments": {"a": []}}]}]}]
    response = await api.post("/v1/evals/sets", json={"name": "bad", "cases": twice})
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [(e["index"], e["pointer"]) for e in errors] == [
        (1, "/cases/1/id"), (2, "/cases/2/turns/0/expected_calls/0/arguments/a")]
    assert errors[0]["message"] == ("case id 'simple_0' is also item 0's; each id may appear "
                                    "once per set")
    assert (await api.get("/v1/evals/sets")).json()["items"] == []  # nothing half-made


async def test_two_backends_score_as_constructed_and_the_frontier_ranks_them(
    start_app: Callable[..., Any], database_url: str
) -> None:
    specs, cases = slice_set()
    parsed = bfcl_cases(QUESTIONS, ANSWERS)[1]
    async with scripted_model(responder=case_model(parsed, one_at_a_time=False)) as oracle, \
            scripted_model(responder=case_model(parsed, one_at_a_time=True,
                                                drops=lambda i: i % 2 == 0)) as sloppy, \
            tool_server() as tools:
        app = await start_app(database_url, model_url=oracle.url,
                              model_backends=backends(oracle=oracle.url, sloppy=sloppy.url))
        client = app.client
        await register(client, specs, f"{tools.url}/weather", idempotent=True)
        set_id = (await client.post("/v1/evals/sets",
                                    json={"name": "slice", "cases": cases})).json()["id"]
        started = await client.post("/v1/evals/runs", json={
            "set": set_id, "concurrency": 4,
            "configs": [{"name": "oracle", "model": "oracle", "candidate_k": 16},
                        {"name": "sloppy", "model": "sloppy", "candidate_k": 16}]})
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        report = await finished(client, run_id)

        assert tools.received == []  # a mocked run never reaches a tool
        assert report["status"] == "completed"
        assert report["progress"] == {"done": 16, "total": 16}
        await app.state["learner"].settle()  # an eval run's turns teach retrieval nothing
        for spec in specs:
            shown = (await client.get(f"/v1/tools/{spec['name']}/examples")).json()
            assert shown["learned"] == [], spec["name"]
        good, bad = report["results"]
        assert (good["config"], good["cases"], good["accuracy"], good["call_accuracy"],
                good["retrieval_recall"], good["parallel_share"], good["failed_turns"]) == (
                    "oracle", 8, 1.0, 1.0, 1.0, 1.0, 0)
        # sloppy drops an argument in cases 0, 2, 4 and 6 (12 expected calls, 4 spoilt) and
        # never makes two calls at once.
        assert (bad["config"], bad["accuracy"], bad["call_accuracy"], bad["parallel_share"]) \
            == ("sloppy", 0.5, 8 / 12, 0.0)
        assert bad["stderr"] == pytest.approx((0.5 * 0.5 * 8 / 7) ** 0.5 / 8 ** 0.5)
        assert good["tokens"]["prompt"] > 0 and good["cost"] > 0
        assert bad["cost"] < good["cost"]  # priced at a thirtieth
        assert good["latency_ms"]["p50"] <= good["latency_ms"]["p95"]

        front = (await client.get(f"/v1/evals/runs/{run_id}/frontier")).json()
        assert front["frontier"] == ["oracle", "sloppy"]
        assert front["recommended"] == "sloppy"  # no objectives: the cheapest
        strict = (await client.get(f"/v1/evals/runs/{run_id}/frontier",
                                   params={"min_accuracy": 0.9})).json()
        assert strict["recommended"] == "oracle"
        assert strict["why"].startswith("oracle is the cheapest frontier configuration")
        none = (await client.get(f"/v1/evals/runs/{run_id}/frontier",
                                 params={"min_accuracy": 0.9, "max_cost": 1e-9})).json()
        assert none["recommended"] is None
        assert none["why"].startswith("no configuration meets the objectives (oracle: cost")

        failing = (await client.get(f"/v1/evals/runs/{run_id}/cases",
                                    params={"config": "sloppy", "passed": "false"})).json()
        assert sorted(c["case_id"] for c in failing["items"]) == [
            "parallel_0", "parallel_multiple_0", "simple_0", "simple_2"]
        first = next(c for c in failing["items"] if c["case_id"] == "simple_2")
        [turn] = first["turns"]
        assert [r["kind"] for r in turn["reasons"]] == ["missing_argument"]
        assert turn["reasons"][0]["detail"] == "time_in_zone: required argument 'zone' is missing"
        trace = await stored_trace(client, turn["turn_id"])
        assert trace["trace_id"] == turn["trace_id"]
        [tool_span] = [s for s in trace["spans"] if s["name"].startswith("execute_tool")]
        assert tool_span["attributes"]["switchboard.tool.answered_by"] == "mocked"
        assert (await client.get(f"/v1/turns/{turn['turn_id']}")).json()["status"] == "completed"
        listed = (await client.get("/v1/traces")).json()["items"]
        assert listed == []  # an eval run's turns stay out of the listing...
        asked = (await client.get("/v1/traces", params={
            "conversation_id": first["conversation_id"]})).json()["items"]
        assert [t["trace_id"] for t in asked] == [turn["trace_id"]]  # ...unless asked for

        # The same cases wanting their calls dispatched together: sloppy's come one by one.
        strict_cases = [{**c, "turns": [{**c["turns"][0], "order": "parallel"}]} for c in cases]
        strict_set = (await client.post("/v1/evals/sets", json={
            "name": "parallel", "cases": strict_cases})).json()["id"]
        strict_run = (await client.post("/v1/evals/runs", json={
            "set": strict_set, "configs": [{"name": "oracle", "model": "oracle"},
                                           {"name": "sloppy", "model": "sloppy"}]})).json()["id"]
        good, bad = (await finished(client, strict_run))["results"]
        assert (good["accuracy"], bad["accuracy"]) == (1.0, 0.25)  # 2 single-call cases pass
        late = (await client.get(f"/v1/evals/runs/{strict_run}/cases", params={
            "config": "sloppy", "passed": "false"})).json()["items"]
        parallel_1 = next(c for c in late if c["case_id"] == "parallel_1")
        assert [r["kind"] for r in parallel_1["turns"][0]["reasons"]] == ["not_parallel"]

        unknown = await client.get(f"/v1/evals/runs/{run_id}/cases", params={"config": "nope"})
        assert unknown.status_code == 422
        assert unknown.json()["detail"] == (f"eval run {run_id!r} has no configuration 'nope'; "
                                            "it ran: oracle, sloppy")


async def test_a_plan_config_runs_its_cases_as_plans_of_steps_dispatched_together(
    start_app: Callable[..., Any], database_url: str
) -> None:
    specs, cases = slice_set()
    parsed = bfcl_cases(QUESTIONS, ANSWERS)[1]
    async with scripted_model(responder=case_model(parsed, one_at_a_time=False)) as model:
        app = await start_app(database_url, model_url=model.url)
        client = app.client
        await register(client, specs, "http://127.0.0.1:9/unused", idempotent=True)
        set_id = (await client.post("/v1/evals/sets", json={
            "name": "s", "cases": cases})).json()["id"]
        run_id = (await client.post("/v1/evals/runs", json={"set": set_id, "configs": [
            {"name": "auto"}, {"name": "plan", "mode": "plan"}]})).json()["id"]
        report = await finished(client, run_id)
        plans = [r for r in model.requests if r.get("response_format")]
    auto, plan = report["results"]
    assert (auto["accuracy"], auto["parallel_share"]) == (1.0, 1.0)
    assert (plan["accuracy"], plan["parallel_share"], plan["failed_turns"]) == (1.0, 1.0, 0)
    assert len(plans) == 8  # one plan per case


async def test_a_live_run_calls_only_tools_that_change_nothing(
    start_app: Callable[..., Any], database_url: str
) -> None:
    specs, cases = slice_set()
    parsed = bfcl_cases(QUESTIONS, ANSWERS)[1]
    async with scripted_model(responder=case_model(parsed, one_at_a_time=False)) as model, \
            tool_server() as tools:
        app = await start_app(database_url, model_url=model.url)
        client = app.client
        weather = [s for s in specs if s["name"] == "weather_current"]
        others = [s for s in specs if s["name"] != "weather_current"]
        await register(client, weather, f"{tools.url}/weather", idempotent=True)
        await register(client, others, f"{tools.url}/weather")  # not idempotent
        set_id = (await client.post("/v1/evals/sets", json={
            "name": "live", "cases": [cases[0], cases[1]]})).json()["id"]
        run_id = (await client.post("/v1/evals/runs", json={
            "set": set_id, "executor": "live", "configs": [{"name": "c"}]})).json()["id"]
        report = await finished(client, run_id)
    assert report["results"][0]["accuracy"] == 1.0
    assert [r.body for r in tools.received] == [{"city": "Oslo", "unit": "celsius"}]  # weather only


async def test_a_run_names_unknown_backends_and_repeated_config_names(
    api: httpx.AsyncClient,
) -> None:
    _specs, cases = slice_set()
    set_id = (await api.post("/v1/evals/sets", json={"name": "s", "cases": cases})).json()["id"]
    response = await api.post("/v1/evals/runs", json={
        "set": set_id, "configs": [{"name": "a", "model": "gpt-9"}, {"name": "a"}]})
    assert response.status_code == 422
    assert [(e["pointer"], e["message"]) for e in response.json()["errors"]] == [
        ("/configs/0/model", "unknown model backend 'gpt-9'; configured: default (or 'auto', "
                              "for a router's choice)"),
        ("/configs/1/name", "configuration 'a' is also item 0's; names must differ")]
    missing = await api.post("/v1/evals/runs", json={"set": "evset_x", "configs": [{"name": "a"}]})
    assert missing.status_code == 422
    assert missing.json()["errors"] == [{
        "pointer": "/set",
        "message": "eval set 'evset_x' not found; GET /v1/evals/sets lists this tenant's sets"}]


async def test_progress_streams_and_a_cancelled_run_keeps_what_finished(
    start_app: Callable[..., Any], database_url: str
) -> None:
    _specs, cases = slice_set()
    async with scripted_model(ScriptedReply(content="no tools needed"),
                              responder=lambda _body: ScriptedHang(30)) as model:
        app = await start_app(database_url, model_url=model.url)
        client = app.client
        set_id = (await client.post("/v1/evals/sets", json={
            "name": "s", "cases": [cases[0], cases[1]]})).json()["id"]
        run_id = (await client.post("/v1/evals/runs", json={
            "set": set_id, "concurrency": 1, "configs": [{"name": "c"}]})).json()["id"]
        busy = await client.delete(f"/v1/evals/sets/{set_id}")
        assert busy.status_code == 409
        assert busy.json()["detail"].startswith(f"eval set {set_id!r} has runs still running")
        events: list[tuple[str, Any]] = []
        async with client.stream("GET", f"/v1/evals/runs/{run_id}",
                                 headers={"Accept": "text/event-stream"}) as stream:
            kind = ""
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line.removeprefix("data: "))))
                    if events[-1][1].get("done") == 1:
                        cancelled = await client.post(f"/v1/evals/runs/{run_id}/cancel")
                        assert cancelled.json()["status"] == "cancelled"
                    if kind == "run.finished":
                        break
    progress = [data for kind, data in events[:-1]]
    assert {kind for kind, _data in events[:-1]} == {"progress"}
    assert progress[-1] == {"done": 1, "total": 2}
    assert [p["done"] for p in progress] == sorted({p["done"] for p in progress})
    kind, report = events[-1]
    assert kind == "run.finished"
    assert report["status"] == "cancelled"
    assert report["progress"] == {"done": 1, "total": 2}
    # The first case's answer mentions no tool, so it passed only if none was expected.
    assert report["results"][0]["accuracy"] == 0.0


async def test_a_run_whose_replica_stops_is_finished_by_another_keeping_what_was_done(
    start_app: Callable[..., Any], database_url: str
) -> None:
    _specs, cases = slice_set()
    async with scripted_model(ScriptedReply(content="no tools needed"),
                              responder=lambda _body: ScriptedHang(60)) as stuck, \
            scripted_model(responder=lambda _body: ScriptedReply(content="done")) as fine:
        first = await start_app(database_url, model_url=stuck.url, turn_lease_s=0.6)
        set_id = (await first.client.post("/v1/evals/sets", json={
            "name": "s", "cases": [cases[0], cases[1]]})).json()["id"]
        run_id = (await first.client.post("/v1/evals/runs", json={
            "set": set_id, "concurrency": 1, "configs": [{"name": "c"}]})).json()["id"]
        while (await first.client.get(f"/v1/evals/runs/{run_id}")).json()["progress"][
                "done"] < 1 or len(stuck.requests) < 2:
            await asyncio.sleep(0.05)
        kept = (await first.client.get(f"/v1/evals/runs/{run_id}/cases")).json()["items"]
        await first.stop()  # the second case's turn is cut short; the run is left running

        second = await start_app(database_url, model_url=fine.url, turn_lease_s=0.6)
        report = await finished(second.client, run_id)
        outcomes = (await second.client.get(f"/v1/evals/runs/{run_id}/cases")).json()["items"]
    assert report["status"] == "completed"
    assert report["progress"] == {"done": 2, "total": 2}
    assert outcomes[0] == kept[0]  # what the first replica finished is kept as it was
    assert [o["case_id"] for o in outcomes] == ["simple_0", "simple_1"]
    assert len(fine.requests) == 1  # only the unfinished case ran again


async def test_a_backend_that_fails_is_reported_per_case_and_the_run_still_completes(
    start_app: Callable[..., Any], database_url: str
) -> None:
    _specs, cases = slice_set()
    async with scripted_model(responder=lambda _body: ScriptedFailure(status=500)) as broken:
        app = await start_app(database_url, model_url=broken.url)
        set_id = (await app.client.post("/v1/evals/sets", json={
            "name": "s", "cases": [cases[0], cases[4]]})).json()["id"]
        run_id = (await app.client.post("/v1/evals/runs", json={
            "set": set_id, "configs": [{"name": "c"}]})).json()["id"]
        report = await finished(app.client, run_id)
        outcomes = (await app.client.get(f"/v1/evals/runs/{run_id}/cases")).json()["items"]
    assert report["status"] == "completed"
    [result] = report["results"]
    assert (result["accuracy"], result["failed_turns"], result["parallel_share"]) == (0.0, 2, 0.0)
    for outcome in outcomes:
        [turn] = outcome["turns"]
        assert turn["status"] == "failed"
        assert turn["reasons"][0]["kind"] == "turn_failed"
        assert turn["reasons"][0]["detail"].startswith("the turn ended failed: ")
        assert turn["turn_id"] and turn["trace_id"]
