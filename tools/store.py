"""SQL for the tool registry. Every function takes a connection; nothing holds global state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import numpy as np

from tools.cursors import decode_cursor, encode_cursor
from tools.embed import Vectors
from tools.index import IndexedTool, SearchData
from tools.sealed import SecretBox
from tools.spec import ToolRecord, ToolSpec

CHANNEL = "switchboard_tools"
_spec_decoder = msgspec.json.Decoder(ToolSpec)


class CurrentTool(msgspec.Struct, frozen=True, kw_only=True):
    """A tool's current row: its live (or deleted) version and its search data."""

    namespace: str
    name: str
    version: int
    deleted: bool
    spec: ToolSpec
    secret: str | None
    secret_headers: dict[str, str]
    created_at: datetime
    search: SearchData


class ToolRow(msgspec.Struct, frozen=True, kw_only=True):
    """A tool as the search indexes load it, with the change that last wrote it."""

    tenant_id: str
    deleted: bool
    change_id: int
    tool: IndexedTool


class NewVersion(msgspec.Struct, frozen=True, kw_only=True):
    spec: ToolSpec
    version: int
    search: SearchData


def encode_spec(spec: ToolSpec) -> str:
    return msgspec.json.encode(spec.without_secret()).decode()


def _encode_secret_headers(spec: ToolSpec, box: SecretBox | None) -> str | None:
    headers = spec.secret_headers
    if not headers:
        return None
    return msgspec.json.encode(box.seal_values(headers) if box else headers).decode()


def _secret_headers(raw: str | None, box: SecretBox | None) -> dict[str, str]:
    headers = {} if raw is None else dict(json.loads(raw))
    return box.open_values(headers) if box else headers


def _secret(stored: str | None, box: SecretBox | None) -> str | None:
    return stored if stored is None or box is None else box.open(stored)


def _matrix_bytes(rows: Vectors) -> bytes:
    """A matrix as its column stores it: float32 rows, little-endian, one after another. Raw
    bytes decode into numpy at once, where a real[] would become n x dim Python floats first."""
    return rows.astype("<f4", copy=False).tobytes()


def _matrix(data: bytes, dim: int) -> Vectors:
    return np.frombuffer(data, dtype="<f4").reshape(-1, dim)


_SEARCH_COLUMNS = """t.embedding_model, t.embedding_text, t.embedding, t.example_embeddings,
                     t.clause_texts, t.clause_embeddings, t.keyword_text,
                     v.spec -> 'examples' AS examples"""


def _search_data(r: asyncpg.Record) -> SearchData:
    """A row's search data, selected with _SEARCH_COLUMNS."""
    vector = r["embedding"]
    return SearchData(
        model=r["embedding_model"],
        text=r["embedding_text"],
        vector=vector,
        examples=json.loads(r["examples"] or "[]"),
        example_vectors=_matrix(r["example_embeddings"], len(vector)),
        clauses=list(r["clause_texts"]),
        clause_vectors=_matrix(r["clause_embeddings"], len(vector)),
        keywords=r["keyword_text"],
    )


def _search_values(search: SearchData) -> tuple[Any, ...]:
    """The search data as the values of its columns, in the order of _SEARCH_COLUMNS."""
    return (search.model, search.text, search.vector, _matrix_bytes(search.example_vectors),
            search.clauses, _matrix_bytes(search.clause_vectors), search.keywords)


_TOOL_ROW_SQL = f"""
    SELECT t.tenant_id, t.namespace, t.name, t.version, t.description, t.tags,
           t.deleted_at IS NOT NULL AS deleted, t.change_id, {_SEARCH_COLUMNS}
    FROM tools t JOIN tool_versions v USING (tenant_id, namespace, name, version)
"""


def _tool_row(r: asyncpg.Record) -> ToolRow:
    tool = IndexedTool(namespace=r["namespace"], name=r["name"], version=r["version"],
                       description=r["description"], tags=frozenset(r["tags"]),
                       search=_search_data(r))
    return ToolRow(tenant_id=r["tenant_id"], deleted=r["deleted"], change_id=r["change_id"],
                   tool=tool)


async def load_live(conn: asyncpg.Connection | asyncpg.Pool, tenant: str | None = None
                    ) -> list[ToolRow]:
    """Every live tool, or one tenant's."""
    rows = await conn.fetch(_TOOL_ROW_SQL + " WHERE t.deleted_at IS NULL"
                            " AND ($1::text IS NULL OR t.tenant_id = $1)", tenant)
    return [_tool_row(r) for r in rows]


async def load_change(conn: asyncpg.Connection | asyncpg.Pool, change_id: int) -> list[ToolRow]:
    rows = await conn.fetch(_TOOL_ROW_SQL + " WHERE t.change_id = $1", change_id)
    return [_tool_row(r) for r in rows]


