"""Reading server-sent events in tests, as a browser's EventSource does: fields per event, and
comment lines (keep-alives) counted apart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec


class Event(msgspec.Struct, frozen=True):
    id: str | None
    type: str
    data: dict[str, Any]


class Stream(msgspec.Struct):
    events: list[Event] = []
    comments: list[str] = []


async def events_of(response: httpx.Response, stream: Stream | None = None
                    ) -> AsyncIterator[Event]:
    """Each event of a streamed response as it arrives; comments go to `stream`."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield Event(fields.get("id"), fields.get("event", "message"),
                            json.loads(fields["data"]))
            fields = {}
        elif line.startswith(":"):
            if stream is not None:
                stream.comments.append(line[1:].strip())
        else:
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")


async def read_stream(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any
                      ) -> Stream:
    """A whole stream: its events and comments."""
    stream = Stream()
    async with client.stream(method, path, **kwargs) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        async for event in events_of(response, stream):
            stream.events.append(event)
    return stream
