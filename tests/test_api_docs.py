"""The API docs: /docs works in a real browser with no network but the service's own, its
"Authorize" sends the key, and the document (also at /openapi.json) declares the key where it
is needed and nowhere else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.async_api import Route

from tests.conftest import ADMIN_KEY
from tests.test_viewer import browser_page

PUBLIC_OPERATIONS = {("get", "/health"), ("get", "/ready")}
UNGUARDED = {("get", "/v1/models"), ("get", "/v1/models/{model_id}")}
"""Any key may list the models: no role is refused (no 403)."""


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): operation for path, item in document["paths"].items()
            for method, operation in item.items() if isinstance(operation, dict)}


async def test_the_docs_page_renders_every_operation_from_the_services_own_files(
    start_app: Callable[..., Any], database_url: str, tmp_path: Path
) -> None:
    app = await start_app(database_url)
    document = (await app.client.get("/openapi.json")).json()
    asked: list[str] = []

    async def loopback_only(route: Route) -> None:
        asked.append(route.request.url)
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            await route.abort()

    async with browser_page(tmp_path / "chromium-profile") as (page, errors):
        await page.route("**/*", loopback_only)
        await page.goto(f"{app.url}/docs")
        await page.wait_for_selector(".opblock")
        assert await page.locator(".opblock").count() == len(operations(document))
        assert await page.locator(".info .title").inner_text() == "Switchboard\n 0.1.0 \nOAS 3.1"
        assert errors == []
    assert sorted({urlsplit(url).path for url in asked}) == [
        "/docs", "/docs/assets/favicon-32x32.png", "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui-standalone-preset.js", "/docs/assets/swagger-ui.css",
    ]


async def test_authorize_on_the_docs_page_sends_the_key_with_try_it_out(
    start_app: Callable[..., Any], database_url: str, tmp_path: Path
) -> None:
    app = await start_app(database_url)
    async with browser_page(tmp_path / "chromium-profile") as (page, errors):
        await page.goto(f"{app.url}/docs")
        await page.click("button.authorize")
        assert await page.locator(".auth-container h4").inner_text() == "bearer\xa0 (http, Bearer)"
        await page.fill(".auth-container input", ADMIN_KEY)
        await page.click(".auth-container button.authorize")
        await page.click(".close-modal")
        models = page.locator("#operations-service-V1ModelsListModels")
        await models.locator(".opblock-summary").click()
        await models.locator("button.try-out__btn").click()
        await models.locator("button.execute").click()
        status = models.locator(".live-responses-table .response .response-col_status")
        assert await status.inner_text() == "200"
        assert errors == []


async def test_openapi_json_is_the_document_and_needs_no_key(
    start_app: Callable[..., Any], database_url: str
) -> None:
    app = await start_app(database_url)
    async with httpx.AsyncClient(base_url=app.url) as anonymous:
        short = await anonymous.get("/openapi.json")
        under_docs = await anonymous.get("/docs/openapi.json")
    assert short.status_code == 200
    assert short.headers["content-type"] == "application/vnd.oai.openapi+json"
    assert short.json() == under_docs.json()
    assert short.json()["components"]["securitySchemes"] == {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "An API key (`sbk_...`): the first start writes one to "
                       "DATA_DIR/admin.key; an admin creates more with POST /v1/keys."}}


async def test_the_key_and_its_401_are_declared_on_every_operation_but_the_public_ones(
    api: httpx.AsyncClient,
) -> None:
    found = operations((await api.get("/openapi.json")).json())
    assert found.keys() > PUBLIC_OPERATIONS
    for (method, path), operation in found.items():
        public = (method, path) in PUBLIC_OPERATIONS
        assert operation.get("security") == (None if public else [{"bearer": []}]), path
        assert ("401" in operation["responses"]) is not public, path
        guarded = not public and (method, path) not in UNGUARDED
        assert ("403" in operation["responses"]) is guarded, path
        for status in ("401", "403"):
            if status in operation["responses"]:
                assert list(operation["responses"][status]["content"]) == [
                    "application/problem+json"]


async def test_the_docs_serve_only_the_files_the_page_loads(api: httpx.AsyncClient) -> None:
    script = await api.get("/docs/assets/swagger-ui-bundle.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["cache-control"] == "public, max-age=86400"
    demo = await api.get("/docs/assets/index.html")
    assert demo.status_code == 404
    assert demo.json()["detail"] == (
        "no docs asset 'index.html'; the page loads swagger-ui-bundle.js, "
        "swagger-ui-standalone-preset.js, swagger-ui.css, favicon-32x32.png")
