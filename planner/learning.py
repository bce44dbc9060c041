"""What retrieval learns from a finished turn: each good call's request becomes a learned example
of its tool, and a user's rating of the turn confirms those examples or turns them into
negatives."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Literal

import asyncpg
import msgspec
import numpy as np

from planner.errors import DecisionInvalid, TurnNotFound
from planner.prompt import SEARCH_TOOLS
from tools.errors import FieldError
from tools.learned import NewExample
from tools.learning import Learning
from tools.sentences import search_texts

log = logging.getLogger(__name__)
Rating = Literal["good", "bad"]


class Feedback(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    rating: Rating
    calls: list[str] = []
    """The calls the rating is about, by id; empty: every call of the turn."""


class FeedbackResult(msgspec.Struct, frozen=True, kw_only=True):
    turn_id: str
    rating: Rating
    calls: list[str]
    """The calls the rating was applied to."""
    confirmed: int
    """Learned examples of these calls now confirmed (good)."""
    removed: int
    """Learned examples of these calls deleted (bad)."""
    negatives: int
    """Requests recorded as the wrong ones for their tools (bad)."""


class GoodCall(msgspec.Struct, frozen=True, kw_only=True):
    """A call that succeeded in a turn, to a registered tool."""

    id: str
    namespace: str
    name: str
    version: int
    found_by_search: bool


class TurnLearning:
    """Learns from turns that completed (never from eval runs' turns, which are scored): run
    off the request path, after the turn's answer is out."""

    def __init__(self, pool: asyncpg.Pool, learning: Learning) -> None:
        self.pool, self.learning = pool, learning
        self._tasks: set[asyncio.Task[int]] = set()

    def after(self, tenant: str, turn_id: str) -> None:
        """Learn from a turn that just completed, in the background."""
        task = asyncio.create_task(self.learn(tenant, turn_id), name=f"learn-{turn_id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[int]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not learn from turn %s: %s", task.get_name().removeprefix("learn-"),
                        task.exception())

    async def settle(self) -> None:
        """Wait for the learning under way (at shutdown, and in tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def learn(self, tenant: str, turn_id: str) -> int:
        """Keep the requests of the turn's good calls as learned examples; returns how many
        new ones were kept. Nothing is learnt from a turn of an eval run, one rated bad, one
        that did not complete, or when the tenant or the tool says not to."""
        turn = await self.pool.fetchrow(
            """SELECT t.status, t.request ->> 'message' AS message, c.eval_run IS NOT NULL AS
                      evaluated, f.rating, f.calls AS rated
               FROM turns t JOIN conversations c ON c.id = t.conversation_id
               LEFT JOIN turn_feedback f ON f.turn_id = t.id
               WHERE t.tenant_id = $1 AND t.id = $2""", tenant, turn_id)
        if (turn is None or turn["status"] != "completed" or turn["evaluated"]
                or turn["rating"] == "bad"
                or not (await self.learning.settings(tenant)).learning):
            return 0
        calls = [c for c in await self._good_calls(tenant, turn_id)
                 if await self._learns(tenant, c)]
        examples = await self._examples(tenant, turn_id, turn["message"], calls)
        kept = await self.learning.learn(tenant, examples)
        if turn["rating"] == "good":  # rated before it was learnt from
            await self.learning.confirm(tenant, turn_id, turn["rated"])
        return kept

    async def _learns(self, tenant: str, call: GoodCall) -> bool:
        learns: bool | None = await self.pool.fetchval(
            """SELECT coalesce((v.spec ->> 'learn_from_use')::boolean, true)
               FROM tools t JOIN tool_versions v USING (tenant_id, namespace, name, version)
               WHERE t.tenant_id = $1 AND t.namespace = $2 AND t.name = $3
               AND t.deleted_at IS NULL""", tenant, call.namespace, call.name)
        return bool(learns)

    async def _good_calls(self, tenant: str, turn_id: str) -> list[GoodCall]:
        """The turn's succeeded calls of registered tools, each tool once (its first call),
        and whether the model found the tool with `search_tools` before calling it."""
        candidates = await self.pool.fetchval(
            "SELECT candidates FROM turns WHERE tenant_id = $1 AND id = $2", tenant, turn_id)
        named = {c["function"]: (c["namespace"], c["name"]) for c in json.loads(candidates)}
        rows = await self.pool.fetch(
            """SELECT id, step, name, version, status, result FROM tool_calls
               WHERE tenant_id = $1 AND turn_id = $2 ORDER BY step, position""",
            tenant, turn_id)
        searched: set[str] = set()  # function names search_tools found new to the turn
        calls: dict[tuple[str, str], GoodCall] = {}
        for r in rows:
            if r["name"] == SEARCH_TOOLS and r["status"] == "succeeded":
                searched |= _found_new(r["result"])
            elif r["status"] == "succeeded" and r["name"] in named and r["version"] is not None:
                key = named[r["name"]]
                calls.setdefault(key, GoodCall(id=r["id"], namespace=key[0], name=key[1],
                                               version=r["version"],
                                               found_by_search=r["name"] in searched))
        return list(calls.values())

    async def _examples(self, tenant: str, turn_id: str, message: str,
                        calls: Sequence[GoodCall]) -> list[NewExample]:
        """Each call's request: the whole message, or, when the turn called several tools and
        the message has several sentences, the sentence closest to the call's tool."""
        if not calls:
            return []
        texts = search_texts(message) if len(calls) > 1 else [message]
        registry = self.learning.registry
        if len(texts) == 1:  # most often embedded already, for the turn's search
            vectors = (await registry.vector_of(message, tenant))[None, :]
        else:
            vectors = await (await registry.embedder_for(tenant)).embed(texts)
        examples = []
        for call in calls:
            pick = 0
            tool = registry.tool_vector(tenant, (call.namespace, call.name))
            if len(texts) > 1 and tool is not None:
                pick = 1 + int(np.argmax(vectors[1:] @ tool))
            examples.append(NewExample(
                namespace=call.namespace, name=call.name, version=call.version, text=texts[pick],
                vector=vectors[pick], found_by_search=call.found_by_search, turn_id=turn_id,
                call_id=call.id))
        return examples

    async def feedback(self, tenant: str, turn_id: str, feedback: Feedback) -> FeedbackResult:
        """Record a user's rating of a turn: good confirms its learned examples, bad deletes
        them and makes each rated call's request a negative of its tool. Rating a turn again
        replaces the rating."""
        status = await self.pool.fetchval(
            "SELECT status FROM turns WHERE tenant_id = $1 AND id = $2", tenant, turn_id)
        if status is None:
            raise TurnNotFound(turn_id)
        calls = await self._good_calls(tenant, turn_id)
        known = [c.id for c in calls]
        errors = [FieldError(f"/calls/{i}", f"{call!r} is not a call of turn {turn_id!r} that "
                             f"succeeded with a registered tool; those are: "
                             f"{', '.join(known) or 'none'}")
                  for i, call in enumerate(feedback.calls) if call not in known]
        if errors:
            raise DecisionInvalid(f"feedback on turn {turn_id!r}: {errors[0].message}", errors)
        rated = [c for c in calls if not feedback.calls or c.id in feedback.calls]
        await self.pool.execute(
            """INSERT INTO turn_feedback (tenant_id, turn_id, rating, calls) VALUES ($1, $2, $3, $4)
               ON CONFLICT (turn_id) DO UPDATE SET rating = $3, calls = $4, created_at = now()""",
            tenant, turn_id, feedback.rating, feedback.calls)
        ids = [c.id for c in rated]
        if feedback.rating == "good":
            confirmed = await self.learning.confirm(tenant, turn_id, ids) if ids else 0
            return FeedbackResult(turn_id=turn_id, rating="good", calls=ids, confirmed=confirmed,
                                  removed=0, negatives=0)
        message = await self.pool.fetchval(
            "SELECT request ->> 'message' FROM turns WHERE id = $1", turn_id)
        wrong = await self._examples(tenant, turn_id, message, rated)
        removed = await self.learning.reject(tenant, turn_id, wrong) if wrong else 0
        return FeedbackResult(turn_id=turn_id, rating="bad", calls=ids, confirmed=0,
                              removed=removed, negatives=len(wrong))


def _found_new(result: str | None) -> set[str]:
    """The tools a `search_tools` call found that the turn did not offer yet."""
    found = (json.loads(result) or {}).get("found", []) if result else []
    return {f["name"] for f in found if isinstance(f, dict) and not f.get("already_offered")}
