"""In-memory search over one tenant's live tools: dense similarity and BM25, fused."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec
import numpy as np
import numpy.typing as npt

from tools.clause_matrix import ClauseMatrix
from tools.embed import Vectors
from tools.keywords import KeywordIndex
from tools.learned import Learned

ToolKey = tuple[str, str]  # (namespace, name)
_NEAREST_WIDTH = 200
"""Tools (the closest to a request by their vectors) whose learned examples are compared with
it one by one (`RankingWeights.learned_nearest`)."""
_CANDIDATES = 30
"""Tools considered when hits are picked sentence by sentence: the best this many for the whole
request and for each sentence."""


class RankingWeights(msgspec.Struct, frozen=True, kw_only=True):
    """How a request is embedded and how dense and keyword relevance combine into one score
    (tuned by bench/retrieval.py).

    Both signals are standardised over the tools searched (z-scores) before they are mixed, so
    the mix does not depend on how spread out one model's cosines or one query's BM25 scores are.
    """

    keyword: float = 0.2
    """Share of the fused score that comes from BM25: 0 ranks by meaning alone, 1 by keywords."""
    examples: float = 0.5
    """Weight of each example request against the tool's own text in the tool's vector."""
    clauses: float = 1.0
    """Weight of a tool's best-matching description clause against its vector in its dense
    score (0: clauses are not searched)."""
    framing: float = 0.4
    """Weight of the framing shift added to a request's vector before it is normalised: the
    average move of a request's embedding when it is framed as a question of which tool to
    use (`tools.framing`). 0 searches with the request's own embedding."""
    sentence_floor: float = 2.0
    """A sentence of the request credits a tool only for fused relevance above this..."""
    sentence_margin: float = 2.0
    """...and only within this of the sentence's best tool (both in standard deviations)."""
    context: float = 3.0
    """Weight of the conversation's earlier user messages against the request: the last one at
    this weight, each older one at half the weight of the one after it. A follow-up ("and in
    metres?") names none of the words its tool is found by; the message before it does..."""
    context_share: float = 0.5
    """...and this share of the k hits comes from that conversation's ranking, the rest from
    the request's own, so a request on a new topic still finds its tools. Both tuned on the
    dev half of bench/followups.py."""
    learned: float = 0.25
    """Weight of each learned example (a request that led to a good call of the tool, see
    `tools.learned`) in the tool's vector, as a share of a registered example's (`examples`)
    and times its own weight (`example_weight`): a few learned requests do not outweigh what
    the developer wrote, while many of them do."""
    learned_nearest: float = 1.0
    """Weight of the request's best-matching learned example against the tool's vector in its
    dense score (0: not searched), scaled by n / (n + 5) for a tool with n learned requests: a
    request phrased like one that was learnt finds its tool even when the tool's other
    requests pull its vector elsewhere. Tuned with `learned` on the dev half of
    bench/learning.py."""
    negative: float = 1.0
    """How far a tool is pushed down for a request close to one a user said it was the wrong
    tool for: this times how far the cosine to that request rises above `negative_floor`,
    scaled to 1 at an identical request."""
    negative_floor: float = 0.75


class SearchData(msgspec.Struct, frozen=True, kw_only=True):
    """What a tool is found by, as it is stored with the tool: the texts embedded, the model
    that embedded them, their vectors, and the text keyword search matches.

    Each part of the texts has its vectors: `text` (the tool's name, namespace, description
    and parameters, `tools.text.tool_text`) has `vector`, shape (dim,); each example request
    a row of `example_vectors`, shape (n, dim); each clause of a long description
    (`tools.text.description_clauses`) a row of `clause_vectors`, shape (m, dim)."""

    model: str
    text: str
    vector: Vectors
    examples: list[str]
    example_vectors: Vectors
    clauses: list[str]
    clause_vectors: Vectors
    keywords: str
    """What BM25 matches (`tools.text.keyword_text`)."""

    def parts(self) -> list[tuple[list[str], Vectors]]:
        """Each part's texts and their vectors, one row a text: the tool text, the examples,
        the clauses."""
        return [([self.text], self.vector[None, :]),
                (self.examples, self.example_vectors), (self.clauses, self.clause_vectors)]

    def with_vectors(self, vectors: Sequence[Vectors]) -> SearchData:
        """The same texts with these vectors, in the order of `parts`."""
        text, examples, clauses = vectors
        return msgspec.structs.replace(self, vector=text.reshape(-1), example_vectors=examples,
                                       clause_vectors=clauses)


