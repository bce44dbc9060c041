"""Server-sent events framing: turn a response's lines into the `data` of each event."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def iter_sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """Yield the data of each event; multi-line data is joined with newlines.

    Comments (`:`) and the fields this client has no use for (`event`, `id`, `retry`) are skipped.
    """
    pending: list[str] = []
    async for line in lines:
        if not line:
            if pending:
                yield "\n".join(pending)
                pending = []
            continue
        field, _, value = line.partition(":")
        if field == "data":
            pending.append(value.removeprefix(" "))
    if pending:
        yield "\n".join(pending)
