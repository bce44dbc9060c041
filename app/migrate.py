"""Apply numbered .sql files from migrations/ once each, in order, under an advisory lock."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import asyncpg
import msgspec

import migrations
from app.errors import MigrationError

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent
_FILE = re.compile(r"^(?P<number>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# Any fixed number works; it only has to be the same in every process that migrates.
_LOCK_ID = 0x5357_4244  # "SWBD"


class Migration(msgspec.Struct, frozen=True):
    number: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path}: name must look like 0001_what_it_does.sql")
        found.append(Migration(int(match["number"]), match["name"], path.read_text()))
    numbers = [m.number for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise MigrationError(
            f"{directory}: migrations must be numbered 1..n without gaps, got {numbers}"
        )
    return found


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply what is new; return the names applied. Refuses to start over a changed file."""
    migrations = discover() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   number integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {r["number"]: r for r in await conn.fetch("SELECT * FROM schema_migrations")}
        done: list[str] = []
        for m in migrations:
            row = applied.get(m.number)
            if row is not None:
                _check_unchanged(m, row)
                continue
            await _apply(conn, m)
            done.append(f"{m.number:04d}_{m.name}")
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


def _check_unchanged(m: Migration, row: asyncpg.Record) -> None:
    if row["checksum"] != m.checksum:
        raise MigrationError(
            f"migration {m.number:04d}_{m.name}.sql was changed after it was applied "
            f"(checksum {m.checksum[:12]} != recorded {row['checksum'][:12]}); "
            "restore the released file and put the change in a new numbered migration"
        )


async def _apply(conn: asyncpg.Connection, m: Migration) -> None:
    try:
        async with conn.transaction():
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (number, name, checksum) VALUES ($1, $2, $3)",
                m.number,
                m.name,
                m.checksum,
            )
    except asyncpg.PostgresError as exc:
        hint = ""
        if "vector" in str(exc) and "extension" in str(exc):
            hint = (
                " — this server lacks pgvector: install it (e.g. the pgvector/pgvector image)"
                " or unset DATABASE_URL to use the embedded server"
            )
        raise MigrationError(f"migration {m.number:04d}_{m.name}.sql failed: {exc}{hint}") from exc