async def current_tools(
    conn: asyncpg.Connection, tenant: str, keys: Sequence[tuple[str, str]], *, lock: bool = False,
    box: SecretBox | None = None,
) -> dict[tuple[str, str], CurrentTool]:
    """Current rows for the keys, deleted ones included; `lock` takes their row locks."""
    if not keys:
        return {}
    rows = await conn.fetch(
        f"""SELECT t.namespace, t.name, t.version, t.deleted_at IS NOT NULL AS deleted,
                   v.spec, v.secret, v.secret_headers, v.created_at, {_SEARCH_COLUMNS}
            FROM tools t JOIN tool_versions v USING (tenant_id, namespace, name, version)
            WHERE t.tenant_id = $1
              AND (t.namespace, t.name) IN (SELECT * FROM unnest($2::text[], $3::text[]))
            {"FOR UPDATE OF t" if lock else ""}""",
        tenant,
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r["namespace"], r["name"]): _current(r, box) for r in rows}


def _current(r: asyncpg.Record, box: SecretBox | None) -> CurrentTool:
    return CurrentTool(
        namespace=r["namespace"],
        name=r["name"],
        version=r["version"],
        deleted=r["deleted"],
        spec=_spec_decoder.decode(r["spec"]),
        secret=_secret(r["secret"], box),
        secret_headers=_secret_headers(r["secret_headers"], box),
        created_at=r["created_at"],
        search=_search_data(r),
    )


async def live_specs(
    db: asyncpg.Connection | asyncpg.Pool, tenant: str, keys: Sequence[tuple[str, str]],
    box: SecretBox | None = None,
) -> dict[tuple[str, str], tuple[ToolRecord, str | None, dict[str, str]]]:
    """The live version of each tool with its secret and secret headers: what it takes to call
    it, nothing more."""
    if not keys:
        return {}
    rows = await db.fetch(
        """SELECT v.spec, v.version, v.created_at, v.secret, v.secret_headers
           FROM tools t JOIN tool_versions v USING (tenant_id, namespace, name, version)
           WHERE t.tenant_id = $1 AND t.deleted_at IS NULL
             AND (t.namespace, t.name) IN (SELECT * FROM unnest($2::text[], $3::text[]))""",
        tenant, [k[0] for k in keys], [k[1] for k in keys],
    )
    return {(r.namespace, r.name): (r, secret, headers)
            for r, secret, headers in (_with_secrets(row, box) for row in rows)}


async def pinned_specs(
    db: asyncpg.Connection | asyncpg.Pool, tenant: str, keys: Sequence[tuple[str, str, int]],
    box: SecretBox | None = None,
) -> dict[tuple[str, str], tuple[ToolRecord, str | None, dict[str, str]]]:
    """These versions of tools that are not deleted, with their secrets and secret headers."""
    if not keys:
        return {}
    rows = await db.fetch(
        """SELECT v.spec, v.version, v.created_at, v.secret, v.secret_headers
           FROM tools t JOIN tool_versions v USING (tenant_id, namespace, name)
           WHERE t.tenant_id = $1 AND t.deleted_at IS NULL
             AND (v.namespace, v.name, v.version) IN
                 (SELECT * FROM unnest($2::text[], $3::text[], $4::int[]))""",
        tenant, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
    )
    return {(r.namespace, r.name): (r, secret, headers)
            for r, secret, headers in (_with_secrets(row, box) for row in rows)}


def _with_secrets(row: asyncpg.Record, box: SecretBox | None
                  ) -> tuple[ToolRecord, str | None, dict[str, str]]:
    headers = _secret_headers(row["secret_headers"], box)
    spec = _spec_decoder.decode(row["spec"])
    record = ToolRecord.of(spec, row["version"], row["created_at"], row["secret"] is not None,
                           list(headers))
    return record, _secret(row["secret"], box), headers


