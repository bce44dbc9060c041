"""A long tool description is also searched clause by clause: how it is cut, how the index
scores it, and how the clause vectors are stored, reused and brought up to date."""

from __future__ import annotations

import random

import msgspec
import numpy as np
import pytest

from tests.embedders import CountingEmbedder
from tools.clause_matrix import ClauseMatrix
from tools.embed import Vectors
from tools.index import IndexedTool, RankingWeights, SearchData, ToolIndex
from tools.registry import ToolRegistry
from tools.spec import ToolPolicy, ToolSpec
from tools.text import description_clauses

TENANT = "default"
TRAVEL = (
    "Offer discounted hotel and accommodation bookings, along with personalized hotel and "
    "product searches, travel planning, image editing, and more, helping users easily plan "
    "their trips."
)
TRAVEL_CLAUSES = [
    "Trip Tool: Offer discounted hotel and accommodation bookings",
    "Trip Tool: along with personalized hotel and product searches",
    "Trip Tool: travel planning",
    "Trip Tool: image editing",
]


# -- cutting ---------------------------------------------------------------------------------


def test_a_long_description_is_cut_at_sentences_and_commas_under_the_tools_title() -> None:
    assert description_clauses("default", "TripTool", TRAVEL) == TRAVEL_CLAUSES


def test_a_clause_names_the_namespace_as_the_tool_text_does() -> None:
    clauses = description_clauses("travel", "TripTool", TRAVEL)
    assert clauses[0] == "travel Trip Tool: Offer discounted hotel and accommodation bookings"


def test_a_description_under_twenty_words_is_not_cut() -> None:
    short = "Locate restaurants based on certain criteria such as cuisine, location, and diet."
    assert description_clauses("default", "restaurant_finder", short) == []


def test_one_word_pieces_are_not_clauses_and_only_the_first_four_are_kept() -> None:
    listing = "Converts between units: " + ", ".join(
        f"unit {word}" for word in "abcdefghij"
    ) + ", mass, length, and time in one call."
    clauses = description_clauses("default", "convert", listing)
    assert clauses == [f"convert: {c}" for c in [
        "Converts between units: unit a", "unit b", "unit c", "unit d",
    ]]


def test_a_long_description_of_one_clause_is_not_cut() -> None:
    one = " ".join(["word"] * 25)
    assert description_clauses("default", "long", one) == []


# -- the clause matrix -----------------------------------------------------------------------


def test_each_tools_best_clause_stays_right_as_tools_are_replaced_and_removed() -> None:
    rng = random.Random(7)
    dim = 8
    matrix = ClauseMatrix(dim)
    held: dict[int, Vectors] = {}
    queries = np.random.default_rng(7).standard_normal((3, dim)).astype(np.float32)
    for _ in range(400):  # enough removals to pack the matrix several times
        slot = rng.randrange(40)
        if rng.random() < 0.4:
            matrix.drop(slot)
            held.pop(slot, None)
        else:
            rows = np.random.default_rng(rng.randrange(10**6)).standard_normal(
                (rng.randrange(0, 5), dim)
            ).astype(np.float32)
            matrix.put(slot, rows)
            if len(rows):
                held[slot] = rows
            else:
                held.pop(slot, None)
        slots, best = matrix.best(queries)
        assert sorted(slots.tolist()) == sorted(held)
        assert len(matrix) == sum(len(r) for r in held.values())
        for column, s in enumerate(slots.tolist()):
            np.testing.assert_allclose(best[:, column], (queries @ held[s].T).max(axis=1),
                                       atol=1e-5)


# -- the index -------------------------------------------------------------------------------

DIM = 4
HOTELS, PLANNING, EDITING, OTHER = np.eye(DIM, dtype=np.float32)


def _tool(name: str, vector: Vectors, clauses: list[Vectors]) -> IndexedTool:
    return IndexedTool(
        namespace="default",
        name=name,
        version=1,
        description=name,
        tags=frozenset(),
        search=SearchData(
            model="test", text=name, vector=(vector / np.linalg.norm(vector)).astype(np.float32),
            examples=[], example_vectors=np.zeros((0, DIM), dtype=np.float32),
            clauses=[f"clause {i}" for i in range(len(clauses))],
            clause_vectors=np.array(clauses, dtype=np.float32).reshape(-1, DIM), keywords=name),
    )


def _index(weights: RankingWeights) -> ToolIndex:
    """A tool that does three things, and one that is mostly about editing images."""
    index = ToolIndex(DIM, weights)
    index.upsert(_tool("trip_tool", HOTELS + PLANNING + EDITING, [HOTELS, PLANNING, EDITING]))
    index.upsert(_tool("photo_fixer", 0.7 * EDITING + 0.714 * OTHER, []))
    for i in range(10):
        index.upsert(_tool(f"other_{i}", OTHER + (i / 10) * HOTELS, []))
    return index


