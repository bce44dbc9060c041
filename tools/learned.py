"""Learned examples and negatives in Postgres: requests that led to a good call of a tool, kept
per tenant and tool, near-duplicates merged and capped; and requests a user said were answered
with the wrong tool."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec
import numpy as np

from tools.embed import Vectors

Key = tuple[str, str]  # (namespace, name)
PER_TOOL = 50
"""Learned examples kept per tool: more add little once a tool's requests are covered."""
MERGE_COSINE = 0.95
"""A request this close to a learned example of the same tool is counted as a use of it."""


class LearnedExample(msgspec.Struct, frozen=True, kw_only=True):
    """A request that led to a good call of the tool, as the REST API shows it."""

    id: int
    text: str
    version: int
    """The tool version the call was made to."""
    found_by_search: bool
    """The model found the tool with `search_tools`: retrieval had missed it for this request."""
    uses: int
    """Requests merged into this one (near-duplicates of it)."""
    confirmed: bool
    """A user rated the turn it came from good."""
    turn_id: str
    call_id: str
    created_at: datetime
    last_used_at: datetime


class NewExample(msgspec.Struct, frozen=True, kw_only=True):
    """A request to learn for one tool, embedded."""

    namespace: str
    name: str
    version: int
    text: str
    vector: Vectors
    found_by_search: bool
    turn_id: str
    call_id: str


class Learned(msgspec.Struct, frozen=True, kw_only=True):
    """What one tool has learnt, as the index uses it: example rows with their weights (uses,
    confirmation and search finds count), and negatives; each row's model in `models` and
    `negative_models` (empty: all by the model asked for)."""

    texts: list[str]
    examples: Vectors
    weights: Vectors
    negatives: Vectors
    models: list[str] = []
    negative_models: list[str] = []

    @property
    def empty(self) -> bool:
        return len(self.examples) == 0 and len(self.negatives) == 0

    def of_model(self, model: str) -> Learned:
        """Only the rows `model` embedded (a tenant's vectors of another model are not
        comparable with its tools')."""
        if not self.models and not self.negative_models:
            return self
        mine = [m == model for m in self.models]
        theirs = [m == model for m in self.negative_models]
        return Learned(texts=[t for t, keep in zip(self.texts, mine, strict=True) if keep],
                       examples=self.examples[mine], weights=self.weights[mine],
                       negatives=self.negatives[theirs])


def _bytes(vector: Vectors) -> bytes:
    return vector.astype("<f4", copy=False).tobytes()


def _rows(blobs: Sequence[bytes], dim: int) -> Vectors:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(-1, dim).copy()


def example_weight(uses: int, confirmed: bool, found_by_search: bool) -> float:
    """How much one learned example counts: a confirmed one, or one retrieval had missed,
    twice; repeated requests a little more (log), so a popular phrasing does not drown the
    rest."""
    return (2.0 if confirmed or found_by_search else 1.0) * (1.0 + float(np.log(uses)))


