"""SQL for registered MCP servers. Every function takes a connection or pool."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from tools.mcp.transport import McpTransport
from tools.storable import clean_text

_transport_decoder = msgspec.json.Decoder(McpTransport)

RefreshStatus = Literal["ok", "failed"]


class ServerRow(msgspec.Struct, frozen=True, kw_only=True):
    """A stored server, write-only values included: never returned as it is."""

    name: str
    transport: McpTransport
    created_at: datetime
    refreshed_at: datetime | None
    refresh_status: RefreshStatus | None
    refresh_error: str | None


_COLUMNS = "name, transport, created_at, refreshed_at, refresh_status, refresh_error"


def _row(r: asyncpg.Record) -> ServerRow:
    return ServerRow(
        name=r["name"],
        transport=_transport_decoder.decode(r["transport"]),
        created_at=r["created_at"],
        refreshed_at=r["refreshed_at"],
        refresh_status=r["refresh_status"],
        refresh_error=r["refresh_error"],
    )


async def insert(
    conn: asyncpg.Pool | asyncpg.Connection, tenant: str, name: str, transport: McpTransport
) -> bool:
    """Store a new server, refreshed now; False when the name is taken."""
    row = await conn.fetchrow(
        """INSERT INTO mcp_servers (tenant_id, name, transport, refreshed_at, refresh_status)
           VALUES ($1, $2, $3::jsonb, now(), 'ok')
           ON CONFLICT (tenant_id, name) DO NOTHING RETURNING name""",
        tenant, name, msgspec.json.encode(transport).decode(),
    )
    return row is not None


async def get(conn: asyncpg.Pool | asyncpg.Connection, tenant: str, name: str) -> ServerRow | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM mcp_servers WHERE tenant_id = $1 AND name = $2", tenant, name
    )
    return None if row is None else _row(row)


async def list_all(conn: asyncpg.Pool | asyncpg.Connection, tenant: str) -> list[ServerRow]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM mcp_servers WHERE tenant_id = $1 ORDER BY name", tenant
    )
    return [_row(r) for r in rows]


async def record_refresh(
    conn: asyncpg.Pool | asyncpg.Connection, tenant: str, name: str, error: str | None
) -> None:
    await conn.execute(
        """UPDATE mcp_servers SET refreshed_at = now(), refresh_status = $3, refresh_error = $4
           WHERE tenant_id = $1 AND name = $2""",
        tenant, name, "ok" if error is None else "failed", clean_text(error),
    )


async def delete(conn: asyncpg.Pool | asyncpg.Connection, tenant: str, name: str) -> bool:
    status = await conn.execute(
        "DELETE FROM mcp_servers WHERE tenant_id = $1 AND name = $2", tenant, name
    )
    return bool(status != "DELETE 0")
