"""The tool registry: versioned writes to Postgres, kept searchable in per-tenant indexes."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal

import asyncpg
import msgspec
import numpy as np

from tools import learned, store, tenant_models
from tools.admission import Admission
from tools.embed import Embedder, Vectors
from tools.errors import EmbeddingError, ToolExists, ToolNotFound
from tools.executors import ExecutableTool
from tools.framing import framed, framing_shift, shift_texts
from tools.index import (
    IndexedTool,
    QueryPart,
    RankingWeights,
    SearchData,
    SearchHit,
    ToolIndex,
)
from tools.sealed import SecretBox
from tools.search_queue import SearchQueue
from tools.sentences import search_texts
from tools.spec import ToolRecord, ToolSpec
from tools.store import CurrentTool, NewVersion, ToolRow
from tools.tenant_models import ModelCache
from tools.text import description_clauses, keyword_text, tool_text

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with (texts embedded so far, texts to embed) as a bulk write proceeds."""

EMBED_BATCH = 256
PREFETCHED = 64
ASKED = 1024
"""Recent requests whose vectors are kept for the turns that follow them."""
"""Query embeddings started ahead of their search and not yet used, kept at most."""


class WriteResult(msgspec.Struct, frozen=True, kw_only=True):
    created: int
    updated: int
    unchanged: int
    records: list[ToolRecord]
    created_keys: frozenset[tuple[str, str]] = frozenset()
    """(namespace, name) of the tools that did not exist, or were deleted, before."""
    deleted: int = 0


