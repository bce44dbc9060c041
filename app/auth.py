"""API keys: who a request acts for (a tenant) and what it may do (a role).

Keys are random and long, so a plain SHA-256 of the key is what is stored and looked up; the key
itself is shown once, when it is created.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import asyncpg
import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from app.errors import KeyNotFound

log = logging.getLogger(__name__)

Role = Literal["admin", "developer", "chat", "viewer"]
Permission = Literal[
    "keys:admin", "tools:read", "tools:write", "chat:read", "chat:write", "traces:read",
    "evals:read", "evals:write",
]
PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {"keys:admin", "tools:read", "tools:write", "chat:read", "chat:write", "traces:read",
         "evals:read", "evals:write"}
    ),
    "developer": frozenset({"tools:read", "tools:write", "traces:read", "evals:read",
                            "evals:write"}),
    "chat": frozenset({"chat:read", "chat:write", "tools:read"}),
    "viewer": frozenset({"traces:read", "tools:read", "chat:read", "evals:read"}),
}
PUBLIC_PATHS = ["^/health$", "^/ready$", "^/docs", "^/openapi.json$", "^/viewer", "^/problems"]
"""Paths served without a key (the API document declares a key on every other operation)."""
KEY_PREFIX = "sbk_"


def needs_key(path: str) -> bool:
    """Whether the key middleware asks a request for `path` (or a route's path template) for
    a key."""
    return not any(re.search(pattern, path) for pattern in PUBLIC_PATHS)


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant: str
    role: str
    name: str = ""
    created_at: datetime | None = None
    revoked_at: datetime | None = None


class NewKey(msgspec.Struct, frozen=True, kw_only=True):
    """A key as created: the only time its secret is shown."""

    id: str
    key: str
    tenant: str
    role: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """(key id, whole key); the id is part of the key, so a leaked key names itself."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


Welcome = Callable[[str], Awaitable[None]]
"""Called with the tenant of every key created over the API (a new tenant gets its tools)."""


KEY_CACHE_S = 5.0
"""How long a replica trusts a key it looked up (or found unknown) before asking Postgres
again: a revocation takes this long to reach the other replicas (the revoking one forgets at
once). Every request is authenticated, so without it a burst of requests queued for the
database's connections behind their own key lookups."""
_CACHED_KEYS = 10_000


class ApiKeys:
    """The keys in Postgres: only each key's SHA-256 is stored."""

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection, welcome: Welcome | None = None
                 ) -> None:
        self.db, self.welcome = db, welcome
        self._found: dict[str, tuple[float, ApiKey | None]] = {}
        self._pending: dict[str, asyncio.Future[ApiKey | None]] = {}
        self._generation = 0

    async def create(self, tenant: str, role: str, name: str = "", key: str | None = None
                     ) -> NewKey:
        """Store a key (a new random one unless `key` is given), creating the tenant if new."""
        key_id, generated = generate_key()
        whole = key or generated
        await self.db.execute("INSERT INTO tenants (id) VALUES ($1) ON CONFLICT DO NOTHING",
                              tenant)
        await self.db.execute(
            """INSERT INTO api_keys (tenant_id, id, key_hash, role, name)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (key_hash) DO UPDATE SET revoked_at = NULL, role = EXCLUDED.role,
                                                    tenant_id = EXCLUDED.tenant_id""",
            tenant, key_id, hash_key(whole), role, name,
        )
        self._forget()
        if self.welcome is not None:
            await self.welcome(tenant)
        return NewKey(id=key_id, key=whole, tenant=tenant, role=role)

    async def find(self, key: str) -> ApiKey | None:
        """The live key, or None; looked up at most every KEY_CACHE_S per replica, and once for
        all the requests that present it meanwhile (a burst of a thousand asks Postgres once)."""
        digest = hash_key(key)
        cached = self._found.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        pending = self._pending.get(digest)
        if pending is None:
            pending = asyncio.ensure_future(self._look_up(digest, self._generation))
            self._pending[digest] = pending
            pending.add_done_callback(lambda done: self._settled(digest, done))
        return await asyncio.shield(pending)

    async def _look_up(self, digest: str, generation: int) -> ApiKey | None:
        row = await self.db.fetchrow(
            """SELECT id, tenant_id, role, name, created_at FROM api_keys
               WHERE key_hash = $1 AND revoked_at IS NULL""",
            digest,
        )
        found = None if row is None else ApiKey(
            id=row["id"], tenant=row["tenant_id"], role=row["role"], name=row["name"],
            created_at=row["created_at"])
        if generation == self._generation:  # no key was created or revoked meanwhile
            if len(self._found) >= _CACHED_KEYS:
                self._found.clear()
            self._found[digest] = (time.monotonic() + KEY_CACHE_S, found)
        return found

    def _settled(self, digest: str, done: asyncio.Future[ApiKey | None]) -> None:
        if self._pending.get(digest) is done:
            del self._pending[digest]
        if not done.cancelled():
            done.exception()  # raised to every waiter; marked seen if all of them went away

    def _forget(self) -> None:
        """Drop what this replica knows of keys, and what lookups under way would add."""
        self._found.clear()
        self._pending.clear()
        self._generation += 1

    async def of_tenant(self, tenant: str) -> list[ApiKey]:
        rows = await self.db.fetch(
            """SELECT id, tenant_id, role, name, created_at, revoked_at FROM api_keys
               WHERE tenant_id = $1 ORDER BY created_at, id""",
            tenant,
        )
        return [ApiKey(id=r["id"], tenant=r["tenant_id"], role=r["role"], name=r["name"],
                       created_at=r["created_at"], revoked_at=r["revoked_at"]) for r in rows]

    async def revoke(self, tenant: str | None, key_id: str) -> None:
        """Revoke a key of `tenant`, or of any tenant when it is None."""
        status = await self.db.execute(
            """UPDATE api_keys SET revoked_at = now()
               WHERE ($1::text IS NULL OR tenant_id = $1) AND id = $2 AND revoked_at IS NULL""",
            tenant, key_id,
        )
        if status != "UPDATE 1":
            raise KeyNotFound(f"key {key_id!r} not found or already revoked")
        self._forget()  # this replica forgets at once; the others within KEY_CACHE_S

    async def bootstrap_admin(self, admin_key: str | None, data_dir: Path) -> str | None:
        """ADMIN_KEY becomes an admin key of the default tenant; without it, the first start
        makes one, prints it once and writes it to DATA_DIR/admin.key (readable by this user
        only)."""
        if admin_key:
            await self.create("default", "admin", "ADMIN_KEY", key=admin_key)
            return None
        if await self.db.fetchval("SELECT count(*) FROM api_keys WHERE role = 'admin'"):
            return None
        made = await self.create("default", "admin", "first start")
        path = data_dir / "admin.key"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(made.key + "\n")
        print(f"switchboard: created the admin key (shown once; also in {path}): {made.key}",
              flush=True)
        return made.key


