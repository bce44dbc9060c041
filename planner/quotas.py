"""Token quotas per tenant, per model backend, per UTC day, counted in Postgres so they hold
across replicas (TOKEN_QUOTAS).

A turn is refused before its model is called once its tenant has spent its quota on the turn's
backend today; what a turn spends (its own model calls and its expert tools', by backend) is
counted when it ends or pauses (while TOKEN_QUOTAS sets a quota). A turn under way is not cut
short, so the last turn of a day
may go past the quota by what it spends.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Annotated

import asyncpg
import msgspec

from planner.errors import QuotaExceeded
from planner.messages import Usage

ANY = "*"
"""In TOKEN_QUOTAS: every tenant (as a tenant) or every backend (as a backend) not named."""

Limits = dict[str, dict[str, Annotated[int, msgspec.Meta(ge=0)]]]
"""Tenant (or `*`) -> backend (or `*`) -> tokens per UTC day."""


def parse_limits(text: str) -> Limits:
    """TOKEN_QUOTAS as JSON, like {"*": {"*": 2000000}, "acme": {"big": 100000}}; raises
    msgspec.ValidationError or DecodeError saying where it is wrong."""
    return msgspec.json.decode(text or "{}", type=Limits)


class TokenQuotas:
    """Checks a tenant's spending on a backend today against its quota, and counts it."""

    def __init__(self, pool: asyncpg.Pool, limits: Limits) -> None:
        self.pool, self.limits = pool, limits

    def limit(self, tenant: str, backend: str) -> int | None:
        """The tenant's tokens per day on `backend`; None when it has no quota."""
        for scope in (self.limits.get(tenant), self.limits.get(ANY)):
            if scope is not None and (backend in scope or ANY in scope):
                return scope.get(backend, scope.get(ANY))
        return None

    async def check(self, tenant: str, backend: str) -> None:
        """Raise QuotaExceeded when the tenant has spent its quota on `backend` today."""
        limit = self.limit(tenant, backend)
        if limit is None:
            return
        spent = await self.pool.fetchval(
            """SELECT coalesce(sum(tokens), 0) FROM token_usage
               WHERE tenant_id = $1 AND backend = $2 AND day = (now() AT TIME ZONE 'UTC')::date""",
            tenant, backend)
        if spent >= limit:
            raise QuotaExceeded(tenant, backend, limit, spent, _next_day())

    async def spend(self, tenant: str, by_backend: Mapping[str, Usage]) -> None:
        """Count what a turn spent, by backend (nothing to count when no quota is set)."""
        if not self.limits:
            return
        rows = [(tenant, backend, u.prompt_tokens + u.completion_tokens)
                for backend, u in by_backend.items() if u.prompt_tokens + u.completion_tokens]
        if rows:
            await self.pool.executemany(
                """INSERT INTO token_usage (tenant_id, day, backend, tokens)
                   VALUES ($1, (now() AT TIME ZONE 'UTC')::date, $2, $3)
                   ON CONFLICT (tenant_id, day, backend)
                   DO UPDATE SET tokens = token_usage.tokens + excluded.tokens""", rows)


def _next_day() -> datetime:
    today = datetime.now(UTC).date()
    return datetime.combine(today + timedelta(days=1), time(), tzinfo=UTC)
