"""The trace viewer: the app serves the page, and in a real browser the page draws a real plan
turn as a waterfall: parallel calls side by side, a dependent call after the one it waited for,
a failed call marked, each span's detail one click away, and what the turn said (its request,
each call's arguments and outcome, its answer) beside the spans for a key that may read it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, async_playwright

from planner.tracing import CAPTURE_ENV
from tests.conftest import ADMIN_KEY
from tests.scripted_model import ScriptedFailure, ScriptedModel, ScriptedReply
from tests.test_auth import bearer, new_key
from tests.tool_server import ToolServer, http_tool

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOT = Path(__file__).parent / "artifacts" / "viewer.png"
SLEEP = {"ms": {"type": "number"}, "label": {"type": "string"}}
# Three independent steps, a fourth that takes s1's output, and one whose tool answers 404.
PLAN = {
    "steps": [
        {"id": "s1", "tool": "fetch_orders", "arguments": {"ms": 300, "label": "orders"}},
        {"id": "s2", "tool": "fetch_invoices", "arguments": {"ms": 200, "label": "invoices"}},
        {"id": "s3", "tool": "fetch_profile", "arguments": {"ms": 250, "label": "profile"}},
        {"id": "s4", "tool": "summarize", "arguments": {"ms": 150, "label": "$s1.label"}},
        {"id": "s5", "tool": "lookup_loyalty", "arguments": {"ms": 10}},
    ]
}


async def start_viewer_app(
    start_app: Callable[..., Any], database_url: str, model: ScriptedModel, tools: ToolServer
) -> Any:
    # One plan, failed step and all, shown as it ran: no replan.
    app = await start_app(database_url, model_url=model.url, max_replans=0)
    sleepers = ["fetch_orders", "fetch_invoices", "fetch_profile", "summarize"]
    specs = [http_tool(f"{tools.url}/sleep", n, f"Load {n}", SLEEP, ["ms"]) for n in sleepers]
    specs.append(http_tool(f"{tools.url}/missing", "lookup_loyalty", "Loyalty points", SLEEP, []))
    response = await app.client.post("/v1/tools/bulk", json={"tools": specs})
    assert response.status_code == 200, response.text
    return app


async def run_plan_turn(client: httpx.AsyncClient, model: ScriptedModel) -> dict[str, Any]:
    model.push(ScriptedReply(content=json.dumps(PLAN)), ScriptedReply(content="Ann: 3 orders."))
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    response = await client.post(
        f"/v1/conversations/{conversation}/turns",
        json={"message": "Summarize ann's account", "mode": "plan"},
    )
    assert response.status_code == 200, response.text
    turn: dict[str, Any] = response.json()
    return turn


async def stored_trace(client: httpx.AsyncClient, turn_id: str) -> dict[str, Any]:
    """The turn's trace once its root span is stored (spans are written a moment later)."""
    for _ in range(200):
        response = await client.get(f"/v1/turns/{turn_id}/trace")
        if response.status_code == 200 and any(
            s["parent_span_id"] is None for s in response.json()["spans"]
        ):
            trace: dict[str, Any] = response.json()
            return trace
        await asyncio.sleep(0.05)
    raise AssertionError(f"no stored trace for turn {turn_id}: {response.text}")


def spans_by_call(trace: dict[str, Any]) -> dict[str, str]:
    """Plan step id (s1...) -> span id, for the tool call spans."""
    calls = {s["attributes"].get("gen_ai.tool.call.id"): s["span_id"] for s in trace["spans"]}
    return {step["id"]: calls[f"p0_{step['id']}"] for step in PLAN["steps"]}


@contextlib.asynccontextmanager
async def browser_page(profile: Path) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page in headless Debian Chromium, and the script errors it raises."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the viewer test drives a real browser; "
                    "install it with `apt-get install chromium`")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            yield page, errors
        finally:
            await context.close()


async def bar_extent(page: Page, span_id: str) -> tuple[float, float]:
    box = await page.locator(f'[data-testid=span-bar][data-span-id="{span_id}"]').bounding_box()
    assert box is not None, f"no bar drawn for span {span_id}"
    return box["x"], box["x"] + box["width"]


