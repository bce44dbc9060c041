"""BM25 keyword relevance over tool texts, updated in place as tools change."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import numpy.typing as npt

_TOKEN = re.compile(r"[a-z0-9]+")
_F32 = npt.NDArray[np.float32]
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Words that say nothing about what a tool does; they would only add noise to the scores.
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "get",
        "given",
        "how",
        "i",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "please",
        "s",
        "that",
        "the",
        "their",
        "them",
        "then",
        "this",
        "to",
        "use",
        "used",
        "uses",
        "using",
        "want",
        "we",
        "what",
        "when",
        "which",
        "will",
        "with",
        "you",
        "your",
    ]
)


def tokenize(text: str) -> list[str]:
    """Lower-case word pieces, camelCase and snake_case split, stop words dropped, plural folded."""
    words = _TOKEN.findall(_CAMEL.sub(" ", text).lower())
    return [_fold(w) for w in words if w not in STOP_WORDS]


def _fold(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


class KeywordIndex:
    """Okapi BM25 over documents addressed by integer slot."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self._postings: dict[str, dict[int, int]] = {}
        self._cache: dict[str, tuple[npt.NDArray[np.int64], _F32, _F32]] = {}
        self._terms: dict[int, Counter[str]] = {}
        self._lengths: dict[int, int] = {}
        self._total_length = 0

    def __len__(self) -> int:
        return len(self._terms)

    def add(self, slot: int, text: str) -> None:
        self.remove(slot)
        terms = Counter(tokenize(text))
        self._terms[slot] = terms
        self._lengths[slot] = sum(terms.values())
        self._total_length += self._lengths[slot]
        for term, tf in terms.items():
            self._postings.setdefault(term, {})[slot] = tf
            self._cache.pop(term, None)

    def remove(self, slot: int) -> None:
        terms = self._terms.pop(slot, None)
        if terms is None:
            return
        self._total_length -= self._lengths.pop(slot)
        for term in terms:
            posting = self._postings[term]
            del posting[slot]
            if not posting:
                del self._postings[term]
            self._cache.pop(term, None)

    def scores(self, query: str, size: int) -> npt.NDArray[np.float32]:
        """BM25 of every slot below `size` for the query (zeros where nothing matches)."""
        out = np.zeros(size, dtype=np.float32)
        n = len(self._terms)
        if n == 0:
            return out
        avg_length = self._total_length / n
        for term in set(tokenize(query)):
            posting = self._postings.get(term)
            if not posting:
                continue
            idf = math.log(1.0 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
            slots, weights = self._weights(term, avg_length)
            np.add.at(out, slots, idf * weights)
        return out

    def _weights(
        self, term: str, avg_length: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        cached = self._cache.get(term)
        if cached is None:
            posting = self._postings[term]
            slots = np.fromiter(posting.keys(), dtype=np.int64, count=len(posting))
            tf = np.fromiter(posting.values(), dtype=np.float32, count=len(posting))
            lengths = np.fromiter((self._lengths[s] for s in posting), dtype=np.float32)
            cached = self._cache[term] = (slots, tf, lengths)
        slots, tf, lengths = cached
        # Length normalisation depends on the corpus average, so it is applied per query.
        norm = self.k1 * (1.0 - self.b + self.b * lengths / avg_length)
        return slots, (tf * (self.k1 + 1.0) / (tf + norm)).astype(np.float32)
