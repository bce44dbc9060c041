"""How long searches wait on the embedder. A search a client sent is turned away, with a time
to come back, when the searches already waiting would keep it past MAX_WAIT_S, instead of
queuing for seconds behind them; a running turn's own searches always wait."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator

from tools.errors import SearchBusy

MAX_WAIT_S = 0.25
"""The longest a search is expected to wait for the searches ahead of it before it is turned
away (bench/BENCHMARKS.md, "Liveness under load")."""


class SearchQueue:
    def __init__(self, max_wait_s: float = MAX_WAIT_S) -> None:
        self.max_wait_s = max_wait_s
        self.waiting = 0
        self.service_s = 0.01
        """A moving average of one search's own time: its latency shared out over the searches
        that were ahead of it when it came (the embedder serves one at a time)."""

    def expected_wait_s(self) -> float:
        return self.waiting * self.service_s

    def check(self) -> None:
        """Raise SearchBusy, saying when to come back, when a search a client sent now would
        wait past the bound."""
        if self.waiting and self.expected_wait_s() > self.max_wait_s:
            raise SearchBusy(self.waiting, max(1, math.ceil(self.expected_wait_s())))

    @contextlib.contextmanager
    def admitted(self, *, bounded: bool) -> Iterator[None]:
        """Count a search while it runs; a `bounded` one that would wait too long raises
        SearchBusy, saying when to come back."""
        ahead = self.waiting
        if bounded:
            self.check()
        self.waiting += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.waiting -= 1
            own = (time.monotonic() - started) / (ahead + 1)
            self.service_s = 0.9 * self.service_s + 0.1 * own
