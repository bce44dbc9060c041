"""The clause vectors of an index's tools, one contiguous block of rows per tool."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tools.embed import Vectors


class ClauseMatrix:
    """Rows grouped by tool, so one matrix product and one `maximum.reduceat` give every tool's
    best clause for a request. A replaced or removed tool's block is left dead in place and the
    live blocks are packed again once the dead rows outnumber them, so a write costs the size of
    its own block (amortised), not the size of the matrix. It grows by half, not double: it is
    the larger of the two matrices."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._rows = 0
        self._starts: list[int] = []
        self._owners: list[int] = []  # the slot each block belongs to, -1 once dead
        self._block_of: dict[int, int] = {}
        self._dead_rows = 0
        self._arrays: tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]] | None = None
        """`_starts` and `_owners` as arrays, made on the first search after a change."""

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
            grown = np.zeros((max(256, end + end // 2), self.dim), dtype=np.float32)
            grown[: self._rows] = self._matrix[: self._rows]
            self._matrix = grown
        self._matrix[self._rows : end] = vectors
        self._arrays = None
        self._block_of[slot] = len(self._starts)
        self._starts.append(self._rows)
        self._owners.append(slot)
        self._rows = end

    def drop(self, slot: int) -> None:
        block = self._block_of.pop(slot, None)
        if block is None:
            return
        self._owners[block] = -1
        self._arrays = None
        self._dead_rows += self._block_end(block) - self._starts[block]
        if self._dead_rows > len(self):
            self._pack()

    def best(self, queries: Vectors) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """The slots that have clauses, and each query's best cosine over each one's clauses
        (shape (len(queries), len(slots)))."""
        if len(self) == 0:
            return np.zeros(0, dtype=np.intp), np.zeros((len(queries), 0), dtype=np.float32)
        if self._arrays is None:
            self._arrays = (np.array(self._starts, dtype=np.intp),
                            np.array(self._owners, dtype=np.intp))
        starts, owners = self._arrays
        cosines = queries @ self._matrix[: self._rows].T
        best = np.maximum.reduceat(cosines, starts, axis=1)
        if len(self) == self._rows:  # no dead blocks
            return owners, best
        live = owners >= 0
        return owners[live], best[:, live]

    def rows(self, slot: int) -> Vectors:
        """A copy of the slot's rows (none when it has none)."""
        block = self._block_of.get(slot)
        if block is None:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._matrix[self._starts[block] : self._block_end(block)].copy()

    def best_of(self, queries: Vectors, slots: npt.NDArray[np.intp]
                ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """As `best`, over these slots only (those of them that have rows): the cost is their
        rows', not the matrix's."""
        blocks = [(slot, self._block_of[slot]) for slot in slots.tolist()
                  if slot in self._block_of]
        if not blocks:
            return np.zeros(0, dtype=np.intp), np.zeros((len(queries), 0), dtype=np.float32)
        ranges = [np.arange(self._starts[b], self._block_end(b)) for _, b in blocks]
        lengths = np.array([len(r) for r in ranges])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        cosines = queries @ self._matrix[np.concatenate(ranges)].T
        best = np.maximum.reduceat(cosines, starts, axis=1)
        return np.array([slot for slot, _ in blocks], dtype=np.intp), best

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