class IndexedTool(msgspec.Struct, frozen=True, kw_only=True):
    namespace: str
    name: str
    version: int
    description: str
    tags: frozenset[str]
    search: SearchData

    @property
    def key(self) -> ToolKey:
        return (self.namespace, self.name)


class SearchHit(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    namespace: str
    version: int
    description: str
    score: float
    """Fused relevance, in standard deviations above the average tool searched; for a request
    searched with its sentences, plus what the tool adds for sentences no earlier hit answered."""
    dense: float
    """Cosine similarity of the request's vector (moved by the framing shift, see
    `tools.framing`) to the tool's vector (text and examples), averaged (by
    `RankingWeights.clauses`) with its best clause's when the description has several, less
    the push down of a request close to one a user said the tool was wrong for."""
    keyword: float
    """BM25 relative to the best keyword match (1.0), 0 when no keyword matches."""
    by_context: bool = False
    """Found for the conversation's earlier requests (`context`), not the request's own words;
    its score then counts theirs too."""


class QueryPart(msgspec.Struct, frozen=True, kw_only=True):
    """One sentence of a request, embedded on its own (see tools/sentences.py)."""

    text: str
    vector: Vectors


class ToolIndex:
    """All live tools of one tenant, in slots of a growable matrix.

    A tool's row is its prototype: the text's embedding plus `weights.examples` times each example
    request's, normalised. Pooling the examples this way ranked better than scoring the best
    single example next to the text (one odd example no longer decides a search), and costs one
    row per tool. A tool with a long description also has a row per clause of it, built the same
    way (the clause's embedding plus the examples'); its dense score is its row's cosine averaged
    with its best clause's, so a request for one of several things it does is not diluted by the
    others. The weights are fixed for the life of the index: the rows are built with them.
    """

    def __init__(self, dim: int, weights: RankingWeights | None = None) -> None:
        self.dim = dim
        self.weights = weights or RankingWeights()
        self._slots: dict[ToolKey, int] = {}
        self._tools: list[IndexedTool | None] = []
        self._free: list[int] = []
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._live = np.zeros(0, dtype=bool)
        self._keywords = KeywordIndex()
        self._clauses = ClauseMatrix(dim)
        self._parts: list[tuple[Vectors, Vectors, Vectors, str] | None] = []
        """Each slot's tool vector, its examples' sum, its clause vectors and its keyword
        text: what its rows are built from, kept to build them again when what it learnt
        changes."""
        self._learned: dict[ToolKey, _Taught] = {}
        self._nearest = ClauseMatrix(dim)
        """Each tool's learned examples, for `RankingWeights.learned_nearest`."""
        self._learned_counts = np.zeros(0, dtype=np.float32)
        self._negatives = ClauseMatrix(dim)
        rows = np.zeros((0, dim), dtype=np.float32)
        self._searched = SearchData(model="", text="", vector=np.zeros(0, dtype=np.float32),
                                    examples=[], example_vectors=rows, clauses=[],
                                    clause_vectors=rows, keywords="")
        """What a kept tool holds of its search data: nothing (it is in the matrices)."""

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: ToolKey) -> bool:
        return key in self._slots

    def keys(self) -> list[ToolKey]:
        return sorted(self._slots)

    def upsert(self, tool: IndexedTool) -> None:
        search = tool.search
        if search.vector.shape != (self.dim,):
            raise ValueError(
                f"vector of {tool.name!r} has shape {search.vector.shape}, not ({self.dim},)"
            )
        for kind, rows in (("example", search.example_vectors), ("clause", search.clause_vectors)):
            if rows.shape[1:] != (self.dim,):
                raise ValueError(
                    f"{kind} vectors of {tool.name!r} have shape {rows.shape}, not (n, {self.dim})"
                )
        slot = self._slots.get(tool.key)
        if slot is None:
            slot = self._free.pop() if self._free else self._grow()
            self._slots[tool.key] = slot
        # The matrices hold what search needs; the tool kept here is what a hit reports.
        self._tools[slot] = msgspec.structs.replace(tool, search=self._searched)
        self._parts[slot] = (search.vector, search.example_vectors.sum(axis=0),
                             search.clause_vectors, search.keywords)
        self._live[slot] = True
        self._place(slot, tool.key)

    def set_learned(self, key: ToolKey, learned: Learned) -> None:
        """What the tool has learnt from use, in place of what it had learnt; kept for a tool
        not indexed (yet), which gets it when it is."""
        if learned.empty:
            self._learned.pop(key, None)
        else:
            self._learned[key] = _Taught(
                total=(learned.weights @ learned.examples).astype(np.float32)
                if len(learned.examples) else np.zeros(self.dim, dtype=np.float32),
                texts=" ".join(learned.texts), count=len(learned.examples),
                rows=learned.examples, negatives=learned.negatives)
        slot = self._slots.get(key)
        if slot is not None:
            self._place(slot, key)

    def vector(self, key: ToolKey) -> Vectors | None:
        """The tool's row: its text's vector with its examples', normalised."""
        slot = self._slots.get(key)
        return None if slot is None else self._matrix[slot]

    def _place(self, slot: int, key: ToolKey) -> None:
        """Build the slot's rows from its parts and what it learnt."""
        parts = self._parts[slot]
        assert parts is not None
        vector, examples, clauses, keywords = parts
        taught = self._learned.get(key)
        if taught is not None and taught.count:
            examples = examples + self.weights.learned * taught.total
            # Learned requests are matched by their words too: their words are the users'.
            keywords = f"{keywords} {taught.texts}"
        self._keywords.add(slot, keywords)
        self._matrix[slot] = self._prototypes(vector[None, :], examples)[0]
        if self.weights.clauses:
            self._clauses.put(slot, self._prototypes(clauses, examples))
        if taught is None:
            self._nearest.drop(slot)
            self._negatives.drop(slot)
            self._learned_counts[slot] = 0
            return
        if self.weights.learned_nearest and taught.rows is not None:
            # The rows live in the matrix from now on, not twice.
            self._nearest.put(slot, taught.rows)
            self._learned[key] = msgspec.structs.replace(taught, rows=None)
        self._learned_counts[slot] = taught.count
        self._negatives.put(slot, taught.negatives)

    def remove(self, key: ToolKey) -> None:
        slot = self._slots.pop(key, None)
        if slot is None:
            return
        taught = self._learned.get(key)
        if taught is not None and taught.rows is None:  # kept for when the tool comes back
            self._learned[key] = msgspec.structs.replace(taught, rows=self._nearest.rows(slot))
        self._tools[slot] = None
        self._parts[slot] = None
        self._live[slot] = False
        self._matrix[slot] = 0.0
        self._keywords.remove(slot)
        self._clauses.drop(slot)
        self._nearest.drop(slot)
        self._negatives.drop(slot)
        self._free.append(slot)

    def search(
        self,
        query_vector: Vectors,
        query_text: str,
        k: int,
        *,
        namespace: str | None = None,
        tags: Iterable[str] = (),
        parts: Sequence[QueryPart] = (),
        context: Sequence[QueryPart] = (),
    ) -> list[SearchHit]:
        """The k most relevant eligible tools. With two or more `parts` (the request's sentences),
        the hits are picked so that each sentence's best tools are not crowded out by near-twins
        of another sentence's: see `_cover`. `context` is the conversation's earlier user
        messages, the last first: a share of the hits are the best with their scores added
        (`RankingWeights.context`, `context_share`)."""
        size = len(self._tools)
        if size == 0 or k <= 0:
            return []
        eligible = self._eligible(size, namespace, frozenset(tags))
        count = int(eligible.sum())
        if count == 0:
            return []
        asked = [QueryPart(text=query_text, vector=query_vector), *parts, *context]
        vectors = np.stack([p.vector for p in asked])
        fused, dense, keyword = self._scores(vectors, [p.text for p in asked], eligible)
        fused, earlier = fused[:1 + len(parts)], fused[1 + len(parts):]
        best_keyword = float(keyword[0][eligible].max())
        keyword_share = keyword[0] / best_keyword if best_keyword > 0 else keyword[0]
        k = min(k, count)
        own = k - int(k * self.weights.context_share + 0.5) if context else k
        if len(parts) < 2:
            slots, scores = self._top(fused[0], own)
        else:
            slots, scores = self._cover(fused[0], fused[1:], own)
        mine = len(slots)
        if context:
            self._fill(slots, scores, self._in_context(fused[0], earlier), k)
        return [
            self._hit(slot, score, dense[0], keyword_share, by_context=i >= mine)
            for i, (slot, score) in enumerate(zip(slots, scores, strict=True))
        ]

    def _in_context(self, fused: npt.NDArray[np.float32], earlier: npt.NDArray[np.float32]
                    ) -> npt.NDArray[np.float32]:
        """The request's fused scores with the earlier requests' added, the last at
        `context`, each older one at half the weight of the one after it."""
        ages = 0.5 ** np.arange(len(earlier), dtype=np.float32)
        return fused + self.weights.context * (ages[:, None] * earlier).sum(axis=0)

    def _fill(self, slots: list[int], scores: list[float], ranked: npt.NDArray[np.float32],
              k: int) -> None:
        """Add the best of `ranked` not picked yet until there are k."""
        picked = set(slots)
        extra, extra_scores = self._top(ranked, k)
        for slot, score in zip(extra, extra_scores, strict=True):
            if len(slots) == k:
                break
            if slot not in picked:
                slots.append(slot)
                scores.append(score)

    def _scores(
        self, vectors: Vectors, texts: list[str], eligible: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Fused, dense and BM25 scores of every slot, one row per text; fused is -inf where a
        tool is not eligible."""
        size = len(eligible)
        dense = vectors @ self._matrix[:size].T
        slots, best_clause = self._clauses.best(vectors)
        if len(slots):
            share = self.weights.clauses / (1.0 + self.weights.clauses)
            dense[:, slots] += share * (best_clause - dense[:, slots])
        if len(self._nearest):
            # Only the tools already close to a request can be lifted into its hits, so only
            # their examples are compared: the cost stays that of a few thousand rows.
            near = np.unique(np.concatenate([_best(d, _NEAREST_WIDTH) for d in dense]))
            slots, nearest = self._nearest.best_of(vectors, near)
            share = self.weights.learned_nearest / (1.0 + self.weights.learned_nearest)
            # A tool with few learned requests leans on its best one less: one odd request
            # should not decide a search.
            many = self._learned_counts[slots]
            dense[:, slots] += share * many / (many + 5.0) * (nearest - dense[:, slots])
        slots, negative = self._negatives.best(vectors)
        if len(slots):
            floor = self.weights.negative_floor
            dense[:, slots] -= self.weights.negative * np.clip(
                (negative - floor) / (1.0 - floor), 0.0, None)
        keyword = np.stack([self._keywords.scores(t, size) for t in texts])
        w = self.weights.keyword
        fused = np.stack([
            (1.0 - w) * _standardised(d, eligible) + w * _standardised(b, eligible)
            for d, b in zip(dense, keyword, strict=True)
        ])
        fused[:, ~eligible] = -np.inf
        return fused, dense, keyword

    def _prototypes(self, texts: Vectors, examples: Vectors) -> Vectors:
        """Each text's vector (the tool text's, or a clause's) plus the examples' (their sum,
        learned ones counted in), normalised."""
        vectors = texts + self.weights.examples * examples
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)

    def _eligible(
        self, size: int, namespace: str | None, tags: frozenset[str]
    ) -> npt.NDArray[np.bool_]:
        mask = self._live[:size].copy()
        if namespace is None and not tags:
            return mask
        for slot, tool in enumerate(self._tools):
            if tool is None:
                continue
            if (namespace is not None and tool.namespace != namespace) or not tags <= tool.tags:
                mask[slot] = False
        return mask

    def _top(self, fused: npt.NDArray[np.float32], k: int) -> tuple[list[int], list[float]]:
        top = _best(fused, k)
        # Ties break on (namespace, name) so equal scores always come back in the same order.
        ordered = sorted(top.tolist(), key=lambda s: (-fused[s], self._key(s)))
        return ordered, [float(fused[s]) for s in ordered]

    def _cover(
        self, whole: npt.NDArray[np.float32], sentences: npt.NDArray[np.float32], k: int
    ) -> tuple[list[int], list[float]]:
        """Pick k tools one at a time, each the one whose fused score for the whole request plus
        what it adds for the sentences is highest. A tool adds, for each sentence, how far its
        score for that sentence rises above the best already picked (and above the floor and
        the margin below the sentence's best tool). Once a sentence has its tool, a near-twin
        of that tool gains nothing from it, so a tool another sentence asks for can come next.
        The gains only shrink as tools are picked, so the scores come back in order."""
        width = max(k, _CANDIDATES)
        found = {int(s) for row in (whole, *sentences) for s in _best(row, width)}
        slots = np.array(sorted(found, key=self._key))
        base, per_sentence = whole[slots], sentences[:, slots]
        covered = np.maximum(
            self.weights.sentence_floor, sentences.max(axis=1) - self.weights.sentence_margin
        )
        unpicked = np.ones(len(slots), dtype=bool)
        picked: list[int] = []
        scores: list[float] = []
        while len(picked) < k:
            added = np.clip(per_sentence - covered[:, None], 0.0, None).sum(axis=0)
            gain = np.where(unpicked, base + added, -np.inf)
            best = int(np.argmax(gain))  # the first of equal gains: slots are in key order
            if gain[best] == -np.inf:
                break
            picked.append(int(slots[best]))
            scores.append(float(gain[best]))
            unpicked[best] = False
            covered = np.maximum(covered, per_sentence[:, best])
        return picked, scores

    def _hit(
        self,
        slot: int,
        score: float,
        dense: npt.NDArray[np.float32],
        keyword: npt.NDArray[np.float32],
        *,
        by_context: bool = False,
    ) -> SearchHit:
        tool = self._tools[slot]
        assert tool is not None
        return SearchHit(
            name=tool.name,
            namespace=tool.namespace,
            version=tool.version,
            description=tool.description,
            score=round(score, 6),
            dense=round(float(dense[slot]), 6),
            keyword=round(float(keyword[slot]), 6),
            by_context=by_context,
        )

    def _key(self, slot: int) -> ToolKey:
        tool = self._tools[slot]
        assert tool is not None
        return tool.key

    def _grow(self) -> int:
        slot = len(self._tools)
        self._tools.append(None)
        self._parts.append(None)
        if slot >= len(self._matrix):
            capacity = max(64, 2 * len(self._matrix))
            matrix = np.zeros((capacity, self.dim), dtype=np.float32)
            matrix[: len(self._matrix)] = self._matrix
            live = np.zeros(capacity, dtype=bool)
            live[: len(self._live)] = self._live
            counts = np.zeros(capacity, dtype=np.float32)
            counts[: len(self._learned_counts)] = self._learned_counts
            self._matrix, self._live, self._learned_counts = matrix, live, counts
        return slot


class _Taught(msgspec.Struct, frozen=True, kw_only=True):
    """What a tool learnt, as the index keeps it: the weighted sum of its learned examples,
    their words, how many; the rows themselves only while the tool has no slot (otherwise they
    are in the nearest-example matrix)."""

    total: Vectors
    texts: str
    count: int
    rows: Vectors | None
    negatives: Vectors


def _best(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """The slots of the k highest scores, in no particular order."""
    if k >= len(scores):
        return np.arange(len(scores))
    return np.argpartition(-scores, k - 1)[:k]


def _standardised(
    scores: npt.NDArray[np.float32], eligible: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float32]:
    """Scores as z-scores over the eligible tools (all zero when they do not differ)."""
    picked = scores[eligible]
    spread = float(picked.std())
    if spread == 0.0:
        return np.zeros_like(scores)
    return ((scores - float(picked.mean())) / spread).astype(np.float32)