async def test_the_viewer_page_and_its_assets_are_served_with_their_content_types(
    api: httpx.AsyncClient,
) -> None:
    page = await api.get("/viewer")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="/viewer/viewer.js" defer></script>' in page.text
    assert '<link rel="stylesheet" href="/viewer/viewer.css">' in page.text
    script = await api.get("/viewer/viewer.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    styles = await api.get("/viewer/viewer.css")
    assert styles.headers["content-type"] == "text/css; charset=utf-8"


async def test_a_plan_turn_draws_parallel_calls_side_by_side_and_the_dependent_call_after(
    start_app: Callable[..., Any],
    database_url: str,
    model: ScriptedModel,
    tools: ToolServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    app = await start_viewer_app(start_app, database_url, model, tools)
    turn = await run_plan_turn(app.client, model)
    trace = await stored_trace(app.client, turn["id"])
    span = spans_by_call(trace)

    async with browser_page(tmp_path / "chromium-profile") as (page, errors):
        await page.goto(f"{app.url}/viewer")
        await page.fill("[data-testid=api-key]", ADMIN_KEY)
        await page.press("[data-testid=api-key]", "Enter")
        conversation = page.locator(
            f'[data-testid=conversation][data-conversation-id="{turn["conversation_id"]}"]'
        )
        await conversation.locator(f'[data-testid=turn-item][data-turn-id="{turn["id"]}"]').click()
        await page.wait_for_selector(f'[data-testid=span-bar][data-span-id="{span["s4"]}"]')

        s1, s2, s3, s4 = [await bar_extent(page, span[s]) for s in ("s1", "s2", "s3", "s4")]
        for (a_start, a_end), (b_start, b_end) in ((s1, s2), (s1, s3), (s2, s3)):
            assert a_start < b_end and b_start < a_end, "parallel calls' bars must overlap"
        assert s4[0] >= s1[1] - 1, "s4 waited for s1, so its bar starts where s1's ends"

        failed = page.locator(f'[data-testid=span-row][data-span-id="{span["s5"]}"]')
        assert await failed.get_attribute("class") == "row op-tool is-error"
        assert await failed.locator("[data-testid=error-marker]").count() == 1
        waiting = page.locator(f'[data-testid=span-row][data-span-id="{span["s4"]}"]')
        assert await waiting.locator("[data-testid=waits-for]").inner_text() == "waits for p0_s1"

        await page.locator(f'[data-testid=span-bar][data-span-id="{span["s4"]}"]').click()
        panel = page.locator("[data-testid=span-detail]")
        assert await panel.locator("[data-testid=detail-name]").inner_text() == (
            "execute_tool summarize"
        )
        assert await panel.locator("[data-testid=detail-tool]").inner_text() == "summarize"
        dependency = panel.locator("[data-testid=detail-dependencies] button")
        assert await dependency.get_attribute("data-span-id") == span["s1"]
        assert await dependency.inner_text() == "fetch_orders\np0_s1"
        assert json.loads(await panel.locator("[data-testid=detail-arguments]").inner_text()) == {
            "ms": 150,
            "label": "orders",
        }
        assert await page.evaluate("location.hash") == (
            f"#trace={trace['trace_id']}&span={span['s4']}"
        )
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT))
        assert errors == []


