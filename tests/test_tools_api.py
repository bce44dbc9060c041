"""The tool registry over REST, against a real Postgres."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city: temperature, wind and conditions.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
    },
    "tags": ["weather"],
    "examples": ["Is it raining in Oslo?"],
    "executor": {"kind": "http", "url": "http://127.0.0.1:9/weather", "secret": "hunter2"},
    "policy": {"timeout_s": 5, "idempotent": True, "max_retries": 2},
}


def spec(name: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": description, **extra}


async def test_create_returns_the_spec_with_version_1_and_without_its_secret(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/tools", json=WEATHER)
    assert response.status_code == 201
    body = response.json()
    assert body["version"] == 1
    assert body["namespace"] == "default"
    assert body["executor"] == {
        "kind": "http",
        "url": "http://127.0.0.1:9/weather",
        "method": "POST",
        "headers": {},
    }
    assert body["has_secret"] is True
    assert body["policy"] == {
        "timeout_s": 5.0,
        "max_retries": 2,
        "idempotent": True,
        "max_concurrency": None,
        "requires_approval": False,
    }
    assert "hunter2" not in response.text
    assert "hunter2" not in (await api.get("/v1/tools/get_weather")).text


async def test_secret_is_kept_only_in_its_own_column_sealed(
    api: httpx.AsyncClient, database_url: str
) -> None:
    await api.post("/v1/tools", json=WEATHER)
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT spec::text AS spec, secret FROM tool_versions")
    finally:
        await conn.close()
    assert row["secret"].startswith("sealed:v1:")
    assert "hunter2" not in row["spec"] + row["secret"]


async def test_creating_an_existing_name_is_a_conflict(api: httpx.AsyncClient) -> None:
    await api.post("/v1/tools", json=WEATHER)
    response = await api.post("/v1/tools", json=WEATHER)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == (
        "tool 'get_weather' already exists in namespace 'default'; "
        "PUT /v1/tools/get_weather makes a new version"
    )


async def test_put_makes_a_new_version_and_old_versions_stay_readable(
    api: httpx.AsyncClient,
) -> None:
    await api.post("/v1/tools", json=WEATHER)
    changed = {**WEATHER, "description": "Weather now and a 3-day forecast for a city."}
    response = await api.put("/v1/tools/get_weather", json=changed)
    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert (await api.get("/v1/tools/get_weather")).json()["description"] == changed["description"]
    old = (await api.get("/v1/tools/get_weather/versions/1")).json()
    assert old["description"] == WEATHER["description"]
    versions = (await api.get("/v1/tools/get_weather/versions")).json()["items"]
    assert [v["version"] for v in versions] == [1, 2]


async def test_put_of_an_identical_spec_makes_no_new_version(api: httpx.AsyncClient) -> None:
    await api.post("/v1/tools", json=WEATHER)
    response = await api.put("/v1/tools/get_weather", json=WEATHER)
    assert response.status_code == 200
    assert response.json()["version"] == 1


async def test_put_of_a_new_name_creates_it(api: httpx.AsyncClient) -> None:
    response = await api.put("/v1/tools/get_weather", json=WEATHER)
    assert response.status_code == 201
    assert response.json()["version"] == 1


async def test_put_whose_body_names_another_tool_is_rejected(api: httpx.AsyncClient) -> None:
    response = await api.put("/v1/tools/other", json=WEATHER)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "pointer": "/name",
            "message": "is 'get_weather' but the URL names 'other'; they must match",
        }
    ]


async def test_delete_is_soft_and_a_later_create_continues_the_versions(
    api: httpx.AsyncClient,
) -> None:
    await api.post("/v1/tools", json=WEATHER)
    assert (await api.delete("/v1/tools/get_weather")).status_code == 204
    missing = await api.get("/v1/tools/get_weather")
    assert missing.status_code == 404
    assert missing.json()["detail"].startswith(
        "tool 'get_weather' not found in namespace 'default'"
    )
    assert (await api.get("/v1/tools/get_weather/versions/1")).status_code == 200
    assert (await api.get("/v1/tools/search", params={"q": "weather"})).json()["results"] == []
    assert (await api.delete("/v1/tools/get_weather")).status_code == 404
    again = await api.post("/v1/tools", json=WEATHER)
    assert again.status_code == 201
    assert again.json()["version"] == 2


async def test_namespaces_keep_same_named_tools_apart(api: httpx.AsyncClient) -> None:
    await api.post("/v1/tools", json=WEATHER)
    await api.post(
        "/v1/tools", json={**WEATHER, "namespace": "beta", "description": "Beta weather"}
    )
    beta = await api.get("/v1/tools/get_weather", params={"namespace": "beta"})
    assert beta.json()["description"] == "Beta weather"
    assert (await api.get("/v1/tools/get_weather")).json()["description"] == WEATHER["description"]


async def test_parameters_must_be_a_valid_2020_12_schema(api: httpx.AsyncClient) -> None:
    bad = spec("t", "d", parameters={"type": "object", "properties": {"n": {"type": "integr"}}})
    response = await api.post("/v1/tools", json=bad)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "pointer": "/parameters/properties/n/type",
            "message": "not a valid JSON Schema (2020-12): 'integr' is not valid under any of the "
            "given schemas",
        }
    ]


async def test_parameters_root_must_be_an_object(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/tools", json=spec("t", "d", parameters={"type": "array"}))
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "/parameters/type"


async def test_an_invalid_name_is_named_with_the_fix(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/tools", json=spec("math.factorial", "d"))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [
        {
            "pointer": "/name",
            "message": "Expected `str` matching regex '^[A-Za-z0-9_-]{1,64}$': "
            "use 1-64 letters, digits, '_' or '-' (e.g. math_factorial)",
        }
    ]


async def test_bulk_is_all_or_nothing_and_lists_every_bad_item(api: httpx.AsyncClient) -> None:
    tools = [spec(f"tool_{i}", f"Tool number {i}") for i in range(5)]
    tools[1] = spec("bad name", "x")
    tools[3] = {"name": "tool_3", "description": "x", "policy": {"timeout_s": 0}}
    response = await api.post("/v1/tools/bulk", json={"tools": tools})
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [(e["index"], e["pointer"]) for e in errors] == [
        (1, "/tools/1/name"),
        (3, "/tools/3/policy/timeout_s"),
    ]
    assert (await api.get("/v1/tools")).json()["items"] == []


async def test_bulk_reports_created_updated_and_unchanged(api: httpx.AsyncClient) -> None:
    first = [spec(f"tool_{i}", f"Tool number {i}") for i in range(300)]
    response = await api.post("/v1/tools/bulk", json={"tools": first})
    assert response.json() == {"created": 300, "updated": 0, "unchanged": 0}
    second = [*first[:250], spec("tool_250", "Changed"), spec("tool_300", "New")]
    response = await api.post("/v1/tools/bulk", json={"tools": second})
    assert response.json() == {"created": 1, "updated": 1, "unchanged": 250}
    assert (await api.get("/v1/tools/tool_250")).json()["version"] == 2


async def test_bulk_tools_are_searchable_when_the_response_arrives(api: httpx.AsyncClient) -> None:
    tools = [
        spec("convert_currency", "Convert an amount of money from one currency to another."),
        spec("send_email", "Send an email message to a recipient."),
    ]
    await api.post("/v1/tools/bulk", json={"tools": tools})
    hits = (await api.get("/v1/tools/search", params={"q": "how many euros is 20 dollars"})).json()
    assert hits["results"][0]["name"] == "convert_currency"


async def test_a_tool_another_sentence_asks_for_comes_before_a_third_near_twin(
    api: httpx.AsyncClient,
) -> None:
    tools = [
        spec("gcd", "Greatest common divisor of two integers."),
        spec("math_gcd", "Compute the greatest common divisor (GCD) of two numbers."),
        spec("calculate_gcd", "Calculate the GCD of two whole numbers."),
        spec("weather_forecast", "Weather forecast for a city on a given day."),
        spec("send_email", "Send an email message to a recipient."),
        spec("convert_currency", "Convert an amount of money from one currency to another."),
        spec("book_hotel", "Book a hotel room in a city for given dates."),
        spec("stock_price", "Latest stock price for a ticker symbol."),
        spec("translate_text", "Translate text from one language to another."),
        spec("play_song", "Play a song by title or artist."),
        spec("set_timer", "Start a countdown timer for a number of minutes."),
        spec("find_restaurant", "Find restaurants near a location by cuisine."),
        spec("calculate_bmi", "Body mass index from weight and height."),
        spec("news_headlines", "Top news headlines for a country."),
        spec("create_event", "Add an event to the user's calendar."),
    ]
    # A sentence credits a tool for standing out among the tools searched (in standard
    # deviations), which takes more than a handful of tools.
    await api.post("/v1/tools/bulk", json={"tools": tools})
    q = "What is the greatest common divisor of 12 and 18? Also, will it rain in Paris tomorrow?"
    hits = (await api.get("/v1/tools/search", params={"q": q, "k": 3})).json()["results"]
    # Searched whole, the request gets the three GCD tools.
    assert [h["name"] for h in hits] == ["gcd", "math_gcd", "weather_forecast"]


async def test_list_pages_with_a_cursor_and_filters(api: httpx.AsyncClient) -> None:
    tools = [spec(f"t{i:02d}", "d", tags=["even"] if i % 2 == 0 else []) for i in range(7)]
    tools.append(spec("other", "d", namespace="ns2"))
    await api.post("/v1/tools/bulk", json={"tools": tools})
    names: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, "namespace": "default"}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/v1/tools", params=params)).json()
        names += [t["name"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == [f"t{i:02d}" for i in range(7)]
    even = (await api.get("/v1/tools", params={"tag": "even"})).json()["items"]
    assert [t["name"] for t in even] == ["t00", "t02", "t04", "t06"]
    ns2 = (await api.get("/v1/tools", params={"namespace": "ns2"})).json()["items"]
    assert [t["name"] for t in ns2] == ["other"]


async def test_a_forged_cursor_is_a_clear_error(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/tools", params={"cursor": "not-a-cursor"})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {
            "pointer": "",
            "message": "not a cursor this service issued: pass next_cursor unchanged",
            "parameter": "query parameter 'cursor'",
        }
    ]


async def test_search_filters_by_namespace_and_tag(api: httpx.AsyncClient) -> None:
    await api.post(
        "/v1/tools/bulk",
        json={
            "tools": [
                spec("forecast", "Weather forecast for a city", tags=["weather", "paid"]),
                spec("forecast", "Weather forecast for a city", namespace="alt"),
                spec("stock_price", "Latest stock price for a ticker", tags=["finance"]),
            ]
        },
    )
    response = await api.get("/v1/tools/search", params={"q": "weather", "namespace": "alt"})
    assert [(h["namespace"], h["name"]) for h in response.json()["results"]] == [
        ("alt", "forecast")
    ]
    response = await api.get(
        "/v1/tools/search", params=[("q", "weather"), ("tag", "weather"), ("tag", "paid")]
    )
    assert [(h["namespace"], h["name"]) for h in response.json()["results"]] == [
        ("default", "forecast")
    ]
    response = await api.get("/v1/tools/search", params={"q": "weather", "k": 2})
    results = response.json()["results"]
    assert len(results) == 2
    assert results[0]["score"] >= results[1]["score"]


async def test_search_rejects_a_bad_k_naming_the_parameter(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/tools/search", params={"q": "x", "k": 0})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"pointer": "", "message": "Expected `int` >= 1", "parameter": "query parameter 'k'"}
    ]


async def test_health_answers_ok_when_ready(api: httpx.AsyncClient) -> None:
    response = await api.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_openapi_document_and_docs_page_are_served(api: httpx.AsyncClient) -> None:
    schema = (await api.get("/docs/openapi.json")).json()
    assert "/v1/tools/search" in schema["paths"]
    assert "ToolSpec" in str(schema["components"])
    page = await api.get("/docs")
    assert page.status_code == 200
    assert '<script src="/docs/assets/swagger-ui-bundle.js" crossorigin></script>' in page.text
    assert "cdn." not in page.text
