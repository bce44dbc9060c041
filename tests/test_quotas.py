"""Token quotas per tenant and model backend, per UTC day, shared across replicas: a turn over
quota is refused before its model is called."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.errors import SettingsError
from app.settings import load_settings
from planner.messages import Usage
from tests.scripted_model import ScriptedReply, scripted_model


async def test_a_turn_over_the_tenants_quota_is_refused_on_every_replica(
    database_url: str, start_app: Callable[..., Any]
) -> None:
    quotas = '{"*": {"*": 50}}'
    spend = ScriptedReply(content="Hi.", usage=Usage(prompt_tokens=40, completion_tokens=20))
    async with scripted_model(spend) as model:
        first = await start_app(database_url, model_url=model.url, token_quotas=quotas)
        second = await start_app(database_url, model_url=model.url, token_quotas=quotas)
        conversation = (await first.client.post("/v1/conversations", json={})).json()["id"]
        path = f"/v1/conversations/{conversation}/turns"
        assert (await first.client.post(path, json={"message": "hi"})).status_code == 200

        refused = [await app.client.post(path, json={"message": "again"})
                   for app in (first, second)]

        assert [r.status_code for r in refused] == [429, 429]
        tomorrow = datetime.combine(datetime.now(UTC).date() + timedelta(days=1),
                                    datetime.min.time(), tzinfo=UTC)
        assert refused[1].json() == {
            "type": "/problems/quota-exceeded", "title": "Token quota spent", "status": 429,
            "detail": "tenant 'default' has spent 60 of its 50 tokens of today on model backend "
                      "'default' (TOKEN_QUOTAS); the quota resets at "
                      f"{tomorrow.isoformat(timespec='seconds')}, or use another backend",
            "instance": path}
        retry = int(refused[1].headers["Retry-After"])
        assert 0 < retry <= 86_401
        assert len(model.requests) == 1
        turns = (await second.client.get(f"/v1/conversations/{conversation}")).json()["turns"]
        assert [t["status"] for t in turns] == ["completed"]


async def test_a_tenant_or_backend_without_a_quota_is_not_limited(
    database_url: str, start_app: Callable[..., Any]
) -> None:
    spend = ScriptedReply(content="Hi.", usage=Usage(prompt_tokens=400, completion_tokens=200))
    async with scripted_model(spend, spend) as model:
        app = await start_app(database_url, model_url=model.url,
                              token_quotas='{"acme": {"*": 10}, "*": {"big": 10}}')
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        path = f"/v1/conversations/{conversation}/turns"
        statuses = [(await app.client.post(path, json={"message": m})).status_code
                    for m in ("one", "two")]
        assert statuses == [200, 200]


@pytest.mark.parametrize(("value", "says"), [
    ("{not json", "TOKEN_QUOTAS: JSON is malformed"),
    ('{"*": {"*": -5}}', "TOKEN_QUOTAS: Expected `int` >= 0 - at `$[...][...]`"),
    ('{"*": 100}', "TOKEN_QUOTAS: Expected `object`, got `int` - at `$[...]`"),
])
def test_a_malformed_quota_setting_stops_start_up_saying_where(value: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"TOKEN_QUOTAS": value})
    assert str(caught.value).startswith(says), str(caught.value)
