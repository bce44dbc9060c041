"""A tenant's own embedder: trained in the background on its registered and learned examples,
compared with the model in use on a held-out slice of them, swapped in only when it ranks them
better, and rolled back with one call."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import uuid
import zlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
import numpy as np

from tools import store, tenant_models
from tools.embed import Embedder, Vectors
from tools.errors import (
    JobConflict,
    JobNotFound,
    NothingToRollBack,
    NothingToTrain,
    TrainingFailed,
)
from tools.framing import framed
from tools.index import QueryPart, SearchData, ToolIndex
from tools.learned import Learned
from tools.registry import ToolRegistry
from tools.sentences import search_texts
from tools.store import ToolRow
from tools.text import description_clauses
from tools.tuning import TrainingPair, TrainOptions

log = logging.getLogger(__name__)
JobStatus = Literal["running", "swapped", "kept", "failed"]
MIN_EXAMPLES = 20
MIN_HELD_OUT = 5
LAPSED_S = 120
"""A running job whose replica has not written for this long has lost it."""


class TrainRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    epochs: Annotated[int, msgspec.Meta(ge=1, le=20)] = 2
    batch_size: Annotated[int, msgspec.Meta(ge=2, le=128)] = 16
    learning_rate: Annotated[float, msgspec.Meta(gt=0, le=1e-3)] = 5e-5

    def options(self) -> TrainOptions:
        return TrainOptions(epochs=self.epochs, batch_size=self.batch_size,
                            learning_rate=self.learning_rate)


class Recall(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    r1: float
    r5: float

    @property
    def score(self) -> float:
        return (self.r1 + self.r5) / 2


class Comparison(msgspec.Struct, frozen=True, kw_only=True):
    """Both models ranking the tenant's held-out examples (never trained on) among its tools."""

    held_out: int
    trained_on: int
    current: Recall
    candidate: Recall
    better: bool


