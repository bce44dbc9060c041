"""One shape for every list the API returns: `{"items": [...], "next_cursor": ...}`. A client
passes `next_cursor` back as `cursor` for the next page, until it is null.

Long lists (tools, conversations, messages, traces) are paged in SQL. The others (keys, a
tool's versions, eval sets and runs, routers, MCP servers) stay small, so they are read whole
and paged here, by the key of each page's last item."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from litestar.params import QueryParameter

from tools.cursors import decode_cursor, encode_cursor
from tools.errors import FieldError, SpecInvalid

T = TypeVar("T")
MAX_PAGE = 500
Cursor = Annotated[str | None, QueryParameter(
    description="The `next_cursor` of the page before; leave out for the first page")]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="Items per page")]


def cut(found: Sequence[T], limit: int, key: Callable[[T], tuple[Any, ...]]
        ) -> tuple[list[T], str | None]:
    """A page read in SQL with one item more than `limit` (whether there is a next page), and
    the cursor holding `key` of its last item (None: this is the last page)."""
    page = list(found[:limit])
    return page, encode_cursor(key(page[-1])) if len(found) > limit else None


def page_of(items: Sequence[T], key: Callable[[T], str | int], cursor: str | None, limit: int
            ) -> tuple[list[T], str | None]:
    """The page of `items` (in their order) after the item whose key `cursor` holds, and the
    cursor of the page after it (None: this is the last)."""
    start = 0
    if cursor is not None:
        (after,) = decode_cursor(cursor, tuple[str | int])
        start = next((i + 1 for i, item in enumerate(items) if key(item) == after), -1)
        if start < 0:
            raise SpecInvalid([FieldError(
                "", "the item this cursor continues after is gone; list again from the start",
                parameter="query parameter 'cursor'")])
    page = list(items[start:start + limit])
    more = start + limit < len(items)
    return page, encode_cursor((key(page[-1]),)) if more and page else None