def test_a_request_for_one_of_several_things_a_tool_does_finds_it_by_that_clause() -> None:
    hits = _index(RankingWeights()).search(EDITING, "zzz", 2)
    assert [h.name for h in hits] == ["trip_tool", "photo_fixer"]
    assert hits[0].dense == pytest.approx((1 / np.sqrt(3) + 1.0) / 2, abs=1e-6)


def test_with_clauses_weighted_zero_the_whole_text_alone_decides() -> None:
    hits = _index(RankingWeights(clauses=0.0)).search(EDITING, "zzz", 2)
    assert [h.name for h in hits] == ["photo_fixer", "trip_tool"]
    assert hits[1].dense == pytest.approx(1 / np.sqrt(3), abs=1e-6)


def test_a_removed_tool_leaves_no_clauses_behind() -> None:
    index = _index(RankingWeights())
    index.remove(("default", "trip_tool"))
    assert [h.name for h in index.search(EDITING, "zzz", 1)] == ["photo_fixer"]


# -- storage ---------------------------------------------------------------------------------


def _trip_tool(**changes: object) -> ToolSpec:
    spec = msgspec.convert({
        "name": "TripTool", "description": TRAVEL,
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "examples": ["book me a hotel in Rome"],
        "executor": {"kind": "builtin", "function": "time_now"},
    }, ToolSpec)
    return msgspec.structs.replace(spec, **changes)


async def _stored_clauses(registry: ToolRegistry) -> tuple[list[str], int]:
    row = await registry.pool.fetchrow(
        "SELECT clause_texts, length(clause_embeddings) AS n FROM tools WHERE name = $1",
        "TripTool",
    )
    assert row is not None
    return list(row["clause_texts"]), row["n"]


async def test_a_tools_clauses_are_embedded_with_it_and_stored(
    counting_registry: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counting_registry
    await registry.create(TENANT, _trip_tool())
    assert counting.asked[2:] == TRAVEL_CLAUSES  # after its text and its example
    assert await _stored_clauses(registry) == (TRAVEL_CLAUSES, 4 * 4 * registry.embedder.dim)


async def test_a_new_version_that_keeps_the_description_embeds_nothing_again(
    counting_registry: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counting_registry
    await registry.create(TENANT, _trip_tool())
    counting.asked.clear()
    record, created = await registry.put(TENANT, _trip_tool(policy=ToolPolicy(timeout_s=3.0)))
    assert (record.version, created, counting.asked) == (2, False, [])
    assert await _stored_clauses(registry) == (TRAVEL_CLAUSES, 4 * 4 * registry.embedder.dim)


async def test_a_tool_stored_before_clauses_existed_gets_them_at_the_next_load(
    counting_registry: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counting_registry
    await registry.create(TENANT, _trip_tool())
    request = "touch up the colours of my holiday photo"
    [fresh] = await registry.search(TENANT, request, 1)
    await registry.pool.execute("UPDATE tools SET clause_texts = '{}', clause_embeddings = ''")
    counting.asked.clear()
    restarted = ToolRegistry(registry.pool, counting)
    assert await restarted.load() == 1
    assert counting.asked == TRAVEL_CLAUSES  # not its text or its example again
    assert await _stored_clauses(registry) == (TRAVEL_CLAUSES, 4 * 4 * registry.embedder.dim)
    [reloaded] = await restarted.search(TENANT, request, 1)
    without = ToolRegistry(registry.pool, counting, weights=RankingWeights(clauses=0.0))
    await without.load()
    [whole_only] = await without.search(TENANT, request, 1)
    assert reloaded.dense == pytest.approx(fresh.dense, abs=1e-6)
    assert reloaded.dense > whole_only.dense


async def test_a_tool_embedded_by_another_model_is_embedded_again_whole_at_load(
    counting_registry: tuple[ToolRegistry, CountingEmbedder],
) -> None:
    registry, counting = counting_registry
    await registry.create(TENANT, _trip_tool())
    text = await registry.pool.fetchval("SELECT embedding_text FROM tools")
    await registry.pool.execute("UPDATE tools SET embedding_model = 'an-older-model'")
    counting.asked.clear()
    assert await ToolRegistry(registry.pool, counting).load() == 1
    assert counting.asked == [text, "book me a hotel in Rome", *TRAVEL_CLAUSES]
    model = await registry.pool.fetchval("SELECT embedding_model FROM tools")
    assert model == registry.embedder.model_name
