"""`Idempotency-Key`: a retried request gets the first request's result, and its work (a turn,
a registration) is done once."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response

from app.errors import IdempotencyConflict
from app.problems import PROBLEM_JSON
from app.tenancy import tenant_of
from planner.conversations import Conversations
from planner.events import TurnResult

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_MAX_KEY = 255
RenderTurn = Callable[[TurnResult], Response[Any]]


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """This request owns the key: it does the work and records the outcome."""

    tenant: str
    route: str
    key: str


Work = Callable[[Claim | None], Awaitable[Response[Any]]]
"""A route's work, given the key it holds (None when the request sent none)."""


class IdempotencyKeys:
    """The keys in Postgres; a key tied to a turn replays that turn as it stands."""

    def __init__(self, pool: asyncpg.Pool, conversations: Conversations) -> None:
        self.pool, self.conversations = pool, conversations

    async def guarded(
        self, request: Request[Any, Any, Any], route: str, work: Work,
        render: RenderTurn | None = None,
    ) -> Response[Any]:
        """Run `work` once per key; failures that did nothing release the key. A retry of a
        request whose turn has ended gets that turn as `render` shows it (default:
        `TurnResult`)."""
        claimed = await self._claim_or_replay(request, route, render)
        if isinstance(claimed, Response):
            return claimed
        try:
            return await work(claimed)
        except BaseException:
            await self._release(claimed)
            raise

    async def once(
        self, request: Request[Any, Any, Any], route: str, status: int,
        make: Callable[[], Awaitable[Any]],
    ) -> Response[Any]:
        """Answer `make`'s result with `status`, made once per key: a retry gets the same
        answer."""

        async def work(claim: Claim | None) -> Response[Any]:
            body = await make()
            await self._record(claim, status, body)
            return Response(body, status_code=status)

        return await self.guarded(request, route, work)

    async def _record(self, claim: Claim | None, status: int, body: Any) -> None:
        """The response a retry with the key gets."""
        if claim is None:
            return
        await self.pool.execute(
            """UPDATE idempotency_keys SET status = $4, response = $5::jsonb
               WHERE tenant_id = $1 AND route = $2 AND key = $3""",
            claim.tenant, claim.route, claim.key, status, msgspec.json.encode(body).decode(),
        )

    def tie_to_turn(self, claim: Claim | None) -> Callable[[str], Awaitable[None]]:
        """Ties the key to the turn it starts: a retry then reports that turn instead of
        running another."""

        async def tie(turn_id: str) -> None:
            if claim is not None:
                await self.pool.execute(
                    """UPDATE idempotency_keys SET turn_id = $4
                       WHERE tenant_id = $1 AND route = $2 AND key = $3""",
                    claim.tenant, claim.route, claim.key, turn_id,
                )

        return tie

    async def _claim_or_replay(
        self, request: Request[Any, Any, Any], route: str, render: RenderTurn | None
    ) -> Claim | Response[Any] | None:
        """None without a key; a Claim for the first request; the stored response for a
        retry."""
        key = request.headers.get(HEADER)
        if key is None:
            return None
        if not 0 < len(key) <= _MAX_KEY:
            raise IdempotencyConflict(422, f"{HEADER} must be 1-{_MAX_KEY} characters")
        tenant = tenant_of(request)
        digest = hashlib.sha256(await request.body()).hexdigest()
        inserted = await self.pool.fetchval(
            """INSERT INTO idempotency_keys (tenant_id, key, route, request_hash)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
            tenant, key, route, digest,
        )
        if inserted:
            return Claim(tenant=tenant, route=route, key=key)
        return await self._replay(tenant, route, key, digest, render)

    async def _replay(self, tenant: str, route: str, key: str, digest: str,
                      render: RenderTurn | None) -> Response[Any]:
        row = await self.pool.fetchrow(
            """SELECT request_hash, status, response::text, turn_id FROM idempotency_keys
               WHERE tenant_id = $1 AND route = $2 AND key = $3""",
            tenant, route, key,
        )
        if row["request_hash"] != digest:
            raise IdempotencyConflict(
                422, f"{HEADER} {key!r} was used with a different request; use a new key for it"
            )
        if row["turn_id"] is not None:
            return await self._replay_turn(tenant, key, row["turn_id"], render)
        if row["status"] is None:
            raise IdempotencyConflict(
                409, f"the first request with {HEADER} {key!r} is still running; retry later")
        return _replayed(row["status"], msgspec.json.decode(row["response"]))

    async def _replay_turn(self, tenant: str, key: str, turn_id: str,
                           render: RenderTurn | None) -> Response[Any]:
        result = await self.conversations.find_turn(tenant, turn_id)
        # A paused turn has answered its request: the replay says what it waits on.
        if result is None or result.status == "running":
            raise IdempotencyConflict(
                409, f"the first request with {HEADER} {key!r} is still running (turn "
                     f"{turn_id}); retry later"
            )
        if render is None:
            return _replayed(200 if result.error is None else result.error.status, result)
        response = render(result)
        response.headers[REPLAYED] = "true"
        return response

    async def _release(self, claim: Claim | None) -> None:
        """The first request failed before its work began: let a retry run it afresh. A key
        tied to a turn is kept, even when the client went away, so the turn never runs
        twice."""
        if claim is not None:
            await self.pool.execute(
                """DELETE FROM idempotency_keys WHERE tenant_id = $1 AND route = $2 AND key = $3
                   AND turn_id IS NULL AND status IS NULL""",
                claim.tenant, claim.route, claim.key,
            )


def _replayed(status: int, body: Any) -> Response[Any]:
    media = PROBLEM_JSON if status >= 400 else "application/json"
    return Response(body, status_code=status, media_type=media, headers={REPLAYED: "true"})
