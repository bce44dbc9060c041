"""Jittered exponential backoff, shared by tool retries and model-server retries."""

from __future__ import annotations

import random


def backoff_delay(retry: int, base_s: float, max_s: float) -> float:
    """The pause before retry number `retry` (1-based): half fixed, half random, so that
    callers failing together do not come back together."""
    ceiling = min(max_s, base_s * 2 ** (retry - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
