"""Retrying: which failures are worth another attempt, and how long to pause before it
(jittered exponential backoff, bounded by an attempt count and a deadline). Tool calls and
model calls both follow these rules."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import msgspec


def retryable_status(status: int) -> bool:
    """Whether an HTTP status says the server is failing or busy (429 or a 5xx), so that the
    same request may succeed later; other errors would fail again, as would 501 (the server
    does not do this) and 505 (nor speak this HTTP version)."""
    return status == 429 or (status >= 500 and status not in (501, 505))


def backoff_delay(retry: int, base_s: float, max_s: float) -> float:
    """The pause before retry number `retry` (1-based): half fixed, half random, so that
    callers failing together do not come back together."""
    ceiling = min(max_s, base_s * 2 ** (retry - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header; HTTP dates are not worth the trouble here."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0)


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How hard to try: connect errors, timeouts, 429 and 5xx are retried within these bounds,
    after a jittered exponential pause or the server's `Retry-After`.

    `deadline_s` bounds the retrying (no new attempt starts after it); `request_timeout_s` bounds
    each attempt's wait for the server (for a stream: the silence between chunks).
    """

    attempts: int = 4
    base_delay_s: float = 0.25
    max_delay_s: float = 2.0
    deadline_s: float = 30.0
    request_timeout_s: float = 120.0


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