async def test_a_turn_that_paused_for_approval_shows_where_it_paused_and_where_it_went_on(
    start_app: Callable[..., Any],
    database_url: str,
    model: ScriptedModel,
    tools: ToolServer,
    tmp_path: Path,
) -> None:
    app = await start_app(database_url, model_url=model.url)
    spec = http_tool(f"{tools.url}/sleep", "refund_order", "Refund an order", SLEEP, ["ms"],
                     requires_approval=True)
    assert (await app.client.post("/v1/tools", json=spec)).status_code == 201
    model.push(ScriptedReply(tool_calls=[("refund_order", {"ms": 5})]),
               ScriptedReply(content="Refunded."))
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    paused = (await app.client.post(f"/v1/conversations/{conversation}/turns",
                                    json={"message": "refund it"})).json()
    call_id = paused["pending"][0]["id"]
    done = await app.client.post(f"/v1/turns/{paused['id']}/approvals",
                                 json={"call_id": call_id, "approve": True})
    assert done.json()["status"] == "completed"
    for _ in range(200):  # both parts of the turn, and both calls' spans, are stored
        spans = (await stored_trace(app.client, paused["id"]))["spans"]
        if sum(s["name"] == "execute_tool refund_order" for s in spans) == 2 and sum(
                s["name"].startswith("invoke_agent") for s in spans) == 2:
            break
        await asyncio.sleep(0.05)
    first, second = sorted((s for s in spans if s["name"] == "execute_tool refund_order"),
                           key=lambda s: s["start_time_unix_nano"])
    resumed = next(s for s in spans if s["attributes"].get("switchboard.turn.resumed"))

    async with browser_page(tmp_path / "chromium-profile") as (page, errors):
        await page.goto(f"{app.url}/viewer")
        await page.fill("[data-testid=api-key]", ADMIN_KEY)
        await page.press("[data-testid=api-key]", "Enter")
        await page.locator(f'[data-testid=turn-item][data-turn-id="{paused["id"]}"]').click()
        await page.wait_for_selector(f'[data-testid=span-row][data-span-id="{second["span_id"]}"]')
        row = page.locator(f'[data-testid=span-row][data-span-id="{first["span_id"]}"]')
        assert await row.locator("[data-testid=paused-for]").inner_text() == (
            "paused for approval")
        ran = page.locator(f'[data-testid=span-row][data-span-id="{second["span_id"]}"]')
        assert await ran.locator("[data-testid=paused-for]").count() == 0
        agent = page.locator(f'[data-testid=span-row][data-span-id="{resumed["span_id"]}"]')
        assert "resumed" in await agent.locator(".chip").all_inner_texts()
        assert errors == []


async def open_turn(page: Page, app_url: str, key: str, turn_id: str) -> None:
    """The viewer, signed in with `key`, showing the turn picked from the list."""
    await page.goto(f"{app_url}/viewer")
    await page.fill("[data-testid=api-key]", key)
    await page.press("[data-testid=api-key]", "Enter")
    await page.locator(f'[data-testid=turn-item][data-turn-id="{turn_id}"]').click()
    await page.wait_for_selector("[data-testid=span-bar]")


async def run_auto_turn(client: httpx.AsyncClient, model: ScriptedModel, message: str,
                        calls: list[tuple[str, dict[str, Any]]], answer: str) -> dict[str, Any]:
    model.push(ScriptedReply(tool_calls=calls), ScriptedReply(content=answer))
    conversation = (await client.post("/v1/conversations", json={})).json()["id"]
    response = await client.post(f"/v1/conversations/{conversation}/turns",
                                 json={"message": message})
    assert response.status_code == 200, response.text
    turn: dict[str, Any] = response.json()
    await stored_trace(client, turn["id"])
    return turn


LOYALTY_404 = ("POST {url}/missing answered HTTP 404 (check the arguments against the tool's "
               'parameters): {{"status_code":404,"detail":"Not Found"}}')


