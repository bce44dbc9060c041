"""A conversation's tool block: which candidate tools a turn offers, in what order.

The tool block sits near the start of every prompt (chat templates put it in the system
message), so everything after it, the whole conversation, is reused from SGLang's radix cache
only while it stays byte for byte the same. A turn on the same topic as the one before keeps
that turn's block as it was and appends a tool only when the request matches one the block
lacks; a turn on a new topic starts a fresh block from its own retrieval. An appended tool
still leaves the system prompt and the old block cached.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

Key = tuple[str, str]
"""(namespace, name) of a tool."""

BLOCK_CAP = 2
"""A kept block grows to at most this many times the turn's candidate count; past it the
turn starts a fresh block."""
STRONG_MATCH = 0.3
"""The cosine of a request to a tool (`SearchHit.dense`) at which a best match the block lacks
means a new topic: an absolute measure, where fused scores depend on how many tools a tenant
has. Generic follow-ups ("and for tomorrow?") mostly stay below it, requests of their own
mostly reach it..."""
ADD_MATCH = 0.25
"""...and the cosine at which a match the kept block lacks is appended to it, so a new request
that looks like a follow-up still gets its tool. Both tuned on the dev half of
bench/followups.py."""


class Found(msgspec.Struct, frozen=True):
    """One of retrieval's picks for the turn, best first."""

    key: Key
    score: float | None
    """Fused relevance; None when retrieval did not rank (the tenant has no more tools than a
    turn offers)."""
    dense: float | None = None
    """The request's cosine to the tool (`SearchHit.dense`)."""
    by_context: bool = False
    """Picked for the conversation's earlier requests rather than the request's own words."""


class Block(msgspec.Struct, frozen=True):
    keys: list[Key]
    kept: bool
    """The block the conversation's last turn ended with, kept (and perhaps appended to)."""
    why: str


def compose(previous: Sequence[Key], found: Sequence[Found], recent: Sequence[Key], *, k: int,
            strong: float = STRONG_MATCH, add: float = ADD_MATCH) -> Block:
    """The turn's tool block from the last turn's (`previous`, in its order), this turn's
    retrieval, and the tools the last turn called with success (`recent`)."""
    fresh = _fresh(found, recent)
    if not previous:
        return Block(keys=fresh, kept=False, why="the conversation's first tool block")
    own = [f for f in found if not f.by_context]
    if any(f.score is None for f in found):
        return Block(keys=fresh, kept=False, why="every tool is offered, unranked")
    if own and own[0].key not in previous and (own[0].dense or 0.0) >= strong:
        return Block(keys=fresh, kept=False,
                     why=f"a new topic: the request's best match, {own[0].key[1]}, is new")
    held = set(previous)
    added = sorted({f.key for f in own if f.key not in held and (f.dense or 0.0) >= add})
    keys = [*previous, *added]
    keys += [r for r in recent if r not in set(keys)]
    if len(keys) > BLOCK_CAP * k:
        return Block(keys=fresh, kept=False, why=f"the kept block would exceed {BLOCK_CAP * k}")
    return Block(keys=keys, kept=True, why=f"kept, {len(keys) - len(previous)} added")


def _fresh(found: Sequence[Found], recent: Sequence[Key]) -> list[Key]:
    """Retrieval's picks in key order (the same picks make the same bytes), then the tools
    the last turn used that retrieval did not pick."""
    picked = sorted({f.key for f in found})
    return [*picked, *(r for r in recent if r not in set(picked))]