class RetrievalJob(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: JobStatus
    stage: str
    progress: float
    options: dict[str, Any]
    comparison: Comparison | None
    model_id: str | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class TenantModel(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    job_id: str
    active: bool
    comparison: Comparison
    created_at: datetime
    activated_at: datetime | None


class Example(msgspec.Struct, frozen=True):
    text: str
    key: tuple[str, str]
    learned: bool

    @property
    def held_out(self) -> bool:
        return zlib.crc32(self.text.encode()) % 5 == 0


class RetrievalTraining:
    def __init__(self, registry: ToolRegistry, data_dir: Path, owner: str) -> None:
        self.registry, self.data_dir, self.owner = registry, data_dir, owner
        self.pool: asyncpg.Pool = registry.pool
        self._tasks: set[asyncio.Task[None]] = set()

    # -- jobs ----------------------------------------------------------------------------

    async def start(self, tenant: str, request: TrainRequest) -> RetrievalJob:
        """Begin training for the tenant; JobConflict when one is running already."""
        rows, examples = await self._examples(tenant)
        if len(examples) < MIN_EXAMPLES or sum(e.held_out for e in examples) < MIN_HELD_OUT:
            raise NothingToTrain(len(examples), MIN_EXAMPLES)
        job_id = "rjob_" + uuid.uuid4().hex[:20]
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    """UPDATE retrieval_jobs SET status = 'failed', finished_at = now(),
                              error = 'the replica running it stopped'
                       WHERE tenant_id = $1 AND status = 'running'
                       AND heartbeat_at < now() - make_interval(secs => $2)""",
                    tenant, LAPSED_S)
                await conn.execute(
                    """INSERT INTO retrieval_jobs (tenant_id, id, status, stage, options, owner)
                       VALUES ($1, $2, 'running', 'collecting', $3, $4)""",
                    tenant, job_id, msgspec.json.encode(request).decode(), self.owner)
        except asyncpg.UniqueViolationError as exc:
            running = await self.pool.fetchval(
                "SELECT id FROM retrieval_jobs WHERE tenant_id = $1 AND status = 'running'",
                tenant)
            raise JobConflict(str(running)) from exc
        task = asyncio.create_task(self._run(tenant, job_id, request, rows, examples))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await self.job(tenant, job_id)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def job(self, tenant: str, job_id: str) -> RetrievalJob:
        row = await self.pool.fetchrow(
            """SELECT id, status, stage, progress, options, comparison, model_id, error,
                      created_at, finished_at FROM retrieval_jobs
               WHERE tenant_id = $1 AND id = $2""", tenant, job_id)
        if row is None:
            raise JobNotFound(job_id)
        return _job(row)

    async def _run(self, tenant: str, job_id: str, request: TrainRequest,
                   rows: list[ToolRow], examples: list[Example]) -> None:
        try:
            await self._train_and_compare(tenant, job_id, request, rows, examples)
        except asyncio.CancelledError:
            await self._finish(job_id, "failed", error="the replica running it stopped")
            raise
        except Exception as exc:  # the job records whatever ended it; the service goes on
            log.warning("retrieval training %s failed: %s", job_id, exc)
            await self._finish(job_id, "failed", error=f"{type(exc).__name__}: {exc}")

    async def _train_and_compare(self, tenant: str, job_id: str, request: TrainRequest,
                                 rows: list[ToolRow], examples: list[Example]) -> None:
        texts = {r.tool.key: r.tool.search.text for r in rows}
        train = [e for e in examples if not e.held_out]
        held = [e for e in examples if e.held_out]
        current = await self.registry.embedder_for(tenant)
        pairs = await self._pairs(current, rows, train, texts)
        folder = Path("models") / tenant_folder(tenant) / job_id
        await self._update(job_id, "training", 0.05)
        await self._train(job_id, pairs, self.data_dir / folder, request.options())
        await self._update(job_id, "comparing", 0.85)
        name = tenant_models.model_name(job_id.removeprefix("rjob_"))
        candidate = await asyncio.to_thread(tenant_models.load_model, self.data_dir / folder,
                                            name)
        comparison = Comparison(
            held_out=len(held), trained_on=len(pairs),
            current=await self._recall(current, rows, train, held),
            candidate=await self._recall(candidate, rows, train, held), better=False)
        better = comparison.candidate.score > comparison.current.score
        comparison = msgspec.structs.replace(comparison, better=better)
        close = getattr(candidate, "close", None)
        if close is not None:
            close(finish=True)
        if not better:
            shutil.rmtree(self.data_dir / folder, ignore_errors=True)
            await self._finish(job_id, "kept", comparison=comparison)
            return
        await self._update(job_id, "swapping", 0.9, comparison=comparison)
        model_id = job_id.removeprefix("rjob_")
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO retrieval_models (tenant_id, id, path, base_model, job_id,
                       comparison) VALUES ($1, $2, $3, $4, $5, $6)""",
                tenant, model_id, str(folder), self.registry.embedder.model_name, job_id,
                msgspec.json.encode(comparison).decode())
        await self.activate(tenant, model_id)
        await self._finish(job_id, "swapped", comparison=comparison, model_id=model_id)

    # -- models --------------------------------------------------------------------------

    async def models(self, tenant: str) -> list[TenantModel]:
        rows = await self.pool.fetch(
            """SELECT id, job_id, active, comparison, created_at, activated_at
               FROM retrieval_models WHERE tenant_id = $1 ORDER BY created_at DESC""", tenant)
        return [TenantModel(id=r["id"], job_id=r["job_id"], active=r["active"],
                            comparison=msgspec.json.decode(r["comparison"], type=Comparison),
                            created_at=r["created_at"], activated_at=r["activated_at"])
                for r in rows]

    async def activate(self, tenant: str, model_id: str | None) -> None:
        """Make this model the tenant's (None: the general one), on every replica: recorded
        and announced in one transaction; this replica's index is rebuilt before it returns."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE retrieval_models SET active = false WHERE tenant_id = $1 AND active",
                tenant)
            if model_id is not None:
                await conn.execute(
                    """UPDATE retrieval_models SET active = true, activated_at = now()
                       WHERE tenant_id = $1 AND id = $2""", tenant, model_id)
            await store.notify_model(conn, self.registry.origin, tenant)
        await self.registry.use_model(
            tenant, None if model_id is None else tenant_models.model_name(model_id))

    async def rollback(self, tenant: str) -> str | None:
        """Go back to the model the tenant used before its current one (the general one when
        there was none); returns the id of the model now in use (None: the general one)."""
        rows = await self.pool.fetch(
            """SELECT id, active FROM retrieval_models WHERE tenant_id = $1
               AND activated_at IS NOT NULL ORDER BY activated_at DESC""", tenant)
        if not rows or not rows[0]["active"]:
            raise NothingToRollBack()
        previous = rows[1]["id"] if len(rows) > 1 else None
        await self.activate(tenant, previous)
        if previous is not None:  # the rolled-back model is not "before" it any more
            await self.pool.execute(
                "UPDATE retrieval_models SET activated_at = NULL WHERE id = $1", rows[0]["id"])
        else:
            await self.pool.execute(
                "UPDATE retrieval_models SET activated_at = NULL WHERE tenant_id = $1", tenant)
        return str(previous) if previous is not None else None

    # -- the parts -----------------------------------------------------------------------

    async def _examples(self, tenant: str) -> tuple[list[ToolRow], list[Example]]:
        rows = await store.load_live(self.pool, tenant)
        examples = [Example(text, r.tool.key, False)
                    for r in rows for text in r.tool.search.examples]
        live = {r.tool.key for r in rows}
        learned = await self.pool.fetch(
            """SELECT namespace, name, text FROM learned_examples WHERE tenant_id = $1
               ORDER BY id""", tenant)
        examples += [Example(r["text"], (r["namespace"], r["name"]), True) for r in learned
                     if (r["namespace"], r["name"]) in live]
        return rows, list({e.text: e for e in examples}.values())

    async def _pairs(self, embedder: Embedder, rows: list[ToolRow], train: list[Example],
                     texts: dict[tuple[str, str], str]) -> list[TrainingPair]:
        """Each training example with its tool's text, and as hard negative the tool the
        current model ranks first among the wrong ones (the tenant's own near misses)."""
        index = await self._index(embedder, rows, train)
        queries = await embedder.embed([e.text for e in train])
        pairs = []
        for example, vector in zip(train, queries, strict=True):
            hits = index.search(vector, example.text, 3)
            wrong = next(((h.namespace, h.name) for h in hits
                          if (h.namespace, h.name) != example.key), None)
            pairs.append(TrainingPair(request=example.text, tool=texts[example.key],
                                      negative=None if wrong is None else texts[wrong]))
        return pairs

    async def _index(self, embedder: Embedder, rows: list[ToolRow], train: Sequence[Example]
                     ) -> ToolIndex:
        """The tenant's tools as `embedder` sees them, with only the training examples."""
        index = ToolIndex(embedder.dim, self.registry.weights)
        tool_vectors = await embedder.embed([r.tool.search.text for r in rows])
        for row, vector in zip(rows, tool_vectors, strict=True):
            mine = [e for e in train if e.key == row.tool.key]
            registered = [e.text for e in mine if not e.learned]
            clauses = description_clauses(row.tool.namespace, row.tool.name,
                                          row.tool.description)
            search = SearchData(model=embedder.model_name, text=row.tool.search.text,
                                vector=vector, examples=registered,
                                example_vectors=await _embedded(embedder, registered),
                                clauses=clauses, clause_vectors=await _embedded(embedder, clauses),
                                keywords=row.tool.search.keywords)
            index.upsert(msgspec.structs.replace(row.tool, search=search))
            taught = [e.text for e in mine if e.learned]
            if taught:
                index.set_learned(row.tool.key, Learned(
                    texts=taught, examples=await _embedded(embedder, taught),
                    weights=np.ones(len(taught), dtype=np.float32),
                    negatives=np.zeros((0, embedder.dim), dtype=np.float32)))
        return index

    async def _recall(self, embedder: Embedder, rows: list[ToolRow], train: list[Example],
                      held: list[Example]) -> Recall:
        """R@1 and R@5 of the held-out examples among the tenant's tools, searched as the
        registry searches (framing shift, sentences)."""
        index = await self._index(embedder, rows, train)
        shift = await self.registry.framing_shift(embedder)
        hits1 = hits5 = 0
        for example in held:
            texts = search_texts(example.text)
            vectors = await embedder.embed(texts)
            parts = [QueryPart(text=t, vector=v) for t, v in zip(texts[1:], vectors[1:],
                                                                 strict=True)]
            found = index.search(framed(vectors[0], shift, self.registry.weights.framing),
                                 example.text, 5, parts=parts)
            keys = [(h.namespace, h.name) for h in found]
            hits1 += keys[:1] == [example.key]
            hits5 += example.key in keys
        n = max(1, len(held))
        return Recall(model=embedder.model_name, r1=round(hits1 / n, 4), r5=round(hits5 / n, 4))

    async def _train(self, job_id: str, pairs: list[TrainingPair], out: Path,
                     options: TrainOptions) -> None:
        """Train in a process of its own (tools/tuning.py), its progress written to the job."""
        with tempfile.NamedTemporaryFile("wb", suffix=".json") as file:
            file.write(msgspec.json.encode(pairs))
            file.flush()
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tools.tuning", "--base", self.registry.embedder.model_name,
                "--pairs", file.name, "--out", str(out),
                "--options", msgspec.json.encode(options).decode(),
                "--threads", str(os.cpu_count() or 1),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                assert child.stdout is not None
                async for line in child.stdout:
                    step = json.loads(line)
                    await self._update(job_id, "training",
                                       0.05 + 0.8 * step["step"] / step["steps"])
                _, errors = await child.communicate()
            finally:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
        if child.returncode != 0:
            tail = errors.decode(errors="replace").strip().splitlines()[-3:]
            raise TrainingFailed(child.returncode or -1, " | ".join(tail))

    async def _update(self, job_id: str, stage: str, progress: float,
                      comparison: Comparison | None = None) -> None:
        await self.pool.execute(
            """UPDATE retrieval_jobs SET stage = $2, progress = $3, heartbeat_at = now(),
                      comparison = coalesce($4, comparison) WHERE id = $1""",
            job_id, stage, round(progress, 3),
            None if comparison is None else msgspec.json.encode(comparison).decode())

    async def _finish(self, job_id: str, status: JobStatus, *, error: str | None = None,
                      comparison: Comparison | None = None, model_id: str | None = None) -> None:
        await self.pool.execute(
            """UPDATE retrieval_jobs SET status = $2, stage = 'done', progress = 1,
                      error = $3, comparison = coalesce($4, comparison), model_id = $5,
                      finished_at = now(), heartbeat_at = now() WHERE id = $1""",
            job_id, status, error,
            None if comparison is None else msgspec.json.encode(comparison).decode(), model_id)


def tenant_folder(tenant: str) -> str:
    """A folder name for a tenant id, whatever characters it holds."""
    return f"t{zlib.crc32(tenant.encode()):08x}"


async def _embedded(embedder: Embedder, texts: list[str]) -> Vectors:
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return await embedder.embed(texts)


def _job(row: asyncpg.Record) -> RetrievalJob:
    comparison = row["comparison"]
    return RetrievalJob(
        id=row["id"], status=row["status"], stage=row["stage"],
        progress=round(float(row["progress"]), 3), options=json.loads(row["options"]),
        comparison=None if comparison is None else msgspec.json.decode(comparison,
                                                                       type=Comparison),
        model_id=row["model_id"], error=row["error"], created_at=row["created_at"],
        finished_at=row["finished_at"])
