"""A turn's events are kept: a client that lost its stream reconnects to any replica with
`Last-Event-ID` and gets each event it missed once, then the live ones; idle streams get
keep-alive comments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.scripted_model import ScriptedHang, ScriptedReply, scripted_model
from tests.sse import Event, Stream, events_of, read_stream

ANSWER = "one two three four five six seven eight nine ten"


async def test_a_client_that_reconnects_to_another_replica_sees_every_event_once(
    database_url: str, start_app: Callable[..., Any]
) -> None:
    async with scripted_model(ScriptedReply(content=ANSWER), tokens_per_s=20) as model:
        first = await start_app(database_url, model_url=model.url)
        second = await start_app(database_url, model_url=model.url)
        conversation = (await first.client.post("/v1/conversations", json={})).json()["id"]
        seen: list[Event] = []
        async with first.client.stream(
            "POST", f"/v1/conversations/{conversation}/turns",
            json={"message": "count to ten", "stream": True},
        ) as response:
            async for event in events_of(response):
                seen.append(event)
                if event.type == "message.delta":
                    break  # the connection drops mid-answer
        turn_id = seen[0].data["turn_id"]
        rest = await read_stream(second.client, "GET", f"/v1/turns/{turn_id}/events",
                                 headers={"Last-Event-ID": seen[-1].id or ""})
        every = [*seen, *rest.events]
        assert [e.id for e in every] == [f"1.{n}" for n in range(1, len(every) + 1)]
        assert every[-1].type == "turn.completed"
        text = "".join(e.data["text"] for e in every if e.type == "message.delta")
        assert text == ANSWER
        assert rest.events[0].type == "message.delta"  # it was still answering


async def test_events_read_back_are_the_ones_streamed(
    database_url: str, start_app: Callable[..., Any]
) -> None:
    async with scripted_model(ScriptedReply(content="Hello there.")) as model:
        app = await start_app(database_url, model_url=model.url)
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        live = await read_stream(app.client, "POST", f"/v1/conversations/{conversation}/turns",
                                 json={"message": "hi", "stream": True})
        turn_id = live.events[0].data["turn_id"]
        stored = await read_stream(app.client, "GET", f"/v1/turns/{turn_id}/events")
        assert stored.events == live.events
        after = await read_stream(app.client, "GET",
                                  f"/v1/turns/{turn_id}/events?after={live.events[1].id}")
        assert after.events == live.events[2:]
        done = await app.client.get(f"/v1/turns/{turn_id}/events",
                                    headers={"Last-Event-ID": live.events[-1].id or ""})
        assert (done.status_code, done.content) == (204, b"")


async def test_an_idle_stream_gets_keep_alive_comments(
    database_url: str, start_app: Callable[..., Any]
) -> None:
    async with scripted_model(ScriptedHang(1.0, then=ScriptedReply(content="Ready."))) as model:
        app = await start_app(database_url, model_url=model.url, sse_keepalive_s=0.2)
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        stream: Stream = await read_stream(
            app.client, "POST", f"/v1/conversations/{conversation}/turns",
            json={"message": "take your time", "stream": True})
        assert stream.events[-1].data["turn"]["message"]["content"] == "Ready."
        assert len(stream.comments) >= 2  # one every 0.2 s of the 1 s the model is silent
        assert set(stream.comments) == {"keep-alive"}


async def test_a_last_event_id_that_is_not_one_is_refused_naming_the_header(
    database_url: str, start_app: Callable[..., Any]
) -> None:
    async with scripted_model(ScriptedReply(content="Hi.")) as model:
        app = await start_app(database_url, model_url=model.url)
        conversation = (await app.client.post("/v1/conversations", json={})).json()["id"]
        turn = (await app.client.post(f"/v1/conversations/{conversation}/turns",
                                      json={"message": "hi"})).json()
        response = await app.client.get(f"/v1/turns/{turn['id']}/events",
                                        headers={"Last-Event-ID": "seven"})
        assert response.status_code == 422
        assert response.json()["errors"] == [{
            "pointer": "", "parameter": "header 'Last-Event-ID'",
            "message": "'seven' is not an event id: send the `id` of the last event received, "
                       "as given (like 1.17)"}]
        missing = await app.client.get("/v1/turns/turn_nope/events")
        assert (missing.status_code, missing.json()["detail"]) == (
            404, "turn 'turn_nope' not found")
