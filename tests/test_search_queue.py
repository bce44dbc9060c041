"""The search queue's bound: who waits, who is turned away, and when they are told to return."""

from __future__ import annotations

import contextlib

import pytest

from tools.errors import SearchBusy
from tools.search_queue import SearchQueue


def test_a_search_with_none_ahead_is_always_admitted() -> None:
    queue = SearchQueue(max_wait_s=0.0)
    queue.service_s = 100.0
    with queue.admitted(bounded=True):
        assert queue.waiting == 1
    assert queue.waiting == 0


def test_a_bounded_search_is_turned_away_once_the_expected_wait_passes_the_bound() -> None:
    queue = SearchQueue(max_wait_s=0.25)
    queue.service_s = 0.1
    with contextlib.ExitStack() as held:
        held.enter_context(queue.admitted(bounded=True))
        held.enter_context(queue.admitted(bounded=True))  # 0.1 s expected: admitted
        held.enter_context(queue.admitted(bounded=True))  # 0.2 s expected: admitted
        with pytest.raises(SearchBusy) as refused:
            held.enter_context(queue.admitted(bounded=True))  # 0.3 s > 0.25 s
        assert refused.value.waiting == 3
        assert refused.value.retry_after_s == 1  # never less than a second
        assert queue.waiting == 3  # the refused one was never counted


def test_retry_after_grows_with_the_expected_wait() -> None:
    queue = SearchQueue(max_wait_s=0.25)
    queue.service_s = 1.5
    with (queue.admitted(bounded=True), pytest.raises(SearchBusy) as refused,
          queue.admitted(bounded=True)):
        pass
    assert refused.value.retry_after_s == 2  # ceil(1 waiting x 1.5 s)


def test_a_turns_own_search_waits_however_long_the_queue() -> None:
    queue = SearchQueue(max_wait_s=0.0)
    queue.service_s = 10.0
    with queue.admitted(bounded=True), queue.admitted(bounded=False):
        assert queue.waiting == 2


def test_the_service_time_follows_what_searches_took_shared_over_those_ahead() -> None:
    queue = SearchQueue()
    queue.service_s = 1.0
    with queue.admitted(bounded=False):
        pass  # took about nothing, with none ahead
    assert queue.service_s == pytest.approx(0.9, abs=0.01)


def test_an_error_inside_a_search_still_releases_its_place() -> None:
    queue = SearchQueue()
    with pytest.raises(RuntimeError), queue.admitted(bounded=True):
        raise RuntimeError("embedder failed")
    assert queue.waiting == 0
