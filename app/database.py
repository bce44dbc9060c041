"""Postgres for the service: the embedded server when DATABASE_URL is unset, and the pool."""

from __future__ import annotations

import contextlib
import logging
import struct
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from app.errors import DatabaseError
from app.migrate import migrate

log = logging.getLogger(__name__)


def start_embedded(data_dir: Path) -> Any:
    """Start (or join) the embedded Postgres in `data_dir/postgres`; `.cleanup()` stops it."""
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR pgserver keeps its lock file in /tmp/runtime-<uid>, which
        # serves as well; platformdirs' warning about it says nothing a person must act on.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

    pgdata = (data_dir / "postgres").resolve()
    new = not (pgdata / "PG_VERSION").exists()
    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # pgserver raises bare Exceptions from initdb/pg_ctl
        raise DatabaseError(f"could not start the embedded Postgres in {pgdata}: {exc}") from exc
    log.info("embedded Postgres: data in %s (%s)", pgdata,
             "created now" if new else "kept from an earlier start")
    return server


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def _encode_vector(value: Any) -> bytes:
    array = np.asarray(value, dtype=">f4")
    return struct.pack(">HH", array.shape[0], 0) + array.tobytes()


def _decode_vector(data: bytes) -> np.ndarray:
    dim, _ = struct.unpack_from(">HH", data)
    return np.frombuffer(data, dtype=">f4", count=dim, offset=4).astype(np.float32)


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection codecs: pgvector's `vector` as numpy float32 arrays, jsonb as text."""
    await conn.set_type_codec(
        "vector", encoder=_encode_vector, decoder=_decode_vector, format="binary", schema="public"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query on release: nothing here leaves session state on a pooled connection
    (LISTEN and the migration lock use connections of their own), and the reset doubled the
    round trips of every pooled statement."""


async def connect_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    """Migrate the database, then open the pool (codecs need the migrated types)."""
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to Postgres at {redact_url(url)}: {exc}") from exc
    try:
        applied = await migrate(conn)
    finally:
        await conn.close()
    if applied:
        log.info("database schema: applied %d migration%s, now at %s", len(applied),
                 "" if len(applied) == 1 else "s", applied[-1])
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=init_connection, reset=_keep_session
    )
    assert pool is not None
    return pool


@contextlib.asynccontextmanager
async def progress_pool(url: str, *, enabled: bool = True,
                        max_size: int = 10) -> AsyncIterator[asyncpg.Pool | None]:
    """A pool whose commits do not wait for the WAL flush (`synchronous_commit = off`), for a
    turn's progress between its durable start and end; None when not `enabled`. Postgres
    applies and shows such a commit at once and flushes it within a fraction of a second; the
    next durable commit flushes it too. Only a crash of Postgres itself in between can lose it,
    and never half of it."""
    if not enabled:
        yield None
        return
    pool = await asyncpg.create_pool(
        url, min_size=1, max_size=max_size, init=init_connection, reset=_keep_session,
        server_settings={"synchronous_commit": "off"},
    )
    assert pool is not None
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def one_connection(url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool of one connection, for a check that must not wait behind requests (`/health`);
    the pool reconnects it when it breaks."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1, reset=_keep_session)
    assert pool is not None
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def database(url: str | None, data_dir: Path, *, say_where: bool = False
                   ) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """The pool for `url`, or for an embedded server started here and stopped on exit.
    `say_where`: log which Postgres it is (the service's start-up does; a CLI command, whose
    output is its answer, does not)."""
    server: Any = None if url else start_embedded(data_dir)
    dsn: str = url or server.get_uri()
    if url and say_where:
        log.info("Postgres at %s", redact_url(url))
    try:
        pool = await connect_pool(dsn)
        try:
            yield dsn, pool
        finally:
            await pool.close()
    finally:
        if server is not None:
            server.cleanup()
