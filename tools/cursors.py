"""Page cursors: the key of a page's last item, opaque to clients (they pass `next_cursor`
back unchanged), and refused with a clear error when it is not one this service issued."""

from __future__ import annotations

import base64
from typing import Any, TypeVar

import msgspec

from tools.errors import FieldError, SpecInvalid

K = TypeVar("K")


def encode_cursor(key: tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(key)).decode().rstrip("=")


def decode_cursor(cursor: str, shape: type[K]) -> K:
    """The key a cursor holds, as `shape` (a tuple type); SpecInvalid naming the `cursor`
    query parameter when it holds none."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return msgspec.json.decode(raw, type=shape)
    except (ValueError, msgspec.DecodeError) as exc:
        raise SpecInvalid([FieldError("", "not a cursor this service issued: pass next_cursor "
                                      "unchanged", parameter="query parameter 'cursor'")]) from exc
