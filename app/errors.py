"""Errors of the HTTP layer that are not errors of `tools` or `planner`.

    LookupError
    └── KeyNotFound     no live API key by that id in the caller's tenant (404)
"""

from __future__ import annotations


class KeyNotFound(LookupError):
    """No live key by that id in this tenant."""
