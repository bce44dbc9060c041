"""The evals view in a real browser: runs listed, each configuration's numbers with the
frontier marked, the recommendation, and failing cases that link to their traces."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planner.evals.bfcl import bfcl_cases
from tests.conftest import ADMIN_KEY
from tests.eval_models import ANSWERS, QUESTIONS, case_model
from tests.scripted_model import scripted_model
from tests.test_evals import backends, finished, register, slice_set
from tests.test_viewer import browser_page

SCREENSHOT = Path(__file__).parent / "artifacts" / "evals.png"


async def test_the_evals_view_shows_each_configuration_and_links_failing_cases_to_traces(
    start_app: Callable[..., Any], database_url: str, tmp_path: Path
) -> None:
    specs, cases = slice_set()
    parsed = bfcl_cases(QUESTIONS, ANSWERS)[1]
    async with scripted_model(responder=case_model(parsed, one_at_a_time=False)) as oracle, \
            scripted_model(responder=case_model(parsed, one_at_a_time=True,
                                                drops=lambda i: i % 2 == 0)) as sloppy:
        app = await start_app(database_url, model_url=oracle.url,
                              model_backends=backends(oracle=oracle.url, sloppy=sloppy.url))
        await register(app.client, specs, "http://127.0.0.1:9/unused", idempotent=True)
        set_id = (await app.client.post("/v1/evals/sets", json={
            "name": "slice", "cases": cases})).json()["id"]
        run_id = (await app.client.post("/v1/evals/runs", json={"set": set_id, "configs": [
            {"name": "oracle", "model": "oracle"}, {"name": "sloppy", "model": "sloppy"}]})
        ).json()["id"]
        await finished(app.client, run_id)
        page_html = await app.client.get("/viewer/evals")
        assert page_html.headers["content-type"] == "text/html; charset=utf-8"

        async with browser_page(tmp_path / "chromium-profile") as (page, errors):
            await page.goto(f"{app.url}/viewer/evals")
            await page.fill("[data-testid=api-key]", ADMIN_KEY)
            await page.press("[data-testid=api-key]", "Enter")
            run = page.locator(f'[data-testid=run-item][data-run-id="{run_id}"]')
            assert "slice · oracle, sloppy" in await run.inner_text()
            await run.click()
            await page.wait_for_selector("[data-testid=config-row]")

            oracle_row = page.locator('[data-testid=config-row][data-config="oracle"]')
            sloppy_row = page.locator('[data-testid=config-row][data-config="sloppy"]')
            assert await oracle_row.locator('[data-column="accuracy"]').inner_text() == "1.000"
            assert await sloppy_row.locator('[data-column="accuracy"]').inner_text() == "0.500"
            assert await sloppy_row.locator('[data-column="parallel"]').inner_text() == "0.000"
            assert "frontier" in await oracle_row.inner_text()
            recommendation = await page.locator("[data-testid=recommendation]").inner_text()
            assert recommendation.startswith("Recommended: ")

            failing = page.locator("[data-testid=failing-case]")
            assert await failing.count() == 4
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT))
            first = page.locator('[data-testid=failing-case][data-case="simple_2"]')
            assert "time_in_zone: required argument 'zone' is missing" in await first.inner_text()
            await first.locator("[data-testid=trace-link]").click()
            await page.wait_for_selector("[data-testid=span-bar]")
            assert (await page.evaluate("location.pathname")) == "/viewer"
            for _ in range(50):
                if await page.locator("[data-testid=span-row]").count() >= 3:
                    break
                await asyncio.sleep(0.1)
            assert await page.locator("[data-testid=span-row]").count() >= 3
            assert errors == []
