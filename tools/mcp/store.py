"""SQL for registered MCP servers. Every function takes a connection or pool."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from tools.mcp.transport import HttpTransport, McpTransport, StdioTransport
from tools.sealed import SecretBox
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


def _row(r: asyncpg.Record, box: SecretBox | None) -> ServerRow:
    transport = _transport_decoder.decode(r["transport"])
    return ServerRow(
        name=r["name"],
        transport=transport if box is None else _with_values(transport, box.open_values),
        created_at=r["created_at"],
        refreshed_at=r["refreshed_at"],
        refresh_status=r["refresh_status"],
        refresh_error=r["refresh_error"],
    )


def _with_values(transport: McpTransport,
                 change: Callable[[Mapping[str, str]], dict[str, str]]) -> McpTransport:
    """The transport with its write-only values (environment, headers) sealed or opened."""
    match transport:
        case StdioTransport(env=env):
            return msgspec.structs.replace(transport, env=change(env))
        case HttpTransport(headers=headers):
            return msgspec.structs.replace(transport, headers=change(headers))


async def insert(
    conn: asyncpg.Pool | asyncpg.Connection, tenant: str, name: str, transport: McpTransport,
    box: SecretBox | None = None,
) -> bool:
    """Store a new server, refreshed now; False when the name is taken."""
    if box is not None:
        transport = _with_values(transport, box.seal_values)
    row = await conn.fetchrow(
        """INSERT INTO mcp_servers (tenant_id, name, transport, refreshed_at, refresh_status)
           VALUES ($1, $2, $3::jsonb, now(), 'ok')
           ON CONFLICT (tenant_id, name) DO NOTHING RETURNING name""",
        tenant, name, msgspec.json.encode(transport).decode(),
    )
    return row is not None


async def get(conn: asyncpg.Pool | asyncpg.Connection, tenant: str, name: str,
              box: SecretBox | None = None) -> ServerRow | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM mcp_servers WHERE tenant_id = $1 AND name = $2", tenant, name
    )
    return None if row is None else _row(row, box)


async def list_all(conn: asyncpg.Pool | asyncpg.Connection, tenant: str,
                   box: SecretBox | None = None) -> list[ServerRow]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM mcp_servers WHERE tenant_id = $1 ORDER BY name", tenant
    )
    return [_row(r, box) for r in rows]


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
