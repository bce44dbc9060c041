"""Turns whose replica is gone, in Postgres: leases that ran out are taken over by a live
replica, each takeover kept with the turn, and what the turn had stored is loaded to go on from.

A replica renews the lease of the turns it runs every third of `TURN_LEASE_S`. One whose lease
ran out belongs to a replica that died (or stalled for two thirds of a lease): the first live
replica to see it takes it over, under a row lock, so only one does.
"""

from __future__ import annotations

from collections.abc import Collection

import msgspec

from planner._db import PostgresTables, jsonb_text
from planner.errors import TurnNotFound
from planner.events import Problem, Takeover
from planner.pauses import load_saved
from planner.records import SavedTurn

MAX_TAKEOVERS = 3
"""A turn taken over this often is marked interrupted instead: it may be what stops its
replicas (a tool's output that exhausts memory, say), and must not take them all down."""


class Abandoned(msgspec.Struct, frozen=True):
    """A turn this replica just took over."""

    tenant: str
    turn_id: str
    takeover: Takeover
    streamed: bool
    """Whether its client was streaming it (and may reconnect for the rest)."""


_takeover = msgspec.json.Decoder(Takeover)
_GAVE_UP = jsonb_text(Problem(
    type="/problems/turn-interrupted", title="Turn interrupted", status=503,
    detail=f"the replicas running this turn stopped {MAX_TAKEOVERS + 1} times before it "
           "finished, so it is not taken over again; send the message again to retry"))
_EVAL = jsonb_text(Problem(
    type="/problems/turn-interrupted", title="Turn interrupted", status=503,
    detail="the process running this eval run's turn stopped before it finished; the run "
           "runs the case again"))


def _lapsed(lease_s: str, mine: str) -> str:
    """SQL: a running turn whose lease ran out `lease_s` ago and that is not among `mine`
    (the parameters' placeholders)."""
    return (f"status = 'running' AND NOT id = ANY({mine}::text[]) "
            f"AND heartbeat_at < now() - make_interval(secs => {lease_s})")


class TakeoverQueries(PostgresTables):
    """The leases of `PostgresTurnStore`: renewing them, handing them over, taking over those
    that ran out."""

    async def heartbeat(self, owner: str, turn_ids: Collection[str]) -> list[str]:
        """Renew the lease of the turns `owner` is running now; returns those among them that
        another replica has taken over (this one stalled past its lease) and must stop here.
        A turn it wrote but is not running (its request failed between the two) runs out of
        lease and is taken over."""
        if not turn_ids:
            return []
        rows = await self.pool.fetch(
            """WITH renewed AS (
                   UPDATE turns SET heartbeat_at = now()
                   WHERE owner = $1 AND status = 'running' AND id = ANY($2::text[]))
               SELECT id FROM turns
               WHERE id = ANY($2::text[]) AND owner <> $1 AND status = 'running'""",
            owner, list(turn_ids),
        )
        return [r["id"] for r in rows]

    async def release(self, owner: str, turn_ids: Collection[str]) -> None:
        """Hand over turns this replica stops running (it is shutting down): their leases end
        now, so the next replica to look takes them over."""
        await self.pool.execute(
            """UPDATE turns SET heartbeat_at = '-infinity'
               WHERE owner = $1 AND status = 'running' AND id = ANY($2::text[])""",
            owner, list(turn_ids),
        )

    async def take_over_abandoned(self, owner: str, lease_s: float,
                                  running: Collection[str] = ()) -> list[Abandoned]:
        """Running turns whose lease ran out become `owner`'s, each takeover kept with its turn
        (but not those it is `running` itself, whose leases it is late to renew).
        One taken over MAX_TAKEOVERS times already is marked interrupted instead; so is an eval
        run's, whose tools were answered by the run and which the run itself starts again."""
        async with self.pool.acquire() as conn, conn.transaction():
            mine = list(running)
            await conn.execute(
                f"""UPDATE turns SET status = 'interrupted', finished_at = now(), error = $3::jsonb
                    WHERE {_lapsed("$1", "$4")} AND jsonb_array_length(takeovers) >= $2""",
                lease_s, MAX_TAKEOVERS, _GAVE_UP, mine)
            await conn.execute(
                f"""UPDATE turns SET status = 'interrupted', finished_at = now(), error = $2::jsonb
                    WHERE {_lapsed("$1", "$3")} AND conversation_id IN (
                        SELECT id FROM conversations WHERE eval_run IS NOT NULL)""",
                lease_s, _EVAL, mine)
            rows = await conn.fetch(
                f"""WITH lapsed AS (
                       SELECT id, owner FROM turns WHERE {_lapsed("$2", "$3")}
                       FOR UPDATE SKIP LOCKED)
                   UPDATE turns t SET owner = $1::text, heartbeat_at = now(),
                          takeovers = t.takeovers || jsonb_build_array(jsonb_build_object(
                              'from', l.owner, 'by', $1::text, 'at', now()))
                   FROM lapsed l WHERE t.id = l.id
                   RETURNING t.tenant_id, t.id, t.takeovers -> -1 AS takeover,
                             coalesce((t.request ->> 'stream')::boolean, false) AS streamed""",
                owner, lease_s, mine,
            )
        return [Abandoned(r["tenant_id"], r["id"], _takeover.decode(r["takeover"]),
                          r["streamed"]) for r in rows]

    async def load_taken(self, tenant: str, turn_id: str) -> SavedTurn:
        """A turn taken over: what it had stored, with every call that had not ended."""
        saved = await load_saved(self.pool, tenant, turn_id, "status = 'running'")
        if saved is None:
            raise TurnNotFound(turn_id)
        return saved

