"""`Idempotency-Key`: a retried request gets the first request's result, and its work (a turn,
a registration) is done once."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from app.problems import PROBLEM_JSON
from app.tenancy import tenant_of
from planner import results
from planner.events import TurnResult

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_MAX_KEY = 255
RenderTurn = Callable[[TurnResult], Response[Any]]


class IdempotencyConflict(HTTPException):
    """The key was used before with another request, or its first request is still running."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status_code=status, detail=message)


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """This request owns the key: it does the work and records the outcome."""

    tenant: str
    route: str
    key: str


async def claim_or_replay(
    request: Request[Any, Any, Any], route: str, render: RenderTurn | None = None
) -> Claim | Response[Any] | None:
    """None without a key; a Claim for the first request; the stored response for a retry."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 0 < len(key) <= _MAX_KEY:
        raise IdempotencyConflict(422, f"{HEADER} must be 1-{_MAX_KEY} characters")
    tenant = tenant_of(request)
    digest = hashlib.sha256(await request.body()).hexdigest()
    pool: asyncpg.Pool = request.app.state.pool
    inserted = await pool.fetchval(
        """INSERT INTO idempotency_keys (tenant_id, key, route, request_hash)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
        tenant, key, route, digest,
    )
    if inserted:
        return Claim(tenant=tenant, route=route, key=key)
    return await _replay(pool, tenant, route, key, digest, render)


async def _replay(pool: asyncpg.Pool, tenant: str, route: str, key: str,
                  digest: str, render: RenderTurn | None) -> Response[Any]:
    row = await pool.fetchrow(
        """SELECT request_hash, status, response::text, turn_id FROM idempotency_keys
           WHERE tenant_id = $1 AND route = $2 AND key = $3""",
        tenant, route, key,
    )
    if row["request_hash"] != digest:
        raise IdempotencyConflict(
            422, f"{HEADER} {key!r} was used with a different request; use a new key for it"
        )
    if row["turn_id"] is not None:
        result = await results.turn_result(pool, tenant, row["turn_id"])
        # A paused turn has answered its request: the replay says what it waits on.
        if result is not None and result.status != "running":
            if render is not None:
                response = render(result)
                response.headers[REPLAYED] = "true"
                return response
            return _replayed(200 if result.error is None else result.error.status, result)
        raise IdempotencyConflict(
            409, f"the first request with {HEADER} {key!r} is still running (turn "
                 f"{row['turn_id']}); retry later"
        )
    if row["status"] is None:
        raise IdempotencyConflict(
            409, f"the first request with {HEADER} {key!r} is still running; retry later")
    return _replayed(row["status"], msgspec.json.decode(row["response"]))


def _replayed(status: int, body: Any) -> Response[Any]:
    media = PROBLEM_JSON if status >= 400 else "application/json"
    return Response(body, status_code=status, media_type=media, headers={REPLAYED: "true"})


async def record(pool: asyncpg.Pool, claim: Claim | None, status: int, body: Any) -> None:
    if claim is None:
        return
    await pool.execute(
        """UPDATE idempotency_keys SET status = $4, response = $5::jsonb
           WHERE tenant_id = $1 AND route = $2 AND key = $3""",
        claim.tenant, claim.route, claim.key, status, msgspec.json.encode(body).decode(),
    )


async def record_turn(pool: asyncpg.Pool, claim: Claim | None, turn_id: str) -> None:
    """Tie the key to its turn: a retry then reports that turn instead of running another."""
    if claim is not None:
        await pool.execute(
            """UPDATE idempotency_keys SET turn_id = $4
               WHERE tenant_id = $1 AND route = $2 AND key = $3""",
            claim.tenant, claim.route, claim.key, turn_id,
        )


async def release(pool: asyncpg.Pool, claim: Claim | None) -> None:
    """The first request failed before its work began: let a retry run it afresh. A key tied
    to a turn is kept, even when the client went away, so the turn never runs twice."""
    if claim is not None:
        await pool.execute(
            """DELETE FROM idempotency_keys WHERE tenant_id = $1 AND route = $2 AND key = $3
               AND turn_id IS NULL AND status IS NULL""",
            claim.tenant, claim.route, claim.key,
        )


async def guarded(
    request: Request[Any, Any, Any], route: str,
    work: Callable[[Claim | None], Awaitable[Response[Any]]], render: RenderTurn | None = None,
) -> Response[Any]:
    """Run `work` once per key; failures that did nothing release the key. A retry of a
    request whose turn has ended gets that turn as `render` shows it (default: `TurnResult`)."""
    claimed = await claim_or_replay(request, route, render)
    if isinstance(claimed, Response):
        return claimed
    try:
        return await work(claimed)
    except BaseException:
        await release(request.app.state.pool, claimed)
        raise
