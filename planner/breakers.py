"""Circuit breakers, one per model backend: a backend that was unreachable (or answered 5xx
through all its retries) is left out of routing for a while instead of making every routed turn
wait out its retries again, and a routed turn it failed goes on with the next backend its router
allows. A turn that named the backend still tries it (there is no other to go to), and a reply
from it closes its breaker. Each replica keeps its own."""

from __future__ import annotations

import time
from collections.abc import Callable

from planner.errors import ModelUnavailable

OPEN_S = 30.0
"""How long a backend that failed is skipped before a turn may try it again."""


class Breakers:
    def __init__(self, open_s: float = OPEN_S, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.open_s, self._clock = open_s, clock
        self._open: dict[str, tuple[float, str]] = {}

    def closed(self, backend: str) -> bool:
        """Whether a turn may use the backend now."""
        held = self._open.get(backend)
        return held is None or self._clock() >= held[0]

    def check(self, backend: str, url: str) -> None:
        """Raise ModelUnavailable, saying why and for how long, while the breaker is open."""
        held = self._open.get(backend)
        if held is None:
            return
        left = held[0] - self._clock()
        if left > 0:
            raise ModelUnavailable(url, f"skipped for {left:.0f} s more: it failed just before "
                                        f"({held[1]})")

    def trip(self, backend: str, reason: str) -> None:
        self._open[backend] = (self._clock() + self.open_s, reason)

    def reset(self, backend: str) -> None:
        self._open.pop(backend, None)
