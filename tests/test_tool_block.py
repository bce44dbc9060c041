"""A conversation's tool block: kept while the conversation stays on its topic, fresh when it
moves on (planner/tool_block.py)."""

from __future__ import annotations

from planner.tool_block import ADD_MATCH, STRONG_MATCH, Block, Found, compose

WEATHER, CITY, TIME, HOTEL, FLIGHT = (("default", n) for n in
                                      ("weather", "city", "time", "hotel", "flight"))
PREVIOUS = [WEATHER, TIME, CITY]  # not in key order: a kept block keeps its own order
WEAK, MEDIUM, STRONG = ADD_MATCH - 0.1, (ADD_MATCH + STRONG_MATCH) / 2, STRONG_MATCH + 0.1


def test_a_conversations_first_block_is_retrievals_picks_in_key_order() -> None:
    found = [Found(WEATHER, 3.0, dense=STRONG), Found(CITY, 2.0, dense=MEDIUM)]
    assert compose([], found, [], k=8) == Block(
        keys=[CITY, WEATHER], kept=False, why="the conversation's first tool block")


def test_a_follow_up_that_matches_nothing_well_keeps_the_block_as_it_was() -> None:
    found = [Found(HOTEL, 1.5, dense=WEAK), Found(WEATHER, 4.0, by_context=True, dense=WEAK)]
    assert compose(PREVIOUS, found, [WEATHER], k=8) == Block(
        keys=PREVIOUS, kept=True, why="kept, 0 added")


def test_a_follow_up_whose_best_match_the_block_holds_keeps_it_and_appends_good_matches() -> None:
    found = [Found(WEATHER, 3.0, dense=STRONG), Found(HOTEL, 2.0, dense=MEDIUM),
             Found(FLIGHT, 1.0, dense=WEAK)]
    assert compose(PREVIOUS, found, [], k=8).keys == [*PREVIOUS, HOTEL]


def test_a_request_whose_best_match_is_strong_and_new_starts_a_fresh_block() -> None:
    found = [Found(HOTEL, 5.0, dense=STRONG), Found(FLIGHT, 2.0, dense=MEDIUM),
             Found(WEATHER, 3.0, by_context=True, dense=WEAK)]
    assert compose(PREVIOUS, found, [CITY], k=8) == Block(
        keys=[FLIGHT, HOTEL, WEATHER, CITY], kept=False,
        why="a new topic: the request's best match, hotel, is new")


def test_a_tool_the_last_turn_called_stays_even_if_its_block_lacked_it() -> None:
    found = [Found(TIME, 1.0, dense=WEAK)]
    assert compose([WEATHER, TIME], found, [CITY], k=8).keys == [WEATHER, TIME, CITY]


def test_a_block_that_would_grow_past_its_cap_starts_afresh() -> None:
    previous = [("default", f"tool_{i}") for i in range(4)]
    found = [Found(previous[0], 3.0, dense=STRONG), Found(HOTEL, 2.0, dense=MEDIUM)]
    block = compose(previous, found, [], k=2)
    assert block == Block(keys=[HOTEL, previous[0]], kept=False,
                          why="the kept block would exceed 4")


def test_an_unranked_tenant_is_offered_every_tool_afresh() -> None:
    found = [Found(CITY, None), Found(HOTEL, None)]
    assert compose(PREVIOUS, found, [], k=8) == Block(
        keys=[CITY, HOTEL], kept=False, why="every tool is offered, unranked")