async def next_change_id(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT nextval('tool_change_ids')"))


async def write_versions(
    conn: asyncpg.Connection, tenant: str, versions: Sequence[NewVersion], change_id: int,
    box: SecretBox | None = None,
) -> None:
    """Insert each new version and point the tool's current row at it (undeleting it)."""
    await conn.executemany(
        """INSERT INTO tool_versions (tenant_id, namespace, name, version, spec, secret,
                                     secret_headers)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7::jsonb)""",
        [
            (tenant, v.spec.namespace, v.spec.name, v.version, encode_spec(v.spec),
             v.spec.secret if box is None or v.spec.secret is None else box.seal(v.spec.secret),
             _encode_secret_headers(v.spec, box))
            for v in versions
        ],
    )
    await conn.executemany(
        """INSERT INTO tools (tenant_id, namespace, name, version, description, tags, change_id,
                              embedding_model, embedding_text, embedding, example_embeddings,
                              clause_texts, clause_embeddings, keyword_text)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT (tenant_id, namespace, name) DO UPDATE SET
               version = EXCLUDED.version, description = EXCLUDED.description,
               tags = EXCLUDED.tags, deleted_at = NULL, change_id = EXCLUDED.change_id,
               embedding_model = EXCLUDED.embedding_model,
               embedding_text = EXCLUDED.embedding_text, embedding = EXCLUDED.embedding,
               example_embeddings = EXCLUDED.example_embeddings,
               clause_texts = EXCLUDED.clause_texts,
               clause_embeddings = EXCLUDED.clause_embeddings,
               keyword_text = EXCLUDED.keyword_text, updated_at = now()""",
        [
            (tenant, v.spec.namespace, v.spec.name, v.version, v.spec.description, v.spec.tags,
             change_id, *_search_values(v.search))
            for v in versions
        ],
    )


async def mark_deleted(
    conn: asyncpg.Connection, tenant: str, namespace: str, name: str, change_id: int
) -> bool:
    status = await conn.execute(
        """UPDATE tools SET deleted_at = now(), change_id = $4, updated_at = now()
           WHERE tenant_id = $1 AND namespace = $2 AND name = $3 AND deleted_at IS NULL""",
        tenant,
        namespace,
        name,
        change_id,
    )
    return bool(status == "UPDATE 1")


async def update_search(conn: asyncpg.Connection, tenant: str, rows: Sequence[ToolRow]) -> None:
    """Store search data made again (another model, clauses cut anew) for unchanged specs: no
    new version."""
    await conn.executemany(
        """UPDATE tools SET embedding_model = $4, embedding_text = $5, embedding = $6,
                            example_embeddings = $7, clause_texts = $8, clause_embeddings = $9,
                            keyword_text = $10
           WHERE tenant_id = $1 AND namespace = $2 AND name = $3""",
        [(tenant, r.tool.namespace, r.tool.name, *_search_values(r.tool.search)) for r in rows],
    )


async def notify(conn: asyncpg.Connection, origin: str, change_id: int) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{origin}:{change_id}")


LEARNED = "learned:"
"""A notification's change that says which tools of a tenant learnt something."""


async def notify_learned(conn: asyncpg.Connection, origin: str, tenant: str,
                         keys: Sequence[tuple[str, str]]) -> None:
    """Tell every replica these tools' learned examples changed (sent on commit)."""
    change = LEARNED + msgspec.json.encode([tenant, sorted(set(keys))]).decode()
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{origin}:{change}")


MODEL = "model:"
"""A notification's change that says a tenant changed its embedding model."""


async def notify_model(conn: asyncpg.Connection, origin: str, tenant: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{origin}:{MODEL}{tenant}")


def learned_change(change: str) -> tuple[str, list[tuple[str, str]]]:
    """The tenant and tools of a `notify_learned` change."""
    tenant, keys = msgspec.json.decode(change.removeprefix(LEARNED),
                                       type=tuple[str, list[tuple[str, str]]])
    return tenant, keys


_RECORD_SQL = """
    SELECT v.spec, v.version, v.created_at, v.secret IS NOT NULL AS has_secret,
           ARRAY(SELECT jsonb_object_keys(v.secret_headers)) AS secret_headers
    FROM tool_versions v
"""


def _record(r: asyncpg.Record) -> ToolRecord:
    return ToolRecord.of(
        _spec_decoder.decode(r["spec"]), r["version"], r["created_at"], r["has_secret"],
        list(r["secret_headers"]),
    )


async def get_current(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, namespace: str, name: str
) -> ToolRecord | None:
    row = await conn.fetchrow(
        _RECORD_SQL
        + """ JOIN tools t USING (tenant_id, namespace, name, version)
        WHERE t.tenant_id = $1 AND t.namespace = $2 AND t.name = $3 AND t.deleted_at IS NULL""",
        tenant,
        namespace,
        name,
    )
    return None if row is None else _record(row)


async def get_version(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, namespace: str, name: str, version: int
) -> ToolRecord | None:
    row = await conn.fetchrow(
        _RECORD_SQL + " WHERE tenant_id = $1 AND namespace = $2 AND name = $3 AND version = $4",
        tenant,
        namespace,
        name,
        version,
    )
    return None if row is None else _record(row)


async def list_versions(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, namespace: str, name: str
) -> list[ToolRecord]:
    rows = await conn.fetch(
        _RECORD_SQL + " WHERE tenant_id = $1 AND namespace = $2 AND name = $3 ORDER BY version",
        tenant,
        namespace,
        name,
    )
    return [_record(r) for r in rows]


class Page(msgspec.Struct, frozen=True):
    items: list[ToolRecord]
    next_cursor: str | None


async def list_current(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str,
    *,
    namespace: str | None,
    tag: str | None,
    cursor: str | None,
    limit: int,
) -> Page:
    after = decode_cursor(cursor, tuple[str, str]) if cursor else ("", "")
    rows = await conn.fetch(
        _RECORD_SQL
        + """ JOIN tools t USING (tenant_id, namespace, name, version)
        WHERE t.tenant_id = $1 AND t.deleted_at IS NULL
          AND ($2::text IS NULL OR t.namespace = $2)
          AND ($3::text IS NULL OR $3 = ANY (t.tags))
          AND (t.namespace, t.name) > ($4, $5)
        ORDER BY t.namespace, t.name LIMIT $6""",
        tenant,
        namespace,
        tag,
        after[0],
        after[1],
        limit + 1,
    )
    items = [_record(r) for r in rows[:limit]]
    if len(rows) <= limit:
        return Page(items, None)
    return Page(items, encode_cursor((items[-1].namespace, items[-1].name)))
