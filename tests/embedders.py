"""An embedder for tests: the real one, counting what it is asked to embed."""

from __future__ import annotations

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
