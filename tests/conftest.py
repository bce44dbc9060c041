"""Fixtures: a real Postgres (embedded, or DATABASE_URL), a fresh database per test, and the
app served over real HTTP on loopback."""

from __future__ import annotations

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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from app.database import connect_pool
from app.main import create_app
from app.settings import Settings
from planner.engine import EngineSettings
from tests.embedders import CountingEmbedder
from tests.loopback import LoopbackServer
from tests.scripted_model import ScriptedModel, scripted_model
from tests.tool_server import ToolServer, tool_server
from tools.embed import SentenceTransformerEmbedder
from tools.registry import ToolRegistry

_counter = itertools.count()
ADMIN_KEY = "sbk_test_admin_key_for_the_default_tenant"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
SECRET_KEY = "switchboard-tests-secret-key"
"""What apps, replicas and CLI commands in tests seal stored secrets with, as a deployment
gives every process one SECRET_KEY."""


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


@pytest.fixture
async def counting_registry(
    database_url: str, embedder: SentenceTransformerEmbedder
) -> AsyncIterator[tuple[ToolRegistry, CountingEmbedder]]:
    """A registry on a new database whose embedder counts what it is asked to embed, from
    after the registry has measured its framing shift."""
    pool = await connect_pool(database_url)
    counting = CountingEmbedder(embedder)
    registry = ToolRegistry(pool, counting)
    await registry.framing_shift()
    counting.asked.clear()
    try:
        yield registry, counting
    finally:
        await pool.close()


class RunningApp:
    """An app instance served on a loopback port, with an HTTP client for it."""

    def __init__(self, server: LoopbackServer) -> None:
        self.server = server
        self.url = server.url
        self.client = httpx.AsyncClient(base_url=server.url, timeout=30, headers=AUTH)

    @property
    def state(self) -> Any:
        """The app's state: what it made at start-up (its registry, its jobs)."""
        return self.server.server.config.app.state

    @property
    def stopped(self) -> bool:
        return self.server.task is None or self.server.task.done()

    async def stop(self) -> None:
        await self.client.aclose()
        await self.server.stop()


async def serve(settings: Settings, embedder: SentenceTransformerEmbedder) -> RunningApp:
    server = LoopbackServer(create_app(settings, embedder=embedder), lifespan="on")
    await server.start()
    return RunningApp(server)


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[[str], Settings]:
    def make(url: str, **overrides: Any) -> Settings:
        # Tests start from an empty registry unless they ask for the builtin tools.
        # Tool servers in tests listen on loopback, which tools may reach only when allowed.
        values: dict[str, Any] = {"register_builtins": False, "admin_key": ADMIN_KEY,
                                  "egress_allowlist": "127.0.0.0/8", "secret_key": SECRET_KEY,
                                  **overrides}
        engine = {k: values.pop(k) for k in list(values) if k in EngineSettings.__struct_fields__}
        return Settings(database_url=url, data_dir_path=str(tmp_path),
                        engine=EngineSettings(**engine), **values)

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
        if not app.stopped:
            with contextlib.suppress(Exception):
                await app.stop()


@pytest.fixture
async def api(start_app: Callable[..., Any], database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = await start_app(database_url)
    yield app.client


@pytest.fixture
async def model() -> AsyncIterator[ScriptedModel]:
    """The scripted SGLang stand-in; tool-call arguments stream in three fragments."""
    async with scripted_model(argument_fragments=3) as scripted:
        yield scripted


@pytest.fixture
async def tools() -> AsyncIterator[ToolServer]:
    """HTTP tool endpoints on loopback."""
    async with tool_server() as server:
        yield server
