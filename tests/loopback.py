"""Serve an ASGI app with uvicorn on a loopback port inside the current event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server(uvicorn.Server):
    """uvicorn that leaves signal handling to whoever owns the process."""

    def __init__(self, config: uvicorn.Config, *, own_signals: bool) -> None:
        super().__init__(config)
        self.own_signals = own_signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if self.own_signals:
            with super().capture_signals():
                yield
        else:
            yield


class LoopbackServer:
    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        own_signals: bool = False,
        **config: Any,
    ) -> None:
        options = {"log_level": "warning", "lifespan": "off", **config}
        self.server = _Server(
            uvicorn.Config(app, host=host, port=port, **options), own_signals=own_signals
        )
        self.host = host
        self.task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> str:
        """Listen, and return the base URL (`http://127.0.0.1:PORT`)."""
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                await self.task  # raises what broke start-up
                raise RuntimeError(f"the server on {self.host} stopped during start-up")
            await asyncio.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        return self.url

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.wait_closed()

    async def wait_closed(self) -> None:
        if self.task is not None:
            await self.task


@contextlib.asynccontextmanager
async def serving(app: Any, **config: Any) -> AsyncIterator[LoopbackServer]:
    server = LoopbackServer(app, **config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
