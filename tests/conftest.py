"""Fixtures: a real Postgres (embedded, or DATABASE_URL), a fresh database per test, and the
app served over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from app.main import create_app
from app.settings import Settings
from tools.embed import SentenceTransformerEmbedder

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """DATABASE_URL when set (its user must be able to create databases), else embedded."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="switchboard-pg-") as tmp:
        server = pgserver.get_server(Path(tmp), cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
def embedder() -> Iterator[SentenceTransformerEmbedder]:
    model = SentenceTransformerEmbedder()
    yield model
    model.close()


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    root = base.rsplit("/", 1)[0]
    return f"{root}/{name}" + (f"?{query}" if query else "")


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A new, empty database for this test only."""
    name = f"test_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(postgres_url, name)
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class RunningApp:
    """An app instance served by uvicorn on a loopback port, with an HTTP client for it."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task[None], url: str) -> None:
        self.server, self.task, self.url = server, task, url
        self.client = httpx.AsyncClient(base_url=url, timeout=30)

    @property
    def app(self) -> Any:
        return self.server.config.app

    async def stop(self) -> None:
        await self.client.aclose()
        self.server.should_exit = True
        await self.task


async def serve(settings: Settings, embedder: SentenceTransformerEmbedder) -> RunningApp:
    app = create_app(settings, embedder=embedder)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn installs signal handlers only in the main thread of a loop it owns; keep ours.
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # raises what broke start-up
            raise RuntimeError("the app stopped during start-up; see the log above")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return RunningApp(server, task, f"http://127.0.0.1:{port}")


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[[str], Settings]:
    def make(url: str, **overrides: Any) -> Settings:
        # Tests start from an empty registry unless they ask for the builtin tools.
        values: dict[str, Any] = {"register_builtins": False, **overrides}
        return Settings(database_url=url, data_dir_path=str(tmp_path), **values)

    return make


@pytest.fixture
async def start_app(
    settings_for: Callable[[str], Settings],
    embedder: SentenceTransformerEmbedder,
    database_url: str,
) -> AsyncIterator[Callable[..., Any]]:
    """Start app instances on a database; all are stopped when the test ends (before the
    test's database is dropped)."""
    running: list[RunningApp] = []

    async def start(url: str, **overrides: Any) -> RunningApp:
        app = await serve(settings_for(url, **overrides), embedder)
        running.append(app)
        return app

    yield start
    for app in running:
        if not app.task.done():
            with contextlib.suppress(Exception):
                await app.stop()


@pytest.fixture
async def api(start_app: Callable[..., Any], database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = await start_app(database_url)
    yield app.client