class ToolRegistry:
    """Writes go to Postgres first; each replica's in-memory indexes follow every change."""

    def __init__(
        self, pool: asyncpg.Pool, embedder: Embedder, *, weights: RankingWeights | None = None,
        queue: SearchQueue | None = None, box: SecretBox | None = None,
        models: ModelCache | None = None,
    ) -> None:
        self.pool = pool
        self.models = models
        """Tenants' own embedding models (tools/tenant_models.py); None: every tenant uses
        `embedder`."""
        self.tenant_models: dict[str, str] = {}
        """The tenants that use a model of their own, and its name."""
        self.box = box
        """Seals tools' secrets for storage (tools/sealed.py); None: stored as given."""
        self.admission = Admission()
        """What specs must meet against the service's configuration (backends, egress)."""
        self.embedder = embedder
        self.queue = queue or SearchQueue()
        self.weights = weights or RankingWeights()
        self.origin = uuid.uuid4().hex  # tells this replica's own notifications apart
        self._indexes: dict[str, ToolIndex] = {}
        self._change_ids: dict[tuple[str, str, str], int] = {}
        self._prefetched: OrderedDict[str, tuple[list[str], asyncio.Future[Vectors]]] = (
            OrderedDict()
        )
        self._asked: OrderedDict[tuple[str, str], Vectors] = OrderedDict()
        """The vectors of recent requests by (model, request), which later turns search with
        as context."""
        self._shifts: dict[str, Vectors] = {}
        self._shift_lock = asyncio.Lock()

    # -- reads -------------------------------------------------------------------------------

    async def search(
        self,
        tenant: str,
        query: str,
        k: int = 10,
        *,
        namespace: str | None = None,
        tags: Sequence[str] = (),
        bounded: bool = False,
        context: Sequence[str] = (),
    ) -> list[SearchHit]:
        """The k best tools for `query`, in a conversation whose earlier user messages, the
        last first, are `context`. A `bounded` search (one a client sent) is turned away with
        SearchBusy when the embedder already has its queue's worth waiting."""
        index = self._indexes.get(tenant)
        if index is None or len(index) == 0:
            return []
        with self.queue.admitted(bounded=bounded):
            embedder = await self.embedder_for(tenant)
            return await self._search(index, embedder, query, k, namespace, tags, context)

    async def embedder_for(self, tenant: str) -> Embedder:
        """The model the tenant's tools and requests are embedded with: its own, or the
        general one."""
        name = self.tenant_models.get(tenant)
        if name is None or self.models is None:
            return self.embedder
        return await self.models.get(name)

    def model_of(self, tenant: str) -> str:
        return self.tenant_models.get(tenant, self.embedder.model_name)

    async def _search(
        self, index: ToolIndex, embedder: Embedder, query: str, k: int, namespace: str | None,
        tags: Sequence[str], context: Sequence[str],
    ) -> list[SearchHit]:
        model = embedder.model_name
        pending = self._prefetched.pop(f"{model}\n{query}", None)
        if pending is not None:
            texts, future = pending
            vectors = await future
        else:
            texts = search_texts(query)
            if (model, query) in self._asked and len(texts) == 1:  # asked already (a router)
                vectors = self._asked[(model, query)][None, :]
            else:
                vectors = await embedder.embed(texts)
        self._remember(model, query, vectors[0])
        shift = await self.framing_shift(embedder) if self.weights.framing else None
        before = await self._vectors(embedder, context)
        moved = [self._framed(v, shift) for v in (vectors[0], *before)]
        parts = [QueryPart(text=t, vector=v) for t, v in zip(texts[1:], vectors[1:], strict=True)]
        earlier = [QueryPart(text=t, vector=v) for t, v in zip(context, moved[1:], strict=True)]
        return index.search(moved[0], query, k, namespace=namespace, tags=tags, parts=parts,
                            context=earlier)

    async def vector_of(self, query: str, tenant: str | None = None) -> Vectors:
        """The embedding of a request by the tenant's model (the general one when no tenant is
        given), shared with its search: the one being prefetched for it, or one of a recent
        search, or made now (and kept for the search to come)."""
        embedder = self.embedder if tenant is None else await self.embedder_for(tenant)
        model = embedder.model_name
        pending = self._prefetched.get(f"{model}\n{query}")
        if pending is not None:
            return (await pending[1])[0]
        if (model, query) not in self._asked:
            self._remember(model, query, (await embedder.embed([query]))[0])
        return self._asked[(model, query)]

    def _remember(self, model: str, query: str, vector: Vectors) -> None:
        self._asked[(model, query)] = vector
        self._asked.move_to_end((model, query))
        while len(self._asked) > ASKED:
            self._asked.popitem(last=False)

    def _framed(self, vector: Vectors, shift: Vectors | None) -> Vectors:
        return vector if shift is None else framed(vector, shift, self.weights.framing)

    async def _vectors(self, embedder: Embedder, texts: Sequence[str]) -> list[Vectors]:
        """The vectors of earlier requests: most were searched for in their own turn."""
        model = embedder.model_name
        missing = [t for t in dict.fromkeys(texts) if (model, t) not in self._asked]
        if missing:
            for text, vector in zip(missing, await embedder.embed(missing), strict=True):
                self._remember(model, text, vector)
        return [self._asked[(model, t)] for t in texts]

    async def framing_shift(self, embedder: Embedder | None = None) -> Vectors:
        """The embedder's framing shift (tools/framing.py; the general embedder's by default),
        measured on the first call. The service calls this at start-up, so the first search
        does not wait for it."""
        embedder = embedder or self.embedder
        model = embedder.model_name
        if model in self._shifts:  # every search asks; only the first measures
            return self._shifts[model]
        async with self._shift_lock:
            if model not in self._shifts:
                self._shifts[model] = framing_shift(await embedder.embed(shift_texts()))
        return self._shifts[model]

    def prefetch(self, tenant: str, query: str) -> None:
        """Start embedding `query` (and its sentences) for a search of `tenant` that is about to
        come (a turn's message, while the turn is written), so that search waits less. Each
        prefetch serves one search; unused ones are dropped, oldest first, past `PREFETCHED`."""
        index = self._indexes.get(tenant)
        name = self.tenant_models.get(tenant)
        embedder = self.embedder if name is None or self.models is None \
            else self.models.loaded(name)
        key = f"{self.model_of(tenant)}\n{query}"
        if index is None or len(index) == 0 or embedder is None or key in self._prefetched:
            return
        texts = search_texts(query)
        future = asyncio.ensure_future(embedder.embed(texts))
        future.add_done_callback(_retrieve_exception)  # a failure is raised by the search
        self._prefetched[key] = (texts, future)
        while len(self._prefetched) > PREFETCHED:
            self._prefetched.popitem(last=False)[1][1].cancel()

    def tenants(self) -> list[str]:
        return sorted(self._indexes)

    def index_size(self, tenant: str) -> int:
        index = self._indexes.get(tenant)
        return 0 if index is None else len(index)

    def keys(self, tenant: str) -> list[tuple[str, str]]:
        """(namespace, name) of every live tool of the tenant, sorted."""
        index = self._indexes.get(tenant)
        return [] if index is None else index.keys()

    async def get(self, tenant: str, namespace: str, name: str) -> ToolRecord:
        record = await store.get_current(self.pool, tenant, namespace, name)
        if record is None:
            raise ToolNotFound(namespace, name)
        return record

    async def get_version(self, tenant: str, namespace: str, name: str, version: int) -> ToolRecord:
        record = await store.get_version(self.pool, tenant, namespace, name, version)
        if record is None:
            raise ToolNotFound(namespace, name, version)
        return record

    async def executables(
        self, tenant: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], ExecutableTool]:
        """The live versions of these tools with what it takes to call them (secrets included)."""
        found = await store.live_specs(self.pool, tenant, keys, self.box)
        return {key: ExecutableTool(record=record, tenant=tenant, secret=secret,
                                     secret_headers=headers)
                for key, (record, secret, headers) in found.items()}

    async def executables_at(
        self, tenant: str, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str], ExecutableTool]:
        """These versions of tools that are not deleted, ready to call (secrets included)."""
        found = await store.pinned_specs(self.pool, tenant, keys, self.box)
        return {key: ExecutableTool(record=record, tenant=tenant, secret=secret,
                                     secret_headers=headers)
                for key, (record, secret, headers) in found.items()}

    async def versions(self, tenant: str, namespace: str, name: str) -> list[ToolRecord]:
        records = await store.list_versions(self.pool, tenant, namespace, name)
        if not records:
            raise ToolNotFound(namespace, name)
        return records

    async def list_tools(
        self, tenant: str, *, namespace: str | None, tag: str | None, cursor: str | None, limit: int
    ) -> store.Page:
        return await store.list_current(
            self.pool, tenant, namespace=namespace, tag=tag, cursor=cursor, limit=limit
        )

    # -- writes ------------------------------------------------------------------------------

    async def create(self, tenant: str, spec: ToolSpec) -> ToolRecord:
        result = await self.write(tenant, [spec], mode="create")
        return result.records[0]

    async def put(self, tenant: str, spec: ToolSpec) -> tuple[ToolRecord, bool]:
        """Create or make a new version; returns the record and whether it was created.

        Putting the spec a tool already has makes no new version and returns the current one.
        """
        result = await self.write(tenant, [spec], mode="upsert")
        if result.unchanged:
            return await self.get(tenant, spec.namespace, spec.name), False
        return result.records[0], result.created == 1

    async def write(
        self,
        tenant: str,
        specs: Sequence[ToolSpec],
        *,
        mode: Literal["create", "upsert"] = "upsert",
        progress: Progress | None = None,
        remove: Sequence[tuple[str, str]] = (),
        prefix: tuple[str, ...] = (),
    ) -> WriteResult:
        """Register specs in one transaction: all of them become searchable, or none is written.

        `remove` names tools (namespace, name) to delete in the same transaction.
        """
        await self.admission.check(specs, prefix)
        keys = [(s.namespace, s.name) for s in specs]
        async with self.pool.acquire() as conn:
            before = await store.current_tools(conn, tenant, keys, box=self.box)
        if mode == "create":
            _refuse_existing(specs, before)
        changed = [s for s in specs if not _same(s, before.get((s.namespace, s.name)))]
        prepared = await self._prepare(await self.embedder_for(tenant), changed, before,
                                       progress)
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await store.current_tools(conn, tenant, [*keys, *remove], lock=True,
                                                box=self.box)
            if mode == "create":
                _refuse_existing(specs, locked)
            versions = [_numbered(p, locked.get(_key(p))) for p in prepared]
            created_keys = frozenset(_key(v) for v in versions if _is_new(locked.get(_key(v))))
            change_id = await store.next_change_id(conn)
            await store.write_versions(conn, tenant, versions, change_id, self.box)
            deleted = [k for k in remove if await store.mark_deleted(conn, tenant, *k, change_id)]
            await store.notify(conn, self.origin, change_id)
            created_at = await conn.fetchval("SELECT now()")
        for v in versions:
            self._apply(tenant, _indexed(v), change_id)
        for key in deleted:
            self._remove(tenant, key, change_id)
        return WriteResult(
            created=len(created_keys),
            updated=len(versions) - len(created_keys),
            unchanged=len(specs) - len(versions),
            records=[
                ToolRecord.of(v.spec, v.version, created_at, v.spec.secret is not None,
                              list(v.spec.secret_headers))
                for v in versions
            ],
            created_keys=created_keys,
            deleted=len(deleted),
        )

    async def delete(self, tenant: str, namespace: str, name: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await store.current_tools(conn, tenant, [(namespace, name)], lock=True,
                                      box=self.box)
            change_id = await store.next_change_id(conn)
            if not await store.mark_deleted(conn, tenant, namespace, name, change_id):
                raise ToolNotFound(namespace, name)
            await store.notify(conn, self.origin, change_id)
        self._remove(tenant, (namespace, name), change_id)

    # -- keeping the indexes in step ---------------------------------------------------------

    async def load(self) -> int:
        """Rebuild every tenant's index from Postgres, embedding again what another model made
        and the clauses of rows stored before they were cut (or cut by other rules)."""
        if self.models is not None:
            self.tenant_models = await tenant_models.active_models(self.pool)
        rows = await self._fresh_rows(await store.load_live(self.pool))
        self._indexes.clear()
        self._change_ids.clear()
        for row in rows:
            self._apply(row.tenant_id, row.tool, row.change_id)
        everything = await learned.load_all(self.pool, self.embedder.dim)
        for tenant, tools in everything.items():
            model = self.model_of(tenant)
            for key, what in tools.items():
                self._index(tenant).set_learned(key, what.of_model(model))
        return len(rows)

    async def _fresh_rows(self, rows: list[ToolRow]) -> list[ToolRow]:
        """The rows, those embedded by another model than their tenant's (or cut into clauses
        by other rules) embedded again, and stored so."""
        current: list[ToolRow] = []
        stale: list[ToolRow] = []
        for row in rows:
            (stale if _is_stale(row, self.model_of(row.tenant_id)) else current).append(row)
        for tenant in sorted({r.tenant_id for r in stale}):
            mine = [r for r in stale if r.tenant_id == tenant]
            embedder = await self.embedder_for(tenant)
            log.info("embedding %d tools of %s again with %s", len(mine), tenant,
                     embedder.model_name)
            current += await self._refresh(embedder, mine)
        return current

    async def use_model(self, tenant: str, name: str | None) -> None:
        """Search the tenant's tools with this model from now on (None: the general one). Its
        index is built afresh beside the one in use, which answers until the new one is
        complete; tools and learned examples another model embedded are embedded again."""
        if self.tenant_models.get(tenant) == name:
            return
        embedder = self.embedder if name is None or self.models is None \
            else await self.models.get(name)
        if embedder.dim != self.embedder.dim:
            raise EmbeddingError(embedder.model_name, f"makes {embedder.dim}-dimensional "
                                 f"vectors; the registry holds {self.embedder.dim}")
        rows = await store.load_live(self.pool, tenant)
        stale = [r for r in rows if _is_stale(r, embedder.model_name)]
        rows = [r for r in rows if r not in stale] + await self._refresh(embedder, stale)
        index = ToolIndex(self.embedder.dim, self.weights)
        for row in rows:
            index.upsert(row.tool)
        what = await self._learned_with(embedder, tenant)
        for key, taught in what.items():
            index.set_learned(key, taught)
        if name is None:
            self.tenant_models.pop(tenant, None)
        else:
            self.tenant_models[tenant] = name
        self._indexes[tenant] = index
        for row in rows:
            self._change_ids[(tenant, *row.tool.key)] = row.change_id

    async def _learned_with(self, embedder: Embedder, tenant: str
                            ) -> dict[tuple[str, str], learned.Learned]:
        """What the tenant's tools learnt, with vectors by `embedder`: those another model made
        are embedded again and stored."""
        stale = await learned.texts_of_other_models(self.pool, tenant, embedder.model_name)
        if stale:
            vectors = await self._embed(embedder, [text for _, text in stale], None)
            await learned.re_embed(self.pool, [i for i, _ in stale], vectors,
                                   embedder.model_name)
        found = (await learned.load_all(self.pool, self.embedder.dim, tenant)).get(tenant, {})
        return {key: what.of_model(embedder.model_name) for key, what in found.items()}

    async def refresh_learned(self, tenant: str, keys: Sequence[tuple[str, str]]) -> None:
        """Take what these tools of the tenant have learnt from Postgres into its index (after
        this replica or another changed it)."""
        found = await learned.learned_of(self.pool, tenant, keys, self.model_of(tenant),
                                         self.embedder.dim)
        for key, what in found.items():
            self._index(tenant).set_learned(key, what)

    def tool_vector(self, tenant: str, key: tuple[str, str]) -> Vectors | None:
        """The live tool's row in the tenant's index (None: not indexed)."""
        index = self._indexes.get(tenant)
        return None if index is None else index.vector(key)

    async def apply_change(self, payload: str) -> None:
        """Handle a NOTIFY payload `origin:change_id` from any replica (own ones are skipped)."""
        origin, _, change = payload.partition(":")
        if origin == self.origin:
            return
        if change.startswith(store.LEARNED):
            tenant, keys = store.learned_change(change)
            await self.refresh_learned(tenant, keys)
            return
        if change.startswith(store.MODEL):
            await self.sync_model(change.removeprefix(store.MODEL))
            return
        for row in await store.load_change(self.pool, int(change)):
            if row.deleted:
                self._remove(row.tenant_id, row.tool.key, row.change_id)
                continue
            if _is_stale(row, self.model_of(row.tenant_id)) and row.tool.search.model \
                    != self.embedder.model_name:
                # Embedded by a tenant model this replica does not use (yet): the tenant may
                # have changed models, which rebuilds its index, this tool included.
                await self.sync_model(row.tenant_id)
            for fresh in await self._fresh_rows([row]):
                self._apply(row.tenant_id, fresh.tool, row.change_id)

    async def sync_model(self, tenant: str) -> None:
        """Use the model Postgres says the tenant uses, if this replica does not yet."""
        if self.models is not None:
            await self.use_model(tenant, await tenant_models.active_model(self.pool, tenant))

    def _apply(self, tenant: str, tool: IndexedTool, change_id: int) -> None:
        if self._is_newer(tenant, tool.key, change_id):
            self._index(tenant).upsert(tool)

    def _index(self, tenant: str) -> ToolIndex:
        index = self._indexes.get(tenant)
        if index is None:
            index = self._indexes[tenant] = ToolIndex(self.embedder.dim, self.weights)
        return index

    def _remove(self, tenant: str, key: tuple[str, str], change_id: int) -> None:
        if self._is_newer(tenant, key, change_id) and tenant in self._indexes:
            self._indexes[tenant].remove(key)

    def _is_newer(self, tenant: str, key: tuple[str, str], change_id: int) -> bool:
        """Changes to one tool get rising ids (taken under its row lock); ignore stale ones."""
        full = (tenant, *key)
        if change_id < self._change_ids.get(full, -1):
            return False
        self._change_ids[full] = change_id
        return True

    # -- embedding ---------------------------------------------------------------------------

    async def _prepare(
        self,
        embedder: Embedder,
        specs: Sequence[ToolSpec],
        before: dict[tuple[str, str], CurrentTool],
        progress: Progress | None,
    ) -> list[NewVersion]:
        """Embed what changed; reuse stored vectors where the embedded texts are the same. The
        texts are made off the event loop (thousands of specs take a while)."""
        wanted = await asyncio.to_thread(
            lambda: [self._search_texts(embedder.model_name, s) for s in specs])
        current = [before.get((s.namespace, s.name)) for s in specs]
        stored = [None if c is None else c.search for c in current]
        made = await self._embed_parts(embedder, wanted, stored, progress)
        return [NewVersion(spec=spec, version=0, search=search)
                for spec, search in zip(specs, made, strict=True)]

    def _search_texts(self, model: str, spec: ToolSpec) -> SearchData:
        """What a spec is found by, its vectors not made yet."""
        clauses = description_clauses(spec.namespace, spec.name, spec.description)
        none = np.zeros((0, self.embedder.dim), dtype=np.float32)
        return SearchData(model=model, text=tool_text(spec),
                          vector=none.reshape(-1), examples=list(spec.examples),
                          example_vectors=none, clauses=clauses, clause_vectors=none,
                          keywords=keyword_text(spec))

    async def _embed_parts(
        self,
        embedder: Embedder,
        wanted: Sequence[SearchData],
        stored: Sequence[SearchData | None],
        progress: Progress | None,
    ) -> list[SearchData]:
        """Each tool's search data with its vectors: a part (text, examples, clauses) whose
        texts are the ones stored, by the same model, keeps its stored vectors; the rest are
        embedded, all in one pass of batches."""
        reusable = [
            [] if old is None or old.model != want.model else old.parts()
            for want, old in zip(wanted, stored, strict=True)
        ]
        todo = [
            text
            for want, old in zip(wanted, reusable, strict=True)
            for i, (texts, _) in enumerate(want.parts())
            if not old or old[i][0] != texts
            for text in texts
        ]
        fresh = iter(await self._embed(embedder, todo, progress))
        dim = self.embedder.dim
        return [
            want.with_vectors([
                old[i][1] if old and old[i][0] == texts
                else _stack([next(fresh) for _ in texts], dim)
                for i, (texts, _) in enumerate(want.parts())
            ])
            for want, old in zip(wanted, reusable, strict=True)
        ]

    async def _embed(self, embedder: Embedder, texts: list[str], progress: Progress | None
                     ) -> list[Vectors]:
        out: list[Vectors] = []
        for start in range(0, len(texts), EMBED_BATCH):
            out.extend(await embedder.embed(texts[start : start + EMBED_BATCH]))
            if progress is not None:
                progress(len(out), len(texts))
        return out

    async def _refresh(self, embedder: Embedder, rows: list[ToolRow]) -> list[ToolRow]:
        """Embed again what is stale in stored rows (see `_is_stale`) and store it."""
        if not rows:
            return []
        model = embedder.model_name
        wanted = [msgspec.structs.replace(r.tool.search, model=model, clauses=_clauses_of(r))
                  for r in rows]
        made = await self._embed_parts(embedder, wanted, [r.tool.search for r in rows], None)
        fresh = [
            msgspec.structs.replace(r, tool=msgspec.structs.replace(r.tool, search=search))
            for r, search in zip(rows, made, strict=True)
        ]
        async with self.pool.acquire() as conn:
            for tenant in {r.tenant_id for r in fresh}:
                await store.update_search(conn, tenant, [r for r in fresh if r.tenant_id == tenant])
        return fresh


def _clauses_of(row: ToolRow) -> list[str]:
    return description_clauses(row.tool.namespace, row.tool.name, row.tool.description)


def _is_stale(row: ToolRow, model: str) -> bool:
    """Embedded by another model, or cut into clauses by other rules (or before there were any)."""
    return row.tool.search.model != model or row.tool.search.clauses != _clauses_of(row)


def _key(v: NewVersion) -> tuple[str, str]:
    return (v.spec.namespace, v.spec.name)


def _is_new(current: CurrentTool | None) -> bool:
    return current is None or current.deleted


def _same(spec: ToolSpec, current: CurrentTool | None) -> bool:
    return (
        current is not None
        and not current.deleted
        and current.spec == spec.without_secret()
        and current.secret == spec.secret
        and current.secret_headers == spec.secret_headers
    )


def _refuse_existing(
    specs: Sequence[ToolSpec], current: dict[tuple[str, str], CurrentTool]
) -> None:
    for spec in specs:
        old = current.get((spec.namespace, spec.name))
        if old is not None and not old.deleted:
            raise ToolExists(spec.namespace, spec.name)


def _numbered(prepared: NewVersion, locked: CurrentTool | None) -> NewVersion:
    return msgspec.structs.replace(prepared, version=1 if locked is None else locked.version + 1)


def _stack(vectors: list[Vectors], dim: int) -> Vectors:
    if not vectors:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack(vectors).astype(np.float32)


def _indexed(v: NewVersion) -> IndexedTool:
    spec = v.spec
    return IndexedTool(namespace=spec.namespace, name=spec.name, version=v.version,
                       description=spec.description, tags=frozenset(spec.tags), search=v.search)


def _retrieve_exception(future: asyncio.Future[Vectors]) -> None:
    """Mark a failed prefetch's exception as seen: the search that uses it raises it again,
    and one that is dropped unused should not log it as lost."""
    if not future.cancelled():
        future.exception()
