"""The clause vectors of an index's tools, one contiguous block of rows per tool."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tools.embed import Vectors


class ClauseMatrix:
    """Rows grouped by tool, so one matrix product and one `maximum.reduceat` give every tool's
    best clause for a request. A replaced or removed tool's block is left dead in place and the
    live blocks are packed again once the dead rows outnumber them, so a write costs the size of
    its own block (amortised), not the size of the matrix."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._rows = 0
        self._starts: list[int] = []
        self._owners: list[int] = []  # the slot each block belongs to, -1 once dead
        self._block_of: dict[int, int] = {}
        self._dead_rows = 0

    def __len__(self) -> int:
        """Live rows."""
        return self._rows - self._dead_rows

    def put(self, slot: int, vectors: Vectors) -> None:
        """Make `vectors` (n, dim) the clauses of `slot`; n = 0 leaves it without any."""
        self.drop(slot)
        if len(vectors) == 0:
            return
        end = self._rows + len(vectors)
        if end > len(self._matrix):
            grown = np.zeros((max(256, 2 * end), self.dim), dtype=np.float32)
            grown[: self._rows] = self._matrix[: self._rows]
            self._matrix = grown
        self._matrix[self._rows : end] = vectors
        self._block_of[slot] = len(self._starts)
        self._starts.append(self._rows)
        self._owners.append(slot)
        self._rows = end

    def drop(self, slot: int) -> None:
        block = self._block_of.pop(slot, None)
        if block is None:
            return
        self._owners[block] = -1
        self._dead_rows += self._block_end(block) - self._starts[block]
        if self._dead_rows > len(self):
            self._pack()

    def best(self, queries: Vectors) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """The slots that have clauses, and each query's best cosine over each one's clauses
        (shape (len(queries), len(slots)))."""
        owners = np.array(self._owners, dtype=np.intp)
        if len(self) == 0:
            return owners[:0], np.zeros((len(queries), 0), dtype=np.float32)
        cosines = queries @ self._matrix[: self._rows].T
        best = np.maximum.reduceat(cosines, np.array(self._starts), axis=1)
        live = owners >= 0
        return owners[live], best[:, live]

    def _block_end(self, block: int) -> int:
        return self._starts[block + 1] if block + 1 < len(self._starts) else self._rows

    def _pack(self) -> None:
        blocks = [
            (slot, self._matrix[self._starts[b] : self._block_end(b)].copy())
            for b, slot in enumerate(self._owners)
            if slot >= 0
        ]
        self._rows, self._dead_rows = 0, 0
        self._starts, self._owners, self._block_of = [], [], {}
        for slot, vectors in blocks:
            self.put(slot, vectors)
