"""What a registry learns from use: learned examples and negatives written, shown and deleted,
every replica's index kept in step, and each tenant's choice to learn or not."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from tools import learned, store
from tools.learned import LearnedExample, NewExample, SearchFinds
from tools.registry import ToolRegistry


class ToolExamples(msgspec.Struct, frozen=True, kw_only=True):
    """A tool's example requests: those registered with it, and those learnt from use."""

    namespace: str
    name: str
    registered: list[str]
    learned: list[LearnedExample]
    found_by_search: int
    """Requests for which the model had to find the tool with `search_tools` (retrieval missed
    it) before a good call of it."""
    learn_from_use: bool
    """Whether the tool learns (its spec's `learn_from_use` and its tenant's setting)."""


class RetrievalSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    learning: bool = True
    """Learn examples from the tenant's turns; false stops learning (what was learnt stays
    until deleted)."""


class Learning:
    """The learned side of a registry: each write is one transaction that also tells every
    replica, and this replica's index takes it at once."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry

    async def settings(self, tenant: str) -> RetrievalSettings:
        on = await self.registry.pool.fetchval(
            "SELECT learning FROM retrieval_settings WHERE tenant_id = $1", tenant)
        return RetrievalSettings(learning=on is not False)

    async def set_settings(self, tenant: str, settings: RetrievalSettings) -> RetrievalSettings:
        await self.registry.pool.execute(
            """INSERT INTO retrieval_settings (tenant_id, learning) VALUES ($1, $2)
               ON CONFLICT (tenant_id) DO UPDATE SET learning = $2, updated_at = now()""",
            tenant, settings.learning)
        return settings

    async def learn(self, tenant: str, examples: Sequence[NewExample]) -> int:
        """Keep these requests as learned examples of their tools (and count the ones the
        model found with `search_tools`); returns how many became new examples."""
        if not examples:
            return 0
        keys = [(e.namespace, e.name) for e in examples]
        async with self.registry.pool.acquire() as conn, conn.transaction():
            kept = 0
            for example in examples:
                kept += await learned.add(conn, tenant, example, self.registry.model_of(tenant))
                if example.found_by_search:
                    await learned.count_find(conn, tenant, (example.namespace, example.name))
            await store.notify_learned(conn, self.registry.origin, tenant, keys)
        await self.registry.refresh_learned(tenant, keys)
        return kept

    async def confirm(self, tenant: str, turn_id: str, calls: Sequence[str]) -> int:
        """A user rated the turn good: its learned examples (of these calls, or all) count
        fully; returns how many."""
        async with self.registry.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """UPDATE learned_examples SET confirmed = true
                   WHERE tenant_id = $1 AND turn_id = $2 AND (cardinality($3::text[]) = 0
                   OR call_id = ANY($3)) RETURNING namespace, name""", tenant, turn_id, calls)
            keys = [(r["namespace"], r["name"]) for r in rows]
            if keys:
                await store.notify_learned(conn, self.registry.origin, tenant, keys)
        if keys:
            await self.registry.refresh_learned(tenant, keys)
        return len(keys)

    async def reject(self, tenant: str, turn_id: str, wrong: Sequence[NewExample]) -> int:
        """A user rated the turn bad: its learned examples are deleted, and each wrong call's
        request becomes a negative of its tool; returns how many examples were deleted."""
        calls = [e.call_id for e in wrong]
        async with self.registry.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """DELETE FROM learned_examples WHERE tenant_id = $1 AND turn_id = $2
                   AND call_id = ANY($3) RETURNING namespace, name""", tenant, turn_id, calls)
            for example in wrong:
                await learned.negate(conn, tenant, example, self.registry.model_of(tenant))
            keys = [(r["namespace"], r["name"]) for r in rows]
            keys += [(e.namespace, e.name) for e in wrong]
            if keys:
                await store.notify_learned(conn, self.registry.origin, tenant, keys)
        if keys:
            await self.registry.refresh_learned(tenant, keys)
        return len(rows)

    async def examples(self, tenant: str, namespace: str, name: str) -> ToolExamples:
        record = await self.registry.get(tenant, namespace, name)
        key = (namespace, name)
        pool = self.registry.pool
        finds = await learned.search_finds(pool, tenant, key)
        return ToolExamples(
            namespace=namespace, name=name, registered=record.examples,
            learned=await learned.examples_of(pool, tenant, key),
            found_by_search=finds[0].finds if finds else 0,
            learn_from_use=record.learn_from_use and (await self.settings(tenant)).learning)

    async def forget(self, tenant: str, namespace: str, name: str,
                     example_id: int | None = None) -> int:
        """Delete one learned example of a live tool (or all of them); returns how many. The
        tool must exist; one unknown example is ExampleNotFound."""
        await self.registry.get(tenant, namespace, name)
        key = (namespace, name)
        async with self.registry.pool.acquire() as conn, conn.transaction():
            gone = await learned.forget(conn, tenant, key, example_id)
            if gone:
                await store.notify_learned(conn, self.registry.origin, tenant, [key])
        if gone:
            await self.registry.refresh_learned(tenant, [key])
        return gone

    async def search_finds(self, tenant: str) -> list[SearchFinds]:
        return await learned.search_finds(self.registry.pool, tenant)


