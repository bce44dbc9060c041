"""What every SQL module of the planner shares: the connection type, the pools a store writes
through, and how values become jsonb text and ids."""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

import asyncpg
import msgspec

from tools.storable import clean_json

Db: TypeAlias = asyncpg.Pool | asyncpg.Connection


class PostgresTables:
    """The service's tables, reached through `pool`, whose commits wait for the WAL flush, and
    `progress`, whose commits need not (the same pool unless another is given)."""

    def __init__(self, pool: asyncpg.Pool, progress: asyncpg.Pool | None = None) -> None:
        self.pool = pool
        self.progress = progress if progress is not None else pool


def jsonb_text(value: Any) -> str:
    """JSON for a jsonb column; NUL characters, which Postgres refuses, become U+FFFD."""
    return clean_json(msgspec.json.encode(value)).decode()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