class KeyAuthentication(AbstractAuthenticationMiddleware):
    """`Authorization: Bearer <key>` on every route but health, docs and the viewer page."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]
                                   ) -> AuthenticationResult:
        header = connection.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise NotAuthorizedException(
                "missing API key: send Authorization: Bearer <key> (an admin creates keys with "
                "POST /v1/keys)"
            )
        api_keys: ApiKeys = connection.app.state.api_keys
        found = await api_keys.find(key.strip())
        if found is None:
            raise NotAuthorizedException("unknown or revoked API key")
        return AuthenticationResult(user=found, auth=found)


def require(permission: Permission) -> Callable[[ASGIConnection[Any, Any, Any, Any],
                                                 BaseRouteHandler], Awaitable[None]]:
    """A route guard: the request's key must have a role that grants `permission`. (A
    coroutine, though it never waits: Litestar runs a plain function guard in a worker thread,
    a thread hop on every request.)"""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
                    ) -> None:
        key: ApiKey = connection.auth
        if permission not in PERMISSIONS[key.role]:
            allowed = sorted(r for r, p in PERMISSIONS.items() if permission in p)
            raise PermissionDeniedException(
                f"a {key.role} key may not do this ({permission}); roles that may: "
                f"{', '.join(allowed)}"
            )

    return guard


def key_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The rate limiter's identity for a request: its key id (or its address if it has none)."""
    auth = connection.scope.get("auth")
    if isinstance(auth, ApiKey):
        return f"key:{auth.id}"
    client = connection.client
    return f"addr:{client.host if client else 'unknown'}"
