"""In-memory search over one tenant's live tools: dense similarity and BM25, fused."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import numpy as np
import numpy.typing as npt

from tools.embed import Vectors
from tools.keywords import KeywordIndex

ToolKey = tuple[str, str]  # (namespace, name)


class RankingWeights(msgspec.Struct, frozen=True, kw_only=True):
    """How dense and keyword relevance combine into one score (tuned by bench/retrieval.py)."""

    keyword: float = 0.3
    """Share of the fused score that comes from BM25 (normalised to the best match)."""
    examples: float = 1.0
    """Weight of the best-matching example request against the tool's own text."""


class IndexedTool(msgspec.Struct, frozen=True, kw_only=True):
    namespace: str
    name: str
    version: int
    description: str
    tags: frozenset[str]
    keyword_text: str
    vector: Vectors
    """The tool text's embedding, shape (dim,)."""
    example_vectors: Vectors
    """One row per example request, shape (n, dim); n may be 0."""

    @property
    def key(self) -> ToolKey:
        return (self.namespace, self.name)


class SearchHit(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    namespace: str
    version: int
    description: str
    score: float
    dense: float
    keyword: float


class ToolIndex:
    """All live tools of one tenant, in slots of a growable matrix."""

    def __init__(self, dim: int, weights: RankingWeights | None = None) -> None:
        self.dim = dim
        self.weights = weights or RankingWeights()
        self._slots: dict[ToolKey, int] = {}
        self._tools: list[IndexedTool | None] = []
        self._free: list[int] = []
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._live = np.zeros(0, dtype=bool)
        # Example rows are appended and tombstoned (owner -1), and compacted when half are dead.
        self._examples = np.zeros((0, dim), dtype=np.float32)
        self._example_owner = np.zeros(0, dtype=np.int64)
        self._example_rows: dict[int, tuple[int, int]] = {}
        self._example_count = 0
        self._dead_examples = 0
        self._keywords = KeywordIndex()

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: ToolKey) -> bool:
        return key in self._slots

    def get(self, key: ToolKey) -> IndexedTool | None:
        slot = self._slots.get(key)
        return None if slot is None else self._tools[slot]

    def upsert(self, tool: IndexedTool) -> None:
        if tool.vector.shape != (self.dim,):
            raise ValueError(
                f"vector of {tool.name!r} has shape {tool.vector.shape}, not ({self.dim},)"
            )
        slot = self._slots.get(tool.key)
        if slot is None:
            slot = self._free.pop() if self._free else self._grow()
            self._slots[tool.key] = slot
        else:
            self._drop_examples(slot)
        self._tools[slot] = tool
        self._matrix[slot] = tool.vector
        self._live[slot] = True
        self._add_examples(slot, tool.example_vectors)
        self._keywords.add(slot, tool.keyword_text)

    def remove(self, key: ToolKey) -> None:
        slot = self._slots.pop(key, None)
        if slot is None:
            return
        self._tools[slot] = None
        self._live[slot] = False
        self._matrix[slot] = 0.0
        self._drop_examples(slot)
        self._keywords.remove(slot)
        self._free.append(slot)

    def search(
        self,
        query_vector: Vectors,
        query_text: str,
        k: int,
        *,
        namespace: str | None = None,
        tags: Iterable[str] = (),
    ) -> list[SearchHit]:
        size = len(self._tools)
        if size == 0 or k <= 0:
            return []
        dense = self._dense_scores(query_vector, size)
        keyword = self._keywords.scores(query_text, size)
        eligible = self._eligible(size, namespace, frozenset(tags))
        best_keyword = float(keyword[eligible].max()) if eligible.any() else 0.0
        keyword_norm = keyword / best_keyword if best_keyword > 0 else keyword
        w = self.weights.keyword
        fused = (1.0 - w) * dense + w * keyword_norm
        fused[~eligible] = -np.inf
        return self._top(fused, dense, keyword_norm, min(k, int(eligible.sum())))

    def _dense_scores(self, query: Vectors, size: int) -> npt.NDArray[np.float32]:
        dense = self._matrix[:size] @ query
        count = self._example_count
        if count > self._dead_examples and self.weights.examples > 0:
            owners = self._example_owner[:count]
            sims = self._examples[:count] @ query
            live = owners >= 0
            best = np.full(size, -2.0, dtype=np.float32)
            np.maximum.at(best, owners[live], sims[live])
            has = best > -2.0
            w = self.weights.examples
            dense[has] = (dense[has] + w * best[has]) / (1.0 + w)
        return dense

    def _eligible(
        self, size: int, namespace: str | None, tags: frozenset[str]
    ) -> npt.NDArray[np.bool_]:
        mask = self._live[:size].copy()
        if namespace is None and not tags:
            return mask
        for slot, tool in enumerate(self._tools):
            if tool is None:
                continue
            if (namespace is not None and tool.namespace != namespace) or not tags <= tool.tags:
                mask[slot] = False
        return mask

    def _top(
        self,
        fused: npt.NDArray[np.float32],
        dense: npt.NDArray[np.float32],
        keyword: npt.NDArray[np.float32],
        k: int,
    ) -> list[SearchHit]:
        if k <= 0:
            return []
        top = np.argpartition(-fused, k - 1)[:k] if k < len(fused) else np.arange(len(fused))
        # Ties break on (namespace, name) so equal scores always come back in the same order.
        ordered = sorted(top.tolist(), key=lambda s: (-fused[s], self._tools[s].key))  # type: ignore[union-attr]
        hits = []
        for slot in ordered:
            tool = self._tools[slot]
            assert tool is not None
            hits.append(
                SearchHit(
                    name=tool.name,
                    namespace=tool.namespace,
                    version=tool.version,
                    description=tool.description,
                    score=round(float(fused[slot]), 6),
                    dense=round(float(dense[slot]), 6),
                    keyword=round(float(keyword[slot]), 6),
                )
            )
        return hits

    def _grow(self) -> int:
        slot = len(self._tools)
        self._tools.append(None)
        if slot >= len(self._matrix):
            capacity = max(64, 2 * len(self._matrix))
            matrix = np.zeros((capacity, self.dim), dtype=np.float32)
            matrix[: len(self._matrix)] = self._matrix
            live = np.zeros(capacity, dtype=bool)
            live[: len(self._live)] = self._live
            self._matrix, self._live = matrix, live
        return slot

    def _add_examples(self, slot: int, vectors: Vectors) -> None:
        n = len(vectors)
        if n == 0:
            return
        end = self._example_count + n
        if end > len(self._examples):
            capacity = max(256, 2 * end)
            grown = np.zeros((capacity, self.dim), dtype=np.float32)
            grown[: self._example_count] = self._examples[: self._example_count]
            owners = np.full(capacity, -1, dtype=np.int64)
            owners[: self._example_count] = self._example_owner[: self._example_count]
            self._examples, self._example_owner = grown, owners
        self._examples[self._example_count : end] = vectors
        self._example_owner[self._example_count : end] = slot
        self._example_rows[slot] = (self._example_count, end)
        self._example_count = end

    def _drop_examples(self, slot: int) -> None:
        rows = self._example_rows.pop(slot, None)
        if rows is None:
            return
        self._example_owner[rows[0] : rows[1]] = -1
        self._dead_examples += rows[1] - rows[0]
        if self._dead_examples * 2 > self._example_count:
            self._compact_examples()

    def _compact_examples(self) -> None:
        count = self._example_count
        keep = np.flatnonzero(self._example_owner[:count] >= 0)
        self._examples[: len(keep)] = self._examples[keep]
        self._example_owner[: len(keep)] = self._example_owner[keep]
        self._example_owner[len(keep) : count] = -1
        self._example_count, self._dead_examples = len(keep), 0
        self._example_rows = {}
        for row, owner in enumerate(self._example_owner[: len(keep)].tolist()):
            start, _ = self._example_rows.get(owner, (row, row))
            self._example_rows[owner] = (start, row + 1)
