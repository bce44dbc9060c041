"""Postgres text and jsonb cannot hold the NUL character; this is the one place that knows."""

from __future__ import annotations

import re

# A JSON escape \u0000 preceded by an even number of backslashes (an odd run would make the
# backslash itself literal text).
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
REPLACEMENT = "\ufffd"


def nul_escape_at(body: bytes) -> int | None:
    """Where a JSON document escapes a NUL character, or None."""
    if b"\\u0000" not in body:  # the common case, far cheaper than the pattern
        return None
    match = _NUL_ESCAPE.search(body)
    return None if match is None else match.start() + len(match.group(1))


def clean_json(encoded: bytes) -> bytes:
    """JSON text with every escaped NUL replaced by U+FFFD, so Postgres can store it."""
    if b"\\u0000" not in encoded:
        return encoded
    return _NUL_ESCAPE.sub(rb"\1\\ufffd", encoded)


def clean_text(text: str | None) -> str | None:
    return None if text is None else text.replace("\x00", REPLACEMENT)
