"""What every SQL module of the planner shares: the connection type and how values become
jsonb text and ids."""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

import asyncpg
import msgspec

from tools.storable import clean_json

Db: TypeAlias = asyncpg.Pool | asyncpg.Connection


def jsonb_text(value: Any) -> str:
    """JSON for a jsonb column; NUL characters, which Postgres refuses, become U+FFFD."""
    return clean_json(msgspec.json.encode(value)).decode()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
