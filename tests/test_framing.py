"""The framing shift: measured once per registry, added to every request searched."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from tests.embedders import CountingEmbedder
from tools.embed import SentenceTransformerEmbedder
from tools.framing import FRAMING, SAMPLE_REQUESTS, framed, framing_shift, shift_texts
from tools.index import RankingWeights
from tools.registry import ToolRegistry
from tools.spec import ToolSpec
from tools.text import tool_text

TENANT = "default"


def test_the_shift_is_measured_on_each_sample_request_plain_then_framed() -> None:
    texts = shift_texts()
    assert len(texts) == 2 * len(SAMPLE_REQUESTS) == 80
    assert texts[:40] == list(SAMPLE_REQUESTS)
    assert texts[40] == f"A user asks: {SAMPLE_REQUESTS[0]} Which tool should be used?"
    assert texts[40] == FRAMING.format(request=SAMPLE_REQUESTS[0])


def test_the_shift_is_the_average_move_from_plain_to_framed() -> None:
    plain = np.zeros((40, 2), dtype=np.float32)
    moved = np.tile(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32), (20, 1))
    shift = framing_shift(np.concatenate([plain, moved]))
    assert shift.tolist() == pytest.approx([0.5, 0.5])


def test_vectors_that_are_not_the_sample_texts_are_refused() -> None:
    with pytest.raises(ValueError) as caught:
        framing_shift(np.zeros((3, 2), dtype=np.float32))
    assert str(caught.value) == "3 vectors for 80 sample texts"


def test_a_request_is_moved_by_the_weighted_shift_and_normalised() -> None:
    moved = framed(np.array([1.0, 0.0], dtype=np.float32),
                   np.array([0.0, 1.5], dtype=np.float32), 0.5)
    assert moved.tolist() == pytest.approx([0.8, 0.6])
    assert moved.dtype == np.float32


def test_framing_moves_requests_of_different_kinds_alike(
    embedder: SentenceTransformerEmbedder,
) -> None:
    """What the shift rests on: the average move over half the samples points where the other
    half's does (with the bundled model)."""
    moves = embedder.embed_sync(shift_texts())
    moves = moves[40:] - moves[:40]
    first, second = moves[:20].mean(axis=0), moves[20:].mean(axis=0)
    cosine = float(first @ second) / float(np.linalg.norm(first) * np.linalg.norm(second))
    assert cosine > 0.9


async def test_a_registry_measures_the_shift_once(
    counting_registry: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counting_registry
    await registry.create(TENANT, _tool("gcd", "Greatest common divisor of two integers."))
    fresh = ToolRegistry(registry.pool, counting)
    await fresh.load()
    counting.asked.clear()
    await fresh.search(TENANT, "gcd of 12 and 18", 1)
    await fresh.search(TENANT, "gcd of 12 and 18", 1)
    # The second search reuses the request's vector too (ToolRegistry keeps recent ones).
    assert counting.asked == ["gcd of 12 and 18", *shift_texts()]


async def test_a_search_ranks_by_the_request_moved_by_the_shift(
    counting_registry: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counting_registry
    gcd = _tool("gcd", "Greatest common divisor of two integers.")
    await registry.create(TENANT, gcd)
    await registry.create(TENANT, _tool("weather", "Weather forecast for a city on a given day."))
    request = "What is the greatest common divisor of 12 and 18?"
    [hit, _] = await registry.search(TENANT, request, 2)
    plain = ToolRegistry(registry.pool, counting, weights=RankingWeights(framing=0.0))
    await plain.load()
    [unmoved, _] = await plain.search(TENANT, request, 2)
    query, tool = await registry.embedder.embed([request, tool_text(gcd)])
    moved = framed(query, await registry.framing_shift(), 0.4)
    assert (hit.name, unmoved.name) == ("gcd", "gcd")
    assert (hit.dense, unmoved.dense) == (
        pytest.approx(float(moved @ tool), abs=1e-5), pytest.approx(float(query @ tool), abs=1e-5)
    )
    assert hit.dense != pytest.approx(unmoved.dense, abs=1e-3)


def _tool(name: str, description: str) -> ToolSpec:
    return msgspec.convert({
        "name": name, "description": description, "parameters": {"type": "object"},
        "executor": {"kind": "builtin", "function": "time_now"},
    }, ToolSpec)
