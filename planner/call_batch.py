"""The calls of one reply or plan, whose ends are written together when they come close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from planner.records import FinishedCall

log = logging.getLogger(__name__)

COALESCE_S = 0.05
"""How long a call's end waits to be written with the ends of its batch's other calls."""

EndsWriter = Callable[[list[FinishedCall]], Awaitable[None]]


class CallBatch:
    """The calls of one reply or plan. Their ends are written together when they come close:
    an end waits up to COALESCE_S for others, and those still unwritten when the whole batch is
    done go with its tool messages, so parallel calls cost one write, not one each. A plan
    that streams in does not know its size until it is complete (`size` None until then)."""

    def __init__(self, size: int | None, write: EndsWriter) -> None:
        self.size, self.finished = size, 0
        self.unwritten: list[FinishedCall] = []
        self._write = write
        self._timer: asyncio.Task[None] | None = None
        self._writes: list[asyncio.Task[None]] = []

    def finish(self, call: FinishedCall) -> None:
        self.finished += 1
        self.unwritten.append(call)
        if (self.size is None or self.finished < self.size) and self._timer is None:
            self._timer = asyncio.create_task(self._write_soon())
            self._writes.append(self._timer)

    async def _write_soon(self) -> None:
        await asyncio.sleep(COALESCE_S)
        ends, self.unwritten, self._timer = self.unwritten, [], None
        await self._write(ends)

    def cancel(self) -> None:
        """Stop a write still waiting; its ends stay in `unwritten`."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def abandon(self) -> None:
        """The batch failed: stop the write still waiting. A write already under way finishes
        on its own; if it fails too, that is logged (the turn reports the batch's own fault)."""
        self.cancel()
        for write in self._writes:
            write.add_done_callback(_log_failed_write)

    async def close(self) -> list[FinishedCall]:
        """The ends not written yet, once the writes already under way are done (their
        failure is raised here)."""
        self.cancel()
        if self._writes:
            await asyncio.wait(self._writes)
        failed = [t.exception() for t in self._writes if not t.cancelled() and t.exception()]
        if failed and failed[0] is not None:
            raise failed[0]
        return self.unwritten


def _log_failed_write(write: asyncio.Task[None]) -> None:
    if not write.cancelled() and (fault := write.exception()) is not None:
        log.warning("writing the ends of a failed step's calls failed too: %s: %s",
                    type(fault).__name__, fault)


