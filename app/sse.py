"""Turn events as server-sent events: each with its event-log id (`Last-Event-ID` resumes from
it, on any replica), and a keep-alive comment whenever a stream has been idle for a while, so
proxies and load balancers do not cut a turn that is thinking."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec
from litestar.response import ServerSentEventMessage

from planner.event_log import StoredEvent
from planner.events import TurnEvent
from planner.supervisor import EventStream

_encoder = msgspec.json.Encoder()
KEEP_ALIVE = ServerSentEventMessage(comment="keep-alive", data=None)


async def live_events(events: EventStream) -> AsyncGenerator[ServerSentEventMessage, None]:
    """A run's events as they happen."""
    async for event in events:
        yield _message(event, events.id)


async def stored_events(events: AsyncIterator[StoredEvent]
                        ) -> AsyncGenerator[ServerSentEventMessage, None]:
    """Events read back from the event log."""
    async for event in events:
        yield ServerSentEventMessage(data=event.data, event=event.type, id=str(event.id))


async def kept_alive(messages: AsyncGenerator[ServerSentEventMessage, None], every_s: float
                     ) -> AsyncIterator[ServerSentEventMessage]:
    """`messages`, with a keep-alive comment after each `every_s` without one."""
    source = aiter(messages)
    waiting: asyncio.Future[Any] | None = None
    try:
        while True:
            if waiting is None:
                waiting = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({waiting}, timeout=every_s)
            if not done:
                yield KEEP_ALIVE
                continue
            finished, waiting = waiting, None
            try:
                yield finished.result()
            except StopAsyncIteration:
                return
    finally:
        if waiting is not None:
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await waiting
        await messages.aclose()


def _message(event: TurnEvent, event_id: object) -> ServerSentEventMessage:
    kind = type(event).__struct_config__.tag
    return ServerSentEventMessage(data=_encoder.encode(event).decode(), event=str(kind),
                                  id=None if event_id is None else str(event_id))
