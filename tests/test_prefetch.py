"""A turn's message is embedded while the turn is written: the search that follows uses that
embedding once, and prefetches nobody searches for do not pile up."""

from __future__ import annotations

import msgspec
import pytest

from tests.embedders import CountingEmbedder
from tools.errors import EmbeddingError
from tools.registry import PREFETCHED, ToolRegistry
from tools.spec import ToolSpec

TENANT = "default"


@pytest.fixture
async def counted(
    counting_registry: tuple[ToolRegistry, CountingEmbedder],
) -> tuple[ToolRegistry, CountingEmbedder]:
    """One tool registered; the embedder's count starts after it."""
    registry, counting = counting_registry
    await registry.create(TENANT, msgspec.convert({
        "name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "executor": {"kind": "builtin", "function": "time_now"},
    }, ToolSpec))
    counting.asked.clear()
    return registry, counting


async def test_a_prefetched_query_is_embedded_once_for_its_search(
    counted: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counted
    registry.prefetch(TENANT, "weather in Paris")
    hits = await registry.search(TENANT, "weather in Paris", 3)
    assert [h.name for h in hits] == ["get_weather"]
    assert counting.asked == ["weather in Paris"]


async def test_a_request_searched_again_reuses_its_vector(
    counted: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counted
    registry.prefetch(TENANT, "weather in Paris")
    first = await registry.search(TENANT, "weather in Paris", 3)
    # Kept for the turns that follow (their context) and for a router's decision.
    second = await registry.search(TENANT, "weather in Paris", 3)
    assert [h.score for h in first] == [h.score for h in second]
    assert counting.asked == ["weather in Paris"]


async def test_unused_prefetches_are_dropped_oldest_first(
    counted: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counted
    for i in range(PREFETCHED + 2):
        registry.prefetch(TENANT, f"request {i}")
    await registry.search(TENANT, "request 0", 3)
    await registry.search(TENANT, f"request {PREFETCHED + 1}", 3)
    # The two oldest were dropped before they ran; the search for the oldest embedded it
    # itself, and the newest search used its prefetch.
    kept = [f"request {i}" for i in range(2, PREFETCHED + 2)]
    assert sorted(counting.asked) == sorted(["request 0", *kept])


async def test_a_prefetch_for_a_tenant_without_tools_embeds_nothing(
    counted: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counted
    registry.prefetch("nobody", "weather in Paris")
    assert await registry.search("nobody", "weather in Paris", 3) == []
    assert counting.asked == []


async def test_a_failed_prefetch_is_raised_by_its_search(
    counted: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counted
    counting.fail = True
    registry.prefetch(TENANT, "weather in Paris")
    with pytest.raises(EmbeddingError) as raised:
        await registry.search(TENANT, "weather in Paris", 3)
    assert str(raised.value) == "embedding model 'all-MiniLM-L6-v2': refused on purpose"
    assert counting.asked == ["weather in Paris"]


async def test_a_prefetch_embeds_a_requests_sentences_with_it(
    counted: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counted
    request = "Tell me the weather in Paris. Then convert ten miles to kilometres."
    registry.prefetch(TENANT, request)
    hits = await registry.search(TENANT, request, 3)
    assert [h.name for h in hits] == ["get_weather"]
    assert counting.asked == [request, "Tell me the weather in Paris",
                              "convert ten miles to kilometres"]