async def test_with_content_capture_off_the_viewer_shows_what_the_turn_stored(
    start_app: Callable[..., Any],
    database_url: str,
    model: ScriptedModel,
    tools: ToolServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv(CAPTURE_ENV, raising=False)
    app = await start_viewer_app(start_app, database_url, model, tools)
    viewer = await new_key(app.client, "viewer")
    turn = await run_plan_turn(app.client, model)
    trace = await stored_trace(app.client, turn["id"])
    span = spans_by_call(trace)
    captured = [k for s in trace["spans"] for k in s["attributes"]
                if k in ("gen_ai.tool.call.arguments", "gen_ai.tool.call.result",
                         "gen_ai.input.messages", "gen_ai.output.messages")]
    assert captured == [], "the spans carry no content: what the viewer shows is the store's"

    async with browser_page(tmp_path / "chromium-profile") as (page, errors):
        await open_turn(page, app.url, viewer, turn["id"])
        content = page.locator("[data-testid=turn-content]")
        assert await content.locator("[data-testid=turn-request]").inner_text() == (
            "USER\nSummarize ann's account")
        assert await content.locator("[data-testid=turn-answer]").inner_text() == (
            "ANSWER\nAnn: 3 orders.")
        step = content.locator("[data-testid=turn-step] [data-testid=turn-call]")
        assert await step.all_inner_texts() == [
            "fetch_orders\np0_s1\nOK", "fetch_invoices\np0_s2\nOK", "fetch_profile\np0_s3\nOK",
            "summarize\np0_s4\nOK", "lookup_loyalty\np0_s5\nERROR",
        ]

        await page.locator(f'[data-testid=span-bar][data-span-id="{span["s4"]}"]').click()
        panel = page.locator("[data-testid=span-detail]")
        assert json.loads(await panel.locator("[data-testid=detail-arguments]").inner_text()) == {
            "ms": 150, "label": "orders"}
        assert json.loads(await panel.locator("[data-testid=detail-result]").inner_text()) == {
            "slept_ms": 150.0, "label": "orders"}

        await step.filter(has_text="lookup_loyalty").click()
        assert await page.evaluate("location.hash") == (
            f"#trace={trace['trace_id']}&span={span['s5']}")
        assert json.loads(await panel.locator("[data-testid=detail-arguments]").inner_text()) == {
            "ms": 10}
        assert await panel.locator("[data-testid=detail-error]").inner_text() == (
            LOYALTY_404.format(url=tools.url))
        assert await panel.locator("[data-testid=detail-result]").count() == 0

        root = next(s for s in trace["spans"] if s["parent_span_id"] is None)
        await page.locator(f'[data-testid=span-row][data-span-id="{root["span_id"]}"]').click()
        assert await panel.locator("[data-testid=detail-request]").inner_text() == (
            "Summarize ann's account")
        assert await panel.locator("[data-testid=detail-answer]").inner_text() == "Ann: 3 orders."
        assert errors == []


async def test_a_key_that_may_not_read_conversations_sees_the_spans_without_the_content(
    start_app: Callable[..., Any],
    database_url: str,
    model: ScriptedModel,
    tools: ToolServer,
    tmp_path: Path,
) -> None:
    app = await start_viewer_app(start_app, database_url, model, tools)
    developer = await new_key(app.client, "developer")  # reads traces, not conversations
    turn = await run_plan_turn(app.client, model)
    span = spans_by_call(await stored_trace(app.client, turn["id"]))

    async with browser_page(tmp_path / "chromium-profile") as (page, errors):
        await open_turn(page, app.url, developer, turn["id"])
        refused = ("This key may not read conversations, so the turn's messages, arguments and "
                   "results are not shown: use a key whose role may (viewer, chat or admin).")
        assert await page.locator("[data-testid=content-refused]").inner_text() == refused
        assert await page.locator("[data-testid=turn-content]").count() == 0
        await page.locator(f'[data-testid=span-bar][data-span-id="{span["s5"]}"]').click()
        panel = page.locator("[data-testid=span-detail]")
        assert await panel.locator("[data-testid=detail-content-refused]").inner_text() == refused
        assert await panel.locator("[data-testid=detail-arguments]").count() == 0
        # The refusals were the API's own 403s, handled: not script errors.
        assert [e for e in errors if "403" not in e] == []


async def test_a_key_of_another_tenant_reads_neither_the_turns_trace_nor_its_messages(
    start_app: Callable[..., Any],
    database_url: str,
    model: ScriptedModel,
    tools: ToolServer,
    tmp_path: Path,
) -> None:
    app = await start_viewer_app(start_app, database_url, model, tools)
    other = await new_key(app.client, "viewer", tenant="other")
    turn = await run_plan_turn(app.client, model)
    await stored_trace(app.client, turn["id"])
    async with httpx.AsyncClient(base_url=app.url, headers=bearer(other)) as outsider:
        messages = await outsider.get(f"/v1/turns/{turn['id']}/messages")
    assert (messages.status_code, messages.json()["detail"]) == (
        404, f"turn {turn['id']!r} not found")
    mine = await app.client.get(f"/v1/turns/{turn['id']}/messages")
    assert [m["role"] for m in mine.json()["items"]] == [
        "user", "assistant", "tool", "tool", "tool", "tool", "tool", "assistant"]

    async with browser_page(tmp_path / "chromium-profile") as (page, _):
        await page.goto(f"{app.url}/viewer")
        await page.fill("[data-testid=api-key]", other)
        await page.press("[data-testid=api-key]", "Enter")
        await page.goto(f"{app.url}/viewer#turn={turn['id']}")
        banner = page.locator("[data-testid=error-banner]")
        await banner.wait_for()
        assert await banner.locator("li").inner_text() == (
            f"Could not load: GET /v1/turns/{turn['id']}/trace → 404: turn {turn['id']!r} not "
            "found, or it was not traced")
        assert await page.locator("[data-testid=turn-content]").count() == 0
        assert await page.locator("[data-testid=empty-traces]").inner_text() == (
            "No traces yet\n\nEach turn of a conversation is recorded as one trace. Run a turn "
            "and press Refresh.")


async def test_a_long_tool_name_is_shown_whole_beside_its_call_badge(
    start_app: Callable[..., Any],
    database_url: str,
    model: ScriptedModel,
    tools: ToolServer,
    tmp_path: Path,
) -> None:
    name = "get_customer_loyalty_points_balance"
    app = await start_viewer_app(start_app, database_url, model, tools)
    spec = http_tool(f"{tools.url}/missing", name, "Loyalty points balance", SLEEP, [])
    assert (await app.client.post("/v1/tools", json=spec)).status_code == 201
    turn = await run_auto_turn(app.client, model, "points?", [(name, {"ms": 1})], "None.")
    call = turn["tool_calls"][0]["id"]

    async with browser_page(tmp_path / "chromium-profile") as (page, errors):
        await open_turn(page, app.url, ADMIN_KEY, turn["id"])
        row = page.locator("[data-testid=span-row].op-tool")
        label = row.locator(".span-name")
        assert await label.inner_text() == name
        assert await label.evaluate("e => e.scrollWidth <= e.clientWidth"), "the name is cut"
        assert await label.get_attribute("title") == f"execute_tool {name}"
        assert await row.locator(".chip").inner_text() == call
        assert await row.locator("[data-testid=error-marker]").is_visible()
        assert errors == []


async def test_the_turn_list_tells_a_clean_turn_from_one_whose_calls_failed_and_a_failed_one(
    start_app: Callable[..., Any],
    database_url: str,
    model: ScriptedModel,
    tools: ToolServer,
    tmp_path: Path,
) -> None:
    app = await start_viewer_app(start_app, database_url, model, tools)
    clean = await run_auto_turn(app.client, model, "orders?", [("fetch_orders", {"ms": 1})],
                                "Three.")
    warned = await run_auto_turn(app.client, model, "loyalty?",
                                 [("lookup_loyalty", {"ms": 1}), ("fetch_orders", {"ms": 1})],
                                 "No points.")
    model.push(*[ScriptedFailure(status=503)] * 4)
    conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
    failed = (await app.client.post(f"/v1/conversations/{conversation}/turns",
                                    json={"message": "hello"})).json()["turn"]
    await stored_trace(app.client, failed["id"])
    listed = {t["turn_id"]: (t["status"], t["failed_calls"])
              for t in (await app.client.get("/v1/traces")).json()["items"]}
    assert listed == {clean["id"]: ("ok", 0), warned["id"]: ("ok", 1),
                      failed["id"]: ("error", 0)}

    async with browser_page(tmp_path / "chromium-profile") as (page, errors):
        await page.goto(f"{app.url}/viewer")
        await page.fill("[data-testid=api-key]", ADMIN_KEY)
        await page.press("[data-testid=api-key]", "Enter")
        await page.wait_for_selector("[data-testid=turn-dot]")
        shown = {}
        for turn_id in (clean["id"], warned["id"], failed["id"]):
            dot = page.locator(f'[data-testid=turn-item][data-turn-id="{turn_id}"] '
                               "[data-testid=turn-dot]")
            shown[turn_id] = (await dot.get_attribute("class"), await dot.get_attribute("title"),
                              await dot.evaluate("e => getComputedStyle(e).backgroundColor"))
        assert shown == {
            clean["id"]: ("dot status-ok", "ok", "rgb(21, 128, 61)"),
            warned["id"]: ("dot status-warning", "1 call failed", "rgb(217, 119, 6)"),
            failed["id"]: ("dot status-error", "failed", "rgb(220, 38, 38)"),
        }
        assert errors == []
