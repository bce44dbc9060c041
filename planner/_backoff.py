"""Retry pacing: jittered exponential backoff bounded by an attempt count and a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tools.backoff import backoff_delay

if TYPE_CHECKING:
    from planner.model_client import RetryPolicy


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header; HTTP dates are not worth the trouble here."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0)


class RetrySchedule:
    """Counts the attempts of one operation and says how long to pause before the next."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy, self._clock = policy, clock
        self._deadline = clock() + policy.deadline_s
        self.attempts_made = 0
        self.deadline_passed = False

    def next_delay(self, retry_after: float | None = None) -> float | None:
        """Record a failed attempt; the pause before the next one, or None to give up.

        A server's `Retry-After` replaces the backoff; either is cut short at the deadline.
        """
        self.attempts_made += 1
        if self.attempts_made >= self._policy.attempts:
            return None
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            self.deadline_passed = True
            return None
        wanted = retry_after
        if wanted is None:
            wanted = backoff_delay(
                self.attempts_made, self._policy.base_delay_s, self._policy.max_delay_s
            )
        return min(wanted, remaining)

    def summary(self) -> str:
        """How the attempts ended, e.g. "after 4 attempts"."""
        plural = "" if self.attempts_made == 1 else "s"
        text = f"after {self.attempts_made} attempt{plural}"
        if self.deadline_passed:
            text += f" (the {self._policy.deadline_s:g}s retry deadline passed)"
        return text