async def add(conn: asyncpg.Connection, tenant: str, example: NewExample, model: str) -> bool:
    """Learn `example`, merged into a near-duplicate when the tool has one, the least useful
    dropped past `PER_TOOL`; returns whether a new row was kept. Run in a transaction: the
    tool's rows are locked so two replicas learning for one tool do not both insert."""
    rows = await conn.fetch(
        """SELECT id, embedding, uses, confirmed, found_by_search FROM learned_examples
           WHERE tenant_id = $1 AND namespace = $2 AND name = $3 AND embedding_model = $4
           ORDER BY id FOR UPDATE""",
        tenant, example.namespace, example.name, model)
    dim = len(example.vector)
    held = _rows([r["embedding"] for r in rows], dim)
    if len(held):
        cosines = held @ example.vector
        best = int(np.argmax(cosines))
        if cosines[best] >= MERGE_COSINE:
            await conn.execute(
                """UPDATE learned_examples SET uses = uses + 1, last_used_at = now(),
                          found_by_search = found_by_search OR $2 WHERE id = $1""",
                rows[best]["id"], example.found_by_search)
            return False
    await conn.execute(
        """INSERT INTO learned_examples (tenant_id, namespace, name, version, text,
               embedding_model, embedding, found_by_search, turn_id, call_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        tenant, example.namespace, example.name, example.version, example.text, model,
        _bytes(example.vector), example.found_by_search, example.turn_id, example.call_id)
    if len(rows) >= PER_TOOL:
        await conn.execute("DELETE FROM learned_examples WHERE id = $1",
                           rows[_least_useful(held, rows)]["id"])
    return True


def _least_useful(held: Vectors, rows: Sequence[asyncpg.Record]) -> int:
    """The example to drop: never one a user confirmed or one retrieval had missed while others
    remain; among the rest the most redundant (closest to another example), the oldest first
    on a tie."""
    similar = held @ held.T
    np.fill_diagonal(similar, -1.0)
    redundancy = similar.max(axis=1)
    keep = np.array([r["confirmed"] or r["found_by_search"] for r in rows])
    if keep.all():
        keep[:] = False
    redundancy = np.where(keep, -np.inf, redundancy)
    return int(np.argmax(redundancy))  # ties: the first, which is the oldest (ORDER BY id)


async def negate(conn: asyncpg.Connection, tenant: str, example: NewExample, model: str) -> None:
    """Record that `example` was the wrong request for its tool."""
    await conn.execute(
        """INSERT INTO learned_negatives (tenant_id, namespace, name, text, embedding_model,
               embedding, turn_id, call_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        tenant, example.namespace, example.name, example.text, model, _bytes(example.vector),
        example.turn_id, example.call_id)


async def learned_of(conn: asyncpg.Connection | asyncpg.Pool, tenant: str, keys: Sequence[Key],
                     model: str, dim: int) -> dict[Key, Learned]:
    """What these tools of the tenant have learnt, embedded by `model` (each key present)."""
    names = [k[0] for k in keys], [k[1] for k in keys]
    examples = await conn.fetch(
        """SELECT namespace, name, text, embedding, uses, confirmed, found_by_search
           FROM learned_examples WHERE tenant_id = $1 AND embedding_model = $4
           AND (namespace, name) IN (SELECT * FROM unnest($2::text[], $3::text[])) ORDER BY id""",
        tenant, *names, model)
    negatives = await conn.fetch(
        """SELECT namespace, name, embedding FROM learned_negatives
           WHERE tenant_id = $1 AND embedding_model = $4
           AND (namespace, name) IN (SELECT * FROM unnest($2::text[], $3::text[])) ORDER BY id""",
        tenant, *names, model)
    return _grouped(keys, examples, negatives, dim)


async def load_all(conn: asyncpg.Connection | asyncpg.Pool, dim: int,
                   tenant: str | None = None) -> dict[str, dict[Key, Learned]]:
    """What every tenant (or one) has learnt, by tenant and tool, each tool's vectors those of
    the model most of them are by (`Learned.of_model` keeps one model's)."""
    examples = await conn.fetch(
        """SELECT tenant_id, namespace, name, text, embedding, embedding_model, uses, confirmed,
                  found_by_search
           FROM learned_examples WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY id""",
        tenant)
    negatives = await conn.fetch(
        """SELECT tenant_id, namespace, name, embedding, embedding_model FROM learned_negatives
           WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY id""", tenant)
    tenants = {r["tenant_id"] for r in (*examples, *negatives)}
    return {
        t: _grouped(
            sorted({(r["namespace"], r["name"]) for r in (*examples, *negatives)
                    if r["tenant_id"] == t}),
            [r for r in examples if r["tenant_id"] == t],
            [r for r in negatives if r["tenant_id"] == t], dim)
        for t in tenants
    }


async def texts_of_other_models(conn: asyncpg.Connection | asyncpg.Pool, tenant: str,
                                model: str) -> list[tuple[int, str]]:
    """(id, text) of the tenant's learned examples and negatives another model embedded; a
    negative's id is negated."""
    rows = await conn.fetch(
        """SELECT id, text FROM learned_examples WHERE tenant_id = $1 AND embedding_model <> $2
           UNION ALL
           SELECT -id, text FROM learned_negatives WHERE tenant_id = $1 AND embedding_model <> $2
           ORDER BY 1""", tenant, model)
    return [(r["id"], r["text"]) for r in rows]


async def re_embed(conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[int],
                   vectors: Sequence[Vectors], model: str) -> None:
    """Store these vectors (by `model`) for the examples (and negated ids: negatives)."""
    for table, sign in (("learned_examples", 1), ("learned_negatives", -1)):
        chosen = [(sign * i, _bytes(v)) for i, v in zip(ids, vectors, strict=True)
                  if i * sign > 0]
        if chosen:
            await conn.executemany(
                f"UPDATE {table} SET embedding = $2, embedding_model = $3 WHERE id = $1",
                [(i, blob, model) for i, blob in chosen])


def _grouped(keys: Sequence[Key], examples: Sequence[asyncpg.Record],
             negatives: Sequence[asyncpg.Record], dim: int) -> dict[Key, Learned]:
    found: dict[Key, _Rows] = {key: _Rows() for key in keys}
    for r in examples:
        rows = found[(r["namespace"], r["name"])]
        rows.texts.append(r["text"])
        rows.blobs.append(r["embedding"])
        rows.weights.append(example_weight(r["uses"], r["confirmed"], r["found_by_search"]))
        rows.models.append(r.get("embedding_model", ""))
    for r in negatives:
        rows = found[(r["namespace"], r["name"])]
        rows.negatives.append(r["embedding"])
        rows.negative_models.append(r.get("embedding_model", ""))
    return {key: Learned(texts=rows.texts, examples=_rows(rows.blobs, dim),
                         weights=np.array(rows.weights, dtype=np.float32),
                         negatives=_rows(rows.negatives, dim),
                         models=rows.models if any(rows.models) else [],
                         negative_models=rows.negative_models
                         if any(rows.negative_models) else [])
            for key, rows in found.items()}


class _Rows:
    """One tool's learned rows as they are read."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.blobs: list[bytes] = []
        self.weights: list[float] = []
        self.models: list[str] = []
        self.negatives: list[bytes] = []
        self.negative_models: list[str] = []


async def examples_of(conn: asyncpg.Connection | asyncpg.Pool, tenant: str, key: Key
                      ) -> list[LearnedExample]:
    rows = await conn.fetch(
        """SELECT id, text, version, found_by_search, uses, confirmed, turn_id, call_id,
                  created_at, last_used_at
           FROM learned_examples WHERE tenant_id = $1 AND namespace = $2 AND name = $3
           ORDER BY id""", tenant, *key)
    return [LearnedExample(**dict(r)) for r in rows]


async def forget(conn: asyncpg.Connection | asyncpg.Pool, tenant: str, key: Key,
                 example_id: int | None) -> int:
    """Delete one learned example of the tool, or all of them (None); returns how many."""
    status = await conn.execute(
        """DELETE FROM learned_examples WHERE tenant_id = $1 AND namespace = $2 AND name = $3
           AND ($4::bigint IS NULL OR id = $4)""", tenant, *key, example_id)
    return int(status.split()[-1])


async def count_find(conn: asyncpg.Connection, tenant: str, key: Key) -> None:
    """One more request for which the model had to find the tool with `search_tools`."""
    await conn.execute(
        """INSERT INTO search_finds (tenant_id, namespace, name, finds) VALUES ($1, $2, $3, 1)
           ON CONFLICT (tenant_id, namespace, name)
           DO UPDATE SET finds = search_finds.finds + 1, last_found_at = now()""",
        tenant, *key)


class SearchFinds(msgspec.Struct, frozen=True, kw_only=True):
    """How often the model had to find a tool with `search_tools` before a good call of it:
    the requests retrieval missed."""

    namespace: str
    name: str
    finds: int
    last_found_at: datetime


async def search_finds(conn: asyncpg.Connection | asyncpg.Pool, tenant: str,
                       key: Key | None = None) -> list[SearchFinds]:
    """Each tool's count (or one tool's), the most found first."""
    rows = await conn.fetch(
        """SELECT namespace, name, finds, last_found_at FROM search_finds
           WHERE tenant_id = $1 AND ($2::text IS NULL OR (namespace = $2 AND name = $3))
           ORDER BY finds DESC, namespace, name""",
        tenant, *(key or (None, None)))
    return [SearchFinds(**dict(r)) for r in rows]
