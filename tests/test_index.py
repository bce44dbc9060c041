"""ToolIndex.search on hand-made vectors: how a request's sentences change which tools come back."""

from __future__ import annotations

import msgspec
import numpy as np

from tools.embed import Vectors
from tools.index import IndexedTool, QueryPart, SearchData, ToolIndex
from tools.learned import Learned

DIM = 4
GCD, WEATHER, OTHER_A, OTHER_B = np.eye(DIM, dtype=np.float32)


def _unit(vector: Vectors) -> Vectors:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def _tool(name: str, vector: Vectors, namespace: str = "default") -> IndexedTool:
    return IndexedTool(
        namespace=namespace,
        name=name,
        version=1,
        description=name,
        tags=frozenset(),
        search=SearchData(model="test", text=name, vector=_unit(vector), examples=[],
                          example_vectors=np.zeros((0, DIM), dtype=np.float32), clauses=[],
                          clause_vectors=np.zeros((0, DIM), dtype=np.float32), keywords=name),
    )


def _index() -> ToolIndex:
    """Three near-twin GCD tools, one weather tool, and twenty tools about something else."""
    index = ToolIndex(DIM)
    index.upsert(_tool("gcd", GCD))
    index.upsert(_tool("math_gcd", GCD + 0.1 * OTHER_A))
    index.upsert(_tool("calculate_gcd", GCD + 0.1 * OTHER_B))
    index.upsert(_tool("weather_forecast", WEATHER))
    for i in range(20):
        index.upsert(_tool(f"other_{i}", OTHER_A + (i / 20) * OTHER_B))
    return index


REQUEST = _unit(2 * GCD + WEATHER)
SENTENCES = [
    QueryPart(text="gcd of 12 and 18", vector=GCD),
    QueryPart(text="weather in Paris", vector=WEATHER),
]


def test_near_twins_fill_the_top_when_the_request_is_searched_whole() -> None:
    hits = _index().search(REQUEST, "zzz", 3)
    assert [h.name for h in hits] == ["gcd", "calculate_gcd", "math_gcd"]


def test_each_sentence_gets_its_tool_before_a_near_twin_of_another_sentences() -> None:
    hits = _index().search(REQUEST, "zzz", 3, parts=SENTENCES)
    assert [h.name for h in hits] == ["weather_forecast", "gcd", "calculate_gcd"]


def test_hits_found_sentence_by_sentence_come_in_order_of_score() -> None:
    hits = _index().search(REQUEST, "zzz", 10, parts=SENTENCES)
    scores = [h.score for h in hits]
    assert len(hits) == 10
    assert scores == sorted(scores, reverse=True)


def test_one_sentence_searches_as_the_request_alone() -> None:
    index = _index()
    alone = index.search(REQUEST, "zzz", 3)
    assert index.search(REQUEST, "zzz", 3, parts=SENTENCES[:1]) == alone


def test_sentences_only_find_tools_the_filters_allow() -> None:
    index = _index()
    index.upsert(_tool("weather_now", WEATHER, namespace="elsewhere"))
    hits = index.search(REQUEST, "zzz", 4, namespace="elsewhere", parts=SENTENCES)
    assert [(h.namespace, h.name) for h in hits] == [("elsewhere", "weather_now")]


def test_earlier_requests_fill_a_share_of_the_hits_after_the_requests_own() -> None:
    # "Yes, go ahead." after "weather in Paris?": the answer points nowhere useful (the GCD
    # tools here), the request before it to the weather tool.
    earlier = [QueryPart(text="weather in Paris?", vector=WEATHER)]
    hits = _index().search(_unit(GCD), "zzz", 3, context=earlier)
    # One of three from the answer's own ranking, two from the conversation's.
    assert [h.name for h in hits] == ["gcd", "weather_forecast", "math_gcd"]
    assert [h.name for h in _index().search(_unit(GCD), "zzz", 3)] == [
        "gcd", "calculate_gcd", "math_gcd"]


def test_older_requests_weigh_half_as_much_as_the_one_after_them() -> None:
    index = _index()
    last, before = (QueryPart(text="gcd?", vector=GCD),
                    QueryPart(text="weather?", vector=WEATHER))
    hits = index.search(_unit(OTHER_A), "zzz", 2, context=[last, before])
    assert [h.name for h in hits] == ["other_0", "gcd"]
    hits = index.search(_unit(OTHER_A), "zzz", 2, context=[before, last])
    assert [h.name for h in hits] == ["other_0", "weather_forecast"]


def _taught(*vectors: Vectors) -> Learned:
    rows = np.stack([_unit(v) for v in vectors]) if vectors else np.zeros((0, DIM), np.float32)
    return Learned(texts=[f"asked {i}" for i in range(len(vectors))], examples=rows,
                   weights=np.ones(len(vectors), dtype=np.float32),
                   negatives=np.zeros((0, DIM), dtype=np.float32))


def test_a_learned_request_lifts_its_tool_and_survives_the_tools_removal_and_return() -> None:
    index = _index()
    asked = _unit(WEATHER + 1.5 * GCD)  # a request the GCD tools answer better, by vectors
    assert index.search(asked, "zzz", 1)[0].name != "weather_forecast"
    index.set_learned(("default", "weather_forecast"), _taught(*[asked] * 10))
    assert index.search(asked, "zzz", 1)[0].name == "weather_forecast"
    index.remove(("default", "weather_forecast"))
    assert "weather_forecast" not in [h.name for h in index.search(asked, "zzz", 24)]
    index.upsert(_tool("weather_forecast", WEATHER))
    assert index.search(asked, "zzz", 1)[0].name == "weather_forecast"
    index.set_learned(("default", "weather_forecast"), _taught())
    assert index.search(asked, "zzz", 1)[0].name != "weather_forecast"


def test_a_negative_pushes_its_tool_below_its_near_twins_for_that_request() -> None:
    index = _index()
    assert index.search(GCD, "zzz", 1)[0].name == "gcd"
    index.set_learned(("default", "gcd"), msgspec.structs.replace(
        _taught(), negatives=np.stack([GCD])))
    assert [h.name for h in index.search(GCD, "zzz", 2)] == ["calculate_gcd", "math_gcd"]
    assert index.search(WEATHER, "zzz", 1)[0].name == "weather_forecast"  # others unmoved
