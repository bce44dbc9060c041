"""Embedders for tests: the real one, counting what it is asked to embed, or slowed down."""

from __future__ import annotations

import asyncio

from tools.embed import SentenceTransformerEmbedder, Vectors
from tools.errors import EmbeddingError


class CountingEmbedder:
    """The real embedder, counting the texts it is asked for; `fail` makes it refuse."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.asked: list[str] = []
        self.fail = False

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def dim(self) -> int:
        return self.inner.dim

    async def embed(self, texts: list[str]) -> Vectors:
        self.asked.extend(texts)
        if self.fail:
            raise EmbeddingError(self.model_name, "refused on purpose")
        return await self.inner.embed(texts)


class SerialSlowEmbedder(CountingEmbedder):
    """The real embedder behind a lock, each call taking at least `delay_s` once `slow` is
    set: an embedder that serves one request at a time, as the CPU one does, only slower."""

    def __init__(self, inner: SentenceTransformerEmbedder, delay_s: float) -> None:
        super().__init__(inner)
        self.delay_s = delay_s
        self.lock = asyncio.Lock()
        self.slow = False

    async def embed(self, texts: list[str]) -> Vectors:
        async with self.lock:
            if self.slow:
                await asyncio.sleep(self.delay_s)
            return await super().embed(texts)
