"""What a search embeds for a request, and the query vector made from it."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from tests.embedders import CountingEmbedder
from tools.index import RankingWeights
from tools.registry import ToolRegistry
from tools.request import search_query, search_texts
from tools.spec import ToolSpec
from tools.text import tool_text

TENANT = "default"
GCD_AND_WEATHER = "Find the GCD of 12 and 18. What is the weather in Paris?"


def test_a_request_of_one_sentence_is_embedded_plain_and_framed() -> None:
    assert search_texts("Find the GCD of 12 and 18. Thanks!", 0.35) == [
        "Find the GCD of 12 and 18. Thanks!",
        "A user asks: Find the GCD of 12 and 18. Thanks! Which tool should be used?",
    ]


def test_without_framing_a_request_is_embedded_alone() -> None:
    assert search_texts("Find the GCD of 12 and 18.", 0.0) == ["Find the GCD of 12 and 18."]


def test_a_request_of_several_sentences_is_embedded_whole_framed_and_by_sentence() -> None:
    assert search_texts(GCD_AND_WEATHER, 0.35) == [
        GCD_AND_WEATHER,
        f"A user asks: {GCD_AND_WEATHER} Which tool should be used?",
        "Find the GCD of 12 and 18",
        "What is the weather in Paris?",
    ]


def test_the_query_vector_mixes_the_plain_and_framed_request_by_the_framing_share() -> None:
    texts = search_texts(GCD_AND_WEATHER, 0.25)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]], dtype=np.float32)
    vector, parts = search_query(texts, vectors, 0.25)
    assert vector == pytest.approx([0.75 / np.hypot(0.75, 0.25), 0.25 / np.hypot(0.75, 0.25)])
    assert [p.text for p in parts] == texts[2:]
    assert [p.vector.tolist() for p in parts] == vectors[2:].tolist()


def test_without_framing_the_query_vector_is_the_request_embedding() -> None:
    texts = search_texts(GCD_AND_WEATHER, 0.0)
    vectors = np.array([[0.6, 0.8]] * 3, dtype=np.float32)
    vector, parts = search_query(texts, vectors, 0.0)
    assert vector.tolist() == pytest.approx([0.6, 0.8])
    assert [p.text for p in parts] == ["Find the GCD of 12 and 18", "What is the weather in Paris?"]


def test_texts_and_vectors_that_do_not_pair_up_are_refused() -> None:
    with pytest.raises(ValueError) as caught:
        search_query(["a", "b"], np.zeros((1, 2), dtype=np.float32), 0.35)
    assert str(caught.value) == "2 texts but 1 vectors"


async def test_a_registry_search_embeds_the_request_framed_and_ranks_by_the_mix(
    counting_registry: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counting_registry
    gcd = _tool("gcd", "Greatest common divisor of two integers.")
    await registry.create(TENANT, gcd)
    await registry.create(TENANT, _tool("weather", "Weather forecast for a city on a given day."))
    request = "What is the greatest common divisor of 12 and 18?"
    counting.asked.clear()
    framed = await registry.search(TENANT, request, 2)
    assert counting.asked == [request, search_texts(request, 0.35)[1]]
    plain = ToolRegistry(registry.pool, counting, weights=RankingWeights(framing=0.0))
    await plain.load()
    counting.asked.clear()
    unframed = await plain.search(TENANT, request, 2)
    assert counting.asked == [request]
    assert [h.name for h in framed] == [h.name for h in unframed] == ["gcd", "weather"]
    plain_vector, framed_vector, tool = await registry.embedder.embed(
        [request, search_texts(request, 0.35)[1], tool_text(gcd)]
    )
    mixed = 0.65 * plain_vector + 0.35 * framed_vector
    expected = float(mixed @ tool) / float(np.linalg.norm(mixed))
    assert (framed[0].dense, unframed[0].dense) == (
        pytest.approx(expected, abs=1e-5), pytest.approx(float(plain_vector @ tool), abs=1e-5)
    )


def _tool(name: str, description: str) -> ToolSpec:
    return msgspec.convert({
        "name": name, "description": description, "parameters": {"type": "object"},
        "executor": {"kind": "builtin", "function": "time_now"},
    }, ToolSpec)
