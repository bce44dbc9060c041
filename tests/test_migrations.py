"""Migrations: applied once, in order, under a lock; a changed released file stops start-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import msgspec
import numpy as np
import pytest

from app.errors import MigrationError
from app.migrate import discover, migrate
from planner.events import Problem
from planner.records import Candidate


async def test_migrations_apply_once_and_record_checksums(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        first = await migrate(conn)
        second = await migrate(conn)
        rows = await conn.fetch("SELECT number, name, checksum FROM schema_migrations")
    finally:
        await conn.close()
    expected = discover()
    assert first == [f"{m.number:04d}_{m.name}" for m in expected]
    assert second == []
    assert [(r["number"], r["name"], r["checksum"]) for r in rows] == [
        (m.number, m.name, m.checksum) for m in expected
    ]


async def test_concurrent_start_ups_apply_each_migration_once(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(len(r) for r in results) == [0, 0, len(discover())]


async def test_a_changed_applied_migration_stops_start_up(
    database_url: str, tmp_path: Path
) -> None:
    original = discover()
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, original)
        edited = [
            original[0].__class__(
                original[0].number, original[0].name, original[0].sql + "\n-- edited\n"
            ),
            *original[1:],
        ]
        with pytest.raises(MigrationError) as caught:
            await migrate(conn, edited)
    finally:
        await conn.close()
    assert str(caught.value) == (
        f"migration 0001_{original[0].name}.sql was changed after it was applied "
        f"(checksum {edited[0].checksum[:12]} != recorded {original[0].checksum[:12]}); "
        "restore the released file and put the change in a new numbered migration"
    )


def test_migration_files_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"numbered 1\.\.n without gaps, got \[1, 3\]"):
        discover(tmp_path)


def test_every_table_carries_a_tenant_id() -> None:
    sql = "\n".join(m.sql for m in discover())
    tables = [block for block in sql.split("CREATE TABLE ")[1:]]
    for block in tables:
        name = block.split()[0]
        if name == "tenants":
            continue
        assert "tenant_id" in block.split(");")[0], f"table {name} has no tenant_id"


async def test_example_vectors_stored_as_a_real_array_read_back_the_same_as_bytes(
    database_url: str,
) -> None:
    """0009 turns each tool's example vectors from real[] into float32 bytes, little-endian, the
    encoding of clause vectors: the same values, in the same order."""
    examples = np.array([[0.5, -1.25, 3.0e-8], [1.0e30, 0.0, -7.75]], dtype=np.float32)
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, discover()[:8])
        await conn.execute(
            """INSERT INTO tool_versions (tenant_id, namespace, name, version, spec)
               VALUES ('default', 'default', 'with_examples', 1, '{"examples": ["a", "b"]}'),
                      ('default', 'default', 'without', 1, '{}')""")
        await conn.execute(
            """INSERT INTO tools (tenant_id, namespace, name, version, description,
                                  embedding_model, embedding_text, keyword_text, embedding,
                                  example_embeddings, change_id)
               VALUES ('default', 'default', 'with_examples', 1, 'd', 'm', 't', 'k',
                       '[1,0,0]', $1, 1),
                      ('default', 'default', 'without', 1, 'd', 'm', 't', 'k', '[1,0,0]', '{}', 2)
            """, examples.ravel().tolist())
        await migrate(conn)
        rows = {r["name"]: r["example_embeddings"] for r in await conn.fetch(
            "SELECT name, example_embeddings FROM tools")}
    finally:
        await conn.close()
    assert np.array_equal(np.frombuffer(rows["with_examples"], dtype="<f4").reshape(-1, 3),
                          examples)
    assert rows["without"] == b""


async def test_a_turns_candidates_stored_as_arrays_read_back_as_objects(database_url: str) -> None:
    """0010 turns each candidate [function, namespace, name, version] into an object, so a turn
    paused before it is taken up with the tool versions it was using."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, discover()[:9])
        await conn.execute(
            """INSERT INTO conversations (tenant_id, id) VALUES ('default', 'c1');
               INSERT INTO turns (tenant_id, id, conversation_id, status, mode, model, request,
                                  owner, candidates)
               VALUES ('default', 't1', 'c1', 'completed', 'auto', 'default', '{}', 'r',
                       '[["calculate", "builtin", "calculate", 2],
                         ["default_lookup", "default", "lookup", 7]]'),
                      ('default', 't2', 'c1', 'completed', 'auto', 'default', '{}', 'r', '[]')""")
        await migrate(conn)
        rows = {r["id"]: msgspec.json.decode(r["candidates"], type=list[Candidate])
                for r in await conn.fetch("SELECT id, candidates::text FROM turns")}
    finally:
        await conn.close()
    assert rows == {
        "t1": [Candidate(function="calculate", namespace="builtin", name="calculate", version=2),
               Candidate(function="default_lookup", namespace="default", name="lookup",
                         version=7)],
        "t2": [],
    }


async def test_an_interrupted_turns_old_error_reads_back_as_a_problem(database_url: str) -> None:
    """0015 gives interrupted turns the problem shape every failed turn's error has; before it,
    reading one by id answered 500."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, discover()[:14])
        await conn.execute(
            """INSERT INTO conversations (tenant_id, id) VALUES ('default', 'c1');
               INSERT INTO turns (tenant_id, id, conversation_id, status, mode, model, request,
                                  owner, error)
               VALUES ('default', 't1', 'c1', 'interrupted', 'auto', 'default', '{}', 'r',
                       '{"type": "interrupted", "message": "the process stopped"}'),
                      ('default', 't2', 'c1', 'failed', 'auto', 'default', '{}', 'r',
                       '{"type": "/problems/x", "title": "X", "status": 502, "detail": "d"}')
            """)
        await migrate(conn)
        rows = {r["id"]: msgspec.json.decode(r["error"], type=Problem)
                for r in await conn.fetch("SELECT id, error::text FROM turns")}
    finally:
        await conn.close()
    assert rows == {
        "t1": Problem(type="/problems/turn-interrupted", title="Turn interrupted", status=503,
                      detail="the process running this turn stopped before it finished; send "
                             "the message again to retry"),
        "t2": Problem(type="/problems/x", title="X", status=502, detail="d"),
    }
