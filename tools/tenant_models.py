"""Tenants' own embedding models: which one each tenant uses (Postgres), where its weights are
(DATA_DIR), and the few a replica holds in memory."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import asyncpg

from tools.embed import Embedder, SentenceTransformerEmbedder
from tools.errors import EmbeddingError

log = logging.getLogger(__name__)
PREFIX = "tenant-model:"
"""How vectors made by a tenant's model are labelled: `tenant-model:<model id>`."""

Loader = Callable[[Path, str], Embedder]
"""Loads a model's weights from a folder, under a name (runs in a worker thread)."""


def model_name(model_id: str) -> str:
    return PREFIX + model_id


def model_id(name: str) -> str | None:
    return name.removeprefix(PREFIX) if name.startswith(PREFIX) else None


def load_model(path: Path, name: str) -> Embedder:
    return SentenceTransformerEmbedder(str(path), name=name)


async def active_models(conn: asyncpg.Pool | asyncpg.Connection) -> dict[str, str]:
    """Each tenant that uses a model of its own, and that model's name."""
    rows = await conn.fetch("SELECT tenant_id, id FROM retrieval_models WHERE active")
    return {r["tenant_id"]: model_name(r["id"]) for r in rows}


async def active_model(conn: asyncpg.Pool | asyncpg.Connection, tenant: str) -> str | None:
    found = await conn.fetchval(
        "SELECT id FROM retrieval_models WHERE tenant_id = $1 AND active", tenant)
    return None if found is None else model_name(found)


class ModelCache:
    """Tenants' models loaded on first use, at most `held` at a time: the one used longest ago
    is let go (it finishes what it was asked, then stops), and loaded again when next used."""

    def __init__(self, pool: asyncpg.Pool, data_dir: Path, *, held: int = 4,
                 loader: Loader = load_model) -> None:
        self.pool, self.data_dir, self.held = pool, data_dir, held
        self._loader = loader
        self._models: OrderedDict[str, Embedder] = OrderedDict()
        self._loading: dict[str, asyncio.Future[Embedder]] = {}

    def loaded(self, name: str) -> Embedder | None:
        return self._models.get(name)

    async def get(self, name: str) -> Embedder:
        held = self._models.get(name)
        if held is not None:
            self._models.move_to_end(name)
            return held
        pending = self._loading.get(name)
        if pending is None:  # one load per model, however many searches wait for it
            pending = self._loading[name] = asyncio.ensure_future(self._load(name))
        try:
            return await asyncio.shield(pending)
        finally:
            if pending.done():
                self._loading.pop(name, None)

    async def _load(self, name: str) -> Embedder:
        found = model_id(name)
        path = None if found is None else await self.pool.fetchval(
            "SELECT path FROM retrieval_models WHERE id = $1", found)
        if path is None:
            raise EmbeddingError(name, "no such tenant model is recorded")
        folder = self.data_dir / path
        if not folder.is_dir():
            raise EmbeddingError(name, f"its weights are not at {folder}: replicas must share "
                                       "DATA_DIR (or the folder was deleted)")
        embedder = await asyncio.to_thread(self._loader, folder, name)
        self._models[name] = embedder
        while len(self._models) > self.held:
            _, dropped = self._models.popitem(last=False)
            close = getattr(dropped, "close", None)
            if close is not None:
                close(finish=True)
        return embedder
