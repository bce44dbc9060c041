"""The embedder: ONNX Runtime and torch give the same vectors, in the caller's order."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pytest

from app.errors import SettingsError
from app.settings import load_settings
from tools import embed
from tools.embed import SentenceTransformerEmbedder
from tools.errors import EmbeddingError

TEXTS = [
    "What's the weather in Paris tomorrow?",
    "hi",
    "Book a table for four at an Italian place near the office on Friday at 7pm, "
    "somewhere with a terrace if the forecast is good, and send the invite to the team.",
    "convert 20 usd to eur",
    "",
    "convert 20 usd to eur",
]


@pytest.fixture(scope="module")
def on_torch() -> Iterator[SentenceTransformerEmbedder]:
    model = SentenceTransformerEmbedder(runtime="torch")
    yield model
    model.close()


def test_the_default_runtime_is_onnx_for_the_bundled_model(
    embedder: SentenceTransformerEmbedder,
) -> None:
    assert embedder.runtime == "onnx"


def test_onnx_and_torch_agree_row_by_row(
    embedder: SentenceTransformerEmbedder, on_torch: SentenceTransformerEmbedder
) -> None:
    assert on_torch.runtime == "torch"
    onnx = embedder.embed_sync(TEXTS)
    torch = on_torch.embed_sync(TEXTS)
    assert onnx.shape == torch.shape == (len(TEXTS), embedder.dim)
    assert onnx.dtype == np.float32
    cosines = (onnx * torch).sum(axis=1)
    assert cosines.min() > 0.9999, cosines
    np.testing.assert_allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)
    # Same text, same vector, wherever it sits in the batch.
    np.testing.assert_allclose(onnx[3], onnx[5], atol=1e-6)


def test_batches_and_padding_do_not_change_a_vector(embedder: SentenceTransformerEmbedder) -> None:
    alone = np.stack([embedder.embed_sync([t])[0] for t in TEXTS])
    together = embedder.embed_sync(TEXTS)
    np.testing.assert_allclose(alone, together, atol=1e-5)
    assert embedder.embed_sync([]).shape == (0, embedder.dim)


async def test_embed_runs_off_the_event_loop_and_matches_embed_sync(
    embedder: SentenceTransformerEmbedder,
) -> None:
    got = await embedder.embed(TEXTS[:3])
    np.testing.assert_allclose(got, embedder.embed_sync(TEXTS[:3]), atol=1e-6)


def test_an_unknown_runtime_is_refused_by_name() -> None:
    with pytest.raises(EmbeddingError, match="unknown runtime 'gpu'"):
        SentenceTransformerEmbedder(runtime="gpu")  # type: ignore[arg-type]


def test_a_model_that_cannot_be_exported_runs_on_torch_or_is_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(model: object, *, threads: int) -> None:
        raise embed._NotExportable("export failed: UnsupportedOperatorError: aten::frobnicate")

    monkeypatch.setattr(embed, "_OnnxTransformer", refuse)
    with caplog.at_level(logging.WARNING, logger="tools.embed"):
        fallback = SentenceTransformerEmbedder(runtime="auto")
    assert fallback.runtime == "torch"
    assert "runs on torch: export failed" in caplog.text
    assert fallback.embed_sync(["hi"]).shape == (1, fallback.dim)
    fallback.close()
    with pytest.raises(EmbeddingError, match="cannot run on ONNX Runtime: export failed"):
        SentenceTransformerEmbedder(runtime="onnx")


def test_the_runtime_setting_is_read_and_checked() -> None:
    assert load_settings({}).embedding_runtime == "auto"
    assert load_settings({"EMBEDDING_RUNTIME": "torch"}).embedding_runtime == "torch"
    with pytest.raises(SettingsError, match=r"^EMBEDDING_RUNTIME is invalid .*auto, onnx or torch"):
        load_settings({"EMBEDDING_RUNTIME": "cuda"})
