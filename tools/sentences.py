"""A request split into its sentences, so each thing it asks for is also searched on its own."""

from __future__ import annotations

import re

# A sentence ends at . ? or ! (a closing quote may follow) before a capital, digit or opening
# quote; a line break ends one too.
_SENTENCE_END = re.compile(r"(?<=[.?!])[\"']?\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
_LEAD_WORD = re.compile(
    r"^(?:also|additionally|then|finally|lastly|first(?:ly)?|second(?:ly)?|third(?:ly)?|next"
    r"|after that|furthermore|moreover|now)\b[,:]?\s*",
    re.IGNORECASE,
)
MIN_WORDS = 3
"""Shorter sentences ("Thanks!", "Mr.") ask for nothing a tool does."""
MAX_SENTENCES = 8
"""Sentences past this many are not searched on their own, which bounds a search's cost."""


def split_request(text: str) -> list[str]:
    """The sentences of a request of at least MIN_WORDS words, linking words such as "Also,"
    dropped from their start, at most MAX_SENTENCES of them."""
    sentences = []
    for part in _SENTENCE_END.split(text.strip().strip('"').strip()):
        sentence = _LEAD_WORD.sub("", part.strip()).strip(" ,.;")
        if len(sentence.split()) >= MIN_WORDS:
            sentences.append(sentence)
    return sentences[:MAX_SENTENCES]


def search_texts(request: str) -> list[str]:
    """What to embed for a search: the request, then its sentences when it has two or more.

    A request that asks for several things ranks the tool for each behind near-twins of the
    tool for another when embedded whole; its sentences, embedded alone, find each one.
    """
    sentences = split_request(request)
    return [request, *sentences] if len(sentences) > 1 else [request]
